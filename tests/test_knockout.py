"""hora.knockout: removing one head's update at a time, in one batched forward pass, for every method."""

from __future__ import annotations

import threading

import peft
import pytest
import torch
from helpers import example_inputs, tiny_llama, tiny_vit

import hora
from hora.knockout import _PLAN, head_knockout


def adapted(kind: str, method: str) -> peft.PeftModel:
    base = {"vit": tiny_vit, "llama": tiny_llama}[kind]()
    targets = ["q_proj", "v_proj"]
    config = {
        "lora": lambda: peft.LoraConfig(r=2, target_modules=targets, init_lora_weights=False),
        "dora": lambda: peft.LoraConfig(r=2, target_modules=targets, use_dora=True, init_lora_weights=False),
        "hora": lambda: hora.HoraConfig(r=2, hyper_hidden=4, target_modules=targets, init_weights=False),
        "doran": lambda: hora.DoranConfig(r=2, hyper_hidden=4, target_modules=targets, init_weights=False),
    }[method]()
    model = peft.get_peft_model(base, config).eval()
    with torch.no_grad():  # updates large enough to move the output measurably
        for name, param in model.named_parameters():
            if "lora_B" in name or "b_out" in name:
                param.mul_(20)
    return model


def one_input(kind: str) -> dict[str, torch.Tensor]:
    return {k: v[:1] for k, v in example_inputs(kind).items()}


def probabilities(model, inputs, kind) -> torch.Tensor:
    with torch.no_grad():
        logits = model(**inputs).logits
    return (logits[:, -1] if kind == "llama" else logits).float().softmax(-1)[0]


def knocked_by_hand(model, inputs, kind, rows: slice, layers) -> torch.Tensor:
    """The same knock-out done the slow way: a hook that puts the base layer's rows back, one forward alone."""
    handles = []
    for n in layers:
        module = model.base_model.model.model.layers[n].self_attn.q_proj if kind == "llama" else None
        if module is None:
            module = model.base_model.model.vit.layers[n].attention.q_proj

        def hook(mod, args, out):
            base = mod.get_base_layer()(args[0])
            out = out.clone()
            out[..., rows] = base[..., rows]
            return out

        handles.append(module.register_forward_hook(hook))
    try:
        return probabilities(model, inputs, kind)
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("kind", ["vit", "llama"])
@pytest.mark.parametrize("method", ["lora", "dora", "hora", "doran"])
def test_each_head_knocked_out_in_one_batch_equals_doing_it_alone(kind, method):
    model, inputs = adapted(kind, method), one_input(kind)
    result = head_knockout(model, inputs, "q", layer=1)
    full = probabilities(model, inputs, kind)
    hd = 8
    for h in result.heads:
        alone = knocked_by_hand(model, inputs, kind, slice(h * hd, (h + 1) * hd), [1])
        expected = (
            0.5 * (alone - full).abs().sum() if kind == "llama" else full[result.reference] - alone[result.reference]
        )
        assert result.effects[h] == pytest.approx(float(expected), abs=1e-5)
    whole = knocked_by_hand(model, inputs, kind, slice(0, 4 * hd), [1])
    expected = (
        0.5 * (whole - full).abs().sum() if kind == "llama" else full[result.reference] - whole[result.reference]
    )
    assert result.whole == pytest.approx(float(expected), abs=1e-5)
    assert max(abs(e) for e in result.effects) > 1e-4  # the heads matter: the test can tell a wrong row apart


def test_every_layer_at_once_and_the_whole_update_is_the_base_for_that_projection():
    model, inputs = adapted("llama", "lora"), one_input("llama")
    result = head_knockout(model, inputs, "q")  # every adapted layer
    assert result.layers == [0, 1] and len(result.effects) == 4
    only_v = adapted("llama", "lora")
    with torch.no_grad():
        for name, param in only_v.named_parameters():
            if "q_proj.lora_B" in name:
                param.zero_()
    expected = 0.5 * (probabilities(only_v, inputs, "llama") - probabilities(model, inputs, "llama")).abs().sum()
    assert result.whole == pytest.approx(float(expected), abs=1e-5)


def test_the_hooks_do_nothing_outside_a_knockout_call_and_in_other_threads():
    model, inputs = adapted("vit", "hora"), one_input("vit")
    before = probabilities(model, inputs, "vit")
    head_knockout(model, inputs, "q", layer=0)  # leaves its hooks on the model, idle
    assert torch.equal(probabilities(model, inputs, "vit"), before)
    q_proj = model.base_model.model.vit.layers[0].attention.q_proj
    mask = torch.ones(1, 32, dtype=torch.bool)  # would put back the base rows everywhere, were it active
    seen = {}
    token = _PLAN.set({id(q_proj): mask})  # this thread is "inside" a knock-out
    try:
        worker = threading.Thread(target=lambda: seen.update(p=probabilities(model, inputs, "vit")))
        worker.start()
        worker.join()
    finally:
        _PLAN.reset(token)
    assert torch.equal(seen["p"], before)


def test_bad_requests_are_refused():
    model = adapted("llama", "lora")
    with pytest.raises(ValueError, match="batch of one"):
        head_knockout(model, example_inputs("llama", batch=2), "q", layer=0)
    with pytest.raises(ValueError, match="No adapted projection 'k'"):
        head_knockout(model, one_input("llama"), "k", layer=0)
    model.merge_adapter()
    with pytest.raises(ValueError, match="merged"):
        head_knockout(model, one_input("llama"), "q", layer=0)


def test_inputs_of_one_prompt_or_image_and_the_reference_named():
    """A prompt is cut to its last tokens (the chat template applied where the tokenizer has one), an image goes
    through the base's processor, and the reference is named as a reader knows it (a label, a token's text)."""
    from helpers import char_tokenizer
    from PIL import Image
    from transformers import ViTImageProcessor

    from hora.knockout import image_inputs, prompt_inputs, reference_name

    tokenizer = char_tokenizer()
    inputs, cut = prompt_inputs(tokenizer, "to be or not to be", max_tokens=5)
    assert cut and tokenizer.decode(inputs["input_ids"][0]) == "to be"
    inputs, cut = prompt_inputs(tokenizer, "abc")
    assert not cut and inputs["input_ids"].shape == (1, 3)
    model = adapted("llama", "hora")
    result = head_knockout(model, inputs, "q", layer=0)
    assert result.next_token and 0 < result.probability <= 1
    assert reference_name(model, result, tokenizer) == repr(tokenizer.decode([result.reference]))
    vit = adapted("vit", "lora")
    vit.config.id2label = {0: "zero", 1: "one", 2: "two"}
    pixels = image_inputs(ViTImageProcessor(size={"height": 16, "width": 16}), Image.new("L", (9, 30), 90))
    assert pixels["pixel_values"].shape == (1, 3, 16, 16)
    result = head_knockout(vit, pixels, "q", layer=1)
    assert not result.next_token and reference_name(vit, result) == ["zero", "one", "two"][result.reference]
    assert result.probability == pytest.approx(float(probabilities(vit, pixels, "vit")[result.reference]), abs=1e-6)
