"""The method table, and every method behind one call: ``apply_method(model, "hora", r=8, ...)``.

``METHODS`` is the one list of fine-tuning methods; the CLI, the engine, the asset builder, the benchmarks and the
app all read it:

- ``head``: linear probe, only the classifier / LM head trains.
- ``full``: every parameter trains (the reference).
- ``lora``, ``dora``: PEFT's own ``LoraConfig`` (``use_dora=True`` for DoRA), never reimplemented here.
- ``hora``, ``doran``: this project's PEFT methods (``hora.HoraConfig``, ``hora.DoranConfig``).

``match_params=True`` picks LoRA's (DoRA's) rank so that its trainable parameters are closest to HoRA's
(DoRAN's) at the requested rank, which makes comparisons fair in parameter budget.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import peft
import torch
from torch import nn

import hora
from hora.geometry import DEFAULT_TARGET_MODULES
from hora.models import building, head_modules


@dataclass(frozen=True)
class Method:
    """One row of the method table."""

    name: str  # what the CLI, configs and file names say: "hora"
    label: str  # what people read: "HoRA"
    implementation: Literal["hora", "peft", "torch"]  # who implements it: this project, PEFT, or plain requires_grad
    budget_of: str | None = None  # match_params gives it the parameter budget of this method
    low_rank: bool = False  # a low-rank adapter (has per-head factors to inspect)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("head", "head-only", "torch"),
        Method("full", "full", "torch"),
        Method("lora", "LoRA", "peft", budget_of="hora", low_rank=True),
        Method("hora", "HoRA", "hora", low_rank=True),
        Method("dora", "DoRA", "peft", budget_of="doran", low_rank=True),
        Method("doran", "DoRAN", "hora", low_rank=True),
    )
}
PEFT_METHODS = tuple(name for name, m in METHODS.items() if m.implementation != "torch")
LOW_RANK_METHODS = tuple(name for name, m in METHODS.items() if m.low_rank)


def label(method: str) -> str:
    """How people read a method's name ("HoRA"); an unknown name is returned as it is."""
    return METHODS[method].label if method in METHODS else method


@dataclass
class MethodInfo:
    """What ``apply_method`` did: the method, its PEFT config (None for head / full) and its budget."""

    method: str
    peft_config: peft.PeftConfig | None
    trainable_params: int  # everything that trains, modules_to_save included
    adapter_params: int  # the adapter alone (0 for head and full)
    head_modules: list[str] = field(default_factory=list)
    matched: dict[str, Any] | None = None  # {"reference": "hora", "reference_params": ..., "r": ...}

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "peft_config": _config_dict(self.peft_config),
            "trainable_params": self.trainable_params,
            "adapter_params": self.adapter_params,
            "head_modules": self.head_modules,
            "matched": self.matched,
        }


def _config_dict(config: peft.PeftConfig | None) -> dict | None:
    if config is None:
        return None
    out = config.to_dict()
    for key, value in out.items():  # sets (target_modules) are not JSON
        if isinstance(value, set):
            out[key] = sorted(value)
    return out


def method_of(model: nn.Module) -> str:
    """The method of a model's active adapter: lora, dora, hora or doran (``head`` for a model without one)."""
    configs = getattr(model, "peft_config", None)
    if not configs:
        return "head"
    config = configs[model.active_adapter]
    kind = str(getattr(config.peft_type, "value", config.peft_type)).lower()
    return "dora" if kind == "lora" and getattr(config, "use_dora", False) else kind


def check_method(method: str) -> str:
    """``method`` lower-cased, or a ValueError naming the known methods."""
    name = method.lower()
    if name not in METHODS:
        raise ValueError(f"Unknown method {method!r}; choose one of {', '.join(METHODS)}.")
    return name


def default_targets(model: nn.Module) -> list[str]:
    """Query and value projections of ``model`` (``c_attn`` for GPT-2), from ``hora.geometry``."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in DEFAULT_TARGET_MODULES:
        raise ValueError(
            f"No default target modules for model type {model_type!r} (known: {sorted(DEFAULT_TARGET_MODULES)}). "
            "Pass target_modules explicitly, e.g. ['q_proj', 'v_proj']."
        )
    return list(DEFAULT_TARGET_MODULES[model_type])


def peft_config(
    method: str,
    model: nn.Module,
    *,
    r: int = 8,
    lora_alpha: float | None = None,
    hyper_hidden: int = 16,
    target_modules: Sequence[str] | str | None = None,
    modules_to_save: Sequence[str] | None = None,
    dropout: float = 0.0,
    **extra: Any,
) -> peft.PeftConfig:
    """The PEFT config of ``method`` (lora, dora, hora or doran) with the shared core fields.

    ``lora_alpha`` defaults to 2·r; ``extra`` holds method-specific fields (``tau_init`` for DoRAN,
    ``generate_a`` for HoRA, ``use_rslora`` for LoRA, ...).
    """
    method = check_method(method)
    if method not in PEFT_METHODS:
        raise ValueError(f"{method!r} is not a PEFT method; peft_config takes one of {PEFT_METHODS}.")
    alpha = 2 * r if lora_alpha is None else lora_alpha
    targets = list(target_modules) if isinstance(target_modules, (list, tuple, set)) else target_modules
    targets = targets or default_targets(model)
    save = list(modules_to_save) if modules_to_save else None
    if METHODS[method].implementation == "peft":
        return peft.LoraConfig(
            r=r,
            lora_alpha=alpha,
            lora_dropout=dropout,
            target_modules=targets,
            modules_to_save=save,
            use_dora=method == "dora",
            **extra,
        )
    cls = hora.HoraConfig if method == "hora" else hora.DoranConfig
    hidden = max(hyper_hidden, r)  # the generator's width must be at least r (see HoraConfig.hyper_hidden)
    return cls(
        r=r,
        lora_alpha=alpha,
        hyper_hidden=hidden,
        target_modules=targets,
        modules_to_save=save,
        dropout=dropout,
        **extra,
    )


def _is_adapter_param(name: str) -> bool:
    return "modules_to_save" not in name and "original_module" not in name


def adapter_param_count(model: nn.Module, config: peft.PeftConfig) -> int:
    """Trainable adapter parameters (modules_to_save excluded) ``config`` would add to ``model``.

    Built on a weightless copy of the model on the meta device, so it costs no memory or time.
    """
    with torch.device("meta"):
        skeleton = type(model)(copy.deepcopy(model.config))
    adapted = peft.get_peft_model(skeleton, copy.deepcopy(config))
    return sum(p.numel() for n, p in adapted.named_parameters() if p.requires_grad and _is_adapter_param(n))


def match_lora_rank(model: nn.Module, reference: peft.PeftConfig, use_dora: bool = False, max_rank: int = 4096) -> int:
    """The LoRA (DoRA) rank whose trainable parameter count is closest to that of ``reference``.

    LoRA's count is affine in the rank, c(r) = c0 + r·slope (c0 is DoRA's magnitude), so two counts give
    the line and the best rank is its rounded crossing with the target; ties go to the smaller rank.
    """
    target = adapter_param_count(model, reference)

    def lora_count(rank: int) -> int:
        config = peft.LoraConfig(
            r=rank,
            target_modules=reference.target_modules,
            layers_to_transform=reference.layers_to_transform,
            layers_pattern=reference.layers_pattern,
            use_dora=use_dora,
        )
        return adapter_param_count(model, config)

    c1, c2 = lora_count(1), lora_count(2)
    slope, c0 = c2 - c1, 2 * c1 - c2
    if slope <= 0:
        raise ValueError("The reference config adapts no module, so there is no LoRA rank to match.")
    guess = round((target - c0) / slope)
    candidates = [rank for rank in (guess - 1, guess, guess + 1) if 1 <= rank <= max_rank] or [1]
    return min(candidates, key=lambda rank: (abs(c0 + rank * slope - target), rank))


def trainable_params(model: nn.Module) -> int:
    """Number of parameters that require gradients."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@building  # it creates parameters: never while another thread builds a model (hora.models.BUILDING)
def apply_method(
    model: nn.Module,
    method: str,
    *,
    r: int = 8,
    lora_alpha: float | None = None,
    hyper_hidden: int = 16,
    target_modules: Sequence[str] | str | None = None,
    train_head: bool = False,
    dropout: float = 0.0,
    match_params: bool = False,
    **extra: Any,
) -> tuple[nn.Module, MethodInfo]:
    """Make ``model`` trainable the way ``method`` says; returns the model to train and what was done.

    For the PEFT methods the result is a ``peft.PeftModel``. ``train_head`` also trains (and saves) the
    output head, as needed when it was re-initialised for a new label set (``modules_to_save``). For
    ``head`` and ``full`` the model itself is returned with ``requires_grad`` set.
    ``match_params`` (lora and dora only) replaces ``r`` by the rank that matches HoRA's (DoRAN's) budget
    at rank ``r``; the scale α/r is kept.
    """
    method = check_method(method)
    heads = head_modules(model) if (train_head or method == "head") else []
    if method == "full":
        model.requires_grad_(True)
        count = trainable_params(model)
        return model, MethodInfo(method, None, count, 0, heads)
    if method == "head":
        model.requires_grad_(False)
        for name in heads:
            model.get_submodule(name).requires_grad_(True)
        return model, MethodInfo(method, None, trainable_params(model), 0, heads)

    alpha = 2 * r if lora_alpha is None else lora_alpha
    common = dict(hyper_hidden=hyper_hidden, target_modules=target_modules, modules_to_save=heads, dropout=dropout)
    matched = None
    if match_params:
        ref_method = METHODS[method].budget_of
        if ref_method is None:
            matchable = sorted(n for n, m in METHODS.items() if m.budget_of)
            raise ValueError(f"match_params applies to {matchable}, not to {method!r}.")
        reference = peft_config(ref_method, model, r=r, lora_alpha=alpha, **common)
        rank = match_lora_rank(model, reference, use_dora=method == "dora")
        matched = {
            "reference": ref_method,
            "reference_r": r,
            "reference_params": adapter_param_count(model, reference),
            "r": rank,
        }
        alpha, r = alpha * rank / r, rank  # keep the scale α/r
    config = peft_config(method, model, r=r, lora_alpha=alpha, **common, **extra)
    peft_model = peft.get_peft_model(model, config)
    adapter = sum(p.numel() for n, p in peft_model.named_parameters() if p.requires_grad and _is_adapter_param(n))
    if matched is not None:
        matched["params"] = adapter
    info = MethodInfo(method, config, trainable_params(peft_model), adapter, heads, matched)
    return peft_model, info


__all__ = [
    "LOW_RANK_METHODS",
    "METHODS",
    "PEFT_METHODS",
    "Method",
    "MethodInfo",
    "adapter_param_count",
    "apply_method",
    "check_method",
    "default_targets",
    "label",
    "match_lora_rank",
    "method_of",
    "peft_config",
    "trainable_params",
]
