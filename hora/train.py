"""Few-shot fine-tuning with any method of ``hora.methods``, evaluation, and the saved run folder.

    >>> from hora.train import TrainConfig, train
    >>> result = train("runs/vit", "digits.zip", TrainConfig(method="hora", shots=8, steps=200), out_dir="runs/hora")
    >>> result.final
    {'accuracy': 0.91, 'loss': 0.31}

One loop serves every method and task (image classification, text classification, language modelling).
It runs through ``accelerate.Accelerator``, so ``accelerate launch --num_processes N -m hora train ...`` is
data-parallel with no code change; only the main process writes. The output folder is written atomically
(``hora.io.atomic_dir``): the adapter in PEFT format (or the head / full weights), ``metrics.json`` and a
model card ``README.md``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

import hora
from hora.io import atomic_dir
from hora.methods import (
    MethodInfo,
    TaskKind,
    apply_method,
    check_method,
    load_base_model,
    model_class,
    new_head,
    resolve_base,
)


logger = logging.getLogger(__name__)

StopReason = Literal["completed", "cancelled", "early_stopping", "non_finite"]
HEAD_WEIGHTS = "head.safetensors"
HEAD_CONFIG = "head_config.json"
METRICS = "metrics.json"
LM_SPLIT_SEED = 0  # held-out documents do not depend on the training seed: every seed is tested alike


@dataclass
class TrainConfig:
    """Everything that decides a training run (recorded in ``metrics.json``).

    ``shots`` is examples per class for classification and training chunks of ``context`` tokens for
    language modelling (None: every chunk). ``batch_size`` is per process. ``patience`` stops after that
    many evaluations without improvement of the held-out metric (None: never). ``max_eval`` caps the
    held-out examples (LM chunks; for classification it sets ``eval_per_class`` when that is None).
    ``method_args`` go to the method's PEFT config (e.g. ``{"tau_init": 0.05}`` for DoRAN).
    """

    method: str = "hora"
    task: Literal["auto", "image", "text", "lm"] = "auto"
    shots: int | None = 8
    seed: int = 0
    steps: int = 200
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1
    grad_clip: float | None = 1.0
    eval_every: int | None = 50
    patience: int | None = None
    eval_per_class: int | None = None
    eval_fraction: float = 0.1
    max_eval: int | None = 2048
    eval_batch_size: int = 64
    context: int = 128
    max_length: int = 128
    r: int = 8
    lora_alpha: float | None = None
    hyper_hidden: int = 16
    target_modules: list[str] | None = None
    dropout: float = 0.0
    match_params: bool = False
    method_args: dict[str, Any] = field(default_factory=dict)
    device: Literal["auto", "cpu"] = "auto"
    bf16: bool | None = None  # None: bf16 autocast on CUDA when supported

    def __post_init__(self) -> None:
        self.method = check_method(self.method)
        for name in ("steps", "batch_size", "r", "context", "max_length", "eval_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        for name in ("shots", "eval_every", "patience", "eval_per_class", "max_eval"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ValueError(f"`{name}` must be a positive integer or None, got {value!r}.")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"`lr` must be a positive number, got {self.lr}.")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"`warmup_ratio` must be in [0, 1), got {self.warmup_ratio}.")
        if not 0 < self.eval_fraction < 1:
            raise ValueError(f"`eval_fraction` must be in (0, 1), got {self.eval_fraction}.")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"`grad_clip` must be positive or None, got {self.grad_clip}.")
        if self.context < 2:
            raise ValueError(f"`context` must be at least 2 tokens, got {self.context}.")
        if self.device not in ("auto", "cpu"):
            raise ValueError(f"`device` must be 'auto' or 'cpu', got {self.device!r}.")


@dataclass
class StepEvent:
    """What one training step did, for progress bars and UIs; ``metrics`` is set on evaluation steps."""

    method: str
    step: int
    total_steps: int
    loss: float
    lr: float
    grad_norm: float
    step_time: float  # seconds
    elapsed: float  # seconds since training started
    device: str
    examples_per_s: float
    tokens_per_s: float | None
    metrics: dict[str, float] | None = None


@dataclass
class TrainResult:
    """A finished (or stopped) run: the trained model (eval mode), ``metrics.json``'s content, why it stopped."""

    model: nn.Module
    task: Task
    metrics: dict[str, Any]
    out_dir: Path | None
    stopped: StopReason
    message: str

    @property
    def final(self) -> dict[str, float]:
        return self.metrics["final"]

    @property
    def best(self) -> dict[str, Any]:
        return self.metrics["best"]

    @property
    def history(self) -> dict[str, list]:
        """``step``, ``loss``, ``lr``, ``grad_norm``, ``step_time`` per step; ``eval_step`` and ``eval_<metric>``."""
        return self.metrics["history"]


# ---------------------------------------------------------------------------------------------------------------
# Tasks: what the examples are, how they become model inputs, what is measured


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


def data_kind(data: Any) -> TaskKind:
    """The task of a loaded dataset (``hora.data``'s classes, or anything with the same fields)."""
    if hasattr(data, "images") and hasattr(data, "labels"):
        return "image"
    if hasattr(data, "texts"):
        return "text" if hasattr(data, "labels") else "lm"
    raise ValueError(
        f"Cannot tell the task of {type(data).__name__}: expected images and labels, texts and labels, or texts."
    )


def _image_preprocessing(base_dir: Path, config: Any) -> tuple[int, list[float], list[float]]:
    """Image size, mean and std from the base's image processor, else ViT's defaults at the config's size."""
    size, mean, std = int(getattr(config, "image_size", 224)), [0.5] * 3, [0.5] * 3
    if (base_dir / "preprocessor_config.json").is_file():
        processor = json.loads((base_dir / "preprocessor_config.json").read_text())
        dims = processor.get("size") or size
        size = int(dims.get("height") or dims.get("shortest_edge") or size) if isinstance(dims, dict) else int(dims)
        mean, std = list(processor.get("image_mean") or mean), list(processor.get("image_std") or std)
    return size, mean, std


def _load_tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(f"Text tasks need the base's tokenizer, saved in {folder}: {error}") from error
    if tokenizer.pad_token is None:  # causal LM tokenizers often have none; padded positions are masked
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_task(
    base_dir: Path, kind: TaskKind, classes: Sequence[str] | None, config: TrainConfig, model_config: Any
) -> Task:
    """Preprocessing on this base: image size and normalisation, or the tokenizer and lengths."""
    id2label = dict(enumerate(classes)) if classes is not None else None
    if kind == "image":
        size, mean, std = _image_preprocessing(base_dir, model_config)
        return Task("image", id2label, size, mean, std)
    tokenizer = _load_tokenizer(base_dir)
    if kind == "text":
        return Task("text", id2label, max_length=config.max_length, tokenizer=tokenizer)
    limit = getattr(model_config, "max_position_embeddings", None) or getattr(model_config, "n_positions", None)
    context = min(config.context, limit) if limit else config.context
    return Task("lm", context=context, eval_fraction=config.eval_fraction, tokenizer=tokenizer)


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


@dataclass
class Split:
    """The examples that train and those held out: ``train`` indexes ``train_source`` (the dataset, or the
    training chunks for LM), ``eval`` indexes ``eval_source``; ``record`` goes to ``metrics.json``."""

    train_source: Any
    train: list[int]
    eval_source: Any
    eval: list[int]
    record: dict[str, Any]


def make_split(data: Any, task: Task, config: TrainConfig) -> Split:
    """The few-shot split of ``data``, a pure function of the data and the config (seed included).

    Classification: ``hora.data.few_shot_split``, ``shots`` per class. Language modelling: documents are
    held out by a fixed permutation (the same for every seed), then ``shots`` training chunks are drawn
    with the seed.
    """
    if task.kind != "lm":
        from hora.data import few_shot_split

        if config.shots is None:
            raise ValueError("Classification needs `shots` (training examples per class).")
        per_class = config.eval_per_class
        if per_class is None and config.max_eval is not None:
            per_class = max(1, config.max_eval // len(task.id2label))
        split = few_shot_split(data.labels, config.shots, config.seed, eval_per_class=per_class)
        return Split(data, list(split.train), data, list(split.eval), split.to_dict())
    documents = lm_documents(data)
    train_docs, eval_docs = lm_held_out(len(documents), task.eval_fraction)
    train_chunks = lm_chunk_tensor(documents, train_docs, task.tokenizer, task.context)
    eval_chunks = lm_chunk_tensor(documents, eval_docs, task.tokenizer, task.context)
    chosen = torch.randperm(len(train_chunks), generator=torch.Generator().manual_seed(config.seed)).tolist()
    chosen = sorted(chosen[: config.shots] if config.shots else chosen)
    n_eval = min(len(eval_chunks), config.max_eval or len(eval_chunks))
    record = {
        "train": train_docs,  # documents
        "eval": eval_docs,
        "train_chunks": chosen,  # of the training documents' chunks
        "available_train_chunks": len(train_chunks),
        "eval_chunks": n_eval,  # the first of the held-out documents' chunks
        "context": task.context,
        "shots": config.shots,
        "seed": config.seed,
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
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits  # (B, C)
    return F.cross_entropy(logits.float(), batch["labels"]), logits


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
    """Metrics of a loaded model (base + adapter, from ``load_trained``) on ``data``.

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


# ---------------------------------------------------------------------------------------------------------------
# The training loop


def _accelerator(config: TrainConfig):
    """An Accelerator: CUDA, then Apple MPS, then CPU; bf16 autocast on CUDA unless ``config.bf16`` is False."""
    from accelerate import Accelerator, PartialState
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedDataParallelKwargs

    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1  # by accelerate launch or torchrun
    # Accelerate goes data-parallel on CPUs (gloo) only when told to use the CPU.
    cpu = config.device == "cpu" or (launched and not torch.cuda.is_available())
    cuda = torch.cuda.is_available() and not cpu
    bf16 = config.bf16 if config.bf16 is not None else cuda and torch.cuda.is_bf16_supported()
    kwargs = {
        "cpu": cpu,
        "mixed_precision": "bf16" if bf16 else "no",
        # some parameters get no gradient under some methods (ViT's pooler under `full`); DDP must know
        "kwargs_handlers": [DistributedDataParallelKwargs(find_unused_parameters=True)],
    }
    try:
        return Accelerator(**kwargs)
    except ValueError:
        # Accelerate's state is a per-process singleton. A process that trains several times (the app, the
        # benchmarks) may ask for other settings than its first run; outside a distributed launch, start over.
        if PartialState().num_processes > 1:
            raise
        AcceleratorState._reset_state(reset_partial_state=True)
        return Accelerator(**kwargs)


class _Snapshot:
    """A copy of the trainable weights, to go back to the last weights whose loss was finite."""

    def __init__(self, params: list[nn.Parameter]) -> None:
        self.params = params
        self.copies = [p.detach().clone() for p in params]

    @torch.no_grad()
    def save(self) -> None:
        for copy, p in zip(self.copies, self.params):
            copy.copy_(p)

    @torch.no_grad()
    def restore(self) -> None:
        for copy, p in zip(self.copies, self.params):
            p.copy_(copy)


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate of (0-based) ``step``: linear warm-up over ``warmup_ratio`` of the steps, then cosine to 0."""
    warmup = int(config.warmup_ratio * config.steps)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, config.steps - warmup)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def _batches(n: int, size: int, seed: int) -> Iterator[list[int]]:
    """Endless batches of ``size`` indices into 0..n-1: epochs reshuffled by a seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    pending: list[int] = []
    while True:
        while len(pending) < size:
            pending.extend(torch.randperm(n, generator=generator).tolist())
        yield pending[:size]
        pending = pending[size:]


def _cancelled(cancel: threading.Event | Callable[[], bool] | None) -> bool:
    if cancel is None:
        return False
    return cancel.is_set() if hasattr(cancel, "is_set") else bool(cancel())


def _clip(accelerator: Any, params: list[nn.Parameter], max_norm: float | None) -> float:
    """Clip the gradients to ``max_norm`` (if given); returns their total norm before clipping."""
    if max_norm is not None:
        return float(accelerator.clip_grad_norm_(params, max_norm))
    norms = [p.grad.detach().norm() for p in params if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


def _tokens(batch: dict[str, torch.Tensor]) -> int:
    """Tokens in a batch: unpadded ones for text, all of them for LM chunks, none for images."""
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return batch["input_ids"].numel() if "input_ids" in batch else 0


def _peak_memory(device: torch.device) -> dict[str, Any]:
    """Peak memory: CUDA's allocator peak, else the process's peak resident set (CPU, MPS)."""
    if device.type == "cuda":
        return {"peak_memory_bytes": torch.cuda.max_memory_allocated(device), "peak_memory_kind": "cuda_allocated"}
    try:
        import resource
    except ImportError:  # Windows
        return {"peak_memory_bytes": None, "peak_memory_kind": "unavailable"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return {"peak_memory_bytes": rss * scale, "peak_memory_kind": "process_rss_peak"}


def _seed_everything(seed: int) -> None:
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # all devices


def load_data_for(data: Any, task: str = "auto") -> Any:
    """``data`` itself when already loaded, else ``hora.data.load_data(data, task=task)``."""
    if isinstance(data, (str, os.PathLike)):
        from hora.data import load_data

        return load_data(data, task=task)
    return data


def train(
    base: str | os.PathLike,
    data: Any,
    config: TrainConfig | None = None,
    *,
    out_dir: str | os.PathLike | None = None,
    callback: Callable[[StepEvent], None] | None = None,
    cancel: threading.Event | Callable[[], bool] | None = None,
    data_source: str | None = None,
    **overrides: Any,
) -> TrainResult:
    """Fine-tune the base model in ``base`` on ``data`` with ``config.method``.

    Args:
        base: a base model folder (or an embedded asset / Hub name, see ``hora.hub``).
        data: a path for ``hora.data.load_data``, or an already loaded dataset.
        config: the run's settings; keyword ``overrides`` replace single fields (``steps=50``).
        out_dir: where to write the adapter, ``metrics.json`` and ``README.md``, atomically (main process only).
        callback: called after every step with a ``StepEvent`` (main process only).
        cancel: a ``threading.Event`` or a callable; once set, training stops before the next step and
            returns (and saves) what was trained so far.
        data_source: how to name ``data`` in the outputs when it is not a path.

    For image and text classification the classifier is built for the data's classes and trained with
    every method. A non-finite loss or gradient stops training with a message and keeps the last weights
    whose loss was finite. With the same seed, runs on the CPU are bit-for-bit identical.
    """
    config = replace(config or TrainConfig(), **overrides)
    source = data_source or (os.fspath(data) if isinstance(data, (str, os.PathLike)) else type(data).__name__)
    dataset = load_data_for(data, config.task)
    kind = data_kind(dataset)
    if config.task not in ("auto", kind):
        raise ValueError(f"The data is a {kind!r} dataset but task={config.task!r} was asked for.")
    base_dir = resolve_base(base)

    accelerator = _accelerator(config)
    device, world, rank = accelerator.device, accelerator.num_processes, accelerator.process_index
    _seed_everything(config.seed)  # before the model: the new classifier and the adapters draw from it
    classes = getattr(dataset, "classes", None)
    model, new_head = load_base_model(base_dir, kind, dict(enumerate(classes)) if classes else None)
    task = build_task(base_dir, kind, classes, config, model.config)
    split = make_split(dataset, task, config)
    if kind == "text" and model.config.pad_token_id is None:
        model.config.pad_token_id = task.tokenizer.pad_token_id
    model, info = apply_method(
        model,
        config.method,
        r=config.r,
        lora_alpha=config.lora_alpha,
        hyper_hidden=config.hyper_hidden,
        target_modules=config.target_modules,
        train_head=new_head,  # a new classifier trains, and is saved, with every method
        dropout=config.dropout,
        match_params=config.match_params,
        **config.method_args,
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)  # the schedule is set by hand: not prepared
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    per_process = max(1, min(config.batch_size, len(split.train) // world))
    batches = _batches(len(split.train), per_process * world, config.seed)  # the same stream on every process
    snapshot = _Snapshot(params)
    history: dict[str, list] = {k: [] for k in ("step", "loss", "lr", "grad_norm", "step_time", "eval_step")}
    best: dict[str, Any] = {}
    stopped: StopReason = "completed"
    message = f"Trained {config.steps} steps."
    evals_since_best, examples, tokens, train_time = 0, 0, 0, 0.0
    started = time.perf_counter()

    def run_eval(step: int) -> dict[str, float]:
        """Evaluate on the held-out examples, record it and track the best evaluation."""
        nonlocal evals_since_best
        metrics = evaluate_examples(
            model, task, split.eval_source, split.eval, config.eval_batch_size, accelerator.autocast
        )
        history["eval_step"].append(step)
        for key, value in metrics.items():
            history.setdefault(f"eval_{key}", []).append(value)
        value, previous = metrics[task.metric], best.get(task.metric)
        if previous is None or (value > previous if task.higher_is_better else value < previous):
            best.clear()
            best.update({"step": step, **metrics})
            evals_since_best = 0
        else:
            evals_since_best += 1
        return metrics

    model.train()
    for step in range(1, config.steps + 1):
        stop = _cancelled(cancel)
        if world > 1:  # every process must stop at the same step
            stop = bool(accelerator.reduce(torch.tensor(float(stop), device=device), "max"))
        if stop:
            stopped, message = "cancelled", f"Cancelled after {step - 1} of {config.steps} steps."
            break
        t0 = time.perf_counter()
        chosen = next(batches)[rank * per_process : (rank + 1) * per_process]  # this process's share
        batch = task.encode(split.train_source, [split.train[i] for i in chosen])
        batch = {k: v.to(device) for k, v in batch.items()}
        loss, _ = compute_loss(task, model, batch)
        loss_value = float(accelerator.reduce(loss.detach(), "mean") if world > 1 else loss.detach())
        if not math.isfinite(loss_value):
            snapshot.restore()  # the weights the previous step started from: the last with a finite loss
            stopped = "non_finite"
            kept = "the initial weights" if step <= 2 else f"the weights after step {step - 2}"
            message = (
                f"Stopped at step {step}: the training loss is {loss_value}. Kept the last weights whose loss was "
                f"finite ({kept}). Lower the learning rate (now {config.lr:g})."
            )
            break
        snapshot.save()  # these weights gave a finite loss
        accelerator.backward(loss)
        grad_norm = _clip(accelerator, params, config.grad_clip)
        if not math.isfinite(grad_norm):
            optimizer.zero_grad(set_to_none=True)  # nothing applied: the weights are still those of a finite loss
            stopped = "non_finite"
            message = (
                f"Stopped at step {step}: the gradient norm is {grad_norm}. Kept the weights this step started "
                f"from. Lower the learning rate (now {config.lr:g})."
            )
            break
        lr = lr_at(step - 1, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # so that step_time covers the GPU's work
        step_time = time.perf_counter() - t0
        step_examples, step_tokens = len(chosen) * world, _tokens(batch) * world
        train_time, examples, tokens = train_time + step_time, examples + step_examples, tokens + step_tokens
        for key, value in (("step", step), ("loss", loss_value), ("lr", lr)):
            history[key].append(value)
        history["grad_norm"].append(grad_norm)
        history["step_time"].append(step_time)

        metrics = None
        if (config.eval_every and step % config.eval_every == 0) or step == config.steps:
            metrics = run_eval(step)
        if callback is not None and accelerator.is_main_process:
            callback(
                StepEvent(
                    method=config.method,
                    step=step,
                    total_steps=config.steps,
                    loss=loss_value,
                    lr=lr,
                    grad_norm=grad_norm,
                    step_time=step_time,
                    elapsed=time.perf_counter() - started,
                    device=str(device),
                    examples_per_s=step_examples / step_time,
                    tokens_per_s=step_tokens / step_time if step_tokens else None,
                    metrics=metrics,
                )
            )
        if config.patience and metrics is not None and evals_since_best >= config.patience and step < config.steps:
            stopped = "early_stopping"
            message = (
                f"Stopped early at step {step}: no better held-out {task.metric} in {config.patience} evaluations."
            )
            break

    steps_done = len(history["step"])
    if history["eval_step"] and history["eval_step"][-1] == steps_done and stopped != "non_finite":
        final = {k: history[f"eval_{k}"][-1] for k in task.metric_names}
    else:  # stopped between evaluations, or went back to earlier weights: measure what is returned and saved
        final = run_eval(steps_done)
    model = accelerator.unwrap_model(model, keep_fp32_wrapper=False).eval()
    if stopped != "completed":
        logger.warning(message)

    metrics_json = {
        **_describe(config, base, data, source, dataset, task, split, info, model),
        "final": final,
        "best": best,
        "history": history,
        "steps_done": steps_done,
        "stopped": stopped,
        "message": message,
        "timing": {
            "train_seconds": train_time,
            "total_seconds": time.perf_counter() - started,
            "mean_step_seconds": train_time / steps_done if steps_done else None,
            "examples_per_s": examples / train_time if train_time else None,
            "tokens_per_s": tokens / train_time if train_time and tokens else None,
        },
        "device": {
            "type": device.type,
            "name": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
            "num_processes": world,
            "mixed_precision": accelerator.mixed_precision,
            **_peak_memory(device),
        },
    }
    saved = None
    if out_dir is not None:
        if accelerator.is_main_process:
            save_run(out_dir, model, info, task, metrics_json, base_dir)
        accelerator.wait_for_everyone()
        saved = Path(out_dir).resolve()
    return TrainResult(model, task, metrics_json, saved, stopped, message)


def _describe(
    config: TrainConfig,
    base: str | os.PathLike,
    data: Any,
    source: str,
    dataset: Any,
    task: Task,
    split: Split,
    info: MethodInfo,
    model: nn.Module,
) -> dict[str, Any]:
    """What ``metrics.json`` says about what was trained, on what, and how (the results come after)."""
    return {
        "method": config.method,
        "task": task.kind,
        "base_model": os.fspath(base),
        "data": {
            "source": source,
            "path": os.fspath(Path(data).resolve()) if isinstance(data, (str, os.PathLike)) else None,
            "task": task.kind,
            "num_examples": len(dataset.texts if task.kind == "lm" else dataset.labels),
            "classes": getattr(dataset, "classes", None),
        },
        "seed": config.seed,
        "shots": config.shots,
        "split": split.record,
        "id2label": task.to_dict()["id2label"],
        "preprocessing": task.to_dict(),
        "config": asdict(config),
        "method_info": info.to_dict(),
        "param_report": {k: list(v) for k, v in hora.param_report(model).rows.items()},
        "metric": task.metric,
        "versions": _versions(),
    }


def _versions() -> dict[str, str]:
    import peft
    import transformers

    versions = {"hora": hora.__version__, "torch": torch.__version__}
    return versions | {"transformers": transformers.__version__, "peft": peft.__version__}


# ---------------------------------------------------------------------------------------------------------------
# The run folder: saving and loading


def save_run(
    out_dir: str | os.PathLike,
    model: nn.Module,
    info: MethodInfo,
    task: Task,
    metrics: dict,
    base_dir: Path | None = None,
) -> Path:
    """Write the trained weights, ``metrics.json`` and ``README.md`` to ``out_dir`` atomically.

    PEFT methods: a PEFT adapter folder. ``head``: the head's tensors (``head.safetensors``) and
    ``head_config.json`` saying how to apply them. ``full``: the whole model via ``save_pretrained``, with
    the tokenizer or image processor, so that the folder is a model of its own.
    """
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters() if p.is_floating_point()):
        raise ValueError("Refusing to save: the model has non-finite weights.")
    with atomic_dir(out_dir) as tmp:
        if info.method == "head":
            from safetensors.torch import save_file

            tensors = {
                f"{name}.{key}": value.detach().cpu().contiguous()
                for name in info.head_modules
                for key, value in model.get_submodule(name).state_dict().items()
            }
            save_file(tensors, tmp / HEAD_WEIGHTS, metadata={"format": "pt"})
            head = {
                "format": "hora-head",
                "base_model": metrics["base_model"],
                "modules": info.head_modules,
                "id2label": task.to_dict()["id2label"],
                "how_to_apply": (
                    "Load the base model. For a new label set, replace each listed module by an nn.Linear of the "
                    "saved weight's shape; then load_state_dict the tensors (keys '<module>.<parameter>', "
                    "strict=False). hora.train.load_trained does this."
                ),
            }
            (tmp / HEAD_CONFIG).write_text(json.dumps(head, indent=2))
        else:
            model.save_pretrained(tmp)  # a PEFT adapter, or the whole model for `full`
        if info.method == "full" and task.tokenizer is not None:
            task.tokenizer.save_pretrained(tmp)
        if info.method == "full" and base_dir is not None and (base_dir / "preprocessor_config.json").is_file():
            shutil.copy(base_dir / "preprocessor_config.json", tmp)
        (tmp / METRICS).write_text(json.dumps(metrics, indent=2, default=str))
        (tmp / "README.md").write_text(model_card(metrics), encoding="utf-8")
    return Path(out_dir).resolve()


_PIPELINE = {"image": "image-classification", "text": "text-classification", "lm": "text-generation"}


def model_card(metrics: dict) -> str:
    """A model card: YAML front matter (base_model, library_name, tags, metrics, shots, seed, dataset) and a
    short description."""
    import yaml

    method, kind, source = metrics["method"], metrics["task"], metrics["data"]["source"]
    final = {k: round(float(v), 6) for k, v in metrics["final"].items()}
    base_name = Path(metrics["base_model"]).name
    front = {
        "base_model": metrics["base_model"],
        "library_name": "transformers" if method == "full" else "peft",
        "pipeline_tag": _PIPELINE[kind],
        "tags": ["hora", method, "peft", _PIPELINE[kind], "few-shot"],
        "datasets": [source],
        "metrics": sorted(final),
        "hora": {
            "method": method,
            "task": kind,
            "shots": metrics["shots"],
            "seed": metrics["seed"],
            "steps": metrics["steps_done"],
            "dataset_source": source,
            "results": final,
        },
        "model-index": [
            {
                "name": f"{base_name}-{method}",
                "results": [
                    {
                        "task": {"type": _PIPELINE[kind]},
                        "dataset": {"name": source, "type": "local"},
                        "metrics": [{"type": k, "value": v, "name": f"held-out {k}"} for k, v in final.items()],
                    }
                ],
            }
        ],
    }
    shots = f"{metrics['shots']} examples per class" if kind != "lm" else f"{metrics['shots'] or 'all'} chunks"
    rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in final.items())
    return f"""---
{yaml.safe_dump(front, sort_keys=False, allow_unicode=True)}---

# {base_name} + {method}

`{method}` fine-tuning ({metrics["method_info"]["trainable_params"]:,} trainable parameters) of `{metrics["base_model"]}`
on {shots} of `{source}`, seed {metrics["seed"]}, {metrics["steps_done"]} steps ({metrics["stopped"]}: {metrics["message"]})

| held-out metric | value |
|---|---:|
{rows}

```python
import hora.train  # importing hora registers HoRA and DoRAN with PEFT
model, task, run = hora.train.load_trained({metrics["base_model"]!r}, "path/to/this/folder")
```

`metrics.json` holds the full configuration, the exact few-shot indices, the training history, timing and device.
"""


def read_run(run_dir: str | os.PathLike) -> dict:
    """The ``metrics.json`` of a run folder ({} for a bare adapter folder)."""
    path = Path(run_dir) / METRICS
    return json.loads(path.read_text()) if path.is_file() else {}


def load_trained(base: str | os.PathLike, run_dir: str | os.PathLike) -> tuple[nn.Module, Task, dict]:
    """Load a run folder onto its base: (model in eval mode, task, ``metrics.json``).

    Works for PEFT adapters (LoRA, DoRA, HoRA, DoRAN), ``head`` runs and ``full`` models. A bare PEFT
    adapter folder (no ``metrics.json``) is loaded for the base's own task and labels.
    """
    from peft import PeftModel

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir} is not a folder.")
    base_dir = resolve_base(base)
    run = read_run(run_dir)
    if not run:
        if not (run_dir / "adapter_config.json").is_file():
            raise ValueError(f"{run_dir} has neither metrics.json nor adapter_config.json: not a run or an adapter.")
        architectures = json.loads((base_dir / "config.json").read_text()).get("architectures") or [""]
        kind: TaskKind = "image" if architectures[0].endswith("ForImageClassification") else "lm"
        model, _ = load_base_model(base_dir, kind)
        task = build_task(base_dir, kind, list(model.config.id2label.values()), TrainConfig(), model.config)
        return PeftModel.from_pretrained(model, run_dir).eval(), task, run

    method, task = run["method"], Task.from_dict(run["preprocessing"])
    if task.kind != "image":
        task.tokenizer = _load_tokenizer(run_dir if method == "full" else base_dir)
    if method == "full":
        return model_class(task.kind, run_dir).from_pretrained(run_dir, dtype=torch.float32).eval(), task, run
    model, _ = load_base_model(base_dir, task.kind, task.id2label)
    if task.kind == "text" and model.config.pad_token_id is None:
        model.config.pad_token_id = task.tokenizer.pad_token_id
    if method != "head":
        return PeftModel.from_pretrained(model, run_dir).eval(), task, run
    from safetensors.torch import load_file

    tensors = load_file(run_dir / HEAD_WEIGHTS)
    unknown = sorted(set(tensors) - set(model.state_dict()))  # state_dict: tied weights (lm_head) too
    if unknown:
        raise ValueError(f"{run_dir / HEAD_WEIGHTS} holds tensors the base model does not have: {unknown}.")
    model.load_state_dict(tensors, strict=False)
    return model.eval(), task, run


__all__ = [
    "StepEvent",
    "Task",
    "TrainConfig",
    "TrainResult",
    "build_task",
    "data_kind",
    "evaluate",
    "load_data_for",
    "load_trained",
    "lr_at",
    "make_split",
    "model_card",
    "new_head",
    "read_run",
    "save_run",
    "train",
]
