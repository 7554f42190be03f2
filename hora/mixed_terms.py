"""What one variant adds to a base, per module, for mixed-variant batches (``hora.mixed``): its frozen terms.

A layer adapted by LoRA, DoRA, HoRA or DoRAN becomes ``LowRank(A, B, s, c)``: ``y = c ⊙ (W0·x + s·B·A·x) + b`` with
``c`` None (1) for LoRA and HoRA, ``m / ‖W0 + s·B·A‖_c`` for DoRA (as PEFT computes it) and DoRAN's own row scale
``m / (‖W0 + s·B·A‖_c + τ)``. A module the variant replaced in full (``modules_to_save``, a head-only run's
classifier) is ``Replaced(module)``. Anything else must be the base's own tensors (or equal ones): a variant whose
adapted layers sit on other weights than the served base's is refused.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

from hora.tuners.doran.layer import DoranLayer
from hora.tuners.hora.layer import GeneratedFactorsLayer


MAX_REPLACED_FRACTION = 0.25
"""A variant may replace at most this fraction of the base's values with its own modules (heads are far below):
more means it is another model, which a mixed batch would hold in full."""


@dataclass(frozen=True)
class LowRank:
    """One variant's terms in one Linear / Conv1D layer: ``y = c ⊙ (W0·x + s·B·A·x) + b``, evaluated in the order
    its method's own forward evaluates it (``form``), so a row gives what the variant's own model gives."""

    A: torch.Tensor  # (r, in)
    B: torch.Tensor  # (out, r)
    s: float  # the scaling α / r
    scale: torch.Tensor | None = None  # (out,): c of DoRA / DoRAN; None for LoRA and HoRA
    form: Literal["add", "dora", "doran"] = "add"

    def apply(self, x: torch.Tensor, y: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """The variant's output from its rows' input ``x`` (b, ..., in) and the base's output ``y = W0·x + b``."""
        low = F.linear(F.linear(x.to(self.A.dtype), self.A), self.B)  # (b, ..., r) -> (b, ..., out): B·A·x
        if self.form == "add":  # LoRA, HoRA: y + s·BAx
            return y + (low * self.s).to(y.dtype)
        plain = y if bias is None else y - bias  # W0·x
        if self.form == "dora":  # PEFT's DoRA: y + (c − 1) ⊙ W0·x + c ⊙ BAx · s
            return (y + ((self.scale - 1) * plain + self.scale * low * self.s)).to(y.dtype)
        out = self.scale * (plain.to(self.scale.dtype) + low * self.s)  # DoRAN: c ⊙ (W0·x + s·BAx) + b
        return (out if bias is None else out + bias).to(y.dtype)

    def tensors(self) -> list[torch.Tensor]:
        return [t for t in (self.A, self.B, self.scale) if t is not None]


@dataclass(frozen=True)
class Replaced:
    """A module the variant holds in full instead of the base's (its rows go through it alone)."""

    module: nn.Module

    def tensors(self) -> list[torch.Tensor]:
        return list(itertools.chain(self.module.parameters(), self.module.buffers()))


Term = LowRank | Replaced


def _same_tensors(module: nn.Module, base: nn.Module) -> bool:
    """Whether ``module``'s own parameters and buffers are ``base``'s (the same tensors, or equal ones)."""
    if type(module) is not type(base):
        return False
    mine = {**module._parameters, **module._buffers}
    theirs = {**base._parameters, **base._buffers}
    if mine.keys() != theirs.keys():
        return False
    for key, a in mine.items():
        b = theirs[key]
        if a is b:
            continue
        if a is None or b is None or a.shape != b.shape or a.dtype != b.dtype or not torch.equal(a, b.to(a.device)):
            return False
    return True


def _lora_term(layer: nn.Module, adapter: str, path: str) -> LowRank:
    """LoRA or DoRA, from PEFT's own tensors; DoRA's scale by PEFT's own ``DoraLinearLayer`` (norm detached)."""
    from peft.tuners.lora.variants import DoraLinearVariant

    variant = getattr(layer, "lora_variant", {}).get(adapter)
    if variant is not None and not isinstance(variant, DoraLinearVariant):
        raise ValueError(f"{path}: the LoRA variant {type(variant).__name__} is not supported in mixed batches.")
    if getattr(layer, "lora_bias", {}).get(adapter):
        raise ValueError(f"{path}: LoRA with lora_bias=True is not supported in mixed batches.")
    lora_A, lora_B, s = layer.lora_A[adapter], layer.lora_B[adapter], layer.scaling[adapter]
    if variant is None:
        return LowRank(lora_A.weight.detach(), lora_B.weight.detach(), s)
    dora = layer.lora_magnitude_vector[adapter]
    lora_weight = dora.get_lora_weight(lora_A=lora_A, lora_B=lora_B)  # (out, in): B·A, as PEFT's forward makes it
    weight = layer.get_base_layer().weight.to(lora_A.weight.dtype)
    norm = dora.get_weight_norm(weight=weight, lora_weight=lora_weight.detach(), scaling=s).detach()  # (out,)
    return LowRank(lora_A.weight.detach(), lora_B.weight.detach(), s, dora.weight.detach() / norm, "dora")


def _generated_term(layer: GeneratedFactorsLayer, adapter: str) -> LowRank:
    """HoRA or DoRAN, through the layers' public factors (and DoRAN's row scale)."""
    A, B = layer.factors(adapter)  # (r, in), (out, r)
    s = layer.scaling[adapter]
    if not isinstance(layer, DoranLayer):
        return LowRank(A.detach(), B.detach(), s)
    scale = layer._row_scale(adapter, layer._base_weight()).detach()  # (out,): m / (‖W0 + s·BA‖_c + τ)
    return LowRank(A.detach(), B.detach(), s, scale, "doran")


def _tuner_term(module: nn.Module, adapter: str | None, base: nn.Module | None, path: str) -> Term | None:
    """The term of a PEFT tuner layer or a modules-to-save wrapper (None: the base's own module for this adapter)."""
    from peft.tuners.lora.layer import Linear as LoraLinear
    from peft.utils.other import ModulesToSaveWrapper

    if base is None:
        raise ValueError(f"{path} is not a module of the served base.")
    if isinstance(module, ModulesToSaveWrapper):
        own = module.modules_to_save[adapter] if adapter in module.modules_to_save else module.original_module
        return None if _same_tensors(own, base) else Replaced(own)
    if not isinstance(module, (LoraLinear, GeneratedFactorsLayer)):
        raise ValueError(f"{path}: {type(module).__name__} layers are not supported in mixed batches.")
    if module.merged:
        raise ValueError(f"{path}: the adapter is merged into the weights; mixed batches need it unmerged.")
    if not isinstance(base, (nn.Linear, Conv1D)) or not _same_tensors(module.get_base_layer(), base):
        raise ValueError(f"{path}: the adapter's layer does not sit on the served base's weights.")
    if isinstance(module, GeneratedFactorsLayer):
        return _generated_term(module, adapter) if adapter in module.A_seed else None
    return _lora_term(module, adapter, path) if adapter in module.lora_A else None


def _adapter_and_method(model: nn.Module, adapter: str | None) -> tuple[str, str]:
    """The adapter of a PeftModel to serve (default: its one active adapter) and its method's name."""
    if adapter is None:
        active = list(model.active_adapters)
        if len(active) != 1:
            raise ValueError(f"The model has {len(active)} active adapters {active}: say which one to serve.")
        adapter = active[0]
    if adapter not in model.peft_config:
        raise ValueError(f"The model has no adapter {adapter!r}; it has {sorted(model.peft_config)}.")
    config = model.peft_config[adapter]
    kind = str(getattr(config.peft_type, "value", config.peft_type))
    if kind not in ("LORA", "HORA", "DORAN"):
        raise ValueError(f"{kind} adapters are not supported in mixed batches (LoRA, DoRA, HoRA, DoRAN are).")
    return adapter, ("dora" if kind == "LORA" and config.use_dora else kind.lower())


def variant_terms(
    model: nn.Module, plain: Mapping[str, nn.Module], adapter: str | None = None
) -> tuple[str, dict[str, Term]]:
    """(method, {module path: term}) of ``model`` against the base whose modules by path are ``plain``.

    ``model`` is a ``peft.PeftModel`` (LoRA, DoRA, HoRA, DoRAN) or a plain model of the same class as the base
    (its differing modules become ``Replaced``). Raises ``ValueError`` for anything a mixed batch cannot serve.
    """
    from peft import PeftModel
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper

    if isinstance(model, PeftModel):
        adapter, method = _adapter_and_method(model, adapter)
        tree = model.get_base_model()
    elif adapter is not None:
        raise ValueError("`adapter` names an adapter of a PeftModel; this model is a plain one.")
    else:
        tree, method = model, ""
    if type(tree) is not type(plain[""]):
        raise ValueError(f"A {type(tree).__name__} is not a variant of this {type(plain['']).__name__} base.")
    terms: dict[str, Term] = {}
    skip = None  # the subtree handled last (named_modules walks depth first)
    with torch.no_grad():
        for path, module in tree.named_modules():
            if skip is not None and path.startswith(skip + "."):
                continue
            if isinstance(module, (BaseTunerLayer, AuxiliaryTrainingWrapper)):
                term, skip = _tuner_term(module, adapter, plain.get(path), path), path
            elif path not in plain:
                if next(itertools.chain(module._parameters.values(), module._buffers.values()), None) is not None:
                    raise ValueError(f"{path} is not a module of the served base.")
                continue
            elif _same_tensors(module, plain[path]):
                continue
            else:
                term, skip = Replaced(module), path
            if term is not None:
                if path == "":
                    raise ValueError("The whole model differs from the served base: it is not a variant of it.")
                terms[path] = term
    _check_replaced_size(terms, plain[""])
    return method or ("modules" if terms else "base"), terms


def _check_replaced_size(terms: Mapping[str, Term], root: nn.Module) -> None:
    replaced = sum(t.numel() for term in terms.values() if isinstance(term, Replaced) for t in term.tensors())
    total = sum(p.numel() for p in root.parameters())
    if replaced > MAX_REPLACED_FRACTION * total:
        raise ValueError(
            f"The variant replaces {replaced:,} of the base's {total:,} values with its own: it is not an adapter "
            "of this base (mixed batches hold adapters' terms, not other models)."
        )


__all__ = ["MAX_REPLACED_FRACTION", "LowRank", "Replaced", "Term", "variant_terms"]
