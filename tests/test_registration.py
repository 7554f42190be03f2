"""Guard: hora registers with PEFT through peft.mapping's tables (no public out-of-tree API in PEFT 0.21).

If a PEFT release changes those internals, this file fails first and says why."""

from __future__ import annotations

import json
import pickle

import peft
import pytest
from helpers import tiny_vit
from peft import PeftType, mapping
from peft.config import PeftConfig

import hora


def test_peft_is_the_pinned_minor_version():
    assert peft.__version__.startswith("0.21."), f"hora is tested on peft 0.21.x, found {peft.__version__}"


def test_methods_are_in_peft_mapping_tables():
    for peft_type, config_cls, model_cls in (
        ("HORA", hora.HoraConfig, hora.HoraModel),
        ("DORAN", hora.DoranConfig, hora.DoranModel),
    ):
        assert mapping.PEFT_TYPE_TO_CONFIG_MAPPING[peft_type] is config_cls
        assert mapping.PEFT_TYPE_TO_TUNER_MAPPING[peft_type] is model_cls
        assert mapping.PEFT_TYPE_TO_PREFIX_MAPPING[peft_type] == model_cls.prefix


def test_peft_dispatches_by_peft_type_string(tmp_path):
    model = peft.get_peft_model(tiny_vit(), hora.HoraConfig(r=2, hyper_hidden=4))
    assert isinstance(model.base_model, hora.HoraModel)
    model.save_pretrained(tmp_path)
    assert isinstance(PeftConfig.from_pretrained(tmp_path), PeftConfig)
    config = peft.PeftConfig.from_pretrained(tmp_path)
    loaded_config = mapping.PEFT_TYPE_TO_CONFIG_MAPPING[config.peft_type].from_pretrained(tmp_path)
    assert isinstance(loaded_config, hora.HoraConfig)
    assert isinstance(peft.PeftModel.from_pretrained(tiny_vit(), tmp_path).base_model, hora.HoraModel)


@pytest.mark.parametrize("config_cls,name", [(hora.HoraConfig, "HORA"), (hora.DoranConfig, "DORAN")])
def test_peft_type_reads_like_a_member_of_peft_enum(config_cls, name, tmp_path):
    """PEFT reads `peft_type.value`, `str(peft_type)` and compares with strings; hora's types answer all three as
    PEFT's own enum members do, and are still written to adapter_config.json as the plain name."""
    peft_type = config_cls(r=2, hyper_hidden=4).peft_type
    assert peft_type == name and hash(peft_type) == hash(name) and peft_type != PeftType.LORA
    assert (peft_type.value, peft_type.name) == (name, name) and type(peft_type.value) is str
    assert str(peft_type) == str(PeftType.LORA).replace("LORA", name) == f"{peft_type}"
    assert pickle.loads(pickle.dumps(peft_type)).value == name
    # dicts are for files and display: the plain name, as adapter_config.json has it
    as_dict = config_cls(r=2, hyper_hidden=4).to_dict()["peft_type"]
    assert type(as_dict) is str and str(as_dict) == name

    model = peft.get_peft_model(tiny_vit(), config_cls(r=2, hyper_hidden=4))
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["peft_type"] == name
    card = (tmp_path / "README.md").read_text()  # PEFT's model card, which reads peft_type.value
    assert "library_name: peft" in card and "- lora" not in card
    assert PeftConfig.from_pretrained(tmp_path).peft_type.value == name
    loaded = peft.PeftModel.from_pretrained(tiny_vit(), tmp_path)
    assert loaded.active_peft_config.peft_type.value == name
    assert loaded.get_model_status().peft_types == {"default": name}  # PEFT parses str(peft_type)


def test_peft_enum_is_left_alone():
    """hora adds no member to PEFT's PeftType, so PEFT's enum methods and its own registration keep working."""
    members = [member.value for member in PeftType]
    assert "HORA" not in members and "DORAN" not in members and "LORA" in members
    assert PeftType("LORA") is PeftType.LORA
    with pytest.raises(ValueError):
        PeftType("HORA")
    assert mapping.PEFT_TYPE_TO_CONFIG_MAPPING[PeftType.LORA] is peft.LoraConfig
