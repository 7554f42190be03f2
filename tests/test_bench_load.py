"""``python -m hora bench load``, short: the real app (``python -m app`` on the embedded assets, in a subprocess)
under 4 concurrent users for 20 s, one of them fine-tuning; no request may fail and the server's memory stays
bounded."""

from __future__ import annotations

import json

import pytest

from hora import hub
from hora.bench import load
from hora.cli import main


@pytest.mark.slow
def test_four_users_for_twenty_seconds(capsys):
    if not hub.embedded_assets():
        pytest.skip(f"no embedded assets under {hub.assets_dir()}")
    code = main(["bench", "load", "--users", "4", "--seconds", "20", "--finetune-steps", "2", "--timeout", "60"])
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])  # the JSON summary is the last line
    assert summary["failures"] == 0, summary["errors"]
    assert code == 0
    counts = {name: stats["count"] for name, stats in summary["endpoints"].items()}
    assert all(counts.get(name, 0) >= 1 for name in load.ENDPOINTS), counts
    assert all(stats["p50_ms"] <= stats["p95_ms"] <= stats["max_ms"] for stats in summary["endpoints"].values())
    memory = summary["rss_mib"]
    assert 0 < memory["start"] <= memory["peak"] < 6 * 1024 and memory["end"] <= memory["peak"]
    assert summary["machine"]["cpus"] and summary["machine"]["machine"]
    assert summary["ok"] and "requests" in captured.err and "server RSS" in captured.err  # the human table
