"""Layer summaries and the PCA view of generated factors."""

from __future__ import annotations

import peft
import pytest
import torch
from helpers import tiny_gpt2, tiny_llama

import hora
from hora import analysis


def test_layer_summaries_cover_every_adapted_layer():
    model = peft.get_peft_model(tiny_llama(), hora.HoraConfig(r=4, hyper_hidden=8, init_weights=False))
    assert analysis.adapted_layers(model, "q") == [0, 1]
    assert analysis.projections(model) == ["q", "v", "q_proj", "v_proj"]
    rows = analysis.layer_summaries(model, "v", metric="cka")
    assert [r.layer for r in rows] == [0, 1]
    assert all(len(r.effective_ranks) == 2 and len(r.delta_norms) == 2 for r in rows)  # 2 kv heads
    deltas = hora.head_deltas(model, 1, "v")
    sim = hora.head_similarity(deltas, "cka")
    assert rows[1].mean_offdiag_similarity == pytest.approx(float(sim[0, 1]))
    assert rows[1].effective_ranks == pytest.approx(hora.effective_rank(deltas).tolist())


def test_mean_offdiagonal():
    assert analysis.mean_offdiagonal(torch.tensor([[1.0, 0.2], [0.4, 1.0]])) == pytest.approx(0.3)
    assert analysis.mean_offdiagonal(torch.ones(1, 1)) == 0.0


def test_factor_pca_places_every_head_column():
    model = peft.get_peft_model(tiny_gpt2(), hora.HoraConfig(r=4, hyper_hidden=8, init_weights=False))
    pca = analysis.factor_pca(model, 0, "q")
    assert pca.points.shape == (16, 2)  # 4 heads x r = 4 columns
    assert pca.head == [h for h in range(4) for _ in range(4)]
    assert 0 < sum(pca.explained_variance) <= 1 + 1e-6
    assert pca.explained_variance[0] >= pca.explained_variance[1]
    # zero factors (HoRA at init): no variance, nothing to explain, no crash
    fresh = peft.get_peft_model(tiny_gpt2(), hora.HoraConfig(r=4, hyper_hidden=8))
    assert analysis.factor_pca(fresh, 0, "q").explained_variance == [0.0, 0.0]


def test_head_view_gathers_what_the_heads_tab_draws():
    import peft

    import hora

    model = peft.get_peft_model(tiny_llama(), hora.HoraConfig(r=4, hyper_hidden=8, init_weights=False)).eval()
    view = analysis.head_view(model, 1, "v", "cka")
    assert view.deltas.shape == (2, 8, 32) and view.similarity.shape == (2, 2)  # GQA: 2 key/value heads
    assert view.factors.B.shape == (2, 8, 4) and [s.layer for s in view.layers] == [0, 1]
    assert view.pca.points.shape == (2 * 4, 2)
