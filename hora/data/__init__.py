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
decoded by a fixed set of PIL plugins, their size checked from the header before decoding, reduced right after it
to ``max_image_side`` and kept within ``max_decoded_bytes`` (``load_image`` decodes one image the same way). Every
refusal is a ``DataError`` (a ``ValueError``) whose message names the file, column or class at fault and says what
is expected. Labels that read alike but differ in JSON type, or that hold control characters, are refused.

Modules: ``common`` (errors, limits, dataset classes), ``archive`` (zips and folders), ``tables`` (CSV, JSONL),
``images``, ``text`` and ``splits``; this module picks the reader (``load_data``, ``detect_task``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from hora.data.archive import _open_tree
from hora.data.common import (
    _IMAGE_HINT,
    _LM_HINT,
    IMAGE_SUFFIXES,
    DataError,
    DataLimits,
    ImageClassificationData,
    LanguageModelingData,
    TextClassificationData,
    _decode,
    _is_image,
    _read_file,
    _upload,
)
from hora.data.images import image_batch, load_image, load_image_classification
from hora.data.splits import FewShotSplit, few_shot_split, lm_chunks
from hora.data.tables import _jsonl_records
from hora.data.text import load_language_modeling, load_text_classification


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


__all__ = [
    "IMAGE_SUFFIXES",
    "DataError",
    "DataLimits",
    "FewShotSplit",
    "ImageClassificationData",
    "LanguageModelingData",
    "TextClassificationData",
    "detect_task",
    "few_shot_split",
    "image_batch",
    "lm_chunks",
    "load_data",
    "load_image",
    "load_image_classification",
    "load_language_modeling",
    "load_text_classification",
]
