"""Summaries built on the inspection API, for plots: per-layer similarity and rank, what the joint hypernetwork
generates, and ``head_view``, everything the explorer's Heads tab shows for one layer and projection."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hora.inspect import (
    HeadFactors,
    SimilarityMetric,
    adapted_modules,
    effective_rank,
    head_deltas,
    head_factors,
    head_similarity,
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
