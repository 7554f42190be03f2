"""What the data becomes: a ``Task`` (preprocessing and metric), the few-shot split, LM chunks, and evaluation.

    >>> task = build_task(base, data.classes, max_length=128, context=128)    # base: a hora.LoadedBase
    >>> split = make_split(data, task, shots=8, seed=0, max_eval=2048)
    >>> evaluate_examples(model, task, split.eval_source, split.eval)
    {'accuracy': 0.91, 'loss': 0.31}

Three tasks: image classification, text classification, and causal language modelling (where documents are
held out whole and cut into chunks of ``context`` tokens). A ``Task`` is recorded with every run
(``metrics.json["preprocessing"]``), so that a saved run is evaluated exactly as it was trained.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from hora.models import TaskKind


if TYPE_CHECKING:
    from hora.loaders import LoadedBase

LM_SPLIT_SEED = 0  # held-out documents do not depend on the training seed: every seed is tested alike


@dataclass
class Task:
    """How examples of one task become model inputs; recorded with the run (``metrics.json["preprocessing"]``)."""

    kind: TaskKind
    id2label: dict[int, str] | None = None
    image_size: int | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    max_length: int | None = None  # text classification: truncation
    context: int | None = None  # language modelling: tokens per chunk
    eval_fraction: float = 0.1  # language modelling: share of the documents held out
    tokenizer: Any = field(default=None, repr=False)

    @property
    def metric(self) -> str:
        """The held-out metric that decides 'best' and early stopping."""
        return "loss" if self.kind == "lm" else "accuracy"

    @property
    def higher_is_better(self) -> bool:
        return self.kind != "lm"

    @property
    def metric_names(self) -> tuple[str, ...]:
        return ("loss", "perplexity") if self.kind == "lm" else ("accuracy", "loss")

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "tokenizer"}
        if self.id2label is not None:
            out["id2label"] = {str(k): v for k, v in self.id2label.items()}  # JSON keys are strings
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], tokenizer: Any = None) -> Task:
        data = {k: v for k, v in data.items() if k in {f.name for f in fields(cls)}}
        if data.get("id2label") is not None:
            data["id2label"] = {int(k): v for k, v in data["id2label"].items()}
        return cls(**data, tokenizer=tokenizer)

    def encode(self, source: Any, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """Model inputs (and ``labels``) of examples ``indices``; ``source`` is the dataset, or the (N, T)
        chunk tensor for language modelling."""
        if self.kind == "lm":
            return {"input_ids": source[torch.as_tensor(list(indices), dtype=torch.long)]}  # (B, T)
        labels = torch.tensor([source.labels[i] for i in indices], dtype=torch.long)  # (B,)
        if self.kind == "image":
            from hora.data import image_batch

            pixels = image_batch([source.images[i] for i in indices], self.image_size, self.mean, self.std)
            return {"pixel_values": pixels, "labels": labels}  # (B, 3, S, S)
        texts = [source.texts[i] for i in indices]
        encoded = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"], "labels": labels}


class TaskImageProcessor:
    """An image processor that prepares pixels exactly as a run of the engine did (``Task.encode``): square resize
    to the task's size, then its mean and std; called like a transformers image processor."""

    def __init__(self, task: Task) -> None:
        if task.kind != "image":
            raise ValueError(f"A {task.kind!r} task has no image preprocessing.")
        self.task = task

    def __call__(self, images: Any, return_tensors: str = "pt", **_: Any) -> dict[str, torch.Tensor]:
        from hora.data import image_batch

        images = images if isinstance(images, (list, tuple)) else [images]
        return {"pixel_values": image_batch(list(images), self.task.image_size, self.task.mean, self.task.std)}


def data_kind(data: Any) -> TaskKind:
    """The task of a loaded dataset (``hora.data``'s classes, or anything with the same fields)."""
    if hasattr(data, "images") and hasattr(data, "labels"):
        return "image"
    if hasattr(data, "texts"):
        return "text" if hasattr(data, "labels") else "lm"
    raise ValueError(
        f"Cannot tell the task of {type(data).__name__}: expected images and labels, texts and labels, or texts."
    )


def load_data_for(data: Any, task: str = "auto") -> Any:
    """``data`` itself when already loaded, else ``hora.data.load_data(data, task=task)``."""
    if isinstance(data, (str, os.PathLike)):
        from hora.data import load_data

        return load_data(data, task=task)
    return data


def image_preprocessing(base_dir: os.PathLike | None, config: Any) -> tuple[int, list[float], list[float]]:
    """Image size, mean and std from the base's image processor, else ViT's defaults at the config's size."""
    size, mean, std = int(getattr(config, "image_size", 224)), [0.5] * 3, [0.5] * 3
    file = None if base_dir is None else os.path.join(base_dir, "preprocessor_config.json")
    if file is not None and os.path.isfile(file):
        with open(file, encoding="utf-8") as f:
            processor = json.load(f)
        dims = processor.get("size") or size
        size = int(dims.get("height") or dims.get("shortest_edge") or size) if isinstance(dims, dict) else int(dims)
        mean, std = list(processor.get("image_mean") or mean), list(processor.get("image_std") or std)
    return size, mean, std


def build_task(
    base: LoadedBase,
    classes: Sequence[str] | None,
    *,
    max_length: int = 128,
    context: int = 128,
    eval_fraction: float = 0.1,
    image_size: int | None = None,
) -> Task:
    """Preprocessing of ``base`` for its task: image size and normalisation, or the tokenizer and lengths.

    ``base.task`` says which task; ``image_size`` replaces the base's own input size (a ViT or DINOv2 interpolates
    its position embeddings); the LM context is capped by the model's own maximum length.
    """
    id2label = dict(enumerate(classes)) if classes is not None else None
    config = base.model.config
    if base.task == "image":
        size, mean, std = image_preprocessing(base.path, config)
        return Task("image", id2label, image_size or size, mean, std)
    if base.task == "text":
        return Task("text", id2label, max_length=max_length, tokenizer=base.processor)
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    context = min(context, limit) if limit else context
    return Task("lm", context=context, eval_fraction=eval_fraction, tokenizer=base.processor)


# ---------------------------------------------------------------------------------------------------------------
# Language modelling: documents held out whole, then cut into chunks


def lm_documents(data: Any) -> list[str]:
    """The documents of a language-modelling dataset; a single text is cut into its paragraphs (or lines),
    so that whole pieces of it can be held out."""
    texts = [t for t in data.texts if t.strip()]
    if len(texts) == 1:
        pieces = [p for p in re.split(r"\n\s*\n", texts[0]) if p.strip()]
        texts = pieces if len(pieces) > 1 else [line for line in texts[0].splitlines() if line.strip()]
    if len(texts) < 2:
        raise ValueError(
            "Language modelling needs at least two documents (or paragraphs or lines of one text) so that some "
            f"can be held out for evaluation; got {len(texts)}."
        )
    return texts


def lm_held_out(num_documents: int, eval_fraction: float) -> tuple[list[int], list[int]]:
    """(train, held-out) document indices, from a fixed permutation."""
    order = torch.randperm(num_documents, generator=torch.Generator().manual_seed(LM_SPLIT_SEED)).tolist()
    n_eval = min(num_documents - 1, max(1, round(eval_fraction * num_documents)))
    return sorted(order[n_eval:]), sorted(order[:n_eval])


def lm_chunk_tensor(documents: Sequence[str], indices: Sequence[int], tokenizer: Any, context: int) -> torch.Tensor:
    """Documents ``indices`` tokenized, each followed by EOS, concatenated and cut into (N, context) chunks."""
    from hora.data import lm_chunks

    ids: list[int] = []
    for tokens in tokenizer([documents[i] for i in indices], add_special_tokens=False)["input_ids"]:
        ids.extend(tokens)
        if tokenizer.eos_token_id is not None:
            ids.append(tokenizer.eos_token_id)
    return lm_chunks(ids, context)  # (N, context) int64


# ---------------------------------------------------------------------------------------------------------------
# The few-shot split


@dataclass
class Split:
    """The examples that train and those held out: ``train`` indexes ``train_source`` (the dataset, or the
    training chunks for LM), ``eval`` indexes ``eval_source``; ``record`` goes to ``metrics.json``."""

    train_source: Any
    train: list[int]
    eval_source: Any
    eval: list[int]
    record: dict[str, Any]


def make_split(
    data: Any,
    task: Task,
    *,
    shots: int | None,
    seed: int,
    eval_per_class: int | None = None,
    max_eval: int | None = None,
) -> Split:
    """The few-shot split of ``data``, a pure function of the data, the shots and the seed.

    Classification: ``hora.data.few_shot_split``, ``shots`` per class (held-out examples per class capped by
    ``eval_per_class``, else by ``max_eval`` spread over the classes). Language modelling: documents are held out
    by a fixed permutation (the same for every seed), then ``shots`` training chunks are drawn with the seed and
    at most ``max_eval`` held-out chunks are kept.
    """
    if task.kind != "lm":
        from hora.data import few_shot_split

        if shots is None:
            raise ValueError("Classification needs `shots` (training examples per class).")
        per_class = eval_per_class
        if per_class is None and max_eval is not None:
            per_class = max(1, max_eval // len(task.id2label))
        split = few_shot_split(data.labels, shots, seed, eval_per_class=per_class, max_eval=max_eval)
        return Split(data, list(split.train), data, list(split.eval), split.to_dict())
    documents = lm_documents(data)
    train_docs, eval_docs = lm_held_out(len(documents), task.eval_fraction)
    train_chunks = lm_chunk_tensor(documents, train_docs, task.tokenizer, task.context)
    eval_chunks = lm_chunk_tensor(documents, eval_docs, task.tokenizer, task.context)
    chosen = torch.randperm(len(train_chunks), generator=torch.Generator().manual_seed(seed)).tolist()
    chosen = sorted(chosen[:shots] if shots else chosen)
    n_eval = min(len(eval_chunks), max_eval or len(eval_chunks))
    record = {
        "train": train_docs,  # documents
        "eval": eval_docs,
        "train_chunks": chosen,  # of the training documents' chunks
        "available_train_chunks": len(train_chunks),
        "eval_chunks": n_eval,  # the first of the held-out documents' chunks
        "context": task.context,
        "shots": shots,
        "seed": seed,
        "split_seed": LM_SPLIT_SEED,
    }
    return Split(train_chunks, chosen, eval_chunks, list(range(n_eval)), record)


# ---------------------------------------------------------------------------------------------------------------
# Loss and evaluation


def compute_loss(task: Task, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy of a batch (in float32) and the logits; for LM every position predicts the next token."""
    if task.kind == "lm":
        ids = batch["input_ids"]  # (B, T)
        logits = model(input_ids=ids).logits  # (B, T, V)
        return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten()), logits
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if "pixel_values" in inputs and _needs_interpolation(model, inputs["pixel_values"]):
        inputs["interpolate_pos_encoding"] = True  # ViT at another input size than its config's
    logits = model(**inputs).logits  # (B, C)
    return F.cross_entropy(logits.float(), batch["labels"]), logits


def _needs_interpolation(model: nn.Module, pixels: torch.Tensor) -> bool:
    """Whether the model must be told to interpolate its position embeddings for inputs of this size (ViT must;
    DINOv2 always does)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    size = getattr(getattr(base, "config", None), "image_size", None)
    if size is None or tuple(pixels.shape[-2:]) == (size, size):
        return False
    return "interpolate_pos_encoding" in inspect.signature(base.forward).parameters


@torch.no_grad()
def evaluate_examples(
    model: nn.Module,
    task: Task,
    source: Any,
    indices: Sequence[int],
    batch_size: int = 64,
    autocast: Callable[[], Any] = nullcontext,
) -> dict[str, float]:
    """Metrics of examples ``indices`` of ``source``: accuracy and loss, or loss and perplexity (LM)."""
    if not len(indices):
        raise ValueError("There are no held-out examples to evaluate on.")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total_loss, correct, count = 0.0, 0, 0
    for start in range(0, len(indices), batch_size):
        batch = {k: v.to(device) for k, v in task.encode(source, indices[start : start + batch_size]).items()}
        with autocast():
            loss, logits = compute_loss(task, model, batch)
        if task.kind == "lm":
            n = batch["input_ids"][:, 1:].numel()  # predicted tokens
        else:
            n = len(batch["labels"])
            correct += int((logits.argmax(-1) == batch["labels"]).sum())
        total_loss += float(loss) * n
        count += n
    model.train(was_training)
    loss = total_loss / count
    if task.kind == "lm":
        return {"loss": loss, "perplexity": math.exp(min(loss, 700.0))}
    return {"accuracy": correct / count, "loss": loss}


def evaluate(
    model: nn.Module,
    data: Any,
    task: Task,
    *,
    indices: Sequence[int] | None = None,
    max_examples: int | None = None,
    batch_size: int = 64,
) -> dict[str, float]:
    """Metrics of a loaded model (base + adapter, from ``hora.runs.load_run``) on ``data``.

    Classification: accuracy and loss over the examples ``indices`` (None: all). Language modelling: loss
    and perplexity over the chunks of the documents ``indices`` (None: all), cut as in training.
    ``max_examples`` keeps the first examples (chunks) only. ``task`` carries the preprocessing.
    """
    if task.kind == "lm":
        documents = lm_documents(data)
        chosen = range(len(documents)) if indices is None else indices
        source = lm_chunk_tensor(documents, list(chosen), task.tokenizer, task.context)
        examples = list(range(len(source)))
    else:
        source, examples = data, list(range(len(data.labels)) if indices is None else indices)
    return evaluate_examples(model, task, source, examples[:max_examples], batch_size)


__all__ = [
    "LM_SPLIT_SEED",
    "Split",
    "Task",
    "TaskImageProcessor",
    "build_task",
    "compute_loss",
    "data_kind",
    "evaluate",
    "evaluate_examples",
    "image_preprocessing",
    "lm_chunk_tensor",
    "lm_documents",
    "lm_held_out",
    "load_data_for",
    "make_split",
]
