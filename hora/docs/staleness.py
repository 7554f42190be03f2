"""What a report ran with against today's defaults, and the shared helpers of the renderers: a note under a table
whose JSON was measured with settings that are no longer the defaults, written from the PEFT configuration each report
records."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


ROOT = Path(__file__).resolve().parents[2]


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} is missing.")
    return json.loads(path.read_text(encoding="utf-8"))


def _defaults(peft_type: str) -> dict[str, Any]:
    from hora import DoranConfig, HoraConfig

    cls = {"HORA": HoraConfig, "DORAN": DoranConfig}.get(peft_type.upper())
    if cls is None:
        return {}
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


WATCHED = ("generator_scale", "generate_a", "hyper_hidden", "share_qv", "seed_std", "tau_init", "init_weights")
"""The fields of HoRA's and DoRAN's configs whose value changes what a benchmark measures."""


def config_notes(runs: Iterable[tuple[str, dict | None, dict]]) -> list[str]:
    """Sentences saying where a report's adapters ran with other settings than today's defaults.

    ``runs`` are (variant name, the PEFT config it recorded or None, the fields its variant set on purpose, its
    method's arguments under ``method_args`` or at the top). A field the variant set on purpose (``generate_a`` of
    "HoRA, A and B generated") is not a stale default.
    """
    notes: dict[str, None] = {}
    for name, config, fields in runs:
        chosen = {**fields.get("method_args", {}), **fields}
        if config is None:
            notes[
                "This report does not record its adapters' configurations, so whether it ran with today's "
                "defaults cannot be checked: regenerate it."
            ] = None
            continue
        defaults = _defaults(str(config.get("peft_type", "")))
        for field in WATCHED:
            if field not in defaults or field in chosen:
                continue
            recorded = config.get(field, "absent (it predates the field)")
            if recorded != defaults[field]:
                notes[
                    f"{name} ran with `{field}` = {recorded!r}; the default is now {defaults[field]!r}: the row "
                    "predates that change."
                ] = None
    return list(notes)


def grid_runs(report: dict) -> Iterable[tuple[str, dict | None, dict]]:
    variants = report.get("variants") or {}
    for run in report["runs"]:
        fields = variants.get(run["method"], {})
        if fields.get("method", run.get("peft_method", run["method"])) not in ("hora", "doran"):
            continue
        yield run["method"], run.get("peft_config"), fields


def with_notes(table: str, notes: list[str]) -> str:
    return table + "".join(f"\n\n*{note}*" for note in notes)


__all__ = ["ROOT", "WATCHED", "config_notes", "grid_runs", "read_json", "with_notes"]
