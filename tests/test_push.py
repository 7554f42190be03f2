"""Pushing adapters to the Hub, checked offline: the exact files and card, and the refusals."""

from __future__ import annotations

import json
import subprocess
import sys

import peft
import pytest
from helpers import tiny_llama

import hora
from hora.push import PushError, push, push_plan


@pytest.fixture
def adapter(tmp_path):
    folder = tmp_path / "adapter"
    peft.get_peft_model(tiny_llama(), hora.HoraConfig(r=4, hyper_hidden=8)).save_pretrained(folder)
    (folder / "metrics.json").write_text("{}")
    (folder / "notes.tmp").write_text("not uploaded")
    return folder


def test_plan_lists_exactly_the_adapter_files_and_keeps_the_card(adapter):
    plan = push_plan(adapter, "me/my-hora")
    assert plan.files == ["adapter_config.json", "adapter_model.safetensors", "README.md", "metrics.json"]
    assert plan.card == (adapter / "README.md").read_text()


def test_dry_run_writes_the_repo_content_and_a_card_when_missing(adapter, tmp_path):
    (adapter / "README.md").unlink()
    out = push(adapter, "me/my-hora", dry_run_dir=tmp_path / "repo")
    files = sorted(p.name for p in (tmp_path / "repo").iterdir())
    assert files == ["README.md", "adapter_config.json", "adapter_model.safetensors", "metrics.json"]
    card = (tmp_path / "repo" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: peft\n") and "- hora" in card and "me/my-hora" in card
    assert out == str(tmp_path / "repo")
    loaded = peft.PeftModel.from_pretrained(tiny_llama(), tmp_path / "repo")
    assert loaded.peft_config["default"].peft_type == "HORA"


def test_refusals(adapter, monkeypatch):
    with pytest.raises(PushError, match="not a Hub repo id"):
        push_plan(adapter, "no-slash")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(PushError, match="No Hugging Face token"):
        push(adapter, "me/x")
    (adapter / "extra.bin").write_bytes(b"pickle")
    with pytest.raises(PushError, match=r"pickled files \(extra.bin\)"):
        push_plan(adapter, "me/x")


def test_offline_push_fails_cleanly_without_leaking_the_token(adapter, monkeypatch):
    (adapter / "notes.tmp").unlink()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    script = (
        "import sys; from hora.push import push, PushError\n"
        f"try: push({str(adapter)!r}, 'me/x', token='hf_secret_value')\n"
        "except PushError as e: print('ERR', e); sys.exit(0)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "ERR" in result.stdout and "hf_secret_value" not in result.stdout + result.stderr


def test_cli_push_dry_run(adapter, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "hora", "push", str(adapter), "me/x", "--dry-run", str(tmp_path / "repo")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["ok"] and summary["files"][0] == "adapter_config.json"
    assert (tmp_path / "repo" / "adapter_model.safetensors").is_file()
