"""hora.config: TrainConfig's checks, and the CLI built from its fields (a new field appears everywhere at once)."""

from __future__ import annotations

import dataclasses

import pytest

from hora.cli import _parser
from hora.cli.options import train_config as _train_config
from hora.config import TrainConfig


def test_every_field_has_help():
    assert all(f.metadata.get("help") for f in dataclasses.fields(TrainConfig))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"method": "qlora"}, "Unknown method"),
        ({"steps": 0}, "steps"),
        ({"r": -1}, "`r`"),
        ({"shots": 0}, "shots"),
        ({"lr": float("nan")}, "lr"),
        ({"warmup_ratio": 1.0}, "warmup_ratio"),
        ({"eval_fraction": 0.0}, "eval_fraction"),
        ({"grad_clip": -1.0}, "grad_clip"),
        ({"context": 1}, "context"),
        ({"device": "tpu"}, "device"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def _train_args(*extra: str):
    return _parser().parse_args(["train", "--base", "b", "--data", "d", "--out", "o", *extra])


def test_cli_defaults_are_the_configs():
    assert _train_config(_train_args()) == TrainConfig()


def test_every_field_is_a_cli_option():
    options = {a.dest for a in _parser()._subparsers._group_actions[0].choices["train"]._actions}
    assert {f.name for f in dataclasses.fields(TrainConfig)} <= options


def test_cli_options_parse_to_the_fields():
    args = _train_args(
        "--method", "doran", "--shots", "none", "--rank", "4", "--alpha", "8", "--targets", "q_proj,v_proj",
        "--eval-every", "0", "--grad-clip", "0", "--no-bf16", "--match-params", "--method-arg", "tau_init=0.05",
        "--method-arg", "tau_granularity=channel", "--max-eval", "64", "--eval-fraction", "0.2",
    )  # fmt: skip
    config = _train_config(args)
    assert (config.method, config.shots, config.r, config.lora_alpha) == ("doran", None, 4, 8.0)
    assert config.target_modules == ["q_proj", "v_proj"] and config.eval_every is None and config.grad_clip is None
    assert config.bf16 is False and config.match_params and config.max_eval == 64 and config.eval_fraction == 0.2
    assert config.method_args == {"tau_init": 0.05, "tau_granularity": "channel"}
