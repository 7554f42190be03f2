"""What a base model is: its kind (image classifier or causal language model), the transformers class a task
needs, its output head, and a fresh head for a new label set.

``base_kind`` is the one place that decides "image or language"; the loaders, the engine and the benchmarks ask it.
"""

from __future__ import annotations

from typing import Any, Literal

import peft
from torch import nn


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


__all__ = [
    "VISION_MODEL_TYPES",
    "BaseKind",
    "TaskKind",
    "UnsupportedModelError",
    "base_kind",
    "fit_labels",
    "head_modules",
    "labels_of",
    "model_class",
    "new_head",
]
