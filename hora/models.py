"""What a base model is: its kind (image classifier or causal language model), the transformers class a task
needs, its output head, and a fresh head for a new label set.

``base_kind`` is the one place that decides "image or language"; the loaders, the engine and the benchmarks ask it.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import peft
from torch import nn

from hora.validate import (
    MAX_CHANNELS,
    MAX_EXPERTS,
    MAX_HEADS,
    MAX_HIDDEN,
    MAX_IMAGE_SIZE,
    MAX_INTERMEDIATE,
    MAX_LABELS,
    MAX_LAYERS,
    MAX_POSITIONS,
    MAX_VOCAB,
    AdapterError,
    check_int,
)


BaseKind = Literal["image", "lm"]  # what a base model is
TaskKind = Literal["image", "text", "lm"]  # what a run trains it for: image / text classification, language modelling

# Vision backbones whose config names no task head (a DINOv2 checkpoint is a bare ``Dinov2Model``).
VISION_MODEL_TYPES = ("vit", "dinov2", "deit", "beit")
_HEAD_NAMES = ("classifier", "score", "head", "fc")


class UnsupportedModelError(ValueError):
    """A model hora cannot serve; the message says what it supports."""


def base_kind(config: Any) -> BaseKind:
    """``"image"`` for image classifiers and vision backbones, ``"lm"`` for causal language models.

    Read from ``config.architectures`` (what the checkpoint was saved as), else from ``config.model_type``.
    """
    architectures = getattr(config, "architectures", None) or []
    arch = architectures[0] if architectures else ""
    if arch.endswith(("ForImageClassification", "ForImageClassificationWithTeacher")):
        return "image"
    if arch.endswith(("ForCausalLM", "LMHeadModel", "ForSequenceClassification")):
        return "lm"  # a language model, with its LM head or a text classifier
    if getattr(config, "model_type", None) in VISION_MODEL_TYPES:
        return "image"
    raise UnsupportedModelError(
        f"Unsupported architecture {arch or '(none in config.json)'}: hora loads image classifiers "
        "(*ForImageClassification, or a ViT / DINOv2 backbone) and causal language models (*ForCausalLM, "
        "*LMHeadModel)."
    )


def model_class(task: TaskKind, config: Any) -> type:
    """The transformers Auto class that builds ``config`` for ``task``.

    Text classification needs a sequence-classification head, which causal LMs such as GPT-2 and Llama have.
    """
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForImageClassification,
        AutoModelForSequenceClassification,
    )
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

    if task == "image":
        return AutoModelForImageClassification
    if task == "lm":
        return AutoModelForCausalLM
    if type(config) not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING:
        raise UnsupportedModelError(
            f"Text classification needs a base with a sequence-classification head in transformers; model type "
            f"{config.model_type!r} has none. Use a causal LM such as GPT-2 or Llama, or a BERT-like encoder."
        )
    return AutoModelForSequenceClassification


def head_modules(model: nn.Module) -> list[str]:
    """Names of the output head: the classifier of a classification model, else the LM head."""
    base = model.get_base_model() if isinstance(model, peft.PeftModel) else model
    children = dict(base.named_children())
    for name in _HEAD_NAMES:
        if isinstance(children.get(name), nn.Linear):
            return [name]
    output = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if output is not None:
        for name, module in base.named_modules():
            if module is output:
                return [name]
    raise ValueError(
        f"Cannot find the output head of {type(base).__name__}: expected a Linear child named one of "
        f"{_HEAD_NAMES} or output embeddings (an LM head)."
    )


def labels_of(model: nn.Module) -> dict[int, str]:
    """The model's own label set, ``{index: name}`` ({} for a model without one)."""
    config = getattr(model, "config", None)
    return {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}


def new_head(model: nn.Module, id2label: dict[int, str]) -> str:
    """Replace the classifier of ``model`` by a freshly initialised one for ``id2label`` (draws from the
    torch RNG, so seed first); returns its name."""
    (name,) = head_modules(model)
    old = model.get_submodule(name)
    head = nn.Linear(old.in_features, len(id2label), bias=old.bias is not None)
    # as transformers initialises classifiers: N(0, initializer_range), zero bias
    nn.init.normal_(head.weight, std=getattr(model.config, "initializer_range", 0.02))
    if head.bias is not None:
        nn.init.zeros_(head.bias)
    model.set_submodule(name, head.to(old.weight.device, old.weight.dtype))
    model.config.num_labels = len(id2label)
    model.config.id2label = dict(id2label)
    model.config.label2id = {v: k for k, v in id2label.items()}
    return name


def fit_labels(model: nn.Module, id2label: dict[int, str] | None) -> bool:
    """Give a classifier a fresh head when ``id2label`` differs from its own labels; returns whether it did.

    Models without a classification head (causal LMs) and ``id2label=None`` are left alone.
    """
    if id2label is None or not type(model).__name__.endswith("Classification"):
        return False
    if labels_of(model) == {int(k): str(v) for k, v in id2label.items()}:
        return False
    new_head(model, id2label)
    return True


# ---------------------------------------------------------------------------------------------------------------
# How big a model a config describes, before anything is built


class ModelTooLargeError(UnsupportedModelError):
    """A config that declares a model larger than this server may build; the message gives both numbers."""


# config field -> its bound (hora.validate's constants); nested configs (text_config, vision_config) are checked too
_SIZE_FIELDS = {
    **dict.fromkeys(("hidden_size", "n_embd", "d_model", "embed_dim", "head_dim", "dim"), MAX_HIDDEN),
    **dict.fromkeys(("intermediate_size", "n_inner", "ffn_dim", "moe_intermediate_size"), MAX_INTERMEDIATE),
    **dict.fromkeys(("num_hidden_layers", "n_layer", "num_layers", "n_layers"), MAX_LAYERS),
    **dict.fromkeys(("num_attention_heads", "n_head", "num_key_value_heads", "num_heads"), MAX_HEADS),
    **dict.fromkeys(("num_experts", "num_local_experts", "n_routed_experts"), MAX_EXPERTS),
    **dict.fromkeys(("max_position_embeddings", "n_positions", "n_ctx"), MAX_POSITIONS),
    "vocab_size": MAX_VOCAB,
    "num_labels": MAX_LABELS,
    "image_size": MAX_IMAGE_SIZE,
    "patch_size": MAX_IMAGE_SIZE,
    "num_channels": MAX_CHANNELS,
}
_AT_LEAST_ONE = ("patch_size", "num_attention_heads", "n_head", "hidden_size", "n_embd")
WEIGHTS_SHARE = 0.5  # stored weights below this share of the parameters: the rest would be random


def check_config_sizes(config: dict, where: str = "config.json") -> None:
    """Refuse a model config whose sizes are out of bounds (``hora.validate``'s ``MAX_*``) before it is parsed
    into a model: layers, widths, heads, vocabulary, positions, labels, image size."""

    def visit(values: dict, prefix: str) -> None:
        for key, value in values.items():
            if isinstance(value, dict) and key not in ("id2label", "label2id"):
                visit(value, f"{prefix}{key}.")
            elif key in _SIZE_FIELDS and value is not None:
                low = 1 if key in _AT_LEAST_ONE else 0
                for item in value if isinstance(value, list) and len(value) <= 4 else [value]:  # [16, 16] too
                    check_int(item, prefix + key, low, _SIZE_FIELDS[key], where)
        labels = values.get("id2label")
        if labels is not None and (not isinstance(labels, dict) or len(labels) > MAX_LABELS):
            raise AdapterError(f"{where}: id2label must map at most {MAX_LABELS:,} class indices to names.")

    visit(config, "")


BUILDING = threading.RLock()
"""Held while hora builds or loads a model. transformers sets torch's process-wide default dtype while it builds one
(``local_torch_dtype``, from the config's dtype unless one is given) and puts the previous one back after: two threads
building at once can leave the wrong default for good, and a thread creating parameters meanwhile gets the other's
dtype. Seen when the explorer loaded its models in a thread while visitors' requests loaded others: SmolLM2 (stored in
bfloat16) came out partly in bfloat16 and every later forward pass failed."""


T = TypeVar("T")


def building(fn: Callable[..., T]) -> Callable[..., T]:
    """``fn`` holding ``BUILDING`` (for what creates parameters: PEFT's injection, a new head)."""

    @functools.wraps(fn)
    def holding(*args: Any, **kwargs: Any) -> T:
        with BUILDING:
            return fn(*args, **kwargs)

    return holding


def parameter_count(config: Any, task: TaskKind) -> int:
    """Parameters of the model ``config`` describes for ``task``, counted on the meta device (nothing allocated).

    Tied weights count once, as in ``model.parameters()``. Check ``check_config_sizes`` first: building even on
    the meta device costs time and Python objects per layer.
    """
    import torch

    with BUILDING, torch.device("meta"):  # the current default dtype: the config's would be set process-wide
        model = model_class(task, config).from_config(config, trust_remote_code=False, dtype=torch.get_default_dtype())
    return sum(p.numel() for p in model.parameters())


def memory_bytes() -> int:
    """The memory this process may use: the machine's, or its container's limit (cgroup v2 or v1) when lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 16 * 2**30
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(limit_file).read().strip()  # noqa: SIM115 - a one-line read
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < total:
            total = int(text)
    return total


def _count(text: str) -> int:
    """``"200000000"``, ``"2e8"``, ``"200M"`` or ``"1.5B"`` as a number of parameters."""
    text = text.strip().upper().replace("_", "")
    scale = {"K": 10**3, "M": 10**6, "G": 10**9, "B": 10**9}.get(text[-1:], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def max_base_params() -> int:
    """The largest base (parameters) this process builds: ``HORA_MAX_BASE_PARAMS``, else what its memory holds
    twice over in float32 (``memory_bytes() / (2 × 4 bytes)``: the model and as much again for a copy, an adapter
    or activations)."""
    override = os.environ.get("HORA_MAX_BASE_PARAMS", "").strip()
    if override:
        try:
            value = _count(override)
        except ValueError as err:
            raise ValueError(
                f"HORA_MAX_BASE_PARAMS={override!r} is not a number of parameters (e.g. 2e8, 200M)."
            ) from err
        if value > 0:
            return value
    return memory_bytes() // 8


def check_model_size(count: int, where: str, limit: int | None = None) -> None:
    """Refuse a model of ``count`` parameters above ``limit`` (default ``max_base_params()``), giving both."""
    limit = max_base_params() if limit is None else limit
    if count > limit:
        raise ModelTooLargeError(
            f"{where} describes a model of {count:,} parameters; this server builds at most {limit:,} "
            "(HORA_MAX_BASE_PARAMS, by default what its memory holds twice over in float32). Pick a smaller model."
        )


def check_weights_cover(stored: int, count: int, where: str) -> None:
    """Refuse a folder whose safetensors hold far fewer values than its config's model has parameters: the missing
    weights would be initialised at random, so the model would be noise (a 76-byte weights file, say)."""
    if stored < WEIGHTS_SHARE * count:
        raise UnsupportedModelError(
            f"{where}: its safetensors weights hold {stored:,} values but its config.json describes a model of "
            f"{count:,} parameters; the missing weights would be random. Upload the complete weights."
        )


__all__ = [
    "VISION_MODEL_TYPES",
    "BaseKind",
    "ModelTooLargeError",
    "TaskKind",
    "UnsupportedModelError",
    "base_kind",
    "check_config_sizes",
    "check_model_size",
    "check_weights_cover",
    "max_base_params",
    "memory_bytes",
    "parameter_count",
    "fit_labels",
    "head_modules",
    "labels_of",
    "model_class",
    "new_head",
]
