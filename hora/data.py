"""Datasets for few-shot training, loaded from uploaded files.

    >>> from hora.data import load_data, few_shot_split
    >>> data = load_data("pets.zip")                     # cat/001.png, dog/xyz.jpg, ...
    >>> split = few_shot_split(data.labels, shots=4, seed=0)

Accepted uploads:

- images: a ``.zip`` or folder in class-folder layout (``cat/001.png``; one wrapper folder around the class
  folders is stripped), or a ``.csv`` with ``path,label`` columns (paths relative to the CSV's folder);
- text classification: a ``.csv`` or ``.jsonl`` with a text and a label column;
- language modelling: a ``.txt`` (one document), a ``.jsonl`` with a text field, or a ``.zip``/folder of ``.txt``.

Uploads are untrusted. Nothing is ever extracted to disk: zip members are read into memory after their names,
types, sizes and compression ratios have been checked against ``DataLimits``; links are never followed; images are
decoded by a fixed set of PIL plugins under a pixel limit. Every refusal is a ``DataError`` (a ``ValueError``) whose
message names the file, column or class at fault and says what is expected.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import operator
import os
import re
import stat
import unicodedata
import warnings
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageOps


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# Only these PIL plugins may parse uploads: PIL would otherwise try every format it knows, some of which
# (EPS, via Ghostscript) run external programs. The JPEG opener also reads MPO (multi-picture camera JPEGs).
_PIL_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")
_JUNK_NAMES = {"__MACOSX", "Thumbs.db", "desktop.ini"}
# A high ratio only means a bomb when the bytes are many: small blank images and repeated text compress 1000x.
_RATIO_FLOOR = 1 << 20
_IMAGE_HINT = "a .zip or folder of class folders (cat/001.png, dog/002.jpg) or a .csv with path,label columns"
_TEXT_HINT = "a .csv or .jsonl with a text and a label column"
_LM_HINT = "a .txt file, a .jsonl with a text field, or a .zip or folder of .txt files"


class DataError(ValueError):
    """An upload that cannot be used as a dataset; the message names what is wrong and what is expected."""


@dataclass
class DataLimits:
    """Upper bounds on an upload, against zip bombs, decompression bombs and runaway memory."""

    max_files: int = 20_000  # entries in a zip / files and folders in a folder / rows of an image CSV
    max_total_bytes: int = 512 * 2**20  # total uncompressed bytes of a zip / folder
    max_file_bytes: int = 64 * 2**20  # one file (csv/jsonl/txt/image)
    max_compression_ratio: float = 200.0  # per zip entry and overall: uncompressed/compressed; above = zip bomb
    max_text_chars: int = 20_000_000  # total characters of a text dataset
    max_image_pixels: int = 40_000_000  # per image (decompression bomb guard; also PIL's limit while loading)
    # All images are kept decoded in memory (3 bytes a pixel), and small PNGs can hold huge flat images.
    max_total_pixels: int = 1_000_000_000


@dataclass
class ImageClassificationData:
    """Decoded RGB images with their class indices; ``names`` are the images' relative file names."""

    images: list[Image.Image]
    labels: list[int]
    classes: list[str]
    names: list[str]


@dataclass
class TextClassificationData:
    """Texts with their class indices into ``classes``."""

    texts: list[str]
    labels: list[int]
    classes: list[str]


@dataclass
class LanguageModelingData:
    """Documents for causal language modelling."""

    texts: list[str]


# ---------------------------------------------------------------------------------------------- small helpers


def _size(n: float) -> str:
    if n < 1024:
        return f"{int(n)} bytes"
    return f"{n / 1024:.1f} KB" if n < 2**20 else f"{n / 2**20:.1f} MB"


def _nfc(text: str) -> str:
    # macOS writes folder names decomposed (NFD): "café" from a zip must equal "café" typed in a CSV.
    return unicodedata.normalize("NFC", text.strip())


def _is_junk(part: str) -> bool:
    return part in _JUNK_NAMES or part.startswith(".")


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def _unsafe_reason(name: str) -> str | None:
    """Why a relative path from an upload could point outside it, or None when it cannot."""
    if name.startswith(("/", "\\")):
        return "is an absolute path"
    if re.match(r"^[A-Za-z]:", name):
        return "starts with a drive letter"
    if ".." in re.split(r"[/\\]", name):
        return "contains '..'"
    return None


def _sorted_classes(names: set[str]) -> list[str]:
    # Integer labels sort as numbers, so that label "10" does not come before "2".
    if all(re.fullmatch(r"-?[0-9]+", n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


def _classes(counts: dict[str, int], source: str, what: str) -> list[str]:
    """Check the examples per class and return the sorted class names."""
    if not any(counts.values()):
        raise DataError(f"{source} has no {what}s.")
    empty = sorted(c for c, n in counts.items() if n == 0)
    if empty:
        raise DataError(
            f"{source}: class folder(s) {', '.join(map(repr, empty))} have no {what}s; every label needs examples. "
            "Add some or remove the folder."
        )
    if len(counts) < 2:
        raise DataError(f"{source} has only one class ({next(iter(counts))!r}); a classifier needs at least two.")
    return _sorted_classes(set(counts))


def _check_chars(total: int, source: str, limits: DataLimits) -> None:
    if total > limits.max_text_chars:
        raise DataError(
            f"{source} holds more than {limits.max_text_chars:,} characters of text (the limit); upload less text."
        )


def _decode(data: bytes, source: str) -> str:
    """Text from bytes: UTF-8 (BOM or not), UTF-16 with a BOM, else cp1252/latin-1 as Excel writes them."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # Excel's "Unicode text"
        text = data.decode("utf-16", errors="replace")
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            try:
                text = data.decode("cp1252")  # what Excel on Windows saves as CSV
            except UnicodeDecodeError:
                text = data.decode("latin-1")  # never fails: every byte is a character
    if not text.strip():
        raise DataError(f"{source} is empty.")
    return text


def _read_file(path: Path, source: str, max_bytes: int) -> bytes:
    """The bytes of one regular file, never through a link, never more than ``max_bytes``."""
    # O_NOFOLLOW: a link swapped in after listing is still refused; O_NONBLOCK: a FIFO cannot hang the open.
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError as err:
        raise DataError(f"{source} does not exist.") from err
    except OSError as err:
        if path.is_symlink():
            raise DataError(f"{source} is a symbolic link; links are not followed, upload the file itself.") from err
        raise DataError(f"{source} could not be opened ({err.strerror}).") from err
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise DataError(f"{source} is not a regular file.")
        data = f.read(max_bytes + 1)  # the size on disk may change; count what is really read
    if len(data) > max_bytes:
        raise DataError(f"{source} is larger than {_size(max_bytes)}, the limit for one file.")
    return data


def _upload(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist.")
    return path


# ------------------------------------------------------------------------------------------ zips and folders


@dataclass
class _Tree:
    """The files of an uploaded zip or folder, OS junk left out, read into memory on demand within the limits."""

    source: str  # the upload's name, for messages
    files: dict[str, int]  # relative posix name -> size (declared, for a zip)
    dirs: set[str]
    opener: Callable[[str, int], bytes]  # (original name, max bytes) -> bytes
    limits: DataLimits
    prefix: str = ""  # the stripped wrapper folder
    read_bytes: int = 0

    def where(self, name: str) -> str:
        return f"{self.prefix}{name} in {self.source}"

    def read(self, name: str) -> bytes:
        """The bytes of one file; real bytes are counted, since a zip's declared sizes can lie."""
        budget = self.limits.max_total_bytes - self.read_bytes
        data = self.opener(self.prefix + name, min(self.limits.max_file_bytes, budget))
        self.read_bytes += len(data)
        if len(data) > self.limits.max_file_bytes:
            raise DataError(f"{self.where(name)} is larger than {_size(self.limits.max_file_bytes)}, the file limit.")
        if self.read_bytes > self.limits.max_total_bytes:
            raise DataError(f"{self.source} holds more than {_size(self.limits.max_total_bytes)} of data, the limit.")
        if not data:
            raise DataError(f"{self.where(name)} is empty.")
        return data

    def strip_wrapper(self) -> None:
        """Drop one folder that holds everything else (data/cat/1.png -> cat/1.png)."""
        tops = {n.split("/")[0] for n in [*self.files, *self.dirs]}
        nested = all("/" in n for n in self.files) and any(n.count("/") >= 2 for n in [*self.files, *self.dirs])
        if len(tops) == 1 and nested:
            self.prefix = f"{tops.pop()}/"
            cut = len(self.prefix)
            self.files = {n[cut:]: s for n, s in self.files.items()}
            self.dirs = {d[cut:] for d in self.dirs if d.startswith(self.prefix)}


def _zip_name(info: zipfile.ZipInfo) -> str:
    name = info.filename
    if not info.flag_bits & 0x800:
        # No UTF-8 flag: zipfile decoded the name as cp437, but many tools write UTF-8 without saying so.
        try:
            name = name.encode("cp437").decode("utf-8")
        except UnicodeError:
            pass
    return name


def _check_zip_entries(zf: zipfile.ZipFile, source: str, limits: DataLimits, archive_bytes: int) -> _Tree:
    """Check every entry's name, type, size and ratio from the zip directory, before reading anything."""
    infos = zf.infolist()
    if len(infos) > limits.max_files:
        raise DataError(f"{source} has {len(infos):,} entries; the limit is {limits.max_files:,}.")
    files: dict[str, int] = {}
    dirs: set[str] = set()
    members: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        name = _zip_name(info)
        reason = _unsafe_reason(name)
        if reason:
            raise DataError(f"{source} is refused: the entry {name!r} {reason}. Zip the folder itself, not a path.")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise DataError(f"{source} is refused: {name!r} is a symbolic link. Zip the files themselves.")
        parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
        junk = next((i for i, p in enumerate(parts) if _is_junk(p)), None)
        # Folders are listed even when they only hold junk, as in a folder upload: fish/.DS_Store is an empty class.
        kept = (parts if info.is_dir() else parts[:-1])[:junk]  # the folders above the first junk part
        dirs.update("/".join(kept[:i]) for i in range(1, len(kept) + 1))
        if not parts or junk is not None or info.is_dir():
            continue
        name = "/".join(parts)
        if info.flag_bits & 0x1:
            raise DataError(f"{name} in {source} is password-protected; upload a zip without a password.")
        if info.file_size > limits.max_file_bytes:
            limit = _size(limits.max_file_bytes)
            raise DataError(f"{name} in {source} is {_size(info.file_size)}; the limit for one file is {limit}.")
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > _RATIO_FLOOR and ratio > limits.max_compression_ratio:
            raise DataError(
                f"{name} in {source} expands {ratio:.0f}x (the limit is {limits.max_compression_ratio:.0f}x); "
                "this looks like a zip bomb and is refused."
            )
        total += info.file_size
        files[name] = info.file_size
        members[name] = info
    if total > limits.max_total_bytes:
        raise DataError(
            f"{source} unpacks to {_size(total)}; the limit is {_size(limits.max_total_bytes)}. Upload fewer files."
        )
    if total > _RATIO_FLOOR and total / max(archive_bytes, 1) > limits.max_compression_ratio:
        raise DataError(
            f"{source} expands {total / max(archive_bytes, 1):.0f}x (the limit is "
            f"{limits.max_compression_ratio:.0f}x); this looks like a zip bomb and is refused."
        )

    def opener(name: str, max_bytes: int) -> bytes:
        try:
            with zf.open(members[name]) as f:
                return f.read(max_bytes + 1)
        except Exception as err:  # zipfile, zlib, bz2 and lzma raise many types on damaged data
            raise DataError(f"{name} in {source} could not be unpacked ({err}); the zip may be damaged.") from err

    return _Tree(source, files, dirs, opener, limits)


def _walk_folder(root: Path, limits: DataLimits) -> _Tree:
    """List a folder without following links; refuse links, special files and anything over the limits."""
    files: dict[str, int] = {}
    dirs: set[str] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):  # followlinks=False: a linked folder is listed, not entered
        dirnames[:] = sorted(d for d in dirnames if not _is_junk(d))
        here = Path(dirpath)
        for name in [*dirnames, *filenames]:
            if _is_junk(name):
                continue
            rel = (here / name).relative_to(root).as_posix()
            st = os.lstat(here / name)
            if stat.S_ISLNK(st.st_mode):
                raise DataError(
                    f"{rel} in {root.name} is a symbolic link; links are not followed. Copy the files themselves."
                )
            if stat.S_ISDIR(st.st_mode):
                dirs.add(rel)
            elif stat.S_ISREG(st.st_mode):
                if st.st_size > limits.max_file_bytes:
                    limit = _size(limits.max_file_bytes)
                    raise DataError(f"{rel} in {root.name} is {_size(st.st_size)}; the limit for one file is {limit}.")
                files[rel] = st.st_size
                total += st.st_size
            else:
                raise DataError(f"{rel} in {root.name} is not a regular file or folder.")
            if len(files) + len(dirs) > limits.max_files:
                raise DataError(f"{root.name} has more than {limits.max_files:,} files and folders, the limit.")
            if total > limits.max_total_bytes:
                raise DataError(f"{root.name} holds more than {_size(limits.max_total_bytes)}, the limit.")

    def opener(name: str, max_bytes: int) -> bytes:
        return _read_file(root / name, f"{name} in {root.name}", max_bytes)

    return _Tree(root.name, files, dirs, opener, limits)


@contextmanager
def _open_tree(path: Path, limits: DataLimits) -> Iterator[_Tree]:
    """The files of a zip or folder, with one wrapper folder stripped."""
    if path.is_dir():
        tree = _walk_folder(path, limits)
        tree.strip_wrapper()
        yield tree
        return
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise DataError(f"{path.name} is not a valid zip file ({err}).") from err
    with zf:
        tree = _check_zip_entries(zf, path.name, limits, path.stat().st_size)
        tree.strip_wrapper()
        yield tree


# --------------------------------------------------------------------------------------------------- images


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


# ----------------------------------------------------------------------------------------------------- text


def _csv_rows(path: Path, needed: Sequence[str], limits: DataLimits) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) for every non-blank row of a CSV that has the ``needed`` columns."""
    text = _decode(_read_file(path, path.name, limits.max_file_bytes), path.name)
    header = text.split("\n", 1)[0]
    delimiter = max(",;\t", key=header.count)  # Excel writes ';' in many locales
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    old_limit = csv.field_size_limit(limits.max_file_bytes)  # the default (128 KB) would refuse long texts
    try:
        columns = [c.strip() for c in next(reader, [])]
        missing = [c for c in needed if c not in columns]
        if missing:
            found = ", ".join(repr(c) for c in columns if c) or "none"
            raise DataError(
                f"{path.name} has no {' or '.join(map(repr, missing))} column; columns found: {found}. "
                "The first line must name the columns."
            )
        at = {c: columns.index(c) for c in needed}
        rows = []
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue  # blank lines and rows of empty cells, as spreadsheets export them
            rows.append((reader.line_num, {c: cells[i] if i < len(cells) else "" for c, i in at.items()}))
    except csv.Error as err:
        raise DataError(f"line {reader.line_num} of {path.name} is not valid CSV ({err}).") from err
    finally:
        csv.field_size_limit(old_limit)
    if not rows:
        raise DataError(f"{path.name} has no rows below its header.")
    return rows


def _jsonl_records(path: Path, needed: Sequence[str], limits: DataLimits) -> list[tuple[int, dict[str, Any]]]:
    """(line number, record) for every non-blank line of a JSONL file, each an object with the ``needed`` keys."""
    text = _decode(_read_file(path, path.name, limits.max_file_bytes), path.name)
    records = []
    # Split on newlines only: str.splitlines() would also split at U+2028, which JSON strings may hold raw.
    for line, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except (ValueError, RecursionError) as err:
            raise DataError(
                f"line {line} of {path.name} is not valid JSON ({err}); each line must be one object."
            ) from err
        if not isinstance(record, dict):
            raise DataError(f"line {line} of {path.name} is not a JSON object ({{...}}); each line must be one.")
        missing = [c for c in needed if c not in record]
        if missing:
            found = ", ".join(map(repr, record)) or "none"
            raise DataError(
                f"line {line} of {path.name} has no {' or '.join(map(repr, missing))} field; fields found: {found}."
            )
        records.append((line, record))
    if not records:
        raise DataError(f"{path.name} has no records.")
    return records


def _text_value(value: Any, where: str, what: str) -> str:
    """A non-empty string from a CSV cell or a JSON string, number or boolean."""
    if isinstance(value, (bool, int, float)):
        value = json.dumps(value)
    if not isinstance(value, str):
        raise DataError(f"{where}: the {what} must be a string, not {type(value).__name__}.")
    if not value.strip():
        raise DataError(f"{where} has an empty {what}.")
    return value


def load_text_classification(
    path: str | Path, text_column: str = "text", label_column: str = "label", limits: DataLimits | None = None
) -> TextClassificationData:
    """Texts and labels from a ``.csv`` (UTF-8, or cp1252/latin-1 as Excel saves it) or a ``.jsonl`` file.

    Labels may be any Unicode strings (or JSON numbers); ``classes`` are the distinct labels, sorted
    (numerically when all are integers).
    """
    limits = limits or DataLimits()
    path = _upload(path)
    suffix = path.suffix.lower()
    needed = (text_column, label_column)
    rows: list[tuple[int, dict[str, Any]]]
    if suffix == ".csv":
        rows = _csv_rows(path, needed, limits)
    elif suffix == ".jsonl":
        rows = _jsonl_records(path, needed, limits)
    else:
        raise DataError(f"{path.name}: unsupported file type {suffix or '(none)'!r} for text; upload {_TEXT_HINT}.")
    texts, label_names = [], []
    for line, row in rows:
        where = f"line {line} of {path.name}"
        texts.append(_text_value(row[text_column], where, f"text ({text_column!r})"))
        label_names.append(_nfc(_text_value(row[label_column], where, f"label ({label_column!r})")))
    _check_chars(sum(map(len, texts)), path.name, limits)
    classes = _classes(Counter(label_names), path.name, "text")
    index = {c: i for i, c in enumerate(classes)}
    return TextClassificationData(texts, [index[c] for c in label_names], classes)


def load_language_modeling(
    path: str | Path, text_field: str = "text", limits: DataLimits | None = None
) -> LanguageModelingData:
    """Documents from a ``.txt`` (one document), a ``.jsonl`` (one per line, in ``text_field``), or a ``.zip`` or
    folder of ``.txt`` files (one document each, in file-name order)."""
    limits = limits or DataLimits()
    path = _upload(path)
    suffix = path.suffix.lower()
    if path.is_dir() or suffix == ".zip":
        texts, chars = [], 0
        with _open_tree(path, limits) as tree:
            for name in sorted(tree.files):
                if not name.lower().endswith(".txt"):
                    raise DataError(f"{tree.where(name)} is not a .txt file; upload {_LM_HINT}.")
                texts.append(_decode(tree.read(name), tree.where(name)))
                chars += len(texts[-1])
                _check_chars(chars, path.name, limits)  # as we go: a folder can hold far more than the limit
        if not texts:
            raise DataError(f"{path.name} has no .txt files; upload {_LM_HINT}.")
    elif suffix == ".txt":
        texts = [_decode(_read_file(path, path.name, limits.max_file_bytes), path.name)]
    elif suffix == ".jsonl":
        texts = [
            _text_value(r[text_field], f"line {line} of {path.name}", f"text ({text_field!r})")
            for line, r in _jsonl_records(path, (text_field,), limits)
        ]
    else:
        raise DataError(f"{path.name}: unsupported file type {suffix or '(none)'!r}; upload {_LM_HINT}.")
    _check_chars(sum(map(len, texts)), path.name, limits)
    return LanguageModelingData(texts)


def detect_task(
    path: str | Path, text_column: str = "text", label_column: str = "label", limits: DataLimits | None = None
) -> Literal["image", "text", "lm"]:
    """The task ``load_data(path)`` would load: ``"image"``, ``"text"`` (classification) or ``"lm"``.

    It reads names and headers only, with the same refusals (``DataError``) as ``load_data``.
    """
    return _detect_task(_upload(path), text_column, label_column, limits or DataLimits())


def _detect_task(path: Path, text_column: str, label_column: str, limits: DataLimits) -> str:
    suffix = path.suffix.lower()
    if path.is_dir() or suffix == ".zip":
        with _open_tree(path, limits) as tree:
            names = [n.lower() for n in tree.files]
        if any(map(_is_image, names)):
            return "image"
        if names and all(n.endswith(".txt") for n in names):
            return "lm"
        raise DataError(f"{path.name} holds neither images nor .txt files; upload {_IMAGE_HINT}, or {_LM_HINT}.")
    if suffix == ".csv":
        text = _decode(_read_file(path, path.name, limits.max_file_bytes), path.name)
        header = {c.strip() for c in re.split(r"[,;\t]", text.split("\n", 1)[0])}
        return "image" if {"path", "label"} <= header and text_column not in header else "text"
    if suffix == ".jsonl":
        first = _jsonl_records(path, (), limits)[0][1]
        return "text" if label_column in first else "lm"
    if suffix == ".txt":
        return "lm"
    raise DataError(
        f"{path.name}: unsupported file type {suffix or '(none)'!r}. Accepted: .zip or folder (images or .txt), "
        ".csv, .jsonl, .txt."
    )


def load_data(
    path: str | Path, task: Literal["auto", "image", "text", "lm"] = "auto", **kwargs: Any
) -> ImageClassificationData | TextClassificationData | LanguageModelingData:
    """Load an upload as the given task, or guess it (``"auto"``).

    Auto: a zip or folder of images, or a CSV with ``path`` and ``label`` columns, is image classification; a CSV
    or JSONL with a label is text classification; a ``.txt``, a JSONL without a label, or a zip/folder of ``.txt``
    is language modelling. ``kwargs`` are ``limits``, ``text_column``, ``label_column`` and ``text_field``
    (which defaults to ``text_column``); each loader gets those it takes.
    """
    unknown = set(kwargs) - {"limits", "text_column", "label_column", "text_field"}
    if unknown:
        raise TypeError(f"load_data() got unexpected keyword arguments: {', '.join(sorted(unknown))}")
    limits = kwargs.get("limits") or DataLimits()
    text_column = kwargs.get("text_column", "text")
    label_column = kwargs.get("label_column", "label")
    path = _upload(path)
    if task == "auto":
        task = _detect_task(path, text_column, label_column, limits)
    if task == "image":
        return load_image_classification(path, limits)
    if task == "text":
        return load_text_classification(path, text_column, label_column, limits)
    if task == "lm":
        return load_language_modeling(path, kwargs.get("text_field", text_column), limits)
    raise DataError(f"Unknown task {task!r}; use 'auto', 'image', 'text' or 'lm'.")


# ------------------------------------------------------------------------------------------ splits and batches


@dataclass
class FewShotSplit:
    """Indices of the training shots and of the held-out examples, sorted, with what produced them."""

    train: list[int]
    eval: list[int]
    shots: int
    seed: int

    def to_dict(self) -> dict:
        """A JSON-serialisable record of the split, so a run can store and reproduce its exact indices."""
        return {  # int(): numpy integers are not JSON
            "train": [int(i) for i in self.train],
            "eval": [int(i) for i in self.eval],
            "shots": int(self.shots),
            "seed": int(self.seed),
        }

    @classmethod
    def from_dict(cls, record: dict) -> FewShotSplit:
        """The split recorded by ``to_dict``."""
        return cls(list(record["train"]), list(record["eval"]), int(record["shots"]), int(record["seed"]))


def few_shot_split(labels: Sequence[int], shots: int, seed: int, eval_per_class: int | None = None) -> FewShotSplit:
    """A stratified split: per class, ``shots`` examples to train on and the rest (at most ``eval_per_class``) to
    evaluate on.

    Each class is shuffled by its own generator, ``numpy.random.default_rng([seed, label])``, so the split is the
    same on every run and platform, one class's split does not depend on the others, and the eval examples for
    more shots are a subset of those for fewer.
    """
    if shots < 1:
        raise DataError(f"shots must be at least 1, not {shots}.")
    if seed < 0:
        raise DataError(f"seed must be a non-negative integer, not {seed}.")
    if eval_per_class is not None and eval_per_class < 0:
        raise DataError(f"eval_per_class must be at least 0, not {eval_per_class}.")
    if len(labels) == 0:
        raise DataError("There are no examples to split.")
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        label = operator.index(label)
        if label < 0:
            raise DataError(f"Label {label} at index {i} is negative; labels index into the classes.")
        by_class.setdefault(label, []).append(i)
    small = {c: len(ix) for c, ix in sorted(by_class.items()) if len(ix) < shots + 1}
    if small:
        detail = ", ".join(f"class {c} has {n}" for c, n in small.items())
        raise DataError(
            f"{shots}-shot training needs at least {shots + 1} examples per class (shots plus one to evaluate on); "
            f"{detail}. Add examples or lower the shots."
        )
    train, held_out = [], []
    for label, indices in by_class.items():
        order = np.random.default_rng([seed, label]).permutation(len(indices))
        shuffled = [indices[j] for j in order]
        train += shuffled[:shots]
        held_out += shuffled[shots:][:eval_per_class]
    return FewShotSplit(sorted(train), sorted(held_out), shots, seed)


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


def lm_chunks(token_ids: Sequence[int], context: int, stride: int | None = None) -> torch.Tensor:
    """``(N, context)`` int64 windows over one token stream, starting every ``stride`` tokens (default: ``context``,
    i.e. no overlap). A tail shorter than a window is dropped."""
    stride = context if stride is None else stride
    if context < 1 or stride < 1:
        raise DataError(f"context and stride must be at least 1 (got context={context}, stride={stride}).")
    ids = torch.as_tensor(token_ids, dtype=torch.int64).flatten()
    if ids.numel() < context:
        raise DataError(
            f"The text is only {ids.numel()} tokens long; a context of {context} needs at least that many. "
            "Add text or lower the context."
        )
    return ids.unfold(0, context, stride).clone()
