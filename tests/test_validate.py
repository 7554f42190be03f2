"""Untrusted adapters: every refusal of hora.validate.check_adapter, each naming the mismatch."""

from __future__ import annotations

import json

import peft
import pytest
import torch
from helpers import tiny_gpt2, tiny_llama, tiny_vit
from safetensors.torch import load_file, save_file

import hora
from hora.validate import AdapterError, check_adapter


def saved(tmp_path, base_factory, config, name="adapter"):
    model = peft.get_peft_model(base_factory(), config)
    model.save_pretrained(tmp_path / name)
    return tmp_path / name


@pytest.mark.parametrize(
    "factory,config",
    [
        (tiny_llama, hora.HoraConfig(r=4, hyper_hidden=8)),
        (tiny_gpt2, hora.DoranConfig(r=4, hyper_hidden=8, tau_granularity="channel")),
        (
            tiny_vit,
            peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], use_dora=True, modules_to_save=["classifier"]),
        ),
    ],
)
def test_good_adapters_pass(tmp_path, factory, config):
    folder = saved(tmp_path, factory, config)
    assert check_adapter(factory(), folder)["r"] == 4


def test_pickles_are_never_read(tmp_path):
    folder = saved(tmp_path, tiny_llama, hora.HoraConfig(r=4, hyper_hidden=8))
    (folder / "adapter_model.safetensors").rename(folder / "adapter_model.bin")
    with pytest.raises(AdapterError, match=r"only has pickled weights \(adapter_model.bin\).*never unpickles"):
        check_adapter(tiny_llama(), folder)


def test_unknown_method_and_bad_json_and_rank(tmp_path):
    folder = saved(tmp_path, tiny_llama, hora.HoraConfig(r=4, hyper_hidden=8))
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "peft_type": "PROMPT_TUNING"}))
    with pytest.raises(AdapterError, match="Unsupported adapter type 'PROMPT_TUNING'"):
        check_adapter(tiny_llama(), folder)
    (folder / "adapter_config.json").write_text(json.dumps({**config, "r": 10**9}))
    with pytest.raises(AdapterError, match="rank r=1000000000"):
        check_adapter(tiny_llama(), folder)
    (folder / "adapter_config.json").write_text("{not json")
    with pytest.raises(AdapterError, match="not valid JSON"):
        check_adapter(tiny_llama(), folder)
    (folder / "adapter_config.json").unlink()
    with pytest.raises(AdapterError, match="no adapter_config.json"):
        check_adapter(tiny_llama(), folder)


def test_adapter_for_another_architecture_is_refused(tmp_path):
    folder = saved(tmp_path, tiny_gpt2, hora.HoraConfig(r=4, hyper_hidden=8))  # targets c_attn
    with pytest.raises(AdapterError, match=r"targets \['c_attn'\], which match no module of LlamaForCausalLM"):
        check_adapter(tiny_llama(), folder)


def test_wrong_shapes_and_unknown_tensors_are_named(tmp_path):
    folder = saved(tmp_path, tiny_llama, hora.HoraConfig(r=4, hyper_hidden=8))
    tensors = load_file(folder / "adapter_model.safetensors")
    key = "base_model.model.model.layers.0.self_attn.q_proj.hora_A_seed"
    tensors[key] = torch.zeros(4, 48)
    tensors["base_model.model.model.layers.9.self_attn.q_proj.hora_B_seed"] = torch.zeros(32, 4)
    save_file(tensors, folder / "adapter_model.safetensors")
    with pytest.raises(AdapterError) as err:
        check_adapter(tiny_llama(), folder)
    message = str(err.value)
    assert "q_proj.hora_A_seed is [4, 48] but Linear 'model.layers.0.self_attn.q_proj' needs [4, 32]" in message
    assert "layers.9" in message


def test_classifier_for_another_label_set_is_named(tmp_path):
    folder = saved(tmp_path, tiny_vit, hora.HoraConfig(r=4, hyper_hidden=8, modules_to_save=["classifier"]))
    other = tiny_vit()
    other.classifier = torch.nn.Linear(32, 5)
    with pytest.raises(AdapterError, match=r"classifier.weight is \[3, 32\] in the adapter but \[5, 32\] in the base"):
        check_adapter(other, folder)
