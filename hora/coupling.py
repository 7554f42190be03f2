"""How much an adapter's heads share: similarity of their output-side factors B_h, measured against chance.

Every method here (LoRA, DoRA, HoRA, DoRAN) writes a head's low-rank update as s·B_h·A with one A shared by all the
heads of a module, so a similarity of the updates ΔW_h is dominated by that shared A (CKA of ΔW_h is 0.75-0.94 even
for random B). What tells the methods apart is B_h, the head's own (head_dim × r) factor: HoRA generates every head's
B_h with one shared generator, LoRA learns them independently. DoRA and DoRAN are measured on the same low-rank B_h
(their W' − W0 also rescales W0's rows, is full-rank, and overlaps trivially).

Each measure is stated with its chance level: the mean over pairs of independent Gaussian matrices of the same shape
(head_dim × r), so a reader can tell "shares more than chance" from "a big number because r is near head_dim".

- ``"subspace"``: overlap of the column spaces of B_h and B_g, the mean squared cosine of their principal angles
  (0 … 1; chance min(r, head_dim) / head_dim).
- ``"cosine"``: cosine of the flattened B_h and B_g (−1 … 1; chance 0). The columns of every head pair with the same
  rows of the shared A, so this says whether heads push the same A-directions the same way.
- ``"cka"``: linear CKA of B_h and B_g with the head's output dimensions as samples (0 … 1; chance about r /
  (head_dim + r)).
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from functools import cache
from typing import Literal

import torch
from torch import nn

from hora.analysis import adapted_layers
from hora.inspect import head_factors


FactorMetric = Literal["subspace", "cosine", "cka"]
FACTOR_METRICS: dict[str, str] = {
    "subspace": "subspace overlap of B_h",
    "cosine": "cosine of B_h",
    "cka": "CKA of B_h",
}
CHANCE_DRAWS = 2000  # pairs of random factors behind CKA's chance level: its standard error is about 0.001


def _basis(matrix: torch.Tensor, rtol: float = 1e-6) -> torch.Tensor:
    """Orthonormal basis of the column space, (rows, rank)."""
    u, s, _ = torch.linalg.svd(matrix, full_matrices=False)
    keep = s > (s.max() * rtol if s.numel() and s.max() > 0 else float("inf"))
    return u[:, keep]


def factor_similarity(factors: torch.Tensor, metric: FactorMetric = "subspace") -> torch.Tensor:
    """Cross-head similarity of the heads' factors B_h, ``factors`` (heads, head_dim, r) -> (heads, heads), float32.

    A head whose factor is zero has similarity 0 with every head, itself included.
    """
    if factors.dim() != 3:
        raise ValueError(f"factors must be (heads, head_dim, r), got shape {tuple(factors.shape)}.")
    x = factors.detach().double()
    heads = x.shape[0]
    norms = x.flatten(1).norm(dim=1)
    if metric == "subspace":
        bases = [_basis(x[h]) for h in range(heads)]
        sim = torch.zeros(heads, heads, dtype=torch.float64)
        for i in range(heads):
            for j in range(heads):
                k = min(bases[i].shape[1], bases[j].shape[1])
                if k:
                    sim[i, j] = (bases[i].T @ bases[j]).pow(2).sum() / k
    elif metric == "cosine":
        flat = x.flatten(1)
        sim = flat @ flat.T / (norms[:, None] * norms[None, :]).clamp_min(1e-300)
    elif metric == "cka":
        centred = x - x.mean(dim=1, keepdim=True)  # samples: the head's output dimensions
        gram = centred.transpose(1, 2) @ centred  # (heads, r, r)
        self_norm = gram.flatten(1).norm(dim=1)
        cross = torch.einsum("hdr,gds->hgrs", centred, centred).pow(2).sum(dim=(2, 3))  # ‖B_hᵀB_g‖²_F
        sim = cross / (self_norm[:, None] * self_norm[None, :]).clamp_min(1e-300)
        sim[self_norm == 0] = 0
        sim[:, self_norm == 0] = 0
    else:
        raise ValueError(f"Unknown metric {metric!r}; use one of {', '.join(FACTOR_METRICS)}.")
    sim[norms == 0] = 0
    sim[:, norms == 0] = 0
    return sim.float()


@cache
def chance_level(metric: FactorMetric, head_dim: int, rank: int) -> float:
    """What unrelated heads score: the measure's mean over pairs of independent Gaussian factors (head_dim × rank).

    Exact for the subspace overlap (min(r, head_dim) / head_dim: the column spaces are uniformly random) and the
    cosine (0, by symmetry); for CKA the mean of ``CHANCE_DRAWS`` pairs drawn with a fixed seed.
    """
    if head_dim < 1 or rank < 1:
        raise ValueError(f"head_dim and rank must be positive, got {head_dim} and {rank}.")
    if metric == "subspace":
        return min(rank, head_dim) / head_dim
    if metric == "cosine":
        return 0.0
    if metric != "cka":
        raise ValueError(f"Unknown metric {metric!r}; use one of {', '.join(FACTOR_METRICS)}.")
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, CHANCE_DRAWS, head_dim, rank, generator=generator, dtype=torch.float64)
    x, y = x - x.mean(dim=1, keepdim=True), y - y.mean(dim=1, keepdim=True)
    cross = (x.transpose(1, 2) @ y).pow(2).sum(dim=(1, 2))  # ‖XᵀY‖²_F per pair
    norms = (x.transpose(1, 2) @ x).flatten(1).norm(dim=1) * (y.transpose(1, 2) @ y).flatten(1).norm(dim=1)
    return float((cross / norms).mean())


def joint_effective_rank(factors: torch.Tensor) -> float:
    """Effective rank of every head's B columns side by side, (head_dim, heads·r): how many directions the heads use
    together. Heads that share directions use few; independent heads use up to min(head_dim, heads·r)."""
    heads, hd, r = factors.shape
    stacked = factors.detach().double().permute(1, 0, 2).reshape(hd, heads * r)
    s = torch.linalg.svdvals(stacked)
    if float(s.sum()) == 0:
        return 0.0
    p = s / s.sum()
    return float(torch.exp(-(p * torch.log(p.clamp_min(1e-300))).sum()))


VERDICT_RATIO = 1.5  # a measure with a positive chance level: this many times chance (or 1/this) is beyond chance


@dataclass
class Coupling:
    """How alike the heads of one layer's projection are, with the chance level of the measure for their shape."""

    similarity: torch.Tensor  # (heads, heads)
    mean_offdiagonal: float
    chance: float
    head_dim: int
    rank: int
    joint_effective_rank: float
    joint_effective_rank_chance: float  # of random factors of the same shape
    metric: str = "subspace"

    @property
    def times_chance(self) -> float | None:
        """mean / chance, where the chance level is positive (the cosine's is 0)."""
        return self.mean_offdiagonal / self.chance if self.chance > 1e-3 else None

    @property
    def verdict(self) -> Literal["above", "about", "below", "uninformative"]:
        """Whether the heads are more alike than unrelated ones: ``"uninformative"`` when the chance level is 1 or
        more (r ≥ head_dim: any two factors span the whole head); else ``"above"`` or ``"below"`` chance by a factor
        of ``VERDICT_RATIO`` (a measure with a positive chance level) or, for the cosine (chance 0), by three
        standard errors of the mean of unrelated pairs (each pair's cosine has variance 1 / (head_dim · r)); else
        ``"about"``."""
        if self.chance >= 0.999:
            return "uninformative"
        times = self.times_chance
        if times is not None:
            return "above" if times >= VERDICT_RATIO else "below" if times <= 1 / VERDICT_RATIO else "about"
        heads = self.similarity.shape[0]
        pairs = max(1, heads * (heads - 1) // 2)
        margin = 3 / (self.head_dim * self.rank * pairs) ** 0.5
        return "above" if self.mean_offdiagonal > margin else "below" if self.mean_offdiagonal < -margin else "about"


@cache
def _joint_rank_chance(heads: int, head_dim: int, rank: int) -> float:
    generator = torch.Generator().manual_seed(0)
    return joint_effective_rank(torch.randn(heads, head_dim, rank, generator=generator, dtype=torch.float64))


def mean_offdiagonal(matrix: torch.Tensor) -> float:
    """Mean of a square matrix's off-diagonal entries (0 for a 1×1 matrix)."""
    n = matrix.shape[0]
    if n < 2:
        return 0.0
    return float(matrix[~torch.eye(n, dtype=torch.bool)].mean())


def coupling(factors: torch.Tensor, metric: FactorMetric = "subspace") -> Coupling:
    """``Coupling`` of the heads' factors B_h, ``factors`` (heads, head_dim, r)."""
    heads, hd, r = factors.shape
    similarity = factor_similarity(factors, metric)
    return Coupling(
        similarity=similarity,
        mean_offdiagonal=mean_offdiagonal(similarity),
        chance=chance_level(metric, hd, r),
        head_dim=hd,
        rank=r,
        joint_effective_rank=joint_effective_rank(factors),
        joint_effective_rank_chance=_joint_rank_chance(heads, hd, r),
        metric=metric,
    )


def layer_coupling(
    model: nn.Module, layer: int, projection: str, metric: FactorMetric = "subspace", adapter: str | None = None
) -> Coupling:
    """``Coupling`` of one layer's projection (module name or head group) of a LoRA, DoRA, HoRA or DoRAN adapter."""
    return coupling(head_factors(model, layer, projection, adapter).B, metric)


@dataclass
class LayerCoupling:
    """The ``Coupling`` of one adapted block's projection."""

    layer: int
    coupling: Coupling


_remembered: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {(projection, metric, adapter): rows}
_remembered_lock = threading.Lock()


def cached_layer_couplings(
    model: nn.Module, projection: str, metric: FactorMetric = "subspace", adapter: str | None = None
) -> list[LayerCoupling]:
    """``layer_coupling`` of every adapted block of ``projection``, in block order, computed once per projection,
    metric and adapter and remembered while the model lives (for a model that no longer changes: a loaded or
    finished adapter). An explorer that redraws on every change of layer need not recompute them."""
    if metric not in FACTOR_METRICS:
        raise ValueError(f"Unknown metric {metric!r}; use one of {', '.join(FACTOR_METRICS)}.")
    key = (projection, metric, adapter)
    with _remembered_lock:
        known = _remembered.get(model, {}).get(key)
    if known is not None:
        return known
    rows = [
        LayerCoupling(layer, layer_coupling(model, layer, projection, metric, adapter))
        for layer in adapted_layers(model, projection)
    ]
    with _remembered_lock:
        _remembered.setdefault(model, {})[key] = rows
    return rows


__all__ = [
    "CHANCE_DRAWS",
    "VERDICT_RATIO",
    "FACTOR_METRICS",
    "Coupling",
    "FactorMetric",
    "LayerCoupling",
    "cached_layer_couplings",
    "chance_level",
    "coupling",
    "factor_similarity",
    "joint_effective_rank",
    "layer_coupling",
    "mean_offdiagonal",
]
