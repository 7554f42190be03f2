"""CSV and JSONL readers for uploads: one row or record at a time, with the line number every message needs."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hora.data.common import DataError, DataLimits, _decode, _read_file


def _csv_rows(path: Path, needed: Sequence[str], limits: DataLimits) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) for every non-blank row of a CSV that has the ``needed`` columns."""
    text = _decode(_read_file(path, path.name, limits.max_file_bytes), path.name)
    header = text.split("\n", 1)[0]
    delimiter = max(",;\t", key=header.count)  # Excel writes ';' in many locales
    old_limit = csv.field_size_limit(limits.max_file_bytes)  # the default (128 KB) would refuse long texts
    try:
        _check_quotes(text, delimiter, path.name)
    finally:
        csv.field_size_limit(old_limit)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    old_limit = csv.field_size_limit(limits.max_file_bytes)
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


def _check_quotes(text: str, delimiter: str, source: str) -> None:
    """Refuse a quote that is opened and never closed: the lenient reader would swallow the rest of the file into
    one cell, and the row would look like it has an empty label."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    start = 1
    try:
        for _ in reader:
            start = reader.line_num + 1
    except csv.Error as err:
        if "unexpected end of data" in str(err):
            raise DataError(
                f'line {start} of {source} opens a quote (") that is never closed, so the rest of the file would be '
                'read as one cell. Close the quote, or double it ("") inside a quoted cell.'
            ) from err
        # other strictness complaints (a stray quote inside a cell) are read leniently, as spreadsheets write them


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
