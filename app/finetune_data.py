"""Data a visitor brings to the Fine-tune tab (an upload, or a bundled sample), and everything about it that is
checked before a fine-tune starts (``problems``): found once, before any method trains, and shown on the control
at fault, so that no method is refused in turn for what is the data's fault.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import gradio as gr

from app.settings import LIMITS, clamp
from app.store import Base, ModelStore, SessionModels, get_base
from hora.data import DataError, detect_task, load_data
from hora.task import data_kind


def sample_tasks(samples: dict[str, str]) -> dict[str, str]:
    """The task of each bundled sample (``image``, ``text`` or ``lm``), read once when the app is built."""
    return {name: detect_task(path) for name, path in samples.items()}


DEFAULT_LR = 3e-3  # fine-tuning's learning rate on a base without a recipe
DEFAULT_STEPS = 60  # and its steps


def recipe_of(base: Base | None) -> dict:
    """How a base's shipped adapters were fine-tuned (its ``info["finetune"]``: steps, batch size, context, the
    tuned learning rate of each method, its sample); empty for a base without one."""
    recipe = ((base.info or {}) if base is not None else {}).get("finetune")
    return recipe if isinstance(recipe, dict) else {}


def sample_choices(
    store: ModelStore, tasks: dict[str, str], session: SessionModels | None, base_name: str | None
) -> dict:
    """The bundled samples a base can train on (image data for an image model, text for a language model), with
    the base's own sample selected when it has one."""
    base = get_base(store, session, base_name) if base_name else None
    kind = base.kind if base is not None else None
    names = [n for n, task in tasks.items() if kind is None or (task == "image") == (kind == "image")]
    own = recipe_of(base).get("sample")
    return gr.update(choices=names, value=own if own in names else None)


_loaded: dict[tuple, Any] = {}  # (path, size, mtime) -> dataset: a validator's load serves the run after it
_loaded_lock = threading.Lock()


def load_data_cached(path: str) -> Any:
    """``hora.data.load_data(path)``, remembered for the last few files (uploads are new files, so never stale)."""
    stat = os.stat(path)
    key = (path, stat.st_size, stat.st_mtime_ns)
    with _loaded_lock:
        if key in _loaded:
            return _loaded[key]
    dataset = load_data(path)
    with _loaded_lock:
        while len(_loaded) >= 4:
            _loaded.pop(next(iter(_loaded)))
        _loaded[key] = dataset
    return dataset


def shots_problem(dataset: Any, shots: int) -> tuple[str | None, str | None]:
    """(problem with the data, problem with the shots) of a classification dataset, naming the class at fault and
    the largest number of shots that would work."""
    counts = Counter(dataset.labels)
    smallest = min(counts, key=lambda c: (counts[c], c))
    name, n = dataset.classes[smallest], counts[smallest]
    if n < 2:
        return f"Class {name!r} has only {n} example; every class needs at least 2 (one to train, one to test).", None
    if shots + 1 > n:
        return None, (
            f"Your smallest class, {name!r}, has {n} examples: {shots} shots per class need {shots + 1} in every "
            f"class ({shots} to train, 1 to test). Set Shots to {n - 1} or lower, or add examples."
        )
    return None, None


def problems(store, samples, session, base_name, upload, sample, methods, shots) -> dict[str, str]:
    """Everything that would stop a fine-tune before it starts, keyed by the control at fault: ``base``, ``data``
    (the upload or the sample), ``methods`` (the methods it may train, already filtered) or ``shots``."""
    found: dict[str, str] = {}
    if not methods:
        found["methods"] = "Tick at least one method."
    if not base_name:
        return {**found, "base": "Pick a base model."}
    base = get_base(store, session, base_name)
    if base.location is None:
        found["base"] = f"{base_name} was not loaded from a folder, so it cannot be fine-tuned here."
    elif session is not None and LIMITS.max_session_train_seconds - session.train_seconds <= 0:
        found["base"] = "This session has used its fine-tuning time. Reload the page for a new session."
    if not upload and not sample:
        return {**found, "data": "Upload a dataset (image zip, CSV, JSONL or TXT) or pick a bundled sample."}
    if not upload and sample not in samples:
        return {**found, "data": f"No bundled sample {sample!r}; the samples are: {', '.join(samples) or 'none'}."}
    try:
        dataset = load_data_cached(upload or samples[sample])
    except DataError as err:  # the engine's refusals, as they are
        return {**found, "data": str(err)}
    kind = data_kind(dataset)
    if (kind == "image") != (base.kind == "image"):
        what = "an image classifier" if base.kind == "image" else "a language model"
        fix = "pick an image base or upload images" if kind == "image" else "pick a language base or upload text"
        return {**found, "data": f"This is {kind} data but {base_name} is {what}: {fix}."}
    if kind == "lm":
        problem = lm_problem(dataset, base)
        if problem:
            found["data"] = f"{Path(upload).name if upload else sample} cannot be used: {problem}"
        return found
    problem = dict(zip(("data", "shots"), shots_problem(dataset, int(clamp(shots, 1, 1000))), strict=True))
    found.update({k: v for k, v in problem.items() if v})
    return found


def lm_context(base: Base) -> int:
    """The context a fine-tune of ``base`` cuts language-modelling text into (its recipe's, as ``app.finetune``
    configures it, capped by the model's own maximum length as ``hora.task.build_task`` caps it)."""
    context = int(clamp(recipe_of(base).get("context", 128), 16, 512))
    config = getattr(base.model, "config", None)
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    return min(context, limit) if limit else context


def lm_problem(dataset: Any, base: Base) -> str | None:
    """Why language-modelling ``dataset`` cannot train on ``base`` (None when it can): the engine's own split, made
    once before any method starts, so that every method is not refused in turn. Its documents must be at least two,
    and the training and the held-out documents must each fill one chunk of the context."""
    from hora.config import TrainConfig
    from hora.task import lm_chunk_tensor, lm_documents, lm_held_out

    try:
        documents = lm_documents(dataset)
        context = lm_context(base)
        held_out = lm_held_out(len(documents), TrainConfig().eval_fraction)
        for part, indices in zip(("training", "held-out"), held_out, strict=True):
            try:
                lm_chunk_tensor(documents, indices, base.processor, context)
            except DataError as err:
                raise DataError(f"its {part} documents are too short. {err}") from err
    except ValueError as err:  # DataError is one
        return str(err)
    return None


def data_controls(samples: dict[str, str], upload: str | None, sample: str | None) -> dict:
    """Shots per class only matter for classification data: hidden for language-modelling text."""
    path = upload or samples.get(sample or "")
    try:
        task = detect_task(path) if path else None
    except (DataError, OSError):
        task = None
    return gr.update(visible=task != "lm")


def base_controls(store: ModelStore, tasks: dict[str, str], session: SessionModels, base_name: str | None) -> tuple:
    """What a base sets in the tab: its samples (its own selected) and its recipe's steps (60 without one)."""
    base = get_base(store, session, base_name) if base_name else None
    steps = int(clamp(recipe_of(base).get("steps", DEFAULT_STEPS), 1, LIMITS.max_train_steps))
    return sample_choices(store, tasks, session, base_name), gr.update(value=steps)
