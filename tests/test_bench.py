"""The benchmark harness runs on a tiny configuration and writes well-formed outputs (timings are never asserted)."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
import torch
from helpers import save_vit, write_image_folder
from transformers import ViTForImageClassification

import hora
import hora.methods
import hora.optim
from hora import bench
from hora.cli import main
from hora.train import TrainConfig


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    return save_vit(root / "vit"), write_image_folder(root / "data", per_class=5)


def test_t_quantiles():
    assert bench.t_quantile_975(1) == pytest.approx(12.7062, abs=1e-4)
    assert bench.t_quantile_975(4) == pytest.approx(2.7764, abs=1e-4)
    assert bench.t_quantile_975(10**9) == pytest.approx(1.95996, abs=1e-4)
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 5, 29, 35, 50, 90, 200, 1000):
        assert bench.t_quantile_975(df) == pytest.approx(scipy_stats.t.ppf(0.975, df), abs=2e-4)


def test_mean_ci():
    summary = bench.mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    half = 2.7764451 * math.sqrt(2.5) / math.sqrt(5)
    assert summary["mean"] == 3.0 and summary["n"] == 5
    assert summary["ci_low"] == pytest.approx(3.0 - half) and summary["ci_high"] == pytest.approx(3.0 + half)
    single = bench.mean_ci([0.5])
    assert single["ci_low"] == single["ci_high"] == 0.5


def test_sample_efficiency_writes_json_and_figure(setup, tmp_path):
    base, data = setup
    config = TrainConfig(steps=2, batch_size=4, eval_every=None, r=4, hyper_hidden=8)
    out = tmp_path / "se"
    report = bench.sample_efficiency(
        base, data, methods=["lora", "hora"], shots=[1, 2], seeds=[0, 1], config=config, out_dir=out
    )
    saved = json.loads((out / "sample_efficiency.json").read_text())
    assert saved["results"] == json.loads(json.dumps(report["results"]))
    assert saved["metric"] == "accuracy" and saved["higher_is_better"] and saved["shots"] == [1, 2]
    assert len(saved["runs"]) == 2 * 2 * 2
    for method in ("lora", "hora"):
        for shots in ("1", "2"):
            row = saved["results"][method][shots]
            assert row["n"] == 2 and row["ci_low"] <= row["mean"] <= row["ci_high"]
            assert all(0.0 <= v <= 1.0 for v in row["values"])
    assert (out / "sample_efficiency.html").is_file() and saved["figure"]["html"] == "sample_efficiency.html"
    if importlib.util.find_spec("kaleido") is None:
        assert "kaleido" in saved["figure"]["png_note"]
    else:  # requirements-dev.txt installs kaleido: the PNG must really be there
        assert saved["figure"]["png"] and (out / saved["figure"]["png"]).stat().st_size > 1000, saved["figure"]


def test_speed_writes_ratios_to_lora(setup, tmp_path):
    base, _ = setup
    methods = ["lora", "dora", "hora"] + (["doran"] if hasattr(hora, "DoranConfig") else [])
    out = tmp_path / "speed"
    report = bench.speed(base, methods=methods, steps=2, warmup=1, batch_size=2, r=4, hyper_hidden=8, out_dir=out)
    saved = json.loads((out / "speed.json").read_text())
    device = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert saved["methods"] == methods and saved["device"] == device  # device="auto"
    assert saved["precision"] == ("bf16 autocast" if device == "cuda" else "float32") and saved["compiled"] == []
    assert saved["ratios_to_lora"]["lora"] == {"step_time": 1.0, "memory": 1.0, "trainable_params": 1.0}
    for method in methods:
        row = saved["train"][method]
        assert row["step_seconds"] > 0 and row["activation_bytes"] > 0 and row["trainable_params"] > 0
        assert {f"{method}/unmerged", f"{method}/merged"} <= set(saved["inference_seconds"])
    assert saved["inference_ratios_to_base"]["base"] == 1.0
    assert (out / "speed.html").is_file()
    table = bench.speed_table(report)
    assert all(m in table for m in methods)


def test_bench_cli(setup, tmp_path, capsys):
    base, data = setup
    args = ["bench", "speed", "--base", str(base), "--methods", "lora,hora", "--steps", "1", "--warmup", "0"]
    assert main([*args, "--batch-size", "2", "--rank", "4", "--hyper-hidden", "8", "--out", str(tmp_path / "s")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["ok"] and set(summary["ratios_to_lora"]) == {"lora", "hora"}
    assert (tmp_path / "s" / "speed.json").is_file()

    args = ["bench", "sample-efficiency", "--base", str(base), "--data", str(data), "--methods", "head,hora"]
    args += ["--shots", "1,2", "--seeds", "2", "--steps", "2", "--rank", "4", "--hyper-hidden", "8"]
    assert main([*args, "--out", str(tmp_path / "se")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["ok"] and summary["metric"] == "accuracy" and set(summary["mean"]["hora"]) == {"1", "2"}
    assert json.loads((tmp_path / "se" / "sample_efficiency.json").read_text())["seeds"] == [0, 1]


def test_speed_also_times_compiled_steps(setup, tmp_path, capsys, monkeypatch):
    base, _ = setup
    monkeypatch.setattr(hora.optim, "COMPILE_BACKEND", "aot_eager")  # inductor's graph capture, no C++ compiler
    args = ["bench", "speed", "--base", str(base), "--methods", "lora,hora", "--compile", "lora,hora", "--steps", "1"]
    args += ["--warmup", "1", "--batch-size", "2", "--rank", "4", "--hyper-hidden", "8", "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "s")]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["ok"]
    saved = json.loads((tmp_path / "s" / "speed.json").read_text())
    assert saved["compiled"] == ["lora+compile", "hora+compile"] and saved["precision"] == "float32"
    assert saved["settings"]["compile"] == ["lora", "hora"]
    assert {name: row["compiled"] for name, row in saved["train"].items()} == {
        "lora": False,
        "hora": False,
        "lora+compile": True,
        "hora+compile": True,
    }
    assert set(saved["ratios_to_compiled_lora"]) == {"lora+compile", "hora+compile"}
    assert saved["ratios_to_compiled_lora"]["lora+compile"] == {"step_time": 1.0}
    assert "hora/unmerged" in saved["inference_seconds"] and "hora+compile/unmerged" not in saved["inference_seconds"]
    with pytest.raises(ValueError, match="1 to compile"):
        bench.speed(base, methods=["lora"], compile=["lora"], warmup=0)


def test_ops_counts_operator_calls_per_step_against_the_references(setup, tmp_path, capsys):
    base, _ = setup
    args = ["bench", "ops", "--base", str(base), "--methods", "hora", "--rank", "4", "--hyper-hidden", "8"]
    assert main([*args, "--out", str(tmp_path / "ops")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    saved = json.loads((tmp_path / "ops" / "ops.json").read_text())
    result = saved["results"][str(base)]
    assert saved["methods"] == ["lora", "hora"] and summary["ratios"] == {str(base): result["ratios"]}
    counts = result["counts"]
    assert counts["hora"] > counts["lora"] > 100
    ratio = counts["hora"] / counts["lora"]
    assert result["ratios"] == {
        "hora": {"reference": "lora", "ratio": ratio, "bound": 1.2, "within_bound": ratio <= 1.2}
    }
    from hora.bench.ops import count_step_ops

    model, _ = hora.methods.apply_method(ViTForImageClassification.from_pretrained(base), "hora", r=4, hyper_hidden=8)
    batch = {"pixel_values": torch.randn(1, 3, 16, 16), "labels": torch.tensor([0])}
    assert count_step_ops(model, batch) == count_step_ops(model, batch) == counts["hora"]  # a count, not a timing


def test_reference_models_are_full_size_and_unknown_names_are_explained():
    model, kind = bench.reference_model("config:vit-b16")
    assert kind == "image" and not model.training
    assert 85_000_000 < sum(p.numel() for p in model.parameters()) < 87_000_000  # ViT-B/16: 86M
    with pytest.raises(ValueError, match="config:vit-b16"):
        bench.reference_model("config:vit-h14")


def test_sample_efficiency_variants_and_a_separate_test_set(setup, tmp_path):
    """Named configurations of one method, and a test function of the caller's: the engine may then select steps."""
    base, data = setup
    calls = []

    def test(model):
        calls.append(type(model).__name__)
        return {"test_accuracy": 0.5}

    config = TrainConfig(steps=2, batch_size=4, eval_every=1, keep_best=True, r=4, hyper_hidden=8)
    variants = {
        "hora-static-A": {"method": "hora", "method_args": {"generate_a": False}},
        "lora-r2": {"method": "lora", "r": 2},
    }
    report = bench.sample_efficiency(base, data, variants=variants, shots=[1], seeds=[0, 1], config=config, test=test)
    assert report["methods"] == ["hora-static-A", "lora-r2"] and report["metric"] == "test_accuracy"
    assert len(calls) == 4 and report["higher_is_better"] and report["config"]["keep_best"]
    params = {r["method"]: r["adapter_params"] for r in report["runs"]}
    assert params["lora-r2"] < params["hora-static-A"]
    assert all(r["peft_method"] in ("hora", "lora") and r["test"] == {"test_accuracy": 0.5} for r in report["runs"])
    with pytest.raises(ValueError, match="Unknown method"):
        bench.sample_efficiency(base, data, variants={"x": {"method": "qlora"}}, shots=[1], seeds=[0], config=config)


def test_quant_transfer_trains_on_both_bases_and_evaluates_each_run_on_both(capsys):
    from hora.bench.quant_transfer import markdown_table, roundtrip

    weight = torch.randn(8, 64, generator=torch.Generator().manual_seed(0))
    rounded = roundtrip(weight, "Q4_1")
    assert rounded.shape == weight.shape and 0 < (rounded - weight).norm() / weight.norm() < 0.2
    torch.testing.assert_close(roundtrip(rounded, "Q4_1"), rounded, atol=1e-3, rtol=0)  # on its own grid already
    args = ["bench", "quant-transfer", "--methods", "lora", "--seeds", "0", "--steps", "2", "--batch-size", "4"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["ok"] and report["quantization"]["Q4_1"]["mean_relative_error"] > 0.01
    assert report["base_alone"]["quantized"] != report["base_alone"]["original"]
    runs = report["adapters"]["lora"]
    assert {t: set(by_eval) for t, by_eval in runs.items()} == {t: {"quantized", "original"} for t in runs}
    assert all(math.isfinite(runs[t][e]["mean"]) for t in runs for e in runs[t])
    # the runs load a scratch copy and the original by path; the report names the base, never a path of this machine
    assert report["peft_configs"]["lora"]["base_model_name_or_path"] == "lm-shakespeare"
    assert " ± " not in markdown_table(report)  # one seed: no spread to show


def test_variants_bench_serves_the_same_adapters_shared_and_swapped(capsys):
    adapters = "lm-shakespeare/hora,lm-shakespeare/hora"
    assert main(["bench", "variants", "--base", "lm-shakespeare", "--adapters", adapters, "--rounds", "1"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["ok"] and report["swapped_over_shared"] > 0 and set(report["rss_mib"]) >= {"base", "shared_variants"}
