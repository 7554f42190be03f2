"""Guard: hora registers with PEFT through peft.mapping's tables (no public out-of-tree API in PEFT 0.21).

If a PEFT release changes those internals, this file fails first and says why."""

from __future__ import annotations

import peft
from peft import mapping
from peft.config import PeftConfig
from helpers import tiny_vit

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
