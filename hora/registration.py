"""Registering hora's methods with PEFT.

PEFT 0.21 has no public out-of-tree registration: ``peft.utils.register_peft_method`` insists that the
name is a member of its ``PeftType`` enum. Every lookup PEFT makes is a plain dict lookup on
``config.peft_type``, so writing the three mapping tables of ``peft.mapping`` with a string key gives
the full ``get_peft_model`` / ``save_pretrained`` / ``PeftModel.from_pretrained`` round trip. This relies
on PEFT internals; ``tests/test_registration.py`` fails loudly if a PEFT release breaks it.

PEFT's own types are members of its ``PeftType`` (a ``str`` enum), and PEFT reads them as such in places:
``peft_type.value`` (model cards, error messages), ``str(peft_type)`` = ``"PeftType.LORA"`` (``get_model_status``).
hora's types are [`ExternalPeftType`] values, which look like those members wherever PEFT reads them, without
adding anything to PEFT's enum.
"""

from __future__ import annotations

from typing import Any

from peft import mapping


class ExternalPeftType(str):
    """A PEFT method name defined outside PEFT, shaped like a member of ``peft.PeftType``.

    It *is* the plain string (``ExternalPeftType("HORA") == "HORA"``, same hash), so ``peft.mapping``'s tables
    answer a lookup by the string read from ``adapter_config.json``, and ``json.dumps`` writes ``"HORA"``. Like a
    member of PEFT's ``str`` enum it has ``.name`` and ``.value``, and ``str()`` / ``format()`` give
    ``"PeftType.HORA"``.
    """

    __slots__ = ()

    @property
    def value(self) -> str:
        """The plain string, as ``PeftType.LORA.value`` is ``"LORA"``."""
        return str.__str__(self)

    @property
    def name(self) -> str:
        return str.__str__(self)

    def __str__(self) -> str:
        # PEFT's enum members print as "PeftType.LORA" and PEFT parses that (`str(...).partition(".")[-1]`)
        return f"PeftType.{self.value}"

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __repr__(self) -> str:
        return f"<PeftType.{self.value}: {self.value!r}>"

    def __reduce__(self) -> tuple[Any, ...]:
        # pickle / deepcopy (dataclasses.asdict deep-copies config fields) keep the type
        return (type(self), (self.value,))


HORA = ExternalPeftType("HORA")
DORAN = ExternalPeftType("DORAN")


def register(peft_type: str, config_cls: type, model_cls: type) -> None:
    """Make ``peft_type`` ("HORA", "DORAN") a PEFT method backed by ``config_cls`` / ``model_cls``."""
    for table in ("PEFT_TYPE_TO_CONFIG_MAPPING", "PEFT_TYPE_TO_TUNER_MAPPING", "PEFT_TYPE_TO_PREFIX_MAPPING"):
        if not isinstance(getattr(mapping, table, None), dict):
            raise RuntimeError(
                f"peft.mapping.{table} is missing: this PEFT release changed its method tables and hora "
                "cannot register. Install the PEFT version pinned in requirements.txt."
            )
    peft_type = ExternalPeftType(peft_type)
    mapping.PEFT_TYPE_TO_CONFIG_MAPPING[peft_type] = config_cls
    mapping.PEFT_TYPE_TO_TUNER_MAPPING[peft_type] = model_cls
    mapping.PEFT_TYPE_TO_PREFIX_MAPPING[peft_type] = model_cls.prefix
