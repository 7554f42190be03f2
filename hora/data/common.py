"""What every upload reader shares: the error type, the limits, the dataset classes and small checks.

Uploads are untrusted: every refusal is a ``DataError`` whose message names the file, column or class at fault.
"""

from __future__ import annotations

import codecs
import os
import re
import stat
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from PIL import Image


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
    # Small PNGs can hold huge flat images (a few KB of one-bit 6000x6000): the pixels to decode, from the headers
    max_total_pixels: int = 1_000_000_000
    # Images are kept decoded in memory, reduced right after decoding to this many pixels on their long side ...
    max_image_side: int = 1024
    # ... and within this budget of kept bytes (3 a pixel) for all of them
    max_decoded_bytes: int = 1 << 30


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


# Characters a label may not hold: control characters (NUL, escapes, line breaks) and the bidirectional overrides
# that make one label display as another.
_BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _check_label(name: str, source: str) -> None:
    """Refuse a class name that cannot be shown as typed: control characters, bidi overrides, too long."""
    from hora.validate import MAX_LABEL_CHARS  # the bound a run's labels are loaded back with

    bad = next((c for c in name if unicodedata.category(c) == "Cc" or c in _BIDI_CONTROLS), None)
    if bad is not None:
        raise DataError(
            f"{source}: the label {name[:60]!r} holds the control character U+{ord(bad):04X}; labels must be "
            "printable text. Remove it from the label."
        )
    if len(name) > MAX_LABEL_CHARS:
        raise DataError(f"{source}: the label {name[:60]!r}... is longer than {MAX_LABEL_CHARS} characters.")


def _classes(counts: dict[str, int], source: str, what: str) -> list[str]:
    """Check the examples per class and the class names, and return the sorted class names."""
    from hora.validate import MAX_LABELS

    if not any(counts.values()):
        raise DataError(f"{source} has no {what}s.")
    if len(counts) > MAX_LABELS:
        raise DataError(f"{source} has {len(counts):,} classes; the limit is {MAX_LABELS:,}.")
    for name in counts:
        _check_label(name, source)
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
