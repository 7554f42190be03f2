"""Text uploads: text classification from CSV / JSONL, and documents for language modelling."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from hora.data.archive import _open_tree
from hora.data.common import (
    _LM_HINT,
    _TEXT_HINT,
    DataError,
    DataLimits,
    LanguageModelingData,
    TextClassificationData,
    _check_chars,
    _classes,
    _decode,
    _nfc,
    _read_file,
    _upload,
)
from hora.data.tables import _csv_rows, _jsonl_records, _text_value


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
