"""Bundled samples for the app's Fine-tune tab, written by the builder under ``assets/samples/``.

They are real few-shot data in the formats a user uploads, drawn from what the adapters train on (never the
held-out test data of the cards):

- ``digits-10-shot.zip``: 10 images per digit (all ten) from the few-shot pool, in class-folder layout
  (``7/0042.png``), at the 8x8 of ``load_digits`` scaled to 32x32, as a user's image zip;
- ``folio-<play>.txt``: the opening of one First Folio play the language adapters train on, for language
  modelling.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from hora.assets.data import DigitSplits, digit_image, fewshot_indices


SAMPLES = "samples"
DIGIT_SHOTS = 10
SAMPLE_SEED = 0
FOLIO_PLAY = "hamlet_gut_f"
FOLIO_CHARS = 60_000


def write_digit_sample(root: Path, splits: DigitSplits) -> Path:
    """``samples/digits-10-shot.zip``; entries carry a fixed date so a rebuild gives the same bytes."""
    out = root / SAMPLES / f"digits-{DIGIT_SHOTS}-shot.zip"
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for index in fewshot_indices(splits, DIGIT_SHOTS, SAMPLE_SEED):
            buffer = io.BytesIO()
            digit_image(splits.images[index]).resize((32, 32), resample=2).save(buffer, format="PNG")
            entry = zipfile.ZipInfo(
                f"{int(splits.labels[index])}/{int(index):04d}.png", date_time=(2026, 1, 1, 0, 0, 0)
            )
            archive.writestr(entry, buffer.getvalue())
    return out


def write_folio_sample(root: Path, adapt: dict[str, str]) -> Path:
    """``samples/folio-<play>.txt``: the first ``FOLIO_CHARS`` characters of a Folio play, cut at a line end."""
    if FOLIO_PLAY not in adapt:
        raise ValueError(f"{FOLIO_PLAY} is not among the Folio plays the adapters train on: {sorted(adapt)}")
    out = root / SAMPLES / f"folio-{FOLIO_PLAY.removesuffix('_gut_f')}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(adapt[FOLIO_PLAY][:FOLIO_CHARS].rsplit("\n", 1)[0] + "\n", encoding="utf-8")
    return out
