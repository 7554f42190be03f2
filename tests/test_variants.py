"""hora.variants: adapters over shared base weights behave as over private copies, and hold the base once."""

from __future__ import annotations

import copy

import peft
import torch
from helpers import example_inputs, tiny_llama

import hora
from hora.variants import shared_bytes, shared_copy


def test_shared_copies_hold_the_base_once_and_match_private_copies():
    base = tiny_llama()
    configs = [peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
               hora.HoraConfig(r=2, hyper_hidden=4, init_weights=False)]  # fmt: skip
    x = example_inputs("llama")
    shared, private = [], []
    for config in configs:
        torch.manual_seed(0)
        shared.append(peft.get_peft_model(shared_copy(base), copy.deepcopy(config)).eval())
        torch.manual_seed(0)
        private.append(peft.get_peft_model(copy.deepcopy(base), copy.deepcopy(config)).eval())
    with torch.no_grad():
        for s, p in zip(shared, private):
            torch.testing.assert_close(s(**x).logits, p(**x).logits)
        reference = base(**x).logits
    distinct, total = shared_bytes([base, *shared])
    base_bytes = sum(t.numel() * t.element_size() for t in base.parameters())
    assert distinct < base_bytes * 1.2 and total > 2.5 * base_bytes  # the base is held once, not three times
    with torch.no_grad():
        torch.testing.assert_close(base(**x).logits, reference)  # the base itself is untouched by its variants
    assert (
        base.model.layers[0].self_attn.q_proj.weight
        is shared[0].base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight
    )
