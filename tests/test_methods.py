"""Methods by name: which parameters train, which PEFT config is used, and parameter-budget matching."""

from __future__ import annotations

import peft
import pytest
import torch
from helpers import tiny_gpt2, tiny_llama, tiny_vit

import hora
from hora.methods import (
    METHODS,
    adapter_param_count,
    apply_method,
    check_method,
    default_targets,
    label,
    match_lora_rank,
    method_of,
    peft_config,
)
from hora.models import head_modules


def _needs(method: str) -> None:
    if method == "doran" and not hasattr(hora, "DoranConfig"):
        pytest.skip("hora.DoranConfig is not available yet")


def _trainable(model: torch.nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_default_targets_follow_the_geometry_table():
    assert default_targets(tiny_vit()) == ["q_proj", "v_proj"]
    assert default_targets(tiny_gpt2()) == ["c_attn"]
    assert default_targets(tiny_llama()) == ["q_proj", "v_proj"]
    model = tiny_vit()
    model.config.model_type = "mystery"
    with pytest.raises(ValueError, match="target_modules"):
        default_targets(model)


def test_head_modules():
    assert head_modules(tiny_vit()) == ["classifier"]
    assert head_modules(tiny_gpt2()) == ["lm_head"]
    assert head_modules(tiny_llama()) == ["lm_head"]


def test_unknown_method_is_a_clear_error():
    with pytest.raises(ValueError, match="choose one of"):
        check_method("qlora")
    assert check_method("HoRA") == "hora"


def test_head_trains_only_the_classifier():
    model, info = apply_method(tiny_vit(), "head")
    assert _trainable(model) == {"classifier.weight", "classifier.bias"}
    assert info.trainable_params == 32 * 3 + 3 and info.adapter_params == 0


def test_full_trains_everything():
    model, info = apply_method(tiny_vit(), "full")
    assert info.trainable_params == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("method", ["lora", "dora", "hora", "doran"])
def test_peft_methods_use_their_own_config(method):
    _needs(method)
    model, info = apply_method(tiny_vit(), method, r=4, hyper_hidden=8, train_head=True)
    assert isinstance(model, peft.PeftModel)
    expected = {"lora": peft.LoraConfig, "dora": peft.LoraConfig, "hora": hora.HoraConfig}
    expected["doran"] = getattr(hora, "DoranConfig", None)
    assert isinstance(info.peft_config, expected[method])
    if method in ("lora", "dora"):
        assert info.peft_config.use_dora == (method == "dora")
    assert set(info.peft_config.target_modules) == {"q_proj", "v_proj"}
    assert info.peft_config.modules_to_save == ["classifier"]
    trained = _trainable(model)
    assert any("modules_to_save" in n and "classifier" in n for n in trained)
    assert not any(n.endswith("query.weight") or n.endswith("q_proj.base_layer.weight") for n in trained)
    assert info.adapter_params + (32 * 3 + 3) == info.trainable_params
    assert info.peft_config.r == 4 and info.peft_config.lora_alpha == 8  # alpha defaults to 2r


def test_adapted_model_equals_base_at_init():
    base = tiny_vit()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = base(pixel_values=x).logits
    for method in ("lora", "hora"):
        model, _ = apply_method(tiny_vit(), method, r=4, hyper_hidden=8)
        with torch.no_grad():
            torch.testing.assert_close(model.eval()(pixel_values=x).logits, reference)


def test_adapter_param_count_matches_a_real_model():
    model = tiny_gpt2()
    config = peft_config("hora", model, r=4, hyper_hidden=8)
    counted = adapter_param_count(model, config)
    real, _ = apply_method(tiny_gpt2(), "hora", r=4, hyper_hidden=8)
    assert counted == sum(p.numel() for p in real.parameters() if p.requires_grad)


@pytest.mark.parametrize(("method", "reference"), [("lora", "hora"), ("dora", "doran")])
def test_budget_matching_picks_the_closest_lora_rank(method, reference):
    _needs(reference)
    model = tiny_vit()
    ref_config = peft_config(reference, model, r=4, hyper_hidden=8)
    target = adapter_param_count(model, ref_config)
    chosen = match_lora_rank(model, ref_config, use_dora=method == "dora")
    # brute force over ranks: the chosen one is (one of) the closest
    counts = {
        rank: adapter_param_count(model, peft_config(method, model, r=rank, target_modules=["q_proj", "v_proj"]))
        for rank in range(1, 41)
    }
    best = min(abs(c - target) for c in counts.values())
    assert abs(counts[chosen] - target) == best
    assert chosen > 4  # HoRA's generator costs more than rank-4 LoRA

    adapted, info = apply_method(tiny_vit(), method, r=4, hyper_hidden=8, match_params=True)
    assert info.matched["reference"] == reference and info.matched["r"] == chosen
    assert info.adapter_params == counts[chosen]
    assert info.peft_config.lora_alpha / info.peft_config.r == pytest.approx(2.0)  # the scale α/r is kept


def test_match_params_only_for_lora_and_dora():
    with pytest.raises(ValueError, match="match_params"):
        apply_method(tiny_vit(), "hora", match_params=True)


def test_the_method_table():
    assert list(METHODS) == ["head", "full", "lora", "hora", "dora", "doran"]
    assert [label(m) for m in METHODS] == ["head-only", "full", "LoRA", "HoRA", "DoRA", "DoRAN"]
    assert {m: METHODS[m].budget_of for m in METHODS if METHODS[m].budget_of} == {"lora": "hora", "dora": "doran"}
    assert [m for m in METHODS if METHODS[m].low_rank] == ["lora", "hora", "dora", "doran"]
    assert label("mystery") == "mystery"


@pytest.mark.parametrize("method", ["lora", "dora", "hora", "doran"])
def test_method_of_reads_the_active_adapter(method):
    model, _ = apply_method(tiny_vit(), method, r=2, hyper_hidden=4)
    assert method_of(model) == method
    assert method_of(tiny_vit()) == "head"
