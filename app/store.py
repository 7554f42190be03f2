"""The models the explorer can run: bases loaded once and shared, each with its adapters.

Every adapter gets its own copy of its base (LoRA, HoRA, DoRA and DoRAN cannot share one PeftModel), so
the variants of a base can run side by side. Tiny embedded models make that cheap. Adapters a user trains
live in that user's session (``SessionModels``), never in the shared store.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn


Kind = Literal["image", "lm"]


@dataclass
class Variant:
    """One runnable model: the base itself or the base with one adapter."""

    name: str
    method: str  # "base", "head", "lora", "dora", "hora", "doran"
    model: nn.Module
    source: str


@dataclass
class Base:
    name: str
    kind: Kind
    model: nn.Module
    processor: Any  # image processor or tokenizer
    source: str
    variants: dict[str, Variant] = field(default_factory=dict)

    def fresh_copy(self) -> nn.Module:
        """A private copy of the base weights, for a new adapter."""
        return copy.deepcopy(self.model)


class ModelStore:
    """Bases and their adapters, shared by every session (read-only once the app runs)."""

    def __init__(self) -> None:
        self.bases: dict[str, Base] = {}
        self._lock = threading.Lock()

    def add_base(self, name: str, kind: Kind, model: nn.Module, processor: Any, source: str) -> Base:
        base = Base(name, kind, model.eval(), processor, source)
        base.variants["base"] = Variant("base", "base", base.model, source)
        with self._lock:
            self.bases[name] = base
        return base

    def add_variant(self, base_name: str, variant: Variant) -> None:
        with self._lock:
            self.bases[base_name].variants[variant.name] = variant

    def names(self, kind: Kind | None = None) -> list[str]:
        return [n for n, b in self.bases.items() if kind is None or b.kind == kind]


@dataclass
class SessionModels:
    """What one user trained or loaded in this session, invisible to everyone else.

    ``bases``: bases loaded from the Models tab; ``variants``: base name -> variant name -> Variant.
    """

    bases: dict[str, Base] = field(default_factory=dict)
    variants: dict[str, dict[str, Variant]] = field(default_factory=dict)

    def add(self, base_name: str, variant: Variant) -> None:
        self.variants.setdefault(base_name, {})[variant.name] = variant


def get_base(store: ModelStore, session: SessionModels | None, base_name: str) -> Base:
    """A shared base or one this session loaded."""
    if base_name in store.bases:
        return store.bases[base_name]
    if session is not None and base_name in session.bases:
        return session.bases[base_name]
    raise KeyError(f"Unknown base model {base_name!r}; loaded: {store.names()}.")


def base_names(store: ModelStore, session: SessionModels | None, kind: Kind | None = None) -> list[str]:
    own = [n for n, b in (session.bases.items() if session else []) if kind is None or b.kind == kind]
    return store.names(kind) + [n for n in own if n not in store.bases]


def variants_of(store: ModelStore, session: SessionModels | None, base_name: str) -> dict[str, Variant]:
    """The variants of a base: the shared ones followed by the session's own."""
    merged = dict(get_base(store, session, base_name).variants)
    if session is not None:
        merged.update(session.variants.get(base_name, {}))
    return merged


METHOD_LABELS = {"head": "head-only", "lora": "LoRA", "dora": "DoRA", "hora": "HoRA", "doran": "DoRAN", "full": "full"}


def adapter_method(peft_model: nn.Module) -> str:
    """lora / dora / hora / doran from a PeftModel's active config."""
    config = peft_model.peft_config[peft_model.active_adapter]
    kind = str(config.peft_type).rsplit(".", 1)[-1].lower()
    return "dora" if kind == "lora" and getattr(config, "use_dora", False) else kind


def embedded_store() -> ModelStore:
    """Every embedded base of ``assets/`` with all its adapters, loaded once."""
    from hora import hub

    store = ModelStore()
    assets = hub.embedded_assets()
    for name in [n for n in assets if "/" not in n]:
        loaded = hub.load_base(name)
        base = store.add_base(name, loaded.kind, loaded.model, loaded.processor, f"embedded: {name}")
        for adapter_name in [n for n in assets if n.startswith(f"{name}/")]:
            model = hub.load_adapter(base.fresh_copy(), adapter_name)
            method = adapter_name.split("/", 1)[1]
            label = METHOD_LABELS.get(method, method)
            store.add_variant(name, Variant(label, method, model.eval(), f"embedded: {adapter_name}"))
    return store
