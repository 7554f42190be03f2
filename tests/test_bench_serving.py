"""``python -m hora bench serving``, short: the real app (``python -m app`` on the embedded assets, in a subprocess)
driven through its API; side-by-side generation timed against the base alone, and the server's memory around one
visitor's fine-tune. Here on the tiny embedded language model, one round and one step each (the measurement on
SmolLM2 is the command's default)."""

from __future__ import annotations

import json

import pytest

from hora import hub
from hora.cli import main


@pytest.mark.slow
def test_serving_bench_reports_both_numbers(capsys, tmp_path):
    if "lm-shakespeare" not in hub.embedded_assets():
        pytest.skip(f"no embedded lm-shakespeare under {hub.assets_dir()}")
    out = tmp_path / "serving.json"
    argv = ["bench", "serving", "--base", "lm-shakespeare", "--repeats", "1", "--steps", "1", "--settle", "0.5"]
    code = main([*argv, "--json", str(out)])
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert code == 0 and summary["ok"], summary
    report = json.loads(out.read_text())
    side, memory = report["side_by_side"], report["finetune_memory"]
    assert side["models"][0] == "base" and len(side["models"]) >= 2
    assert len(side["seconds"]["alone"]) == len(side["seconds"]["together"]) == 1
    assert side["ratio"] == pytest.approx(side["median_seconds"]["together"] / side["median_seconds"]["alone"], 1e-2)
    assert set(side["texts_last_round"]) == set(side["models"]) == set(side["tokens_last_round"])
    assert all(0 <= n <= 48 + 2 for n in side["tokens_last_round"].values())
    assert memory["status"].startswith("Done.") and "Added" in memory["use_adapters"]
    rss = memory["rss_mib"]
    assert 0 < rss["before"] <= rss["peak"] and rss["after_run"] > 0 and rss["after_use"] > 0
    assert memory["growth_mib"]["after_use"] == pytest.approx(rss["after_use"] - rss["before"], abs=0.2)
    assert "models together vs the base alone" in captured.err and "after using its adapters" in captured.err
