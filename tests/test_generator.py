"""The joint generator's output scale: at the same learning rate, an AdamW step moves HoRA's generated factors about
as far as it moves LoRA's factors ("step-size parity"), while the adapted model still starts as the base model."""

from __future__ import annotations

import json

import peft
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import hora
from hora.generator import TANH_SQUARE_MEAN, unit_step_scale
from hora.tuners.hora.layer import GeneratedFactorsLayer


TARGETS = ["q_proj", "v_proj"]


def gqa_llama() -> LlamaForCausalLM:
    """The issue's setting: 2 layers, hidden 576, 9 query and 3 key-value heads of 64 (SmolLM2's attention)."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=256,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=2,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=64,
        max_position_embeddings=128,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).eval()


def delta_norm(model: peft.PeftModel) -> float:
    """‖ΔW‖ over every adapted projection (Frobenius, all modules together)."""
    total = 0.0
    for module in model.modules():
        if isinstance(module, GeneratedFactorsLayer) or isinstance(module, peft.tuners.lora.LoraLayer):
            total += float(module.get_delta_weight("default").detach().pow(2).sum())
    return total**0.5


def update_after(config: peft.PeftConfig, steps: int, lr: float = 1e-3) -> float:
    model = peft.get_peft_model(gqa_llama(), config)
    torch.manual_seed(1)
    tokens = torch.randint(0, 256, (8, 64))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    for _ in range(steps):
        model(input_ids=tokens, labels=tokens).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return delta_norm(model)


@pytest.fixture(scope="module")
def lora_update() -> float:
    return update_after(peft.LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS), steps=5)


def test_hora_steps_as_far_as_lora_at_the_same_rate(lora_update):
    """5 AdamW steps at LoRA's rate: HoRA's ΔW within 0.67-1.5x LoRA's (it was 3x with the unscaled generator)."""
    hora_update = update_after(hora.HoraConfig(r=8, lora_alpha=16, target_modules=TARGETS), steps=5)
    assert 0.67 <= hora_update / lora_update <= 1.5


def test_the_unscaled_generator_overshoots(lora_update):
    """The control: the plain generator (c = 1) moves about three times as far, so the test above can fail."""
    config = hora.HoraConfig(r=8, lora_alpha=16, target_modules=TARGETS, generator_scale=1.0)
    assert update_after(config, steps=5) / lora_update > 2.0


def test_one_step_moves_a_generated_column_like_a_lora_column():
    """At the level of one step: the root-mean-square move of the generated B against LoRA's B after step 1."""

    def first_b_step(config: peft.PeftConfig) -> float:
        model = peft.get_peft_model(gqa_llama(), config)
        tokens = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(2))
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0)
        model(input_ids=tokens, labels=tokens).loss.backward()
        optimizer.step()
        moves = []
        for module in model.modules():
            if isinstance(module, GeneratedFactorsLayer):
                moves.append(module.factors("default")[1].detach())  # B started at 0
            elif isinstance(module, peft.tuners.lora.LoraLayer):
                moves.append(module.lora_B["default"].weight.detach())
        return float(torch.cat([m.flatten() for m in moves]).pow(2).mean().sqrt())

    lora = first_b_step(peft.LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS))
    ratio = first_b_step(hora.HoraConfig(r=8, lora_alpha=16, target_modules=TARGETS)) / lora
    assert 0.5 <= ratio <= 1.5


def test_scale_formula_and_identity_at_init():
    assert unit_step_scale(16) == pytest.approx(1 / (1 + 16 * TANH_SQUARE_MEAN) ** 0.5)
    assert hora.HoraConfig(hyper_hidden=32).output_scale() == pytest.approx(unit_step_scale(32))
    base = gqa_llama()
    tokens = torch.randint(0, 256, (2, 16))
    with torch.no_grad():
        reference = base(input_ids=tokens).logits
        adapted = peft.get_peft_model(gqa_llama(), hora.HoraConfig(r=8, target_modules=TARGETS)).eval()
        assert torch.equal(adapted(input_ids=tokens).logits, reference)


def test_generated_a_keeps_its_initial_scale():
    """With A generated, the output layer's initialisation compensates the scale: A starts as large as before."""

    def a_rms(scale) -> float:
        torch.manual_seed(3)
        config = hora.HoraConfig(r=8, target_modules=TARGETS, generate_a=True, generator_scale=scale)
        model = peft.get_peft_model(gqa_llama(), config)
        layer = next(m for m in model.modules() if isinstance(m, GeneratedFactorsLayer))
        return float(layer.factors("default")[0].pow(2).mean().sqrt())

    assert a_rms("unit_step") == pytest.approx(a_rms(1.0), rel=0.15)


def test_configs_saved_before_the_scale_load_unscaled(tmp_path):
    """An adapter_config.json without ``generator_scale`` was trained with c = 1; a new one records its choice."""
    model = peft.get_peft_model(gqa_llama(), hora.HoraConfig(r=8, target_modules=TARGETS))
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["generator_scale"] == "unit_step"
    assert peft.PeftConfig.from_pretrained(tmp_path).output_scale() == pytest.approx(unit_step_scale(16))
    del saved["generator_scale"]
    (tmp_path / "adapter_config.json").write_text(json.dumps(saved))
    config = hora.HoraConfig.from_pretrained(tmp_path)
    assert config.generator_scale == 1.0 and config.output_scale() == 1.0
    loaded = peft.PeftModel.from_pretrained(gqa_llama(), tmp_path)
    layer = next(m for m in loaded.modules() if isinstance(m, GeneratedFactorsLayer))
    assert layer._generators["default"][0].output_scale == 1.0


@pytest.mark.parametrize("bad", [0, -1.0, "big", True])
def test_bad_scales_are_refused(bad):
    with pytest.raises(ValueError, match="generator_scale"):
        hora.HoraConfig(generator_scale=bad)


def test_stacked_generation_is_the_per_projection_generation():
    """``generate_stacked`` (the generation pass's batched G) gives what ``generate_a`` / ``generate_b`` give, one
    block and projection at a time, whatever the output scale, with a first layer shared by two stacks."""
    from hora.generator import BlockGenerator, generate_stacked

    torch.manual_seed(0)
    blocks = [BlockGenerator(16, share_first_layer=True, output_scale=unit_step_scale(16)) for _ in range(2)]
    for block in blocks:
        for projection in ("q", "v"):
            block.add_projection(projection, 32, 8, generate_a=True, zero_b=False)
    jobs = [(block, projection) for block in blocks for projection in ("q", "v")]
    a_seeds = torch.randn(len(jobs), 4, 32)  # (J, r, in)
    b_seeds = torch.randn(len(jobs), 4, 8)  # (J, rows, hd): rows of columns, as the pass stacks them
    a_layers = [block.a_layers(projection, 32) for block, projection in jobs]
    b_layers = [block.b_layers(projection, 8) for block, projection in jobs]
    assert a_layers[0][0] is a_layers[1][0] and a_layers[0][1] is not a_layers[1][1]  # W1 shared, W2 not
    scale = blocks[0].output_scale
    stacked_a = generate_stacked(a_seeds, [f for f, _ in a_layers], [s for _, s in a_layers], scale)
    stacked_b = generate_stacked(b_seeds, [f for f, _ in b_layers], [s for _, s in b_layers], scale)
    for j, (block, projection) in enumerate(jobs):
        torch.testing.assert_close(stacked_a[j], block.generate_a(projection, a_seeds[j]))
        b_bar = b_seeds[j].T  # B̄ of one head (out = hd = 8, r = 4): the stack's 4 rows are its 4 columns
        torch.testing.assert_close(stacked_b[j].T, block.generate_b(projection, b_bar, head_dim=8))
