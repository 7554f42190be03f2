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
from PIL import Image

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


_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2}  # PIL's decoded bytes per pixel; else 4
_EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def decoded_bytes(img: Image.Image) -> int:
    """Bytes PIL needs to decode ``img`` (width × height × its bytes per pixel), known from the header alone."""
    return img.width * img.height * _MODE_BYTES.get(img.mode, 4)


def _shrink(img: Image.Image, side: int) -> Image.Image:
    """``img`` with its long side at most ``side``: a box-filter ``reduce`` in its own mode, right after decoding."""
    if max(img.size) <= side:
        return img
    if img.mode == "1":
        img = img.convert("L")  # reduce() averages grey levels; one-bit pixels cannot be averaged
    elif img.mode in ("P", "PA"):
        img = img.convert("RGBA")  # a palette cannot be averaged either
    factor = -(-max(img.size) // side)  # ceil: the result fits within `side`
    try:
        return img.reduce(factor)
    except ValueError:  # a mode reduce() does not support: a resampling resize instead
        size = (max(1, img.width // factor), max(1, img.height // factor))
        return img.resize(size, Image.Resampling.BOX)


def _open_checked(data: bytes, source: str, limits: DataLimits) -> Image.Image:
    """The image, opened (header read, nothing decoded) and checked against the per-image limits."""
    with Image.open(io.BytesIO(data), formats=_PIL_FORMATS) as img:
        img.verify()  # structure and checksums, before any pixel is decoded
    img = Image.open(io.BytesIO(data), formats=_PIL_FORMATS)
    if img.width * img.height > limits.max_image_pixels:  # also caught by PIL under _pil_guard; here for any caller
        raise Image.DecompressionBombError(f"{img.width}x{img.height}")
    return img


def _decode_image(data: bytes, source: str, limits: DataLimits) -> Image.Image:
    """A decoded RGB image at most ``limits.max_image_side`` on its long side, or a DataError naming the file.

    The header's size and mode are checked before decoding; JPEGs are decoded at a reduced scale (``draft``) and
    every other format is reduced right after decoding, so one image never holds more than its decoded size once.
    """
    try:
        img = _open_checked(data, source, limits)
        with img:
            if img.format == "JPEG" and max(img.size) > limits.max_image_side:
                img.draft(None, (limits.max_image_side, limits.max_image_side))  # DCT scaling: less to decode
            img.load()
            turn = _EXIF_TRANSPOSE.get(img.getexif().get(0x0112))  # phone photos stored sideways
            small = _shrink(img, limits.max_image_side)
            small = small.transpose(turn) if turn is not None else small
            return _to_rgb(small) if small is not img else _to_rgb(img.copy())
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        # Image.open checks the header's size against our limit (see _pil_guard) before decoding any pixel.
        raise DataError(
            f"{source} has more than {limits.max_image_pixels:,} pixels, the limit per image. Resize it."
        ) from err
    except Exception as err:  # PIL plugins raise many types (OSError, SyntaxError, struct.error...) on bad data
        raise DataError(
            f"{source} is not a readable image ({type(err).__name__}: {err}). Accepted: {', '.join(IMAGE_SUFFIXES)}."
        ) from err


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(pixels, decoded bytes) from the header alone, or None when the header cannot be read (decoding says why)."""
    try:
        with Image.open(io.BytesIO(data), formats=_PIL_FORMATS) as img:
            return img.width * img.height, decoded_bytes(img)
    except Exception:  # noqa: BLE001 - the decode that follows raises the DataError naming the problem
        return None


def _decode_images(items: Iterator[tuple[str, bytes]], limits: DataLimits, source: str) -> list[Image.Image]:
    """Decode every image within the budgets: pixels in all (decoding work, from the headers, before decoding) and
    bytes kept in memory (after each image is reduced to ``max_image_side``)."""
    images, pixels, kept = [], 0, 0
    with _pil_guard(limits):
        for name, data in items:
            size = _header_size(data)
            pixels += size[0] if size else 0
            if pixels > limits.max_total_pixels:
                raise DataError(
                    f"{source}: the images hold more than {limits.max_total_pixels:,} pixels in all, the limit "
                    f"(at {name}, {size[1] / 2**20:,.0f} MB once decoded). Upload fewer or smaller images."
                )
            images.append(_decode_image(data, name, limits))
            kept += images[-1].width * images[-1].height * 3
            if kept > limits.max_decoded_bytes:
                raise DataError(
                    f"{source}: the images take more than {limits.max_decoded_bytes / 2**20:,.0f} MB decoded (even "
                    f"reduced to {limits.max_image_side} pixels a side), the limit. Upload fewer images."
                )
    return images


def load_image(path: str | Path, limits: DataLimits | None = None) -> Image.Image:
    """One image file (an upload to classify, say) decoded like a dataset's: a fixed set of formats, the header
    checked before decoding, reduced to ``limits.max_image_side``, RGB. Refusals are ``DataError``."""
    limits = limits or DataLimits()
    path = _upload(path)
    data = _read_file(path, path.name, limits.max_file_bytes)
    with _pil_guard(limits):
        return _decode_image(data, path.name, limits)


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
