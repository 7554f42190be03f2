"""Registering hora's methods with PEFT.

PEFT 0.21 has no public out-of-tree registration: ``peft.utils.register_peft_method`` insists that the
name is a member of its ``PeftType`` enum. Every lookup PEFT makes is a plain dict lookup on
``config.peft_type``, so writing the three mapping tables of ``peft.mapping`` with a string key gives
the full ``get_peft_model`` / ``save_pretrained`` / ``PeftModel.from_pretrained`` round trip. This relies
on PEFT internals; ``tests/test_registration.py`` fails loudly if a PEFT release breaks it.
"""

from __future__ import annotations

from peft import mapping


def register(peft_type: str, config_cls: type, model_cls: type) -> None:
    """Make ``peft_type`` ("HORA", "DORAN") a PEFT method backed by ``config_cls`` / ``model_cls``."""
    for table in ("PEFT_TYPE_TO_CONFIG_MAPPING", "PEFT_TYPE_TO_TUNER_MAPPING", "PEFT_TYPE_TO_PREFIX_MAPPING"):
        if not isinstance(getattr(mapping, table, None), dict):
            raise RuntimeError(
                f"peft.mapping.{table} is missing: this PEFT release changed its method tables and hora "
                "cannot register. Install the PEFT version pinned in requirements.txt."
            )
    mapping.PEFT_TYPE_TO_CONFIG_MAPPING[peft_type] = config_cls
    mapping.PEFT_TYPE_TO_TUNER_MAPPING[peft_type] = model_cls
    mapping.PEFT_TYPE_TO_PREFIX_MAPPING[peft_type] = model_cls.prefix
