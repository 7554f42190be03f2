"""Head geometry: how the output rows of an attention projection split into heads.

HoRA generates one B factor per head, so it must know, for every module it adapts, which rows of the
weight belong to which head. The table below covers the architectures hora supports out of the box
(transformers 5 module names); anything else needs a user-provided ``head_layout``.

Rows are always counted in the (out_features, in_features) orientation of ``nn.Linear``. GPT-2's fused
``c_attn`` is a ``Conv1D`` whose weight is stored (in, out); its 3·E output rows are Q, K and V in that
order, each split into ``n_head`` heads.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class HeadLayout:
    """How a module's output rows split into heads.

    Args:
        head_dim: rows per head.
        groups: ``(name, num_heads)`` pairs in row order, e.g. ``(("q", 12),)`` for a query projection or
            ``(("q", 12), ("k", 12), ("v", 12))`` for GPT-2's fused ``c_attn``.
    """

    head_dim: int
    groups: tuple[tuple[str, int], ...]

    @property
    def num_heads(self) -> int:
        return sum(n for _, n in self.groups)

    @property
    def out_features(self) -> int:
        return self.num_heads * self.head_dim

    def group_rows(self, group: str) -> slice:
        """Row slice of one group (``"q"``, ``"k"`` or ``"v"``) of a possibly fused module."""
        start = 0
        for name, n in self.groups:
            if name == group:
                return slice(start, start + n * self.head_dim)
            start += n * self.head_dim
        raise KeyError(f"group {group!r} not in layout groups {[g for g, _ in self.groups]}")


def _llama_like(cfg: Any) -> dict[str, HeadLayout]:
    heads = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return {
        "q_proj": HeadLayout(head_dim, (("q", heads),)),
        "k_proj": HeadLayout(head_dim, (("k", kv_heads),)),
        "v_proj": HeadLayout(head_dim, (("v", kv_heads),)),
    }


def _vit(cfg: Any) -> dict[str, HeadLayout]:
    heads = cfg.num_attention_heads
    head_dim = cfg.hidden_size // heads
    return {name: HeadLayout(head_dim, ((name[0], heads),)) for name in ("q_proj", "k_proj", "v_proj")}


def _gpt2(cfg: Any) -> dict[str, HeadLayout]:
    heads = cfg.n_head
    head_dim = cfg.n_embd // heads
    return {"c_attn": HeadLayout(head_dim, (("q", heads), ("k", heads), ("v", heads)))}


#: model_type -> function(config) -> {module name: HeadLayout}
HEAD_LAYOUTS: dict[str, Callable[[Any], dict[str, HeadLayout]]] = {
    "vit": _vit,
    "dinov2": _vit,  # encoder.layer.N.attention.{q,k,v,o}_proj, as ViT's (DINOv2-small: 6 heads x 64)
    "gpt2": _gpt2,
    "llama": _llama_like,  # also SmolLM / SmolLM2, which use model_type "llama"
    "mistral": _llama_like,
    "qwen2": _llama_like,
    "qwen3": _llama_like,
}

#: model_type -> default target modules (query and value, as in the HoRA and DoRAN papers)
DEFAULT_TARGET_MODULES: dict[str, list[str]] = {
    "vit": ["q_proj", "v_proj"],
    "dinov2": ["q_proj", "v_proj"],
    "gpt2": ["c_attn"],
    "llama": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"],
    "qwen3": ["q_proj", "v_proj"],
}

_BLOCK_INDEX = re.compile(r"\.(\d+)\.")


def block_index(module_path: str) -> int | None:
    """The transformer block a module belongs to: the first integer component of its dotted path."""
    match = _BLOCK_INDEX.search(f".{module_path}.")
    return int(match.group(1)) if match else None


def projection_key(module_path: str) -> str:
    """The module's path inside its block (``attention.q_proj``), the same for every block."""
    match = _BLOCK_INDEX.search(f".{module_path}.")
    return module_path[match.end() - 1 :] if match else module_path


def resolve_layout(
    model_config: Any,
    module_path: str,
    out_features: int,
    head_layout: Mapping[str, int] | None = None,
) -> HeadLayout:
    """Find the head layout of one module, checking it against the module's real size.

    ``head_layout`` (from a config) maps a module name or a path suffix to a head size; it wins over the
    table, so a user can adapt modules or architectures hora does not know.
    """
    name = module_path.rsplit(".", 1)[-1]
    for key, head_dim in (head_layout or {}).items():
        if module_path == key or module_path.endswith("." + key) or name == key:
            if head_dim <= 0 or out_features % head_dim:
                raise ValueError(
                    f"head_layout[{key!r}] = {head_dim} does not divide the {out_features} output rows of "
                    f"module {module_path!r}."
                )
            return HeadLayout(head_dim, ((name, out_features // head_dim),))

    model_type = getattr(model_config, "model_type", None)
    if model_type not in HEAD_LAYOUTS:
        raise ValueError(
            f"hora has no head geometry for model type {model_type!r} (known: {sorted(HEAD_LAYOUTS)}), so it "
            f"cannot split module {module_path!r} into heads. Pass head_layout={{{name!r}: <head_dim>}} in the "
            "config to say how many output rows each head has."
        )
    table = HEAD_LAYOUTS[model_type](model_config)
    if name not in table:
        raise ValueError(
            f"hora knows how to split {sorted(table)} of model type {model_type!r} into heads, but not "
            f"{module_path!r}. Target one of those, or pass head_layout={{{name!r}: <head_dim>}} in the config."
        )
    layout = table[name]
    if layout.out_features != out_features:
        raise ValueError(
            f"Module {module_path!r} has {out_features} output rows but the {model_type} config implies "
            f"{layout.num_heads} heads x {layout.head_dim} = {layout.out_features}."
        )
    return layout
