"""The options the training engine's settings become: one per ``TrainConfig`` field (its type, default and help), and
the data options, shared by ``train`` and ``bench sample-efficiency``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from typing import Any


def csv_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def int_list(text: str) -> list[int]:
    return [int(part) for part in csv_list(text)]


def _method_arg(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value  # a bare string, e.g. tau_granularity=channel


def _optional(parse: Any, zero_is_none: bool) -> Any:
    """A parser for an ``X | None`` field: "none" (and 0 where the field says so) is None."""

    def parse_optional(text: str) -> Any:
        if text.strip().lower() == "none":
            return None
        value = parse(text)
        return None if zero_is_none and value == 0 else value

    return parse_optional


def add_config_options(p: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One option per ``TrainConfig`` field (but ``skip``), with the field's type, default and help."""
    from hora.config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        if f.name in skip:
            continue
        meta, hint = f.metadata, hints[f.name]
        flags = [meta.get("flag") or f"--{f.name.replace('_', '-')}"]
        if f"--{f.name.replace('_', '-')}" not in flags:
            flags.append(f"--{f.name.replace('_', '-')}")  # the field's own name works too
        default = getattr(defaults, f.name)
        kw: dict[str, Any] = {
            "dest": f.name,
            "default": default,
            "help": f"{meta.get('help', '')} (default: %(default)s)",
        }
        if hint is not bool and hint != (bool | None):
            kw["metavar"] = f.name.upper()
        args = typing.get_args(hint)
        if typing.get_origin(hint) is typing.Literal:
            kw["choices"] = list(args)
        elif "choices" in meta:
            kw["choices"] = list(meta["choices"])
        elif hint is bool or hint == (bool | None):
            kw["action"] = argparse.BooleanOptionalAction
        elif f.name == "method_args":
            kw.update(type=_method_arg, action="append", default=[], metavar="KEY=VALUE", help=meta["help"])
        elif f.name == "target_modules":
            kw["type"] = csv_list
        else:
            base = next(t for t in (int, float, str) if t is hint or t in args)
            kw["type"] = _optional(base, meta.get("zero_is_none", False)) if type(None) in args else base
        p.add_argument(*flags, **kw)


def train_config(args: argparse.Namespace, **fixed: Any):
    """The ``TrainConfig`` the options say, with ``fixed`` fields (a benchmark's swept ones) set as given."""
    from hora.config import TrainConfig

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    values["method_args"] = dict(values.get("method_args") or [])
    return TrainConfig(**{**values, **fixed})


def add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--base", required=True, help="base model: a folder (config.json + safetensors), embedded name or Hub repo"
    )
    p.add_argument("--data", required=True, help="dataset: class-folder zip/folder, csv, jsonl or txt")


__all__ = ["add_config_options", "add_data_options", "csv_list", "int_list", "train_config"]
