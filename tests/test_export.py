"""Export: a trained HoRA adapter is a plain LoRA, a DoRAN adapter a plain DoRA, loadable by stock PEFT."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import peft
import pytest
import torch
from helpers import BUILDERS, example_inputs

import hora


def trained(kind: str, config) -> peft.PeftModel:
    """A few optimiser steps, so the generator output layers move off their zero start."""
    torch.manual_seed(0)
    model = peft.get_peft_model(BUILDERS[kind](), config)
    inputs = example_inputs(kind, batch=4)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    for _ in range(3):
        loss = model(**inputs).logits.float().pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


@pytest.mark.parametrize("kind", ["vit", "gpt2", "llama"])
@pytest.mark.parametrize("from_folder", [False, True])
def test_exported_lora_equals_hora(kind, from_folder, tmp_path):
    modules_to_save = ["classifier"] if kind == "vit" else None
    model = trained(kind, hora.HoraConfig(r=4, hyper_hidden=8, modules_to_save=modules_to_save))
    inputs = example_inputs(kind)
    source = model
    if from_folder:
        model.save_pretrained(tmp_path / "hora")
        source = tmp_path / "hora"
    out = hora.export_lora(source, tmp_path / "lora")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["use_dora"] is False
    lora = peft.PeftModel.from_pretrained(BUILDERS[kind](), out).eval()
    torch.testing.assert_close(logits(lora, inputs), logits(model, inputs), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["vit", "gpt2", "llama"])
def test_exported_dora_equals_doran(kind, tmp_path):
    model = trained(kind, hora.DoranConfig(r=4, hyper_hidden=8, tau_init=0.5))
    inputs = example_inputs(kind)
    model.save_pretrained(tmp_path / "doran")
    out = hora.export_dora(tmp_path / "doran", tmp_path / "dora", base_model=BUILDERS[kind]())
    assert json.loads((out / "adapter_config.json").read_text())["use_dora"] is True
    dora = peft.PeftModel.from_pretrained(BUILDERS[kind](), out).eval()
    torch.testing.assert_close(logits(dora, inputs), logits(model, inputs), atol=1e-5, rtol=0)
    # the live model exports the same adapter
    live = hora.export_dora(model, tmp_path / "dora-live")
    dora_live = peft.PeftModel.from_pretrained(BUILDERS[kind](), live).eval()
    torch.testing.assert_close(logits(dora_live, inputs), logits(dora, inputs), atol=1e-6, rtol=0)


def test_exported_lora_loads_without_hora(tmp_path):
    """The point of the export: serving needs stock PEFT only, no `import hora` anywhere."""
    model = trained("llama", hora.HoraConfig(r=4, hyper_hidden=8))
    hora.export_lora(model, tmp_path / "lora")
    inputs = example_inputs("llama")
    torch.save(inputs["input_ids"], tmp_path / "ids.pt")
    torch.save(logits(model, inputs), tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import sys, torch, peft
        sys.path.insert(0, {str(__import__("pathlib").Path(__file__).parent)!r})
        from helpers import tiny_llama
        model = peft.PeftModel.from_pretrained(tiny_llama(), {str(tmp_path / "lora")!r}).eval()
        ids = torch.load({str(tmp_path / "ids.pt")!r}, weights_only=True)
        with torch.no_grad():
            got = model(input_ids=ids).logits
        expected = torch.load({str(tmp_path / "expected.pt")!r}, weights_only=True)
        assert "hora" not in sys.modules, "hora was imported"
        print("maxdiff", (got - expected).abs().max().item())
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout.split("maxdiff")[1]) <= 1e-5


def test_export_refuses_the_wrong_method(tmp_path):
    doran = peft.get_peft_model(BUILDERS["llama"](), hora.DoranConfig(r=4, hyper_hidden=8))
    with pytest.raises(ValueError, match="export_lora expects a HORA adapter"):
        hora.export_lora(doran, tmp_path / "x")
    hora_model = peft.get_peft_model(BUILDERS["llama"](), hora.HoraConfig(r=4, hyper_hidden=8))
    with pytest.raises(ValueError, match="export_dora expects a DORAN adapter"):
        hora.export_dora(hora_model, tmp_path / "y")
    hora_model.save_pretrained(tmp_path / "saved")
    with pytest.raises(ValueError, match="needs `base_model`"):
        hora.export_dora(tmp_path / "saved", tmp_path / "z")
    with pytest.raises(ValueError, match="is not a saved adapter"):
        hora.export_lora(tmp_path / "nothing-here", tmp_path / "w")
    assert not (tmp_path / "x").exists() and not (tmp_path / "w").exists()
