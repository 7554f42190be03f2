"""Head geometry: the table, user layouts and the errors for what hora does not know."""

from __future__ import annotations

import peft
import pytest
import torch
from helpers import tiny_gpt2, tiny_llama, tiny_vit
from torch import nn

import hora
from hora.geometry import block_index, projection_key, resolve_layout


def test_table_matches_real_module_sizes():
    vit, gpt2, llama = tiny_vit(), tiny_gpt2(), tiny_llama()
    assert resolve_layout(vit.config, "vit.layers.0.attention.q_proj", 32).groups == (("q", 4),)
    fused = resolve_layout(gpt2.config, "transformer.h.1.attn.c_attn", 96)
    assert fused.head_dim == 8 and fused.groups == (("q", 4), ("k", 4), ("v", 4))
    assert fused.group_rows("v") == slice(64, 96)
    kv = resolve_layout(llama.config, "model.layers.0.self_attn.k_proj", 16)  # GQA: 2 kv heads x 8
    assert kv.num_heads == 2 and kv.head_dim == 8


def test_wrong_size_and_unknown_modules_are_explained():
    with pytest.raises(ValueError, match="implies 4 heads x 8 = 32"):
        resolve_layout(tiny_vit().config, "vit.layers.0.attention.q_proj", 48)
    with pytest.raises(ValueError, match=r"not 'vit.layers.0.attention.o_proj'.*head_layout=\{'o_proj'"):
        resolve_layout(tiny_vit().config, "vit.layers.0.attention.o_proj", 32)


class Toy(nn.Module):
    """A model of an architecture hora has never heard of."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(nn.ModuleDict({"mix": nn.Linear(12, 12)}) for _ in range(2))

    def forward(self, x):
        for block in self.blocks:
            x = block["mix"](x)
        return x


def test_unknown_architecture_needs_a_layout_and_accepts_one():
    with pytest.raises(ValueError, match=r"no head geometry for model type None.*head_layout=\{'mix'"):
        peft.get_peft_model(Toy(), hora.HoraConfig(r=2, hyper_hidden=4, target_modules=["mix"]))
    model = peft.get_peft_model(
        Toy(), hora.HoraConfig(r=2, hyper_hidden=4, target_modules=["mix"], head_layout={"mix": 4}, init_weights=False)
    )
    deltas = hora.head_deltas(model, 1, "mix")
    assert deltas.shape == (3, 4, 12)
    with pytest.raises(ValueError, match="does not divide the 12 output rows"):
        peft.get_peft_model(
            Toy(), hora.HoraConfig(r=2, hyper_hidden=4, target_modules=["mix"], head_layout={"mix": 5})
        )


def test_block_and_projection_keys():
    assert block_index("model.layers.11.self_attn.q_proj") == 11
    assert projection_key("model.layers.11.self_attn.q_proj") == "self_attn.q_proj"
    assert block_index("lm_head") is None and projection_key("lm_head") == "lm_head"


def test_each_block_gets_its_own_generator_shared_by_its_projections():
    model = peft.get_peft_model(tiny_llama(), hora.HoraConfig(r=4, hyper_hidden=8, generate_a=True))
    bank = model.base_model.hora_generator["default"]
    assert sorted(bank.blocks) == ["block0", "block1"]
    block = bank.blocks["block0"]
    assert list(block.a_in) == ["n32"] and list(block.b_in) == ["n8"]  # shared first layers (q and v)
    assert sorted(block.a_out) == ["self_attn__q_proj", "self_attn__v_proj"]
    default = peft.get_peft_model(tiny_llama(), hora.HoraConfig(r=4, hyper_hidden=8))  # only B generated
    only_b = default.base_model.hora_generator["default"].blocks["block0"]
    assert list(only_b.a_in) == [] and list(only_b.b_in) == ["n8"] and list(only_b.a_out) == []
    separate = peft.get_peft_model(tiny_llama(), hora.HoraConfig(r=4, hyper_hidden=8, share_qv=False, generate_a=True))
    assert sorted(separate.base_model.hora_generator["default"].blocks["block0"].a_in) == [
        "self_attn__q_proj",
        "self_attn__v_proj",
    ]
    one = peft.get_peft_model(tiny_llama(), hora.DoranConfig(r=4, hyper_hidden=8, share_across_layers=True))
    assert list(one.base_model.doran_generator["default"].blocks) == ["all"]
    assert torch.is_tensor(one.base_model.doran_generator["default"].blocks["all"].a_in["n32"].weight)


def tiny_dinov2(seed: int = 0) -> nn.Module:
    """A 2-layer DINOv2 classifier (4 heads x 8) with transformers' own module names."""
    from transformers import Dinov2Config, Dinov2ForImageClassification

    torch.manual_seed(seed)
    config = Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=2, image_size=28, patch_size=14
    )
    config.num_labels = 3
    return Dinov2ForImageClassification(config).eval()


def test_dinov2_heads_with_hora_and_lora():
    from hora.geometry import DEFAULT_TARGET_MODULES

    model = tiny_dinov2()
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and ".attention." in n]
    assert names[:4] == [f"dinov2.encoder.layer.0.attention.{p}_proj" for p in "qkvo"]  # transformers 5 names
    layout = resolve_layout(model.config, names[0], 32)
    assert layout.groups == (("q", 4),) and layout.head_dim == 8
    assert DEFAULT_TARGET_MODULES["dinov2"] == ["q_proj", "v_proj"]
    pixels = torch.randn(2, 3, 28, 28)  # (B, C, H, W): 2 x 2 patches of 14 px

    adapted = peft.get_peft_model(tiny_dinov2(), hora.HoraConfig(r=4, hyper_hidden=8, init_weights="random"))
    assert adapted(pixel_values=pixels).logits.shape == (2, 3)
    assert hora.head_deltas(adapted, 1, "q").shape == (4, 8, 32)  # (heads, head_dim, in_features)
    assert hora.head_deltas(adapted, 0, "v_proj").abs().sum() > 0

    lora = peft.get_peft_model(tiny_dinov2(), peft.LoraConfig(r=2, target_modules=DEFAULT_TARGET_MODULES["dinov2"]))
    assert lora(pixel_values=pixels).logits.shape == (2, 3)
    assert hora.head_deltas(lora, 1, "q").shape == (4, 8, 32)
