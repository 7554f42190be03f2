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


def test_projection_choices_name_each_projection_once():
    llama = peft.get_peft_model(tiny_llama(), hora.HoraConfig(r=4, hyper_hidden=8))
    assert analysis.projection_choices(llama) == [("q (q_proj)", "q"), ("v (v_proj)", "v")]
    gpt2 = peft.get_peft_model(tiny_gpt2(), hora.HoraConfig(r=4, hyper_hidden=8))  # fused c_attn: q, k, v rows
    assert analysis.projection_choices(gpt2) == [("q (c_attn)", "q"), ("k (c_attn)", "k"), ("v (c_attn)", "v")]
    for _, value in analysis.projection_choices(gpt2):  # every choice is one the inspection API accepts
        assert hora.head_deltas(gpt2, 0, value).shape[0] == 4


def test_pool_for_display_keeps_the_strongest_entry_of_each_block_with_its_sign():
    matrix = torch.zeros(2, 64, 576)
    matrix[0, 5, 300] = -3.0  # one strong negative entry in head 0
    matrix[1, 60, 10] = 2.0
    pooled = analysis.pool_for_display(matrix, 32, 48)
    assert pooled.shape == (2, 32, 48)
    assert pooled[0].min() == -3.0 and pooled[0].max() == 0.0  # not averaged away, sign kept
    assert pooled[1].max() == 2.0 and int((pooled != 0).sum()) == 2
    small = torch.randn(3, 8, 16)
    assert analysis.pool_for_display(small, 32, 48) is small  # fits already: untouched


def test_display_view_is_small_and_states_the_numbers_its_plots_print():
    model = peft.get_peft_model(tiny_llama(), hora.HoraConfig(r=4, hyper_hidden=8, init_weights=False)).eval()
    view = analysis.head_view(model, 1, "q", "cosine")
    shown = analysis.display_view(view, max_rows=4, max_cols=16)
    assert shown.deltas.shape == (4, 4, 16) and shown.delta_shape == (8, 32)
    assert shown.delta_max == pytest.approx(float(view.deltas.abs().max()))
    assert shown.A.shape == (4, 16) and shown.B.shape == (4, 4, 4)
    assert shown.b_norms == pytest.approx(view.factors.B.flatten(1).norm(dim=1).tolist())
    ranks = [r for row in view.layers for r in row.effective_ranks]
    assert shown.mean_effective_rank == pytest.approx(sum(ranks) / len(ranks))
    assert 0 < shown.mean_effective_rank <= 4 + 1e-4  # LoRA-style ΔW_h = s·B_h·A: at most r


def test_adapter_rank_and_report_of_a_frozen_adapter():
    model = peft.get_peft_model(tiny_llama(), peft.LoraConfig(r=3, target_modules=["q_proj"]))
    assert analysis.adapter_rank(model) == 3 and analysis.adapter_rank(tiny_llama()) is None
    model.requires_grad_(False)  # as a loaded adapter is
    assert hora.param_report(model).trainable == 0
    report = analysis.adapter_report(model)
    assert report.rows["base model"][0] == 0
    assert report.trainable == 2 * 3 * (32 + 32) == report.rows["low-rank factors"][0]  # 2 layers x r x (in + out)


def test_effective_rank_fast_matches_the_svd_one():
    torch.manual_seed(0)
    low = torch.randn(9, 64, 3) @ torch.randn(9, 3, 576)  # rank 3 per head, as a LoRA update of r=3
    full = torch.randn(4, 64, 576)
    tall = torch.randn(2, 50, 8)  # more rows than columns: the other Gram matrix
    for matrix in (low, full, tall, torch.zeros(2, 8, 16)):
        assert analysis.effective_rank_fast(matrix) == pytest.approx(hora.effective_rank(matrix), rel=1e-4, abs=1e-6)


def test_cached_layer_summaries_and_explorer_view_agree_with_the_plain_ones():
    model = peft.get_peft_model(tiny_llama(), hora.HoraConfig(r=4, hyper_hidden=8, init_weights=False)).eval()
    plain = analysis.layer_summaries(model, "v", metric="cka")
    cached = analysis.cached_layer_summaries(model, "v", metric="cka")
    assert [r.layer for r in cached] == [r.layer for r in plain]
    for a, b in zip(cached, plain, strict=True):
        assert a.mean_offdiag_similarity == pytest.approx(b.mean_offdiag_similarity)
        assert a.effective_ranks == pytest.approx(b.effective_ranks, rel=1e-4)
    assert analysis.cached_layer_summaries(model, "v", metric="cka") is cached  # computed once
    assert analysis.cached_layer_summaries(model, "v", metric="cosine") is not cached  # per metric
    view, reference = analysis.explorer_view(model, 1, "v", "cka"), analysis.head_view(model, 1, "v", "cka")
    assert torch.equal(view.deltas, reference.deltas) and torch.equal(view.similarity, reference.similarity)
    assert view.layers is cached
