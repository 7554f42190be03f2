"""Image uploads: class-folder zips and folders or a path,label CSV, decoded by a fixed set of PIL plugins under
pixel limits; and the batches the engine feeds a vision model."""

from __future__ import annotations

import io
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from hora.data.archive import _open_tree, _Tree
from hora.data.common import (
    _IMAGE_HINT,
    _PIL_FORMATS,
    IMAGE_SUFFIXES,
    DataError,
    DataLimits,
    ImageClassificationData,
    _classes,
    _is_image,
    _nfc,
    _read_file,
    _size,
    _unsafe_reason,
    _upload,
)
from hora.data.tables import _csv_rows


@contextmanager
def _pil_guard(limits: DataLimits) -> Iterator[None]:
    """PIL's own decompression-bomb limit set to ours while loading, its warning turned into an error."""
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = limits.max_image_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB, whatever the mode: transparency composited on white, 16-bit and float scaled to 8 bits."""
    if img.mode == "RGB" and "transparency" not in img.info:
        return img
    if img.mode.startswith("I") or img.mode == "F":
        # PIL's own conversion clips 16-bit values at 255 (a white image); scale by the range instead.
        arr = np.asarray(img, dtype=np.float64)
        top = float(arr.max()) if arr.size else 0.0
        if img.mode.startswith("I;16") or (img.mode == "I" and top > 255):
            arr = arr / 257
        elif img.mode == "F" and top <= 1.0:
            arr = arr * 255
        img = Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def _decode_image(data: bytes, source: str, limits: DataLimits) -> Image.Image:
    """A fully decoded RGB image, or a DataError naming the file."""
    try:
        with Image.open(io.BytesIO(data), formats=_PIL_FORMATS) as img:
            img.verify()  # structure and checksums, before any pixel is decoded
        with Image.open(io.BytesIO(data), formats=_PIL_FORMATS) as img:
            img.load()
            return _to_rgb(ImageOps.exif_transpose(img))  # a copy: phone photos stored sideways are turned upright
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        # Image.open checks the header's size against our limit (see _pil_guard) before decoding any pixel.
        raise DataError(
            f"{source} has more than {limits.max_image_pixels:,} pixels, the limit per image. Resize it."
        ) from err
    except Exception as err:  # PIL plugins raise many types (OSError, SyntaxError, struct.error...) on bad data
        raise DataError(
            f"{source} is not a readable image ({type(err).__name__}: {err}). Accepted: {', '.join(IMAGE_SUFFIXES)}."
        ) from err


def _decode_images(items: Iterator[tuple[str, bytes]], limits: DataLimits, source: str) -> list[Image.Image]:
    images, pixels = [], 0
    with _pil_guard(limits):
        for name, data in items:
            images.append(_decode_image(data, name, limits))
            pixels += images[-1].width * images[-1].height
            if pixels > limits.max_total_pixels:
                raise DataError(
                    f"{source}: the images hold more than {limits.max_total_pixels:,} pixels in all, the limit. "
                    "Upload fewer or smaller images."
                )
    return images


def _images_from_tree(tree: _Tree) -> ImageClassificationData:
    per_class: dict[str, list[str]] = {_nfc(d.split("/")[0]): [] for d in tree.dirs}
    for name in sorted(tree.files):
        folder, nested, _ = name.partition("/")
        if not nested:
            if _is_image(name):
                raise DataError(
                    f"{tree.where(name)} is not inside a class folder; put each image in a folder named after its "
                    f"class, e.g. cat/{name}."
                )
            continue  # a README or licence beside the class folders
        if not _is_image(name):
            raise DataError(f"{tree.where(name)} is not an image; accepted types: {', '.join(IMAGE_SUFFIXES)}.")
        per_class.setdefault(_nfc(folder), []).append(name)
    classes = _classes({c: len(v) for c, v in per_class.items()}, tree.source, "image")
    names = [n for c in classes for n in per_class[c]]
    labels = [i for i, c in enumerate(classes) for _ in per_class[c]]
    images = _decode_images(((tree.where(n), tree.read(n)) for n in names), tree.limits, tree.source)
    return ImageClassificationData(images, labels, classes, names)


def _images_from_csv(path: Path, limits: DataLimits) -> ImageClassificationData:
    rows = _csv_rows(path, ("path", "label"), limits)
    if len(rows) > limits.max_files:
        raise DataError(f"{path.name} lists {len(rows):,} images; the limit is {limits.max_files:,}.")
    root = path.parent.resolve()
    names, label_names, files = [], [], []
    for line, row in rows:
        rel, label = row["path"].strip().replace("\\", "/"), _nfc(row["label"])
        where = f"line {line} of {path.name}"
        if not rel:
            raise DataError(f"{where} has an empty path.")
        if not label:
            raise DataError(f"{where} ({rel}) has an empty label; every image needs one.")
        reason = _unsafe_reason(rel)
        if reason:
            raise DataError(f"{where}: the path {rel!r} {reason}; paths must stay inside the CSV's folder.")
        file = root
        for part in Path(rel).parts:
            file = file / part
            if file.is_symlink():  # any link could lead out of the CSV's folder
                raise DataError(f"{where}: {rel!r} goes through a symbolic link; links are not followed.")
        if not _is_image(rel):
            raise DataError(f"{where}: {rel!r} is not an image; accepted types: {', '.join(IMAGE_SUFFIXES)}.")
        names.append(rel)
        label_names.append(label)
        files.append(file)
    classes = _classes(Counter(label_names), path.name, "image")
    index = {c: i for i, c in enumerate(classes)}
    total = 0

    def read(name: str, file: Path) -> bytes:
        nonlocal total
        data = _read_file(file, f"{name} (listed in {path.name})", limits.max_file_bytes)
        total += len(data)
        if total > limits.max_total_bytes:
            raise DataError(f"the images of {path.name} hold more than {_size(limits.max_total_bytes)}, the limit.")
        if not data:
            raise DataError(f"{name} (listed in {path.name}) is empty.")
        return data

    images = _decode_images(((n, read(n, f)) for n, f in zip(names, files)), limits, path.name)
    return ImageClassificationData(images, [index[c] for c in label_names], classes, names)


def load_image_classification(path: str | Path, limits: DataLimits | None = None) -> ImageClassificationData:
    """Images and labels from a zip or folder of class folders, or a CSV with ``path,label`` columns.

    Class names are the folder names (or CSV labels), sorted (numerically when all are integers); ``labels``
    index into them. Every image is decoded now, converted to RGB, and kept in memory.
    """
    limits = limits or DataLimits()
    path = _upload(path)
    suffix = path.suffix.lower()
    if suffix == ".csv" and path.is_file():
        return _images_from_csv(path, limits)
    if path.is_dir() or suffix == ".zip":
        with _open_tree(path, limits) as tree:
            return _images_from_tree(tree)
    raise DataError(f"{path.name}: unsupported file type {suffix or '(none)'!r} for images; upload {_IMAGE_HINT}.")


def image_batch(
    images: Sequence[Image.Image], image_size: int, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """Float32 ``(N, 3, image_size, image_size)``: RGB, resized (bilinear), scaled to [0, 1], then normalised as
    ``(x - mean) / std`` per channel."""
    if image_size < 1:
        raise DataError(f"image_size must be at least 1, not {image_size}.")
    if len(mean) != 3 or len(std) != 3 or not all(std):
        raise DataError(f"mean and std need 3 values each (R, G, B), std non-zero; got {list(mean)}, {list(std)}.")
    size = (image_size, image_size)
    # One float buffer filled image by image: no uint8 stack, and numpy's transposing copy is the fast one.
    batch = np.empty((len(images), 3, image_size, image_size), dtype=np.float32)
    for i, img in enumerate(images):
        batch[i] = np.asarray(_to_rgb(img).resize(size, Image.Resampling.BILINEAR)).transpose(2, 0, 1)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return torch.from_numpy(batch).div_(255).sub_(mean_t).div_(std_t)
