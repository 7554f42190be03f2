"""Attack: an adapter config whose ``target_modules`` is a catastrophically backtracking regular expression.

PEFT matches a string ``target_modules`` against every module name with ``re.fullmatch``; ``(.*.*)*X`` runs for
minutes per name while holding the interpreter lock, freezing every thread of the app. An untrusted config must be
refused on its JSON, before PEFT sees it, within a second, whichever way it arrives: read directly, loaded from a
local folder, or fetched from the Hub (a hand-built offline cache here). The attack runs in a child process so that a
regression fails on a timeout instead of hanging the test run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import hub_cache_repo, saved_adapter, tiny_llama

import hora
from hora.validate import AdapterError, check_adapter, read_adapter_config


ROOT = Path(__file__).resolve().parents[1]
EVIL = "(.*.*)*X"  # nested quantifiers: exponential backtracking on every module name that does not end in X


@pytest.fixture
def evil_adapter(tmp_path) -> Path:
    return saved_adapter(tmp_path / "evil", target_modules=EVIL)


ATTACK = r"""
import json, os, sys, time
sys.path.insert(0, {tests!r})
from helpers import tiny_llama
import hora
from hora.validate import read_adapter_config

folder, repo = sys.argv[1], sys.argv[2]
out = {{}}
for name, call in (
    ("read_config", lambda: read_adapter_config(folder)),
    ("load_local", lambda: hora.load_adapter(tiny_llama(), folder)),
    ("load_hub", lambda: hora.load_adapter(tiny_llama(), repo)),
):
    start = time.perf_counter()
    try:
        call()
        out[name] = {{"refused": False}}
    except ValueError as error:
        out[name] = {{"refused": True, "message": str(error), "type": type(error).__name__}}
    out[name]["seconds"] = time.perf_counter() - start
print(json.dumps(out))
"""


def test_the_regex_is_refused_within_a_second_from_a_folder_and_from_the_hub(evil_adapter, tmp_path):
    cache = tmp_path / "hub"
    hub_cache_repo(cache, "mallory/evil-adapter", evil_adapter)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    env["OMP_NUM_THREADS"] = "1"
    script = ATTACK.format(tests=str(ROOT / "tests"))
    done = subprocess.run(
        [sys.executable, "-c", script, str(evil_adapter), "mallory/evil-adapter"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,  # the unfixed loaders spend minutes on the first module name
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for name, result in results.items():
        assert result["refused"], name
        assert result["seconds"] < 1.0, (name, result["seconds"])
        assert "regular expression" in result["message"] and "list of module" in result["message"], result
        assert EVIL in result["message"]


def test_every_pattern_field_is_refused_from_an_untrusted_config(tmp_path):
    from hora.validate import UntrustedPatternError

    for field, value in (
        ("target_modules", EVIL),
        ("exclude_modules", EVIL),
        ("target_modules", ["q_proj", EVIL]),
        ("modules_to_save", ["classifier|" + EVIL]),
        ("rank_pattern", {EVIL: 4}),
        ("layers_pattern", "(a+)+$"),
    ):
        folder = saved_adapter(tmp_path / f"{field}-{len(str(value))}", **{field: value})
        with pytest.raises(UntrustedPatternError, match=f"`{field}`"):
            read_adapter_config(folder)


def test_features_that_run_code_at_load_are_refused(tmp_path):
    from peft import LoraConfig

    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    for field, value, message in (
        ("megatron_config", {"x": 1}, "megatron_config"),
        ("megatron_core", "os", "megatron_core"),
        ("layer_replication", [[0, 2], [0, 2]], "layer_replication"),
        ("init_lora_weights", "pissa", "init_lora_weights"),
        ("eva_config", {"rho": 2.0}, "eva_config"),
    ):
        folder = saved_adapter(tmp_path / field, config=lora, **{field: value})
        with pytest.raises(AdapterError, match=message):
            read_adapter_config(folder)


def test_a_plain_list_of_names_loads_and_a_trusted_folder_may_use_a_pattern(tmp_path):
    from hora.validate import UntrustedPatternError

    plain = saved_adapter(tmp_path / "plain")
    assert sorted(read_adapter_config(plain)["target_modules"]) == ["q_proj", "v_proj"]
    pattern = saved_adapter(tmp_path / "mine", target_modules=r".*\.(q_proj|v_proj)")  # a benign pattern
    with pytest.raises(UntrustedPatternError):
        check_adapter(tiny_llama(), pattern)
    assert check_adapter(tiny_llama(), pattern, trusted=True)["r"] == 4
    model = hora.load_adapter(tiny_llama(), pattern, trusted=True)  # the caller's own run: it vouches for it
    assert model.peft_config["default"].peft_type == "HORA"
    config = json.loads((pattern / "adapter_config.json").read_text())
    assert config["target_modules"] == r".*\.(q_proj|v_proj)"  # the file is untouched
