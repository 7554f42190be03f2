"""Per-head inspection of low-rank adapters: HoRA, DoRAN and PEFT's own LoRA and DoRA.

Every function here works on a ``PeftModel`` (or a model with adapter layers injected) and reads the
adapter's weights; none runs the model. Shapes follow the head layout of ``hora.geometry``:
ΔW_h is (head_dim, in_features), one per head of the chosen projection.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Literal

import torch
from peft.tuners.lora import LoraLayer
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from hora.geometry import HeadLayout, block_index, resolve_layout
from hora.tuners.hora.layer import GeneratedFactorsLayer, in_out_features


SimilarityMetric = Literal["cosine", "subspace", "cka"]


@dataclass
class HeadFactors:
    """Low-rank factors of one projection, split per head (ΔW_h = scaling · B[h] @ A[h]).

    A is the same for every head (LoRA, DoRA, HoRA and DoRAN all share A across the heads of a module);
    it is expanded to (heads, r, in) so that ``A[h]`` and ``B[h]`` pair up. ``magnitude`` is the per-row
    magnitude of DoRA and DoRAN (heads, head_dim), ``None`` otherwise.
    """

    A: torch.Tensor  # (heads, r, in)
    B: torch.Tensor  # (heads, head_dim, r)
    scaling: float
    magnitude: torch.Tensor | None = None  # (heads, head_dim)


@dataclass
class AdaptedModule:
    """One adapted module: where it sits and how its rows split into heads."""

    path: str
    layer: int | None
    module: BaseTunerLayer
    layout: HeadLayout


def _model_config(model: nn.Module):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base, "config", None)


def adapted_modules(model: nn.Module) -> list[AdaptedModule]:
    """Every adapter layer of ``model`` with its block index and head layout."""
    config = _model_config(model)
    found = []
    for path, module in model.named_modules():
        if not isinstance(module, BaseTunerLayer) or not isinstance(module, (GeneratedFactorsLayer, LoraLayer)):
            continue
        if isinstance(module, GeneratedFactorsLayer) and module.layouts:
            layout = next(iter(module.layouts.values()))
        else:
            _, out_features = in_out_features(module.get_base_layer())
            layout = resolve_layout(config, path, out_features)
        found.append(AdaptedModule(path, block_index(path), module, layout))
    return found


def find_projection(model: nn.Module, layer: int, projection: str) -> tuple[AdaptedModule, slice]:
    """The module and row range of ``projection`` in block ``layer``.

    ``projection`` is a module name (``"q_proj"``, ``"c_attn"``) or a head group (``"q"``, ``"k"``,
    ``"v"``), so ``"q"`` finds the query rows of GPT-2's fused ``c_attn`` as well as Llama's ``q_proj``.
    """
    candidates = [m for m in adapted_modules(model) if m.layer == layer]
    for m in candidates:
        if m.path.rsplit(".", 1)[-1] == projection:
            return m, slice(0, m.layout.out_features)
    for m in candidates:
        if projection in [g for g, _ in m.layout.groups]:
            return m, m.layout.group_rows(projection)
    available = sorted(
        {m.path.rsplit(".", 1)[-1] for m in candidates} | {g for m in candidates for g, _ in m.layout.groups}
    )
    layers = sorted({m.layer for m in adapted_modules(model) if m.layer is not None})
    raise ValueError(
        f"No adapted projection {projection!r} in layer {layer}. Adapted there: {available or 'nothing'}; "
        f"adapted layers: {layers}."
    )


def _resolve_adapter(module: BaseTunerLayer, adapter: str | None) -> str:
    name = adapter or module.active_adapters[0]
    known = module._all_available_adapter_names()
    if name not in known:
        raise ValueError(f"Adapter {name!r} not found; this module has {known}.")
    if module.merged:
        raise ValueError("The adapter is merged into the base weights; call unmerge_adapter() before inspecting.")
    return name


def _lora_factors(module: LoraLayer, adapter: str) -> tuple[torch.Tensor, torch.Tensor]:
    return module.lora_A[adapter].weight, module.lora_B[adapter].weight


def _base_weight_out_in(module: BaseTunerLayer) -> torch.Tensor:
    weight = module.get_base_layer().weight
    return weight.T if getattr(module, "fan_in_fan_out", False) else weight


def _lora_magnitude(module: LoraLayer, adapter: str) -> torch.Tensor | None:
    magnitudes = getattr(module, "lora_magnitude_vector", {})
    return magnitudes[adapter].weight if adapter in magnitudes else None


@torch.no_grad()
def full_delta(module: BaseTunerLayer, adapter: str) -> torch.Tensor:
    """W' − W0 of one adapter layer, (out, in), float32 on the CPU."""
    if isinstance(module, GeneratedFactorsLayer):
        return module.delta_weight_out_in(adapter).float().cpu()
    A, B = _lora_factors(module, adapter)
    low_rank = (B.float() @ A.float()) * module.scaling[adapter]
    magnitude = _lora_magnitude(module, adapter)
    if magnitude is None:
        return low_rank.cpu()
    w0 = _base_weight_out_in(module).float()
    v = w0 + low_rank
    adapted = (magnitude.float() / v.norm(dim=1)).unsqueeze(1) * v
    return (adapted - w0).cpu()


def head_deltas(model: nn.Module, layer: int, projection: str, adapter: str | None = None) -> torch.Tensor:
    """Per-head ΔW_h of one projection: (heads, head_dim, in_features), float32.

    Works for HoRA, DoRAN and PEFT LoRA / DoRA adapters (for DoRA and DoRAN, ΔW = W' − W0). Stacking the
    heads back, ``deltas.reshape(-1, in_features)`` is the projection's full ΔW (rows of its group only,
    for a fused module).
    """
    found, rows = find_projection(model, layer, projection)
    name = _resolve_adapter(found.module, adapter)
    delta = full_delta(found.module, name)[rows]
    return delta.reshape(-1, found.layout.head_dim, delta.shape[1])


@torch.no_grad()
def head_factors(model: nn.Module, layer: int, projection: str, adapter: str | None = None) -> HeadFactors:
    """Per-head low-rank factors of one projection (the generated ones for HoRA and DoRAN)."""
    found, rows = find_projection(model, layer, projection)
    module = found.module
    name = _resolve_adapter(module, adapter)
    if isinstance(module, GeneratedFactorsLayer):
        A, B = module.factors(name)
        magnitude = module.effective_magnitude(name) if hasattr(module, "effective_magnitude") else None
    else:
        A, B = _lora_factors(module, name)
        magnitude = _lora_magnitude(module, name)
    hd = found.layout.head_dim
    B = B.detach().float().cpu()[rows]
    heads = B.shape[0] // hd
    return HeadFactors(
        A=A.detach().float().cpu().unsqueeze(0).expand(heads, -1, -1),
        B=B.reshape(heads, hd, -1),
        scaling=float(module.scaling[name]),
        magnitude=None if magnitude is None else magnitude.detach().float().cpu()[rows].reshape(heads, hd),
    )


def _orthonormal_basis(matrix: torch.Tensor, rtol: float = 1e-6) -> torch.Tensor:
    u, s, _ = torch.linalg.svd(matrix, full_matrices=False)
    keep = s > (s.max() * rtol if s.numel() and s.max() > 0 else float("inf"))
    return u[:, keep]


def head_similarity(deltas: torch.Tensor, metric: SimilarityMetric = "cosine") -> torch.Tensor:
    """Cross-head similarity of per-head updates ``deltas`` (heads, head_dim, in) -> (heads, heads).

    - ``"cosine"``: cosine of the flattened ΔW_h (−1 … 1).
    - ``"subspace"``: overlap of the column spaces of ΔW_h and ΔW_g, the mean squared cosine of their
      principal angles, ‖U_hᵀU_g‖²_F / min(k_h, k_g) (0 … 1).
    - ``"cka"``: linear CKA of ΔW_hᵀ and ΔW_gᵀ, the input dimensions taken as samples (0 … 1).

    A head whose update is zero has similarity 0 with every head, itself included.
    """
    if deltas.dim() != 3:
        raise ValueError(f"deltas must be (heads, head_dim, in_features), got shape {tuple(deltas.shape)}.")
    x = deltas.detach().double()
    heads = x.shape[0]
    if metric == "cosine":
        flat = x.reshape(heads, -1)
        norms = flat.norm(dim=1)
        sim = flat @ flat.T / (norms[:, None] * norms[None, :]).clamp_min(1e-300)
        sim[norms == 0] = 0
        sim[:, norms == 0] = 0
    elif metric == "subspace":
        bases = [_orthonormal_basis(x[h]) for h in range(heads)]
        sim = torch.zeros(heads, heads, dtype=torch.float64)
        for i in range(heads):
            for j in range(heads):
                k = min(bases[i].shape[1], bases[j].shape[1])
                if k:
                    sim[i, j] = (bases[i].T @ bases[j]).pow(2).sum() / k
    elif metric == "cka":
        feats = x.transpose(1, 2)  # (heads, in, head_dim): samples are input dimensions
        feats = feats - feats.mean(dim=1, keepdim=True)
        gram = torch.einsum("hnd,hne->hde", feats, feats)  # (heads, hd, hd) = XᵀX
        self_norm = gram.flatten(1).norm(dim=1)
        cross = torch.einsum("hnd,gne->hgde", feats, feats).pow(2).sum(dim=(2, 3))  # ‖XᵀY‖²_F
        sim = cross / (self_norm[:, None] * self_norm[None, :]).clamp_min(1e-300)
        sim[self_norm == 0] = 0
        sim[:, self_norm == 0] = 0
    else:
        raise ValueError(f"Unknown metric {metric!r}; use 'cosine', 'subspace' or 'cka'.")
    return sim.float()


def effective_rank(matrix: torch.Tensor) -> torch.Tensor:
    """Effective rank (Roy & Vetterli): exp of the entropy of the normalised singular values.

    Accepts (m, n) or a batch (..., m, n); a zero matrix has effective rank 0.
    """
    s = torch.linalg.svdvals(matrix.detach().double())
    total = s.sum(dim=-1, keepdim=True)
    p = s / total.clamp_min(1e-300)
    entropy = -(p * torch.log(p.clamp_min(1e-300))).sum(dim=-1)
    return torch.where(total.squeeze(-1) > 0, entropy.exp(), torch.zeros_like(entropy)).float()


@dataclass
class ParamReport:
    """Trainable and total parameters by component."""

    rows: dict[str, tuple[int, int]] = field(default_factory=dict)  # component -> (trainable, total)

    @property
    def trainable(self) -> int:
        return sum(t for t, _ in self.rows.values())

    @property
    def total(self) -> int:
        return sum(n for _, n in self.rows.values())

    def __str__(self) -> str:
        width = max([len(k) for k in self.rows] + [9])
        lines = [f"{'component':<{width}}  {'trainable':>12}  {'total':>12}"]
        for name, (trainable, total) in self.rows.items():
            lines.append(f"{name:<{width}}  {trainable:>12,}  {total:>12,}")
        share = 100 * self.trainable / self.total if self.total else 0.0
        lines.append(f"{'all':<{width}}  {self.trainable:>12,}  {self.total:>12,}  ({share:.3f}% trainable)")
        return "\n".join(lines)


_COMPONENTS = (
    ("generator", ("hora_generator", "doran_generator")),
    ("low-rank factors", ("lora_A", "lora_B", "_A_seed", "_B_seed")),
    ("magnitude / tau", ("lora_magnitude_vector", "doran_magnitude", "doran_tau")),
    ("modules_to_save", ("modules_to_save",)),
)


def param_report(model: nn.Module) -> ParamReport:
    """Trainable and total parameters by component: base model, low-rank factors (seeds for HoRA and
    DoRAN), generator, magnitude / τ and modules_to_save."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for name, param in model.named_parameters():
        component = next((c for c, keys in _COMPONENTS if any(k in name for k in keys)), "base model")
        counts[component][0] += param.numel() if param.requires_grad else 0
        counts[component][1] += param.numel()
    order = ["base model"] + [c for c, _ in _COMPONENTS]
    return ParamReport({c: tuple(counts[c]) for c in order if c in counts})
