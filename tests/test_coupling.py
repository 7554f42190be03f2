"""hora.coupling: similarity of the heads' factors B_h against each measure's chance level."""

from __future__ import annotations

import peft
import pytest
import torch
from helpers import tiny_llama

import hora
from hora.coupling import (
    FACTOR_METRICS,
    cached_layer_couplings,
    chance_level,
    coupling,
    factor_similarity,
    joint_effective_rank,
    layer_coupling,
)


def random_factors(heads=6, hd=64, r=8, seed=0) -> torch.Tensor:
    return torch.randn(heads, hd, r, generator=torch.Generator().manual_seed(seed))


def shared_factors(heads=6, hd=64, r=8, seed=0) -> torch.Tensor:
    """Heads whose columns come out of one shared 3-dimensional subspace (what a shared generator can produce)."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(hd, 3, generator=g)
    return torch.stack([basis @ torch.randn(3, r, generator=g) for _ in range(heads)])


@pytest.mark.parametrize("metric", list(FACTOR_METRICS))
def test_independent_heads_score_their_chance_level(metric):
    scores = [coupling(random_factors(seed=s), metric).mean_offdiagonal for s in range(20)]
    assert sum(scores) / len(scores) == pytest.approx(chance_level(metric, 64, 8), abs=0.03)


def test_heads_that_share_a_subspace_score_far_above_chance():
    shared, independent = coupling(shared_factors(), "subspace"), coupling(random_factors(), "subspace")
    assert shared.mean_offdiagonal > 4 * shared.chance and shared.times_chance > 4
    assert independent.times_chance == pytest.approx(1.0, abs=0.35)
    assert shared.joint_effective_rank <= 3.01 < independent.joint_effective_rank


def test_chance_levels_follow_rank_and_head_size():
    assert chance_level("subspace", 64, 8) == 8 / 64 and chance_level("subspace", 64, 128) == 1.0
    assert chance_level("cosine", 64, 8) == 0.0
    small, large = chance_level("cka", 64, 8), chance_level("cka", 64, 25)
    assert 0.09 < small < 0.13 < large  # about r / (head_dim + r)
    with pytest.raises(ValueError):
        chance_level("cka", 0, 8)


def test_similarity_is_symmetric_and_one_on_the_diagonal():
    for metric in FACTOR_METRICS:
        sim = factor_similarity(random_factors(), metric)
        assert torch.allclose(sim, sim.T, atol=1e-6)
        assert torch.allclose(sim.diagonal(), torch.ones(6), atol=1e-5)
    zero = torch.zeros(2, 8, 2)
    assert torch.equal(factor_similarity(zero, "cosine"), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="Unknown metric"):
        factor_similarity(random_factors(), "cka-of-deltas")


def test_joint_effective_rank_counts_shared_directions():
    assert joint_effective_rank(shared_factors()) < 3.01
    assert joint_effective_rank(torch.zeros(2, 8, 2)) == 0.0


@pytest.mark.parametrize("method", ["lora", "dora", "hora", "doran"])
def test_every_method_is_measured_on_its_low_rank_factors(method):
    """DoRA and DoRAN too: on B_h (rank r), never on W' - W0 (full rank, overlap 1 everywhere)."""
    config = {
        "lora": lambda: peft.LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False),
        "dora": lambda: peft.LoraConfig(r=2, target_modules=["q_proj"], use_dora=True, init_lora_weights=False),
        "hora": lambda: hora.HoraConfig(r=2, hyper_hidden=4, target_modules=["q_proj"], init_weights=False),
        "doran": lambda: hora.DoranConfig(r=2, hyper_hidden=4, target_modules=["q_proj"], init_weights=False),
    }[method]()
    model = peft.get_peft_model(tiny_llama(), config)
    measured = layer_coupling(model, 0, "q", "subspace")
    assert measured.rank == 2 and measured.head_dim == 8 and measured.chance == 2 / 8
    assert measured.similarity.shape == (4, 4) and measured.mean_offdiagonal < 0.99


def test_every_layers_coupling_is_computed_once_and_remembered():
    config = hora.HoraConfig(r=2, hyper_hidden=4, target_modules=["q_proj", "v_proj"], init_weights=False)
    model = peft.get_peft_model(tiny_llama(), config)
    rows = cached_layer_couplings(model, "q", "cka")
    assert [row.layer for row in rows] == [0, 1]
    assert rows[1].coupling.mean_offdiagonal == pytest.approx(layer_coupling(model, 1, "q", "cka").mean_offdiagonal)
    assert cached_layer_couplings(model, "q", "cka") is rows  # remembered
    assert cached_layer_couplings(model, "q", "subspace") is not rows
    with pytest.raises(ValueError, match="Unknown metric"):
        cached_layer_couplings(model, "q", "ckaa")


def test_the_verdict_says_whether_heads_share_more_than_chance():
    assert coupling(shared_factors(), "subspace").verdict == "above"
    assert coupling(random_factors(), "subspace").verdict == "about"
    assert coupling(random_factors(hd=8, r=8), "subspace").verdict == "uninformative"  # r = head_dim: overlap 1
    aligned = random_factors() + 3 * random_factors(heads=1, seed=9)  # every head shares one factor
    assert coupling(aligned, "cosine").verdict == "above"
    opposed = torch.stack([aligned[0], -aligned[1]])  # two heads pushing the shared directions opposite ways
    assert coupling(opposed, "cosine").verdict == "below"
    assert coupling(random_factors(), "cosine").verdict == "about"
