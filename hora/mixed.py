"""Mixed-variant batches: one forward pass serves several adapters and the base over one copy of the base weights.

Every method here computes, in each adapted layer, ``y = c ⊙ (W0·x + s·B·A·x) + bias`` with ``c = 1`` for LoRA and
HoRA and ``c = m / (‖W0 + s·B·A‖_c + τ)`` for DoRA (τ = 0) and DoRAN. So ``W0·x`` is computed once for the whole
batch and only the low-rank term and the row scale ``c`` differ per group of rows. A ``MixedModel`` is one module
tree over the served base's tensors (``hora.variants.shared_copy``: nothing is written into them) whose adapted
layers are ``RoutedLayer`` wrappers; each registered variant holds, per layer, its frozen terms only: A (r, in),
B (out, r), s and c (out,) or None; or, for a module it replaced in full (a classifier in ``modules_to_save``, a
head-only run), that small module. A layer a variant does not adapt is plain W0 for its rows.

Which row goes through which variant is said per call (``MixedModel.__call__`` / ``route``) in a
``contextvars.ContextVar``: calls from several threads at once each see their own routing, and a variant that is
registered or removed meanwhile changes nothing for calls already running (they hold the variants they resolved).
A name that is not registered is refused, never served by another variant.

    >>> mixed = MixedModel(base.model)                                  # the base is served as "base"
    >>> mixed.register("lora", hora.load_adapter(shared_copy(base.model), "smollm2-135m-instruct/lora"))
    >>> logits = mixed(["base", "lora"], input_ids=ids.repeat(2, 1)).logits    # row 0: base, row 1: LoRA
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from hora.mixed_terms import LowRank, Replaced, Term, variant_terms
from hora.models import labels_of
from hora.variants import shared_copy


@dataclass(frozen=True)
class MixedVariant:
    """One registered variant: its terms per module path of the served base, and its label set."""

    name: str
    method: str  # "base", "lora", "dora", "hora", "doran" or "modules" (replaced modules only, e.g. a head)
    terms: Mapping[str, Term] = field(repr=False)
    labels: dict[int, str] = field(default_factory=dict, repr=False)

    def nbytes(self) -> int:
        """Bytes of the tensors this variant holds (its factors, scales and replaced modules), each counted once."""
        seen: dict[int, int] = {}
        for term in self.terms.values():
            for t in term.tensors():
                seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return sum(seen.values())


@dataclass(frozen=True)
class _Route:
    owner: object  # the MixedModel's token: a route never steers another MixedModel's layers
    runs: tuple[tuple[int, int, MixedVariant], ...]  # (first row, end row, variant), consecutive rows grouped
    rows: int


_ROUTE: ContextVar[_Route | None] = ContextVar("hora_mixed_route", default=None)


class RoutedLayer(nn.Module):
    """A module of the served base whose rows go through the terms of the variant each row was routed to."""

    def __init__(self, base_layer: nn.Module, path: str, owner: object) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.path = path
        self._owner = owner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        route = _ROUTE.get()
        if route is None or route.owner is not self._owner:
            raise RuntimeError(
                f"{self.path} of a MixedModel ran outside a call that routes its rows (MixedModel(...))."
            )
        if x.shape[0] != route.rows:
            raise ValueError(f"{self.path} got {x.shape[0]} rows, but the call routed {route.rows}.")
        groups = [(start, end, variant.terms.get(self.path)) for start, end, variant in route.runs]
        if all(term is None for _, _, term in groups):
            return self.base_layer(x)
        if not any(isinstance(term, Replaced) for _, _, term in groups):
            y = self.base_layer(x)  # (B, ..., out): W0·x + b, once for the whole batch
            bias = self.base_layer.bias
            for start, end, term in groups:
                if term is not None:
                    y[start:end] = term.apply(x[start:end], y[start:end], bias)
            return y
        return self._per_group(x, groups)

    def _per_group(self, x: torch.Tensor, groups: list[tuple[int, int, Term | None]]) -> torch.Tensor:
        """Some rows go through a module of their own (a replaced head): each group on its own, then stacked."""
        parts = []
        for start, end, term in groups:
            rows = x[start:end]
            if isinstance(term, Replaced):
                parts.append(term.module(rows))
            elif isinstance(term, LowRank):
                parts.append(term.apply(rows, self.base_layer(rows), self.base_layer.bias))
            else:
                parts.append(self.base_layer(rows))
        shapes = {tuple(p.shape[1:]) for p in parts}
        if len(shapes) > 1:
            raise ValueError(
                f"The variants asked for give {self.path} outputs of different shapes {sorted(shapes)} "
                "(e.g. classifiers for different label sets): they cannot share one batch."
            )
        return torch.cat(parts)


class MixedModel:
    """Several variants of one base in one module tree; each row of a batch goes through its own variant.

    ``base``: the served base model (or a ``hora.LoadedBase``); its tensors are shared, never written.
    ``base_name``: the name the bare base is served under (None: the base is not a variant of its own, e.g. a
    backbone whose only head is a probe). Register variants with ``register``; call with one name per row.
    """

    def __init__(self, base: nn.Module | Any, base_name: str | None = "base") -> None:
        model = getattr(base, "model", base) if not isinstance(base, nn.Module) else base
        if not isinstance(model, nn.Module):
            raise ValueError(f"MixedModel needs a model (or a LoadedBase), not {type(base).__name__}.")
        self.model = shared_copy(model).eval()
        self._plain = dict(self.model.named_modules())  # the base's own modules, by path, before any wrapping
        self._owner = object()
        self._lock = threading.Lock()
        self._variants: Mapping[str, MixedVariant] = MappingProxyType({})  # replaced whole (copy-on-write)
        self.base_name = base_name
        if base_name is not None:
            self._variants = MappingProxyType({base_name: MixedVariant(base_name, "base", {}, labels_of(model))})

    # --- the variants ------------------------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        """The registered variants' names (the base's first, when it is served)."""
        return list(self._variants)

    def __contains__(self, name: object) -> bool:
        return name in self._variants

    def variant(self, name: str) -> MixedVariant:
        variants = self._variants
        if name not in variants:
            raise ValueError(f"No variant {name!r} is registered; registered: {sorted(variants)}.")
        return variants[name]

    def labels(self, name: str) -> dict[int, str]:
        """The label set of a variant's classifier ({} for a model without one)."""
        return self.variant(name).labels

    def register(self, name: str, model: nn.Module, adapter: str | None = None, replace: bool = False) -> MixedVariant:
        """Register ``model`` under ``name``: a ``peft.PeftModel`` of LoRA, DoRA, HoRA or DoRAN over this base
        (``adapter``: which of its adapters; default: its one active adapter), or a plain model of this base with
        some modules replaced (a head-only run). Only its terms are kept (never a copy of the base), so the caller
        may drop ``model`` afterwards. ``replace=True`` replaces a variant of that name. Safe while other threads
        run calls: they keep the variants they resolved."""
        if not isinstance(name, str) or not name:
            raise ValueError("A variant needs a non-empty name.")
        if name == self.base_name:
            raise ValueError(f"{name!r} is the base's own name in this MixedModel.")
        method, terms = variant_terms(model, self._plain, adapter)
        variant = MixedVariant(name, method, MappingProxyType(terms), labels_of(model))
        with self._lock:
            if name in self._variants and not replace:
                raise ValueError(f"A variant {name!r} is registered already (replace=True replaces it).")
            self._check_nesting(terms)
            for path in terms:
                self._wrap(path)
            self._variants = MappingProxyType({**self._variants, name: variant})
        return variant

    def unregister(self, name: str) -> None:
        """Remove a variant; calls running now finish with it, later calls refuse its name."""
        with self._lock:
            if name not in self._variants:
                raise ValueError(f"No variant {name!r} is registered; registered: {sorted(self._variants)}.")
            if name == self.base_name:
                raise ValueError(f"{name!r} is the base itself: it cannot be removed.")
            self._variants = MappingProxyType({k: v for k, v in self._variants.items() if k != name})

    def unregister_prefix(self, prefix: str) -> list[str]:
        """Remove every variant whose name starts with ``prefix`` (a visitor's own, at the end of its session);
        returns their names."""
        if not prefix:
            raise ValueError("An empty prefix would remove every variant.")
        with self._lock:
            gone = [n for n in self._variants if n.startswith(prefix) and n != self.base_name]
            self._variants = MappingProxyType({k: v for k, v in self._variants.items() if k not in gone})
        return gone

    def _check_nesting(self, terms: Mapping[str, Term]) -> None:
        """A routed module inside another routed module would see only some rows: refuse such a variant."""
        paths = set(terms) | {p for v in self._variants.values() for p in v.terms}
        for path in terms:
            inner = next((p for p in paths if p.startswith(path + ".") or path.startswith(p + ".")), None)
            if inner is not None:
                raise ValueError(
                    f"The variant adapts {path}, which nests with {inner}: mixed batches cannot route it."
                )

    def _wrap(self, path: str) -> None:
        """Put a ``RoutedLayer`` at ``path`` (once). A call running meanwhile reads the plain module or the wrapper:
        both give W0 for every variant it resolved, since none of them adapts ``path`` yet."""
        parent_path, _, child = path.rpartition(".")
        parent = self.model.get_submodule(parent_path)
        if not isinstance(getattr(parent, child), RoutedLayer):
            setattr(parent, child, RoutedLayer(self._plain[path], path, self._owner))

    # --- calls -------------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def route(self, names: Sequence[str]) -> Iterator[None]:
        """While inside (in this thread or task only), row i of a batch through ``self.model`` goes through
        variant ``names[i]``."""
        variants = self._variants  # one snapshot for the whole call
        if isinstance(names, str) or not names:
            raise ValueError("Give a list with one variant name per row of the batch.")
        unknown = sorted({n for n in names if n not in variants})
        if unknown:
            raise ValueError(
                f"No variant {', '.join(map(repr, unknown))} is registered; registered: {sorted(variants)}."
            )
        runs, start = [], 0
        for i in range(1, len(names) + 1):
            if i == len(names) or names[i] != names[start]:
                runs.append((start, i, variants[names[start]]))
                start = i
        token = _ROUTE.set(_Route(self._owner, tuple(runs), len(names)))
        try:
            yield
        finally:
            _ROUTE.reset(token)

    def __call__(self, names: Sequence[str], **inputs: Any) -> Any:
        """The model's output for ``inputs`` (keyword arguments of the base model's forward) whose row i goes
        through variant ``names[i]``. Inference only (no gradients)."""
        for key, value in inputs.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] != len(names):
                raise ValueError(f"{key} has {value.shape[0]} rows for {len(names)} variant names.")
        with self.route(names), torch.no_grad():
            return self.model(**inputs)

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def nbytes(self, name: str) -> int:
        """Bytes a variant adds to the served base (its factors, scales and replaced modules)."""
        return self.variant(name).nbytes()


__all__ = ["MixedModel", "MixedVariant", "RoutedLayer"]
