"""Attack: files that make the library fail with something other than a clear message.

Corrupt or fake safetensors (a pickle renamed, a header claiming 10 GB), ``metrics.json`` / ``head_config.json`` of
the wrong shape, an adapter for a different base, NaN/inf adapter weights and an unreachable Hub on push each end in
a ``ValueError`` that says what is wrong, and in the CLI in one ``error:`` line, a non-zero exit and the JSON
summary with ``"ok": false``: never a traceback.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import peft
import pytest
import torch
from helpers import save_vit, saved_adapter, tiny_gpt2, tiny_llama, tiny_vit, write_image_folder
from safetensors.torch import load_file, save_file

from hora.cli import main
from hora.loaders import load_adapter, load_base


ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = "adapter_model.safetensors"


@pytest.fixture
def vit_adapter(tmp_path) -> Path:
    return saved_adapter(tmp_path / "adapter", tiny_vit)


def _fake_pickle(path: Path) -> None:
    path.write_bytes(pickle.dumps({"weight": [1.0, 2.0]}, protocol=4))


def _claims_10_gb(path: Path) -> None:
    path.write_bytes(struct.pack("<Q", 10**10) + b'{"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}')


def _bad_offsets(path: Path) -> None:
    header = json.dumps({"x": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)


def _refused(call, *fragments: str) -> str:
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    assert all(f in message for f in fragments), message
    return message


@pytest.mark.parametrize(
    "spoil,fragment",
    [
        (_fake_pickle, "is not a safetensors file: its header claims"),
        (_claims_10_gb, "its header claims 10,000,000,000 bytes but the file holds"),
        (_bad_offsets, "is damaged: tensor 'x' has an invalid entry"),
    ],
)
def test_fake_and_corrupt_safetensors_are_named(vit_adapter, tmp_path, spoil, fragment):
    spoil(vit_adapter / WEIGHTS)
    _refused(lambda: load_adapter(tiny_vit(), vit_adapter), WEIGHTS, fragment)
    base = save_vit(tmp_path / "base")
    spoil(base / "model.safetensors")
    _refused(lambda: load_base(base), "model.safetensors", fragment)


def test_non_finite_adapter_weights_are_refused(vit_adapter):
    tensors = load_file(vit_adapter / WEIGHTS)
    key = next(k for k in tensors if "A_seed" in k)
    tensors[key][0, 0] = float("nan")
    save_file(tensors, vit_adapter / WEIGHTS)
    _refused(lambda: load_adapter(tiny_vit(), vit_adapter), "NaN or infinite values in 1 tensor(s)", key)
    tensors[key][0, 0] = float("inf")
    save_file(tensors, vit_adapter / WEIGHTS)
    _refused(lambda: load_adapter(tiny_vit(), vit_adapter), "NaN or infinite")


@pytest.mark.parametrize(
    "record,fragment",
    [
        ([1, 2, 3], "must hold a JSON object, not list"),
        ({"id2label": ["a", "b"]}, "id2label must map class indices to names"),
        ({"id2label": {"0": "a", "7": "b"}}, "id2label entry '7'"),
        ({"preprocessing": {"kind": "image", "image_size": 10**6}}, "preprocessing.image_size"),
        ({"preprocessing": {"kind": "sound"}}, "kind is 'image', 'text' or 'lm'"),
        ({"preprocessing": {"kind": "image", "mean": [0.5]}}, "preprocessing.mean"),
        ({"split": {"eval": ["0", "1"]}}, "split.eval"),
        ({"method": 7}, "`method` must be a method name"),
    ],
)
def test_a_run_record_of_the_wrong_shape_is_named(vit_adapter, record, fragment):
    (vit_adapter / "metrics.json").write_text(json.dumps(record))
    _refused(lambda: load_adapter(tiny_vit(), vit_adapter), "metrics.json", fragment)


def test_a_head_config_of_the_wrong_shape_is_named(tmp_path):
    folder = tmp_path / "head"
    folder.mkdir()
    head = {"format": "hora-head", "modules": ["classifier"], "id2label": {"0": "a", "1": "b"}}
    save_file(
        {"classifier.weight": torch.zeros(2, 32), "classifier.bias": torch.zeros(2)}, folder / "head.safetensors"
    )
    (folder / "head_config.json").write_text(json.dumps(head))
    assert load_adapter(tiny_vit(), folder).classifier.out_features == 2  # the good one loads
    for spoiled, fragment in (
        ({**head, "modules": "classifier|(a+)+"}, "`modules` must be a list of module names"),
        ({**head, "id2label": {"0": "a", "1": "b", "2": "c"}}, "does not fit this base model: classifier."),
        ({**head, "id2label": "ab"}, "id2label must map class indices"),
        ([head], "must hold a JSON object"),
    ):
        (folder / "head_config.json").write_text(json.dumps(spoiled))
        _refused(lambda: load_adapter(tiny_vit(), folder), fragment)


def test_an_adapter_for_another_base_says_which(tmp_path):
    gpt2 = saved_adapter(tmp_path / "gpt2", tiny_gpt2, base_model_name_or_path="someone/tiny-gpt2")
    _refused(lambda: load_adapter(tiny_llama(), gpt2), "made for another architecture", "'someone/tiny-gpt2'")
    lora = peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    vit = saved_adapter(tmp_path / "vit", tiny_vit, config=lora, base_model_name_or_path="/srv/x/vit-small")
    from transformers import ViTConfig, ViTForImageClassification

    wider = ViTConfig(image_size=16, patch_size=4, hidden_size=48, num_hidden_layers=2, num_attention_heads=4)
    other = ViTForImageClassification(wider)
    message = _refused(lambda: load_adapter(other, vit), "This adapter is for 'vit-small', not for this ViT")
    assert "lora_A.weight is [4, 32] but Linear" in message and "needs [4, 48]" in message and "/srv" not in message


def test_an_unreachable_hub_on_push_is_a_clear_message(vit_adapter, monkeypatch):
    from hora.push import PushError, push

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: the connection is refused
    message = _refused(lambda: push(vit_adapter, "me/x", token="hf_secret"), "Could not reach the Hugging Face Hub")
    assert "hf_secret" not in message and str(vit_adapter.parent) not in message
    with pytest.raises(PushError):
        push(vit_adapter, "me/x", token="hf_secret")


# ---------------------------------------------------------------------------------------------------------------
# The CLI: one line, a non-zero exit and the JSON summary, never a traceback


@pytest.fixture
def eval_setup(tmp_path, vit_adapter):
    return save_vit(tmp_path / "base"), write_image_folder(tmp_path / "data"), vit_adapter


def _cli(capsys, *argv: str) -> tuple[int, dict, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    summary = json.loads(out.strip().splitlines()[-1])
    assert "Traceback" not in err and len([line for line in err.splitlines() if line.startswith("error:")]) == 1
    assert summary["ok"] is False and summary["error"]
    return status, summary, err


@pytest.mark.parametrize("spoil", [_fake_pickle, _claims_10_gb, "nan", "metrics", "pickle-only"])
def test_cli_eval_failures_are_one_line_and_a_json_summary(capsys, eval_setup, spoil):
    base, data, adapter = eval_setup
    if spoil == "nan":
        tensors = load_file(adapter / WEIGHTS)
        save_file({k: v * float("nan") for k, v in tensors.items()}, adapter / WEIGHTS)
    elif spoil == "metrics":
        (adapter / "metrics.json").write_text('{"preprocessing": {"kind": "image", "image_size": 99999999}}')
    elif spoil == "pickle-only":
        (adapter / WEIGHTS).rename(adapter / "adapter_model.bin")  # never handed to torch.load
    else:
        spoil(adapter / WEIGHTS)
    status, summary, _ = _cli(capsys, "eval", "--base", str(base), "--adapter", str(adapter), "--data", str(data))
    assert status == 2 and summary["command"] == "eval"


def test_cli_refuses_out_of_range_sizes_with_the_validators_bounds(capsys, tmp_path):
    base, data = save_vit(tmp_path / "base"), write_image_folder(tmp_path / "data")
    out = tmp_path / "run"
    for flag, value, fragment in (
        ("--rank", "100000", "between 1 and 4,096"),
        ("--hyper-hidden", "1000000000", "between 1 and 8,192"),
    ):
        status, summary, _ = _cli(
            capsys, "train", "--base", str(base), "--data", str(data), "--out", str(out), flag, value
        )
        assert status == 2 and fragment in summary["error"] and not out.exists()


def test_cli_usage_errors_interrupts_and_bugs_end_the_same_way(capsys, monkeypatch):
    status, summary, err = _cli(capsys, "train", "--method", "magic")
    assert status == 2 and "invalid choice: 'magic'" in summary["error"] and summary["command"] is None
    from hora import cli

    def interrupted(args):
        raise KeyboardInterrupt

    def buggy(args):
        raise RuntimeError("something inside broke")

    monkeypatch.setitem(cli.COMMANDS, "demo", interrupted)
    status, summary, _ = _cli(capsys, "demo")
    assert status == 130 and "interrupted" in summary["error"]
    monkeypatch.setitem(cli.COMMANDS, "demo", buggy)
    status, summary, _ = _cli(capsys, "demo")
    assert status == 1 and summary["error"] == "RuntimeError: something inside broke"


def test_cli_push_to_an_unreachable_hub(capsys, vit_adapter, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    status, summary, err = _cli(capsys, "push", str(vit_adapter), "me/x")
    assert status == 2 and "Could not reach" in summary["error"] and "hf_secret" not in err + json.dumps(summary)


def test_a_whole_cli_process_with_a_fake_adapter(eval_setup):
    base, data, adapter = eval_setup
    _fake_pickle(adapter / WEIGHTS)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "hora",
        "eval",
        "--base",
        str(base),
        "--adapter",
        str(adapter),
        "--data",
        str(data),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["ok"] is False and "not a safetensors file" in summary["error"]
