"""``python -m hora.assets build``: pretrain the two embedded bases, train their adapters, write cards.

Everything is regenerated from the data packages with fixed seeds and written atomically: the new tree
replaces ``--out`` only when the whole build succeeded (``hora.io.atomic_dir``). The stages are
``hora.assets.vision.build_vision`` and ``hora.assets.language.build_language``; the cards are
``hora.assets.cards``.
"""

from __future__ import annotations

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

    @classmethod
    def smoke(cls) -> Settings:
        return cls(
            2, 3, adapter_stage.quick(adapter_stage.VISION_RECIPE), adapter_stage.quick(adapter_stage.LM_RECIPE), True
        )


def _log_to(log: Callable[[str], None]) -> Callable[[str], None]:
    start = time.perf_counter()
    return lambda message: log(f"[{time.perf_counter() - start:7.1f}s] {message}")


def build(
    out: str | os.PathLike = "assets", *, settings: Settings | None = None, log: Callable[[str], None] = print
) -> dict:
    """Rebuild every embedded asset into ``out``; returns the manifest."""
    settings = settings or Settings()
    log = _log_to(log)
    _quiet()
    out = Path(out)
    started = time.perf_counter()
    with atomic_dir(out) as tmp:
        results = {"vision": build_vision(tmp, settings, log), "language": build_language(tmp, settings, log)}
        for name in KEEP:
            if (out / name).is_dir():
                shutil.copytree(out / name, tmp / name)
                log(f"kept {out / name} from an earlier run (refresh it with `python -m hora.assets bench`)")
        wall = time.perf_counter() - started
        write_index(tmp, results, wall, settings)
        manifest = cards.write_manifest(tmp, build_facts(wall, settings))
        log(f"assets: {len(manifest['files'])} files, {mb(manifest['total_bytes'])}, built in {wall / 60:.1f} min")
    return manifest


def _quiet() -> None:
    """No per-load progress bars or long-text warnings in the build log."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)


def build_facts(wall_seconds: float, settings: Settings) -> dict[str, Any]:
    import peft
    import transformers

    return {
        "builder": "python -m hora.assets build" + (" --quick" if settings.quick else ""),
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

## Digits: 10 shots per digit, all ten digits, 500 held-out images

{hora_cards.table(VISION_TABLE, cards.comparison_rows(vision["base"], vision["adapters"]))}

## Shakespeare: modern spelling -> First Folio spelling, held-out Macbeth and The Tempest

{hora_cards.table(LM_TABLE, cards.comparison_rows(language["base"], language["adapters"]))}

Data: {DIGITS_CREDIT} {SHAKESPEARE_CREDIT}
"""
    (root / "README.md").write_text(body.strip() + "\n", encoding="utf-8")
