"""HoRA and DoRAN as PEFT methods: the round trips every PEFT method must get right, on tiny ViT, GPT-2
(fused c_attn Conv1D) and Llama (grouped-query attention) models built from configs."""

from __future__ import annotations

from collections import OrderedDict

import peft
import pytest
import torch
from helpers import BUILDERS, example_inputs

import hora


KINDS = ["vit", "gpt2", "llama"]
CONFIGS = {
    "hora": lambda **kw: hora.HoraConfig(r=4, hyper_hidden=8, **kw),
    "hora-static-a": lambda **kw: hora.HoraConfig(r=4, hyper_hidden=8, generate_a=False, share_qv=False, **kw),
    "doran": lambda **kw: hora.DoranConfig(r=4, hyper_hidden=8, **kw),
    "doran-channel-tau": lambda **kw: hora.DoranConfig(r=4, hyper_hidden=8, tau_granularity="channel", **kw),
    "doran-shared-layers": lambda **kw: hora.DoranConfig(r=4, hyper_hidden=8, share_across_layers=True, **kw),
    "doran-static": lambda **kw: hora.DoranConfig(r=4, hyper_hidden=8, use_generator=False, **kw),
}
MATRIX = [(kind, method) for kind in KINDS for method in CONFIGS]


def logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def adapted(kind: str, method: str, **kw) -> peft.PeftModel:
    return peft.get_peft_model(BUILDERS[kind](), CONFIGS[method](**kw)).eval()


def perturbed(kind: str, method: str) -> peft.PeftModel:
    """An adapter that is not the identity: random generator output layers and magnitudes off ‖W0‖ + τ."""
    model = adapted(kind, method, init_weights=False)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "magnitude" in name:
                param.mul_(1.0 + 0.1 * torch.rand_like(param))
    return model


@pytest.mark.parametrize("kind,method", MATRIX)
def test_identity_at_init(kind, method):
    inputs = example_inputs(kind)
    reference = logits(BUILDERS[kind](), inputs)
    assert torch.equal(logits(adapted(kind, method), inputs), reference)


@pytest.mark.parametrize("kind,method", MATRIX)
def test_merged_equals_unmerged(kind, method):
    inputs = example_inputs(kind)
    model = perturbed(kind, method)
    unmerged = logits(model, inputs)
    assert not torch.allclose(unmerged, logits(BUILDERS[kind](), inputs), atol=1e-3)
    model.merge_adapter()
    torch.testing.assert_close(logits(model, inputs), unmerged, atol=1e-5, rtol=0)
    model.unmerge_adapter()
    torch.testing.assert_close(logits(model, inputs), unmerged, atol=1e-5, rtol=0)
    merged = model.merge_and_unload()
    assert not any(isinstance(m, hora.tuners.hora.layer.GeneratedFactorsLayer) for m in merged.modules())
    torch.testing.assert_close(logits(merged, inputs), unmerged, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind,method", MATRIX)
def test_save_load_round_trip(kind, method, tmp_path):
    inputs = example_inputs(kind)
    model = perturbed(kind, method)
    model.save_pretrained(tmp_path)
    config = (tmp_path / "adapter_config.json").read_text()
    assert f'"peft_type": "{model.peft_config["default"].peft_type.value}"' in config
    assert (tmp_path / "adapter_model.safetensors").is_file()
    loaded = peft.PeftModel.from_pretrained(BUILDERS[kind](), tmp_path).eval()
    saved = {k: v for k, v in model.state_dict().items()}
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, saved[key]), key
    # parameters are bit-identical; outputs agree to float rounding (loaded tensors may sit at another memory
    # alignment, which changes the BLAS summation order)
    torch.testing.assert_close(logits(loaded, inputs), logits(model, inputs), atol=1e-6, rtol=0)
    # loaded for inference: nothing trainable, generators included
    assert not any(p.requires_grad for p in loaded.parameters())


@pytest.mark.parametrize("kind,method", MATRIX)
def test_every_adapter_parameter_gets_a_gradient(kind, method):
    model = perturbed(kind, method).train()
    inputs = example_inputs(kind)
    out = model(**inputs)
    loss = out.logits.float().pow(2).mean()
    loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    for name, param in trainable:
        assert param.grad is not None, f"no gradient for {name}"
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, f"zero gradient for {name}"


@pytest.mark.parametrize("kind,method", [(k, m) for k in KINDS for m in ("hora", "doran")])
def test_a_few_steps_lower_the_loss(kind, method):
    torch.manual_seed(0)
    model = adapted(kind, method, modules_to_save=["classifier"] if kind == "vit" else None).train()
    inputs = example_inputs(kind, batch=4)
    if kind == "vit":
        labels = torch.tensor([0, 1, 2, 1])
        step_loss = lambda: torch.nn.functional.cross_entropy(model(**inputs).logits, labels)  # noqa: E731
    else:
        step_loss = lambda: model(**inputs, labels=inputs["input_ids"]).loss  # noqa: E731
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(8):
        loss = step_loss()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05, losses


@pytest.mark.parametrize("method", ["hora", "doran"])
def test_disable_and_several_named_adapters(method):
    inputs = example_inputs("llama")
    base_out = logits(BUILDERS["llama"](), inputs)
    model = perturbed("llama", method)
    first = logits(model, inputs)
    with model.disable_adapter():
        assert torch.equal(logits(model, inputs), base_out)
    model.add_adapter("other", CONFIGS[method](init_weights=False))
    assert any(f"{method}_generator.other." in n for n, _ in model.named_parameters())
    # the new adapter is not active, so outputs are unchanged and it is frozen
    assert torch.equal(logits(model, inputs), first)
    frozen = [n for n, p in model.named_parameters() if ".other" in n]
    assert frozen and not any(p.requires_grad for n, p in model.named_parameters() if ".other" in n)
    model.set_adapter("other")
    second = logits(model, inputs)
    assert not torch.allclose(first, second)
    assert all(p.requires_grad for n, p in model.named_parameters() if ".other" in n)
    assert not any(p.requires_grad for n, p in model.named_parameters() if ".default" in n)
    model.set_adapter("default")
    assert torch.equal(logits(model, inputs), first)
    model.delete_adapter("other")
    assert not any(".other" in n for n, _ in model.named_parameters())
    assert torch.equal(logits(model, inputs), first)


def test_two_adapters_save_and_load_into_named_slots(tmp_path):
    inputs = example_inputs("gpt2")
    model = perturbed("gpt2", "hora")
    model.add_adapter("second", CONFIGS["hora"](init_weights=False))
    model.save_pretrained(tmp_path)
    model.set_adapter("second")
    second = logits(model, inputs)
    loaded = peft.PeftModel.from_pretrained(BUILDERS["gpt2"](), tmp_path / "second", adapter_name="second").eval()
    torch.testing.assert_close(logits(loaded, inputs), second, atol=1e-6, rtol=0)


def test_print_trainable_parameters_counts_the_generator(capsys):
    model = adapted("vit", "hora")
    model.print_trainable_parameters()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert f"trainable params: {trainable:,}" in capsys.readouterr().out
    generator = sum(p.numel() for n, p in model.named_parameters() if "hora_generator" in n)
    assert 0 < generator < trainable


def test_factors_are_cached_at_inference_and_refreshed_after_an_update():
    model = perturbed("vit", "hora")
    layer = next(m for m in model.modules() if isinstance(m, hora.HoraModel.tuner_layer_cls))
    with torch.no_grad():
        first = layer.factors("default")
        assert layer.factors("default")[0] is first[0]  # cached: no second generation
        model.base_model.hora_generator["default"].blocks["block0"].b_in["n8"].weight.add_(0.5)
        refreshed = layer.factors("default")
    assert refreshed[1] is not first[1] and not torch.equal(refreshed[1], first[1])
    # training mode never caches, so gradients always flow
    model.train()
    assert layer.factors("default")[0].requires_grad


def test_config_errors_are_explicit():
    with pytest.raises(ValueError, match="hyper_hidden"):
        hora.HoraConfig(r=16, hyper_hidden=8)
    with pytest.raises(ValueError, match="`r` must be a positive"):
        hora.HoraConfig(r=0)
    with pytest.raises(ValueError, match="tau_init"):
        hora.DoranConfig(tau_init=0.0)
    with pytest.raises(ValueError, match="tau_granularity"):
        hora.DoranConfig(tau_granularity="row")
    hora.DoranConfig(r=16, hyper_hidden=8, use_generator=False)  # no generator: no width constraint


# --- regressions found by PEFT's own test suite (tests/test_peft_conformance.py) ---


def mlp(dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """PEFT's test MLP: lin0 (10 -> 20), ReLU, lin1 (20 -> 2)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        OrderedDict(lin0=torch.nn.Linear(10, 20), relu=torch.nn.ReLU(), lin1=torch.nn.Linear(20, 2))
    )
    return model.to(dtype)


MLP_CONFIGS = {
    "hora": lambda **kw: hora.HoraConfig(target_modules=["lin0", "lin1"], head_layout={"lin0": 5, "lin1": 2}, **kw),
    "doran": lambda **kw: hora.DoranConfig(target_modules=["lin0", "lin1"], head_layout={"lin0": 5, "lin1": 2}, **kw),
}


def adapter_dtypes(model: peft.PeftModel) -> dict[str, torch.dtype]:
    prefix = model.base_model.prefix
    return {n: p.dtype for n, p in model.named_parameters() if prefix in n}


@pytest.mark.parametrize("method", ["hora", "doran"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("autocast", [False, True])
def test_half_precision_adapters_follow_peft_dtype_policy(method, dtype, autocast, tmp_path):
    """The generators on the tuner follow PEFT's rule for LoRA's weights: float32 with autocast, else the base dtype."""
    expected = torch.float32 if autocast else dtype
    model = peft.get_peft_model(mlp(dtype), MLP_CONFIGS[method](init_weights=False), autocast_adapter_dtype=autocast)
    model.add_adapter("other", MLP_CONFIGS[method](init_weights=False), autocast_adapter_dtype=autocast)
    dtypes = adapter_dtypes(model)
    assert any("_generator.default." in n for n in dtypes) and any("_generator.other." in n for n in dtypes)
    assert set(dtypes.values()) == {expected}, dtypes
    x = torch.randn(3, 10).to(dtype)
    with torch.no_grad():
        out = model(x)  # used to raise "mat1 and mat2 must have the same dtype" without autocast
    assert out.dtype == dtype and torch.isfinite(out).all()

    model.save_pretrained(tmp_path)
    loaded = peft.PeftModel.from_pretrained(mlp(dtype), tmp_path, autocast_adapter_dtype=autocast)
    loaded.load_adapter(tmp_path / "other", adapter_name="other", autocast_adapter_dtype=autocast)
    assert set(adapter_dtypes(loaded).values()) == {expected}
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), out)


def test_generators_follow_a_float64_base_model():
    """Not only half precision: generators are created in the base layer's dtype, as LoRA's weights are."""
    model = peft.get_peft_model(mlp(torch.float64), MLP_CONFIGS["hora"](init_weights=False))
    assert set(adapter_dtypes(model).values()) == {torch.float64}
    assert model(torch.randn(2, 10, dtype=torch.float64)).dtype == torch.float64


def generator_grads(model: peft.PeftModel, adapter: str) -> set[bool]:
    attr = type(model.base_model).generator_attr
    return {p.requires_grad for n, p in model.named_parameters() if f"{attr}.{adapter}." in n}


@pytest.mark.parametrize("method", ["hora", "doran"])
def test_adding_or_loading_an_adapter_keeps_a_frozen_generator_frozen(method, tmp_path):
    """PEFT restores the trainability of existing adapters after add_adapter / load_adapter; so must the generators."""
    model = peft.get_peft_model(mlp(), MLP_CONFIGS[method](init_weights=False))
    model.add_adapter("other", MLP_CONFIGS[method](init_weights=False))
    model.save_pretrained(tmp_path)

    frozen = peft.PeftModel.from_pretrained(mlp(), tmp_path, is_trainable=False)
    assert generator_grads(frozen, "default") == {False}
    frozen.add_adapter("added", MLP_CONFIGS[method](init_weights=False))
    assert generator_grads(frozen, "default") == {False}  # was switched on by hora's set_adapter
    assert generator_grads(frozen, "added") == {False}  # inactive, as PEFT leaves a new inactive adapter
    frozen.load_adapter(tmp_path / "other", adapter_name="other", is_trainable=True)
    assert generator_grads(frozen, "default") == {False}
    assert generator_grads(frozen, "other") == {True}  # is_trainable=True switches on the loaded adapter only
    assert not any(p.requires_grad for n, p in frozen.named_parameters() if ".default." in n)

    # and the other way round: adding an inference-mode adapter leaves a trainable one trainable
    trainable = peft.PeftModel.from_pretrained(mlp(), tmp_path, is_trainable=True)
    assert generator_grads(trainable, "default") == {True}
    trainable.load_adapter(tmp_path / "other", adapter_name="other", is_trainable=False)
    assert generator_grads(trainable, "default") == {True}
    assert generator_grads(trainable, "other") == {False}


def test_direct_injection_refuses_instead_of_dropping_the_generators():
    """`inject_adapter_in_model` returns the bare model and drops the tuner, where the generators live."""
    with pytest.raises(ValueError, match="shared state"):
        peft.inject_adapter_in_model(MLP_CONFIGS["hora"](), mlp())


@pytest.mark.parametrize("method", ["hora", "doran"])
def test_the_factor_cache_follows_inference_mode_as_lora_does(method):
    """Factors generated under inference_mode are inference tensors: a later forward whose input needs a gradient
    (a saliency map) must not reuse them, as PEFT's LoRA, which caches nothing, runs the same sequence."""
    model = adapted("vit", method, init_weights=False)
    x = example_inputs("vit")["pixel_values"]
    with torch.inference_mode():
        first = model(pixel_values=x).logits
    pixels = x.clone().requires_grad_(True)
    logits = model(pixel_values=pixels).logits
    logits[0, 0].backward()
    assert pixels.grad is not None and torch.isfinite(pixels.grad).all()
    torch.testing.assert_close(logits.detach(), first.clone())
    with torch.inference_mode():  # and the cache still serves inference
        torch.testing.assert_close(model(pixel_values=x).logits, first)


# --- mixed adapter batches: PEFT's `adapter_names=` ---


@pytest.mark.parametrize("method", ["hora", "doran", "doran-static"])
def test_mixed_adapter_batches_in_forward_and_generate(method):
    """Row i gets adapter ``adapter_names[i]`` ("__base__": none), in ``forward`` and in ``generate`` with beam search,
    exactly as running each adapter on its own (PEFT's own mixed-batch tests run on its MLPs in the conformance
    suite; this is the transformers path, with a cache and repeated inner forwards)."""
    model = peft.get_peft_model(BUILDERS["llama"](), CONFIGS[method](init_weights=False), adapter_name="a0").eval()
    model.add_adapter("a1", CONFIGS[method](init_weights=False))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "magnitude" in name:
                param.mul_(1.0 + 0.2 * torch.rand_like(param))
    ids = torch.randint(1, 64, (6, 8), generator=torch.Generator().manual_seed(3))
    names = ["__base__", "a0", "a1"] * 2
    generation = {"max_new_tokens": 5, "do_sample": False, "num_beams": 2}
    with torch.inference_mode():
        mixed = model(input_ids=ids, adapter_names=names).logits
        mixed_ids = model.generate(input_ids=ids, adapter_names=names, **generation)
        with model.disable_adapter():
            alone = {"__base__": (model(input_ids=ids).logits, model.generate(input_ids=ids, **generation))}
        for adapter in ("a0", "a1"):
            model.set_adapter(adapter)
            alone[adapter] = (model(input_ids=ids).logits, model.generate(input_ids=ids, **generation))
    for other in ("__base__", "a1"):  # the three rows' models differ, in logits and in what they generate
        assert not torch.allclose(alone["a0"][0], alone[other][0]) and not torch.equal(alone["a0"][1], alone[other][1])
    for i, adapter in enumerate(names):
        torch.testing.assert_close(mixed[i], alone[adapter][0][i], rtol=1e-5, atol=1e-5)
        assert torch.equal(mixed_ids[i], alone[adapter][1][i]), adapter


def test_mixed_adapter_batches_refuse_training_and_unknown_names():
    model = peft.get_peft_model(BUILDERS["llama"](), CONFIGS["hora"](init_weights=False))
    ids = torch.randint(1, 64, (2, 8))
    with pytest.raises(ValueError, match="training mode"):
        model.train()(input_ids=ids, adapter_names=["default", "__base__"])
    with pytest.raises(ValueError, match="non-existing adapter"):
        model.eval()(input_ids=ids, adapter_names=["default", "nope"])
    with pytest.raises(ValueError, match="Length of `adapter_names`"):
        model(input_ids=ids, adapter_names=["default"])
