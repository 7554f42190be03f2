"""DoRAN specifics: τ, the magnitude initialisation and the cross-check against PEFT's own DoRA."""

from __future__ import annotations

from collections import OrderedDict

import peft
import pytest
import torch
from helpers import BUILDERS, example_inputs
from peft import LoraConfig

import hora
from hora.tuners.doran.layer import DoranLayer


def logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


@pytest.mark.parametrize("granularity,shape", [("matrix", (1,)), ("channel", (32,))])
def test_tau_is_learnable_and_stays_positive(granularity, shape):
    model = peft.get_peft_model(
        BUILDERS["vit"](), hora.DoranConfig(r=4, hyper_hidden=8, tau_init=0.3, tau_granularity=granularity)
    )
    layer = next(m for m in model.modules() if isinstance(m, DoranLayer))
    assert layer.doran_tau_raw["default"].shape == shape
    torch.testing.assert_close(layer.tau("default"), torch.full(shape, 0.3))
    raws = [p for n, p in model.named_parameters() if "doran_tau_raw" in n]
    model.train()
    optimizer = torch.optim.SGD(raws, lr=1e3)  # a huge step drives the raw parameter far negative
    inputs = example_inputs("vit")
    for _ in range(3):
        loss = model(**inputs).logits.sum()  # any loss: its gradient reaches τ
        optimizer.zero_grad()
        loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in raws)
        optimizer.step()
    for m in model.modules():
        if isinstance(m, DoranLayer):
            assert (m.tau("default") > 0).all()


def test_magnitude_starts_at_row_norm_plus_tau():
    base = BUILDERS["llama"]()
    w0 = base.model.layers[0].self_attn.q_proj.weight.detach().clone()
    model = peft.get_peft_model(base, hora.DoranConfig(r=4, hyper_hidden=8, tau_init=0.25))
    magnitude = model.base_model.model.model.layers[0].self_attn.q_proj.doran_magnitude["default"]
    torch.testing.assert_close(magnitude, w0.norm(dim=1) + 0.25)


@pytest.mark.parametrize("kind", ["vit", "gpt2", "llama"])
def test_static_doran_with_vanishing_tau_equals_peft_dora(kind):
    """With static factors and τ → 0, DoRAN is DoRA: same A, B and m give PEFT's own DoRA outputs."""
    targets = hora.geometry.DEFAULT_TARGET_MODULES[kind]
    dora = peft.get_peft_model(
        BUILDERS[kind](), LoraConfig(r=4, lora_alpha=8, target_modules=targets, use_dora=True)
    ).eval()
    doran = peft.get_peft_model(
        BUILDERS[kind](), hora.DoranConfig(r=4, lora_alpha=8, use_generator=False, target_modules=targets)
    ).eval()
    dora_layers = {
        n: m for n, m in dora.named_modules() if hasattr(m, "lora_magnitude_vector") and "default" in m.lora_A
    }
    torch.manual_seed(0)
    with torch.no_grad():
        for name, layer in doran.named_modules():
            if not isinstance(layer, DoranLayer):
                continue
            twin = dora_layers[name]
            twin.lora_B["default"].weight.normal_(0, 0.1)
            twin.lora_magnitude_vector["default"].weight.mul_(
                1 + 0.1 * torch.rand_like(twin.lora_magnitude_vector["default"].weight)
            )
            layer.doran_A_seed["default"].copy_(twin.lora_A["default"].weight)
            layer.doran_B_seed["default"].copy_(twin.lora_B["default"].weight)
            layer.doran_magnitude["default"].copy_(twin.lora_magnitude_vector["default"].weight)
            layer.doran_tau_raw["default"].fill_(-60.0)  # τ = softplus(−60) ≈ 1e−26
    inputs = example_inputs(kind)
    expected = logits(dora, inputs)
    assert not torch.allclose(expected, logits(BUILDERS[kind](), inputs), atol=1e-3)
    torch.testing.assert_close(logits(doran, inputs), expected, atol=1e-5, rtol=0)


def test_large_tau_makes_the_update_lora_like():
    """τ ≫ ‖V‖: W' ≈ (m/τ)·(W0 + s·BA), a rescaled LoRA; checked on one layer's adapted weight."""
    model = peft.get_peft_model(
        BUILDERS["llama"](), hora.DoranConfig(r=4, hyper_hidden=8, init_weights=False, tau_init=1e6)
    )
    layer = next(m for m in model.modules() if isinstance(m, DoranLayer))
    with torch.no_grad():
        w0 = layer._base_weight()
        v = w0 + layer._generated_weight("default")
        adapted = w0 + layer.delta_weight_out_in("default")
        lora_like = (layer.doran_magnitude["default"] / layer.tau("default")).unsqueeze(1) * v
    torch.testing.assert_close(adapted, lora_like, atol=1e-5, rtol=1e-4)


def test_detached_norm_changes_gradients_not_outputs():
    inputs = example_inputs("vit")
    grads, outs = [], []
    for detach in (False, True):
        torch.manual_seed(0)
        model = peft.get_peft_model(
            BUILDERS["vit"](), hora.DoranConfig(r=4, hyper_hidden=8, init_weights=False, detach_norm=detach)
        )
        out = model(**inputs).logits
        out.sum().backward()
        outs.append(out.detach())
        grads.append(next(p.grad for n, p in model.named_parameters() if "doran_A_seed" in n).clone())
    torch.testing.assert_close(outs[0], outs[1])
    assert not torch.allclose(grads[0], grads[1])


def lin0_mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        OrderedDict(lin0=torch.nn.Linear(10, 20), relu=torch.nn.ReLU(), lin1=torch.nn.Linear(20, 2))
    ).eval()


def three_doran_adapters(kind: str) -> tuple[peft.PeftModel, dict[str, torch.Tensor]]:
    """Three DoRAN adapters (generated, static, per-channel τ) on the same modules, none of them the identity."""
    if kind == "mlp":
        base, kw = lin0_mlp(), {"target_modules": ["lin0"], "head_layout": {"lin0": 5}}
        inputs = {"input": torch.randn(9, 10)}
    else:  # GPT-2's fused c_attn is a Conv1D: weights stored (in, out)
        base, kw, inputs = BUILDERS[kind](), {}, example_inputs(kind)
    configs = {
        "a": hora.DoranConfig(r=4, hyper_hidden=8, init_weights=False, **kw),
        "b": hora.DoranConfig(r=4, init_weights=False, use_generator=False, **kw),
        "c": hora.DoranConfig(r=4, hyper_hidden=8, init_weights=False, tau_granularity="channel", tau_init=0.5, **kw),
    }
    model = peft.get_peft_model(base, configs["a"], adapter_name="a").eval()
    for name in ("b", "c"):
        model.add_adapter(name, configs[name])
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "doran_magnitude" in name:
                param.mul_(1.0 + 0.2 * torch.rand_like(param))
    return model, inputs


def forward(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        out = model(**inputs)
    return out if isinstance(out, torch.Tensor) else out.logits


def base_weights(model) -> dict[str, torch.Tensor]:
    return {
        n: m.get_base_layer().weight.detach().clone() for n, m in model.named_modules() if isinstance(m, DoranLayer)
    }


@pytest.mark.parametrize(
    "kind,order", [("mlp", ["a", "b", "c"]), ("mlp", ["c", "a", "b"]), ("mlp", ["b", "c"]), ("gpt2", ["c", "b", "a"])]
)
@pytest.mark.parametrize("safe_merge", [False, True])
def test_merging_several_adapters_on_one_module_reproduces_the_forward(kind, order, safe_merge):
    """With several DoRAN adapters active on one module, each one's row scale comes from the unmerged W0 and it acts
    on what the adapters before it produced; merging them (all at once or one by one) must give that same function,
    and unmerging must give back W0."""
    model, inputs = three_doran_adapters(kind)
    w0 = base_weights(model)
    with model.disable_adapter():
        base_out = forward(model, inputs)
    model.base_model.set_adapter(order)
    combined = forward(model, inputs)
    model.base_model.set_adapter(order[:1])
    assert not torch.allclose(combined, forward(model, inputs), atol=1e-3)  # the later adapters do something
    model.base_model.set_adapter(order)

    model.merge_adapter(safe_merge=safe_merge)
    torch.testing.assert_close(forward(model, inputs), combined, atol=1e-5, rtol=1e-5)
    model.unmerge_adapter()
    for name, weight in base_weights(model).items():
        torch.testing.assert_close(weight, w0[name], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(forward(model, inputs), combined, atol=1e-5, rtol=1e-5)

    for name in order:  # one at a time, as PEFT's sequential-merge tests do
        model.merge_adapter([name], safe_merge=safe_merge)
    torch.testing.assert_close(forward(model, inputs), combined, atol=1e-5, rtol=1e-5)
    model.unmerge_adapter()
    with model.disable_adapter():
        torch.testing.assert_close(forward(model, inputs), base_out, atol=1e-5, rtol=1e-5)

    merged = model.merge_and_unload(adapter_names=order)
    torch.testing.assert_close(forward(merged, inputs), combined, atol=1e-5, rtol=1e-5)


def test_a_merged_adapter_does_not_change_what_another_adapter_sees():
    """Adding an adapter, or exporting one (effective magnitude, ΔW), while another is merged uses W0, not W0 + merge."""
    model, _ = three_doran_adapters("mlp")
    layer = model.base_model.model.lin0
    before = (layer.effective_magnitude("b").detach().clone(), layer.delta_weight_out_in("b").detach().clone())
    model.merge_adapter(["a"])
    torch.testing.assert_close(layer.effective_magnitude("b"), before[0])
    torch.testing.assert_close(layer.delta_weight_out_in("b"), before[1])
    model.add_adapter("d", hora.DoranConfig(r=4, hyper_hidden=8, target_modules=["lin0"], head_layout={"lin0": 5}))
    model.unmerge_adapter()
    torch.testing.assert_close(layer.doran_magnitude["d"], layer.get_base_layer().weight.norm(dim=1) + 0.1)
