"""``python -m hora.assets build``: pretrain the two embedded bases, train their adapters, write cards.

Everything is regenerated from the data packages with fixed seeds and written atomically: the new tree
replaces ``--out`` only when the whole build succeeded (``hora.io.atomic_dir``). The stages are
``hora.assets.vision.build_vision`` and ``hora.assets.language.build_language``; the cards are
``hora.assets.cards``.
"""

from __future__ import annotations

import importlib
import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hora import cards as hora_cards
from hora.assets import adapters as adapter_stage
from hora.assets import cards
from hora.assets.common import (
    DIGITS_CREDIT,
    KEEP,
    LM_BASE,
    LM_TABLE,
    SHAKESPEARE_CREDIT,
    VISION_BASE,
    VISION_TABLE,
    mb,
)
from hora.assets.language import build_language
from hora.assets.vision import build_vision
from hora.io import atomic_dir


@dataclass
class Settings:
    """Training lengths; ``quick()`` is a smoke build of a few steps."""

    vit_epochs: int = 60
    lm_steps: int = 450
    vision: adapter_stage.Recipe = field(default_factory=lambda: adapter_stage.VISION_RECIPE)
    lm: adapter_stage.Recipe = field(default_factory=lambda: adapter_stage.LM_RECIPE)
    quick: bool = False
    real_lm_steps: int = 40  # the real bases' adapters (hora.assets.smollm, hora.assets.dino)
    real_vision_steps: int = 60

    @classmethod
    def smoke(cls) -> Settings:
        vision, lm = adapter_stage.quick(adapter_stage.VISION_RECIPE), adapter_stage.quick(adapter_stage.LM_RECIPE)
        return cls(2, 3, vision, lm, True, real_lm_steps=2, real_vision_steps=2)


TINY = (VISION_BASE, LM_BASE)  # trained from scratch by the builder; rebuilt together with the shared folders
REAL = {"smollm2-135m-instruct": "hora.assets.smollm:build_smollm", "dinov2-small": "hora.assets.dino:build_dino"}
BASES = (*TINY, *REAL)


def _log_to(log: Callable[[str], None]) -> Callable[[str], None]:
    start = time.perf_counter()
    return lambda message: log(f"[{time.perf_counter() - start:7.1f}s] {message}")


def build(
    out: str | os.PathLike = "assets",
    *,
    settings: Settings | None = None,
    bases: tuple[str, ...] = BASES,
    log: Callable[[str], None] = print,
) -> dict:
    """Rebuild the embedded assets of ``bases`` in ``out``; returns the manifest.

    The tiny bases are trained from scratch and rebuilt together (with the shared ``eval/``, ``examples/`` and
    ``samples/`` folders), the whole tree replaced in one rename; a real base's folder is replaced on its own. What
    is not rebuilt is kept as it was.
    """
    unknown = sorted(set(bases) - set(BASES))
    if unknown:
        raise ValueError(f"No asset family {unknown}; choose among {', '.join(BASES)}.")
    settings = settings or Settings()
    log = _log_to(log)
    _quiet()
    out = Path(out)
    started = time.perf_counter()
    if any(b in TINY for b in bases):
        _build_tiny(out, settings, log)
    for name in (b for b in bases if b in REAL):
        module, function = REAL[name].split(":")
        stage = getattr(importlib.import_module(module), function)
        with atomic_dir(out / name) as folder:
            stage(folder, settings, log)
    wall = time.perf_counter() - started
    facts = {f"build_{name}": build_facts(wall, settings, (name,)) for name in bases if name in REAL}
    if (out / cards.MANIFEST).is_file():
        manifest = cards.refresh_manifest(out, **facts)
    else:
        manifest = cards.write_manifest(out, facts)
    log(f"assets: {len(manifest['files'])} files, {mb(manifest['total_bytes'])}, built in {wall / 60:.1f} min")
    return manifest


def _build_tiny(out: Path, settings: Settings, log: Callable[[str], None]) -> None:
    """The two tiny bases, their adapters and the shared folders; everything else in ``out`` is carried over."""
    started = time.perf_counter()
    with atomic_dir(out) as tmp:
        results = {"vision": build_vision(tmp, settings, log), "language": build_language(tmp, settings, log)}
        kept = [p for p in out.iterdir() if p.name in (*KEEP, *REAL)] if out.is_dir() else []
        for folder in kept:
            shutil.copytree(folder, tmp / folder.name)
            log(f"kept {folder} from an earlier run")
        if (out / cards.MANIFEST).is_file():
            shutil.copy(out / cards.MANIFEST, tmp / cards.MANIFEST)
        write_index(tmp, results, time.perf_counter() - started, settings)
        cards.write_manifest(tmp, build_facts(time.perf_counter() - started, settings, TINY))


def _quiet() -> None:
    """No per-load progress bars or long-text warnings in the build log."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)


def build_facts(wall_seconds: float, settings: Settings, bases: tuple[str, ...] = BASES) -> dict[str, Any]:
    import peft
    import transformers

    return {
        "builder": f"python -m hora.assets build --bases {','.join(bases)}" + (" --quick" if settings.quick else ""),
        "quick": settings.quick,
        "build_seconds": round(wall_seconds, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
    }


def write_index(root: Path, results: dict, wall: float, settings: Settings) -> None:
    """``assets/README.md``: what is here, how it was made and the headline numbers."""
    vision, language = results["vision"], results["language"]
    body = f"""
# Embedded assets

Everything the app needs to run offline on a CPU, built by `python -m hora.assets build` (fixed seeds;
{wall / 60:.1f} minutes on this machine{", QUICK smoke build: not the real assets" if settings.quick else ""}). Every file's sha256 is in `manifest.json`.

| folder | what |
|---|---|
| `{VISION_BASE}/` | tiny ViT pretrained on handwritten digits 0-4 (+ `adapters/`: head, lora, hora, dora, doran) |
| `{LM_BASE}/` | tiny Llama + BPE tokenizer pretrained on Shakespeare in modern spelling (+ `adapters/`: lora, hora, dora, doran) |
| `eval/` | the held-out test data the cards' numbers are measured on |
| `examples/` | held-out digit images and a held-out Folio passage for the app |
| `screenshots/` | the app's tabs, as the browser tests see them (`python -m hora.assets screenshots`) |
| `samples/` | the Fine-tune tab's bundled samples: a 10-shot digit zip and a Folio play (training data, not held-out) |
| `bench/<base>/` | sample-efficiency benchmark of each base (`python -m hora.assets bench --base <base>`), when run |
| `smollm2-135m-instruct/` | adapters of the real SmolLM2-135M-Instruct (its weights stay in hora's cache), cards, sample (`--bases smollm2-135m-instruct`) |
| `dinov2-small/` | linear probe and adapters of the real DINOv2-small backbone, cards, examples, sample (`--bases dinov2-small`) |

## Digits: 10 shots per digit, all ten digits, 500 held-out images

{hora_cards.table(VISION_TABLE, cards.comparison_rows(vision["base"], vision["adapters"]))}

## Shakespeare: modern spelling -> First Folio spelling, held-out Macbeth and The Tempest

{hora_cards.table(LM_TABLE, cards.comparison_rows(language["base"], language["adapters"]))}

Data: {DIGITS_CREDIT} {SHAKESPEARE_CREDIT}
"""
    (root / "README.md").write_text(body.strip() + "\n", encoding="utf-8")
