"""Inspection API: per-head deltas and factors, cross-head similarity, effective rank, parameter report."""

from __future__ import annotations

import peft
import pytest
import torch
from helpers import BUILDERS
from peft import LoraConfig

import hora


def _randomise_lora(model):
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name or "magnitude" in name:
                param.add_(0.1 * torch.randn_like(param))
    return model


def adapter_model(kind: str, method: str):
    base = BUILDERS[kind]()
    if method in ("lora", "dora"):
        targets = hora.geometry.DEFAULT_TARGET_MODULES[kind]
        return _randomise_lora(
            peft.get_peft_model(base, LoraConfig(r=4, target_modules=targets, use_dora=method == "dora"))
        )
    config = {"hora": hora.HoraConfig, "doran": hora.DoranConfig}[method](r=4, hyper_hidden=8, init_weights=False)
    return peft.get_peft_model(base, config).eval()


def weight_change(model, kind: str, layer: int, module: str) -> torch.Tensor:
    """W_merged − W0 in (out, in) orientation, measured by merging: independent of head_deltas."""
    paths = {
        "vit": f"vit.layers.{layer}.attention.{module}",
        "gpt2": f"transformer.h.{layer}.attn.{module}",
        "llama": f"model.layers.{layer}.self_attn.{module}",
    }
    w0 = BUILDERS[kind]().get_submodule(paths[kind]).weight.detach()
    merged = model.merge_and_unload().get_submodule(paths[kind]).weight.detach()
    delta = merged - w0
    return delta.T if kind == "gpt2" else delta


CASES = [(k, m) for k in ("vit", "gpt2", "llama") for m in ("hora", "doran", "lora", "dora")]


@pytest.mark.parametrize("kind,method", CASES)
def test_head_deltas_reassemble_the_full_update(kind, method):
    model = adapter_model(kind, method)
    if kind == "gpt2":  # fused c_attn: q, k and v groups, each split into heads
        parts = [hora.head_deltas(model, 1, g) for g in ("q", "k", "v")]
        assert all(p.shape == (4, 8, 32) for p in parts)
        full = torch.cat([p.reshape(-1, 32) for p in parts])
        assert torch.equal(hora.head_deltas(model, 1, "c_attn").reshape(-1, 32), full)
        expected = weight_change(model, kind, 1, "c_attn")
    else:
        deltas = hora.head_deltas(model, 1, "v")
        assert deltas.shape == ((2 if kind == "llama" else 4), 8, 32)  # Llama: 2 key/value heads (GQA)
        full = deltas.reshape(-1, 32)
        expected = weight_change(model, kind, 1, "v_proj")
    assert full.abs().max() > 1e-4
    torch.testing.assert_close(full, expected, atol=2e-6, rtol=0)


@pytest.mark.parametrize("kind,method", CASES)
def test_head_factors_rebuild_head_deltas_for_additive_methods(kind, method):
    model = adapter_model(kind, method)
    factors = hora.head_factors(model, 0, "q")
    heads = 4
    assert factors.A.shape == (heads, 4, 32) and factors.B.shape == (heads, 8, 4)
    assert (factors.magnitude is not None) == (method in ("dora", "doran"))
    if method in ("hora", "lora"):
        rebuilt = factors.scaling * factors.B @ factors.A
        torch.testing.assert_close(rebuilt, hora.head_deltas(model, 0, "q"), atol=1e-6, rtol=0)


def test_missing_projection_and_adapter_are_explained():
    model = adapter_model("llama", "hora")
    with pytest.raises(
        ValueError, match=r"No adapted projection 'k_proj' in layer 0.*q_proj.*adapted layers: \[0, 1\]"
    ):
        hora.head_deltas(model, 0, "k_proj")
    with pytest.raises(ValueError, match="Adapter 'nope' not found"):
        hora.head_deltas(model, 0, "q", adapter="nope")
    model.merge_adapter()
    with pytest.raises(ValueError, match="unmerge_adapter"):
        hora.head_deltas(model, 0, "q")


def test_similarity_metrics_on_known_cases():
    torch.manual_seed(0)
    a = torch.randn(8, 16)
    rotated_rows = torch.linalg.qr(torch.randn(8, 8))[0] @ a  # same column space as a, other entries
    deltas = torch.stack([a, a, -a, rotated_rows, torch.zeros(8, 16)])
    cos = hora.head_similarity(deltas, "cosine")
    assert cos[0, 1] == pytest.approx(1) and cos[0, 2] == pytest.approx(-1) and cos[4].abs().sum() == 0
    sub = hora.head_similarity(deltas, "subspace")
    assert sub[0, 3] == pytest.approx(1, abs=1e-5) and sub[4, 4] == 0
    cka = hora.head_similarity(deltas, "cka")
    assert cka[0, 2] == pytest.approx(1, abs=1e-5)  # CKA ignores sign and rotations of the features
    assert cka[0, 3] == pytest.approx(1, abs=1e-5)
    e1, e2 = torch.zeros(4, 6), torch.zeros(4, 6)
    e1[0, 0], e2[1, 1] = 1, 1
    assert hora.head_similarity(torch.stack([e1, e2]), "subspace")[0, 1] == 0
    for metric in ("cosine", "subspace", "cka"):
        sim = hora.head_similarity(deltas[:4], metric)
        assert sim.shape == (4, 4) and torch.allclose(sim, sim.T, atol=1e-6)
        assert torch.allclose(sim.diagonal(), torch.ones(4), atol=1e-5)
    with pytest.raises(ValueError, match="Unknown metric"):
        hora.head_similarity(deltas, "euclid")
    with pytest.raises(ValueError, match="heads, head_dim, in_features"):
        hora.head_similarity(a, "cosine")


def test_effective_rank():
    assert hora.effective_rank(torch.eye(5)).item() == pytest.approx(5)
    assert hora.effective_rank(torch.outer(torch.arange(1.0, 4), torch.arange(1.0, 6))).item() == pytest.approx(1)
    assert hora.effective_rank(torch.zeros(3, 3)).item() == 0
    assert hora.effective_rank(torch.randn(4, 8, 6)).shape == (4,)


def expected_hora_params(
    hidden: int, head_dim: int, out: dict[str, int], r: int, p: int, layers: int, generate_a: bool
) -> int:
    """The README's formula: seeds r·(in + out) per projection, plus per block the shared first layers
    (n·p + p, for n = hidden and n = head_dim) and per projection the second layers (p·n + n); without G_A
    (``generate_a=False``, the default) the terms with n = hidden go."""
    seeds = sum(r * (hidden + o) for o in out.values())
    first = (hidden * p + p) * generate_a + (head_dim * p + p)
    second = len(out) * ((p * hidden + hidden) * generate_a + (p * head_dim + head_dim))
    return layers * (seeds + first + second)


@pytest.mark.parametrize("generate_a", [False, True], ids=["default", "A-generated"])
@pytest.mark.parametrize(
    "kind,out", [("vit", {"q": 32, "v": 32}), ("gpt2", {"c_attn": 96}), ("llama", {"q": 32, "v": 16})]
)
def test_parameter_count_matches_the_readme_formula(kind, out, generate_a):
    config = (
        hora.HoraConfig(r=4, hyper_hidden=8)
        if not generate_a
        else hora.HoraConfig(r=4, hyper_hidden=8, generate_a=True)
    )
    model = peft.get_peft_model(BUILDERS[kind](), config)
    report = hora.param_report(model)
    expected = expected_hora_params(hidden=32, head_dim=8, out=out, r=4, p=8, layers=2, generate_a=generate_a)
    assert report.trainable == expected
    assert report.rows["generator"][0] + report.rows["low-rank factors"][0] == expected
    assert report.rows["low-rank factors"][0] == 2 * sum(4 * (32 + o) for o in out.values())  # LoRA's own count
    assert "all" in str(report) and "generator" in str(report)
