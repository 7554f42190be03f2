"""Summaries built on the inspection API, for plots: per-layer similarity and rank, what the joint hypernetwork
generates, and ``head_view``, everything the explorer's Heads tab shows for one layer and projection."""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

import torch
from torch import nn

from hora.inspect import (
    HeadFactors,
    ParamReport,
    SimilarityMetric,
    adapted_modules,
    effective_rank,
    head_deltas,
    head_factors,
    head_similarity,
    param_report,
)


@dataclass
class LayerSummary:
    """One layer of one projection: how alike its heads' updates are and how many directions each uses."""

    layer: int
    mean_offdiag_similarity: float  # mean over pairs h ≠ g of head_similarity
    effective_ranks: list[float]  # one per head
    delta_norms: list[float]  # ‖ΔW_h‖_F, one per head


def adapted_layers(model: nn.Module, projection: str) -> list[int]:
    """Block indices where ``projection`` (module name or head group) is adapted."""
    layers = set()
    for m in adapted_modules(model):
        names = {m.path.rsplit(".", 1)[-1]} | {g for g, _ in m.layout.groups}
        if projection in names and m.layer is not None:
            layers.add(m.layer)
    return sorted(layers)


def projections(model: nn.Module) -> list[str]:
    """Names accepted as ``projection`` by the inspection API: head groups first (q, k, v), then modules."""
    groups, modules = set(), set()
    for m in adapted_modules(model):
        modules.add(m.path.rsplit(".", 1)[-1])
        groups.update(g for g, _ in m.layout.groups)
    return sorted(groups) + sorted(modules - groups)


def mean_offdiagonal(matrix: torch.Tensor) -> float:
    """Mean of a square matrix's off-diagonal entries (0 for a 1×1 matrix)."""
    n = matrix.shape[0]
    if n < 2:
        return 0.0
    mask = ~torch.eye(n, dtype=torch.bool)
    return float(matrix[mask].mean())


def layer_summaries(
    model: nn.Module, projection: str, adapter: str | None = None, metric: SimilarityMetric = "cosine"
) -> list[LayerSummary]:
    """A ``LayerSummary`` for every adapted layer of ``projection``."""
    rows = []
    for layer in adapted_layers(model, projection):
        deltas = head_deltas(model, layer, projection, adapter)  # (H, hd, in)
        rows.append(
            LayerSummary(
                layer=layer,
                mean_offdiag_similarity=mean_offdiagonal(head_similarity(deltas, metric)),
                effective_ranks=effective_rank(deltas).tolist(),
                delta_norms=deltas.flatten(1).norm(dim=1).tolist(),
            )
        )
    return rows


@dataclass
class FactorProjection:
    """2-D PCA of every head's B columns (r points per head), all heads in one shared basis."""

    points: torch.Tensor  # (heads * r, 2)
    head: list[int]  # head of each point
    rank_index: list[int]  # column of B_h each point is
    explained_variance: list[float]  # of the two components, as fractions


def factor_pca(model: nn.Module, layer: int, projection: str, adapter: str | None = None) -> FactorProjection:
    """Project the columns of every head's B_h (vectors in ℝ^{head_dim}) onto their top two principal axes.

    For HoRA these columns all come out of one generator G_B, so they cluster in a shared low-dimensional
    subspace; for LoRA each head's columns are independent parameters.
    """
    factors = head_factors(model, layer, projection, adapter)
    heads, hd, r = factors.B.shape
    columns = factors.B.transpose(1, 2).reshape(heads * r, hd).double()  # (H·r, hd)
    centred = columns - columns.mean(dim=0, keepdim=True)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    k = min(2, vh.shape[0])
    points = centred @ vh[:k].T
    if k < 2:
        points = torch.cat([points, torch.zeros(points.shape[0], 2 - k, dtype=points.dtype)], dim=1)
    total = float((s**2).sum())
    explained = [float(v) / total if total > 0 else 0.0 for v in (s[:2] ** 2)] + [0.0] * (2 - min(2, len(s)))
    return FactorProjection(
        points=points.float(),
        head=[h for h in range(heads) for _ in range(r)],
        rank_index=[j for _ in range(heads) for j in range(r)],
        explained_variance=explained,
    )


@dataclass
class HeadView:
    """Everything the explorer's Heads tab draws for one adapter, one layer and one projection."""

    deltas: torch.Tensor  # (heads, head_dim, in): ΔW_h
    factors: HeadFactors
    similarity: torch.Tensor  # (heads, heads)
    layers: list[LayerSummary]  # every adapted layer of the projection
    pca: FactorProjection


def head_view(
    model: nn.Module, layer: int, projection: str, metric: SimilarityMetric = "cosine", adapter: str | None = None
) -> HeadView:
    """Per-head updates, factors, cross-head similarity, the per-layer summary and the PCA of B's columns."""
    deltas = head_deltas(model, layer, projection, adapter)
    return HeadView(
        deltas=deltas,
        factors=head_factors(model, layer, projection, adapter),
        similarity=head_similarity(deltas, metric),
        layers=layer_summaries(model, projection, adapter, metric),
        pca=factor_pca(model, layer, projection, adapter),
    )


# ---------------------------------------------------------------------------------------------------------------
# For display: what a browser can draw legibly, and the facts its captions state


def projection_choices(model: nn.Module) -> list[tuple[str, str]]:
    """One ``(label, projection)`` pair per distinct adapted projection, for a picker.

    ``projections()`` lists a head group and the module it lives in (``"q"`` and ``"q_proj"``) as two names for
    the same rows; here each head group appears once, labelled with its module (``("q (q_proj)", "q")``), and a
    module appears on its own only when it has no head group.
    """
    modules_of: dict[str, set[str]] = {}
    ungrouped: set[str] = set()
    for m in adapted_modules(model):
        module = m.path.rsplit(".", 1)[-1]
        groups = [g for g, _ in m.layout.groups]
        for group in groups:
            modules_of.setdefault(group, set()).add(module)
        if not groups:
            ungrouped.add(module)
    order = sorted(modules_of, key=lambda g: ("qkvo".index(g) if g in ("q", "k", "v", "o") else 4, g))  # q, k, v first
    pairs = [(f"{g} ({', '.join(sorted(modules_of[g]))})", g) for g in order]
    return pairs + [(m, m) for m in sorted(ungrouped - set(modules_of))]


def pool_for_display(matrix: torch.Tensor, max_rows: int, max_cols: int) -> torch.Tensor:
    """Shrink the last two dimensions of ``matrix`` to at most ``max_rows`` × ``max_cols`` for drawing.

    Each output cell is the entry of largest magnitude in its block, sign kept, so a strong update in a big
    matrix stays visible (a block mean would let positive and negative entries cancel). Matrices that already
    fit are returned unchanged; leading dimensions (heads) are kept.
    """
    rows, cols = matrix.shape[-2:]
    if rows <= max_rows and cols <= max_cols:
        return matrix
    flat = matrix.detach().float().reshape(-1, rows, cols)
    size = (min(rows, max_rows), min(cols, max_cols))
    _, index = torch.nn.functional.adaptive_max_pool2d(flat.abs(), size, return_indices=True)
    pooled = flat.flatten(1).gather(1, index.flatten(1)).reshape(flat.shape[0], *size)
    return pooled.reshape(*matrix.shape[:-2], *size)


@dataclass
class DisplayView:
    """A ``HeadView`` made small enough for a browser: pooled matrices, their colour ranges and norms.

    ``delta_shape`` is (head_dim, in_features) before pooling, so a plot can say what a cell stands for.
    """

    deltas: torch.Tensor  # (heads, ≤ max_rows, ≤ max_cols)
    delta_shape: tuple[int, int]
    delta_max: float  # largest |ΔW_h| entry over all heads (of the unpooled matrices)
    A: torch.Tensor  # (≤ r, ≤ max_cols): the A every head shares
    B: torch.Tensor  # (heads, ≤ max_rows, r)
    a_max: float
    b_max: float
    a_norm: float  # ‖A‖_F
    b_norms: list[float]  # ‖B_h‖_F per head
    mean_effective_rank: float  # of ΔW_h, over the heads of every adapted layer of the projection


def display_view(view: HeadView, max_rows: int = 32, max_cols: int = 48) -> DisplayView:
    """Pool ``view``'s per-head matrices to at most ``max_rows`` × ``max_cols`` and gather the numbers its plots and
    captions print (a 64 × 576 head of a 135M-parameter model becomes 32 × 48 cells)."""
    factors = view.factors
    return DisplayView(
        deltas=pool_for_display(view.deltas, max_rows, max_cols),
        delta_shape=(int(view.deltas.shape[1]), int(view.deltas.shape[2])),
        delta_max=float(view.deltas.abs().max()) if view.deltas.numel() else 0.0,
        A=pool_for_display(factors.A[0], factors.A.shape[1], max_cols),
        B=pool_for_display(factors.B, max_rows, factors.B.shape[2]),
        a_max=float(factors.A[0].abs().max()) if factors.A.numel() else 0.0,
        b_max=float(factors.B.abs().max()) if factors.B.numel() else 0.0,
        a_norm=float(factors.A[0].norm()),
        b_norms=factors.B.flatten(1).norm(dim=1).tolist(),
        mean_effective_rank=mean_effective_rank(view.layers),
    )


def mean_effective_rank(rows: list[LayerSummary]) -> float:
    """The mean effective rank of ΔW_h over every head of every layer in ``rows`` (0 when there are none)."""
    ranks = [r for row in rows for r in row.effective_ranks]
    return sum(ranks) / len(ranks) if ranks else 0.0


def adapter_rank(model: nn.Module) -> int | None:
    """The rank r of the model's active adapter (None for a model without a PEFT adapter)."""
    configs = getattr(model, "peft_config", None)
    if not configs:
        return None
    return getattr(configs.get(getattr(model, "active_adapter", "default")), "r", None)


def adapter_report(model: nn.Module) -> ParamReport:
    """``param_report`` counting what an adapter trained, whether or not it is frozen now.

    A loaded adapter is frozen (nothing requires gradients), so ``param_report`` would say 0 trainable; here
    every parameter outside the base model (factors, generator, magnitudes, saved heads) counts as trained.
    """
    report = param_report(model)
    return ParamReport(
        {name: (0 if name == "base model" else total, total) for name, (_, total) in report.rows.items()}
    )


# ---------------------------------------------------------------------------------------------------------------
# Fast enough to redraw on every click, for a 30-layer model


def effective_rank_fast(matrix: torch.Tensor) -> torch.Tensor:
    """``hora.inspect.effective_rank`` from the eigenvalues of the smaller Gram matrix (m × m for an m × n matrix
    with m ≤ n) instead of an SVD: the same singular values (to ~1e-8 of the largest, which moves an effective rank
    by far less than the second decimal), about 20 times faster for a 64 × 576 head. Accepts (m, n) or (..., m, n)."""
    x = matrix.detach().double()
    gram = x @ x.transpose(-1, -2) if x.shape[-2] <= x.shape[-1] else x.transpose(-1, -2) @ x
    s = torch.linalg.eigvalsh(gram).clamp_min(0).sqrt()
    total = s.sum(dim=-1, keepdim=True)
    p = s / total.clamp_min(1e-300)
    entropy = -(p * torch.log(p.clamp_min(1e-300))).sum(dim=-1)
    return torch.where(total.squeeze(-1) > 0, entropy.exp(), torch.zeros_like(entropy)).float()


_summaries: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {(projection, adapter, metric): rows}
_summaries_lock = threading.Lock()


def cached_layer_summaries(
    model: nn.Module, projection: str, adapter: str | None = None, metric: SimilarityMetric = "cosine"
) -> list[LayerSummary]:
    """``layer_summaries`` of a model that no longer changes (a loaded or finished adapter), computed once per
    projection and metric and remembered while the model lives; effective ranks by ``effective_rank_fast``.

    The per-layer summary does not depend on the layer being looked at, so an explorer that redraws on every
    change of layer need not recompute it.
    """
    key = (projection, adapter, metric)
    with _summaries_lock:
        known = _summaries.get(model, {}).get(key)
    if known is not None:
        return known
    rows = []
    for layer in adapted_layers(model, projection):
        deltas = head_deltas(model, layer, projection, adapter)
        rows.append(
            LayerSummary(
                layer=layer,
                mean_offdiag_similarity=mean_offdiagonal(head_similarity(deltas, metric)),
                effective_ranks=effective_rank_fast(deltas).tolist(),
                delta_norms=deltas.flatten(1).norm(dim=1).tolist(),
            )
        )
    with _summaries_lock:
        _summaries.setdefault(model, {})[key] = rows
    return rows


def explorer_view(
    model: nn.Module, layer: int, projection: str, metric: SimilarityMetric = "cosine", adapter: str | None = None
) -> HeadView:
    """``head_view`` with the per-layer summary from ``cached_layer_summaries``: what the explorer draws on every
    change of a control."""
    deltas = head_deltas(model, layer, projection, adapter)
    return HeadView(
        deltas=deltas,
        factors=head_factors(model, layer, projection, adapter),
        similarity=head_similarity(deltas, metric),
        layers=cached_layer_summaries(model, projection, adapter, metric),
        pca=factor_pca(model, layer, projection, adapter),
    )
