"""``python -m hora``: demo, train -> eval round trip, errors, and a 2-process data-parallel run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import save_vit, write_image_folder
from safetensors import safe_open

from hora.cli import main


ROOT = Path(__file__).resolve().parents[1]
# One thread per process: the tiny models gain nothing from more, and two processes share the cores.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
TRAIN = ["--method", "hora", "--shots", "2", "--steps", "6", "--batch-size", "4", "--eval-every", "3"]
TRAIN += ["--rank", "4", "--hyper-hidden", "8", "--lr", "1e-2"]


def run(*args: str, launcher: list[str] | None = None, timeout: int = 120) -> tuple[dict, subprocess.CompletedProcess]:
    """Run the CLI in a fresh process; the last line of stdout is its JSON summary."""
    command = (launcher or [sys.executable]) + ["-m", "hora", *args]
    done = subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=timeout)
    lines = done.stdout.strip().splitlines()
    assert lines, f"no output; stderr:\n{done.stderr[-3000:]}"
    return json.loads(lines[-1]), done


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    return save_vit(root / "vit"), write_image_folder(root / "data"), root


@pytest.fixture(scope="module")
def trained(setup):
    base, data, root = setup
    summary, done = run("train", "--base", str(base), "--data", str(data), "--out", str(root / "run"), *TRAIN)
    assert done.returncode == 0, done.stderr[-3000:]
    return summary


def test_demo_prints_parameter_reports(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert (
        summary["ok"]
        and summary["methods"]["hora"]["trainable_params"] > summary["methods"]["lora"]["trainable_params"]
    )
    assert "generator" in out and "low-rank factors" in out and "== lora ==" in out
    assert all(m["max_abs_change_at_init"] == 0 for m in summary["methods"].values())


def test_train_then_eval_round_trip(setup, trained):
    base, data, root = setup
    assert trained["ok"] and trained["method"] == "hora" and trained["steps_done"] == 6
    assert Path(trained["out"]) == (root / "run").resolve()
    assert (root / "run" / "adapter_model.safetensors").is_file()
    summary, done = run("eval", "--base", str(base), "--adapter", str(root / "run"), "--data", str(data))
    assert done.returncode == 0, done.stderr[-3000:]
    assert summary["split"] == "held_out" and summary["method"] == "hora"
    assert summary["metrics"] == pytest.approx(trained["final"])


def test_errors_end_with_a_json_line(setup, tmp_path, capsys):
    base, _, _ = setup
    status = main(
        ["train", "--base", str(base), "--data", str(tmp_path / "missing.zip"), "--out", str(tmp_path / "o")]
    )
    assert status == 2
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary == {"ok": False, "command": "train", "error": summary["error"]}
    assert "does not exist" in summary["error"] and "error:" in captured.err
    assert not (tmp_path / "o").exists()


def _shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    with safe_open(folder / "adapter_model.safetensors", "pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


@pytest.mark.slow
def test_accelerate_two_processes(setup, trained):
    """``accelerate launch`` with two CPU processes (gloo): the same adapter as a single-process run."""
    base, data, root = setup
    out = root / "ddp"
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launcher += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    summary, done = run(
        "train", "--base", str(base), "--data", str(data), "--out", str(out), *TRAIN, launcher=launcher, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert summary["ok"] and summary["num_processes"] == 2
    assert len([line for line in done.stdout.splitlines() if line.startswith("{")]) == 1  # main process only
    single = json.loads((root / "run" / "adapter_config.json").read_text())
    double = json.loads((out / "adapter_config.json").read_text())
    for config in (single, double):  # PEFT keeps target_modules as a set: its JSON order varies
        config["target_modules"] = sorted(config["target_modules"])
    assert single == double
    assert _shapes(root / "run") == _shapes(out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["device"]["num_processes"] == 2
    assert metrics["config"] == json.loads((root / "run" / "metrics.json").read_text())["config"]
    from hora.runs import load_run

    model, _, _ = load_run(base, out)
    assert model.peft_config["default"].peft_type == "HORA"
