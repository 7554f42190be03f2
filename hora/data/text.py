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
    typed: dict[str, tuple[str, int]] = {}  # label as text -> (its JSON type, first line)
    for line, row in rows:
        where = f"line {line} of {path.name}"
        texts.append(_text_value(row[text_column], where, f"text ({text_column!r})"))
        label_names.append(_nfc(_text_value(row[label_column], where, f"label ({label_column!r})")))
        _check_label_type(row[label_column], label_names[-1], typed, line, path.name)
    _check_chars(sum(map(len, texts)), path.name, limits)
    classes = _classes(Counter(label_names), path.name, "text")
    index = {c: i for i, c in enumerate(classes)}
    return TextClassificationData(texts, [index[c] for c in label_names], classes)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    return "a number" if isinstance(value, (int, float)) else "a string"


def _check_label_type(value: Any, label: str, typed: dict[str, tuple[str, int]], line: int, source: str) -> None:
    """Refuse JSON labels that differ in type but read the same (``1`` and ``"1"``, ``true`` and ``"true"``).

    Merging them would silently join two classes the file keeps apart; keeping both would show two classes with
    the same name. Neither is what the author meant, so the file is refused, naming both lines.
    """
    kind = _json_type(value)
    first = typed.setdefault(label, (kind, line))
    if first[0] != kind:
        raise DataError(
            f"{source}: line {line} has the label {label!r} as {kind} but line {first[1]} has it as {first[0]}; "
            "they would be merged into one class. Write every label the same way (all strings, or all numbers)."
        )


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
