"""``TrainConfig``: everything that decides a training run. The CLI builds its training options from these fields
(name, type, default and ``help``), so a new field appears in the engine, the record and the CLI at once."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from hora.methods import METHODS, check_method
from hora.validate import MAX_HYPER_HIDDEN, MAX_IMAGE_SIZE, MAX_NAMES, MAX_POSITIONS, MAX_RANK, is_plain_name


# Upper bounds of the settings that size memory: the adapter bounds are hora.validate's, so that the engine never
# trains what the loaders would refuse to load (``--rank 100000``).
_BOUNDS = {
    "r": MAX_RANK,
    "hyper_hidden": MAX_HYPER_HIDDEN,
    "context": MAX_POSITIONS,
    "max_length": MAX_POSITIONS,
    "batch_size": 65_536,
    "eval_batch_size": 65_536,
    "steps": 10_000_000,
}


def _help(text: str, **cli: Any) -> dict[str, Any]:
    """A field's metadata: its help (for docs and ``python -m hora train --help``) and CLI hints."""
    return {"help": text, **cli}


@dataclass
class TrainConfig:
    """Everything that decides a training run (recorded in ``metrics.json``).

    Each field's ``help`` is also its ``python -m hora train`` option's help: the CLI is built from these fields.
    """

    method: str = field(default="hora", metadata=_help("fine-tuning method", choices=tuple(METHODS)))
    task: Literal["auto", "image", "text", "lm"] = field(
        default="auto", metadata=_help("what the data is for; auto: guessed from the files")
    )
    shots: int | None = field(
        default=8, metadata=_help("training examples per class (language modelling: training chunks; none: all)")
    )
    seed: int = field(default=0, metadata=_help("seed of the split, the initialisation and the batches"))
    steps: int = field(default=200, metadata=_help("optimisation steps"))
    batch_size: int = field(default=16, metadata=_help("examples per step, per process"))
    lr: float = field(default=1e-3, metadata=_help("peak learning rate (AdamW)"))
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay"))
    warmup_ratio: float = field(default=0.1, metadata=_help("share of the steps spent warming up, then cosine"))
    grad_clip: float | None = field(
        default=1.0, metadata=_help("maximum gradient norm (0 or none: no clipping)", zero_is_none=True)
    )
    eval_every: int | None = field(
        default=50, metadata=_help("evaluate every N steps (0 or none: only at the end)", zero_is_none=True)
    )
    patience: int | None = field(
        default=None, metadata=_help("early stopping: evaluations without a better held-out metric (none: never)")
    )
    eval_per_class: int | None = field(default=None, metadata=_help("cap on held-out examples per class"))
    eval_fraction: float = field(
        default=0.1, metadata=_help("language modelling: share of the documents held out for evaluation")
    )
    max_eval: int | None = field(
        default=2048, metadata=_help("cap on held-out examples (LM chunks; spread over the classes otherwise)")
    )
    eval_batch_size: int = field(default=64, metadata=_help("examples per evaluation batch"))
    context: int = field(default=128, metadata=_help("language modelling: tokens per chunk"))
    max_length: int = field(default=128, metadata=_help("text classification: tokens kept per text"))
    image_size: int | None = field(
        default=None, metadata=_help("image classification: side of the square input (none: the base's own)")
    )
    keep_best: bool = field(
        default=False,
        metadata=_help("end with the weights of the best held-out evaluation, not the last (early stopping)"),
    )
    r: int = field(default=8, metadata=_help("rank r of the low-rank update", flag="--rank"))
    lora_alpha: float | None = field(default=None, metadata=_help("scale alpha (default 2r)", flag="--alpha"))
    hyper_hidden: int = field(default=16, metadata=_help("HoRA / DoRAN generator width p (at least r)"))
    target_modules: list[str] | None = field(
        default=None, metadata=_help("comma-separated modules to adapt (default: query and value)", flag="--targets")
    )
    dropout: float = field(default=0.0, metadata=_help("dropout on the adapter's input"))
    match_params: bool = field(
        default=False, metadata=_help("LoRA / DoRA at the rank whose parameter count matches HoRA's / DoRAN's")
    )
    method_args: dict[str, Any] = field(
        default_factory=dict,
        metadata=_help("extra PEFT config field KEY=VALUE, e.g. tau_init=0.05 (repeatable)", flag="--method-arg"),
    )
    device: Literal["auto", "cpu"] = field(default="auto", metadata=_help("auto: CUDA, then Apple MPS, then CPU"))
    bf16: bool | None = field(default=None, metadata=_help("bf16 autocast (default: on CUDA when supported)"))
    compile: bool = field(
        default=False,
        metadata=_help("run the training step's forward and backward through torch.compile (pays off on a GPU)"),
    )

    def __post_init__(self) -> None:
        self.method = check_method(self.method)
        for name in ("steps", "batch_size", "r", "context", "max_length", "eval_batch_size", "hyper_hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= _BOUNDS[name]:
                raise ValueError(f"`{name}` must be an integer between 1 and {_BOUNDS[name]:,}, got {value!r}.")
        if self.lora_alpha is not None and not math.isfinite(self.lora_alpha):
            raise ValueError(f"`lora_alpha` must be a finite number, got {self.lora_alpha}.")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"`dropout` must be in [0, 1), got {self.dropout}.")
        targets = self.target_modules
        if targets is not None and (len(targets) > MAX_NAMES or not all(is_plain_name(t) for t in targets)):
            raise ValueError(
                f"`target_modules` must be at most {MAX_NAMES} module names (letters, digits, '_', '-', '.'), "
                f"got {targets!r:.200}."
            )
        for name in ("shots", "eval_every", "patience", "eval_per_class", "max_eval", "image_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ValueError(f"`{name}` must be a positive integer or None, got {value!r}.")
        if self.image_size is not None and self.image_size > MAX_IMAGE_SIZE:
            raise ValueError(f"`image_size` must be at most {MAX_IMAGE_SIZE:,} pixels, got {self.image_size}.")
        if self.seed < 0:
            raise ValueError(f"`seed` must be a non-negative integer, got {self.seed}.")
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


def compile_pays_off() -> bool:
    """Whether ``TrainConfig(compile=True)`` is worth asking for here: on a CUDA GPU, where compiling fuses the
    generator's many small kernels (``python -m hora bench speed --compile`` measures it); on a CPU compiling costs
    more than a short run saves."""
    import torch

    return torch.cuda.is_available()


__all__ = ["TrainConfig", "compile_pays_off"]
