"""``python -m hora bench load``, short: the real app (``python -m app`` on the embedded assets, in a subprocess)
under 4 concurrent users for 20 s, one of them fine-tuning; no request may fail and the server's memory stays
bounded."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hora import hub
from hora.bench import load
from hora.cli import main


@pytest.mark.slow
def test_four_users_for_twenty_seconds(capsys, tmp_path):
    if not hub.embedded_assets():
        pytest.skip(f"no embedded assets under {hub.assets_dir()}")
    argv = ["bench", "load", "--users", "4", "--seconds", "20", "--finetune-steps", "2", "--timeout", "120"]
    code = main([*argv, "--json", str(tmp_path / "out" / "load.json")])
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])  # the JSON summary is the last line
    written = json.loads((tmp_path / "out" / "load.json").read_text())  # and the same report for the docs
    assert {**written, "ok": summary["ok"]} == summary
    assert summary["failures"] == 0, summary["errors"]
    assert code == 0
    counts = {name: stats["count"] for name, stats in summary["endpoints"].items()}
    assert all(counts.get(name, 0) >= 1 for name in load.ENDPOINTS), counts
    assert all(stats["p50_ms"] <= stats["p95_ms"] <= stats["max_ms"] for stats in summary["endpoints"].values())
    memory = summary["rss_mib"]
    assert 0 < memory["start"] <= memory["peak"] < 6 * 1024 and memory["end"] <= memory["peak"]
    assert summary["machine"]["cpus"] and summary["machine"]["machine"]
    assert summary["ok"] and "requests" in captured.err and "server RSS" in captured.err  # the human table


@pytest.mark.slow
def test_adversarial_flood_of_fine_tunes(capsys):
    """One client keeps 20 fine-tunes submitted while 2 users classify and generate; both phases are measured. The
    flood is refused at the door (one fine-tune per visitor) and the users are served without a failure."""
    if not hub.embedded_assets():
        pytest.skip(f"no embedded assets under {hub.assets_dir()}")
    argv = ["bench", "load", "--adversarial", "--users", "2", "--seconds", "20", "--flood", "20"]
    code = main([*argv, "--flood-steps", "20", "--timeout", "60"])
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert set(summary["phases"]) == {"baseline", "flood"} and summary["users"] == 2
    for phase in summary["phases"].values():
        assert phase["served"] + phase["failures"] >= 1 and phase["p50_ms"] <= phase["p95_ms"] <= phase["max_ms"]
        assert 0 < phase["rss_peak_mib"] < 6 * 1024
    flood = summary["flood"]
    assert (
        flood["submitted"] >= 20 and flood["submitted"] == flood["refused"] + flood["completed"] + flood["cancelled"]
    )
    assert "p95 with the flood / without" in captured.err and "flooder (20 outstanding" in captured.err
    assert "You already have" in flood["first_refusal"]
    assert summary["failures"] == 0 and code == 0, summary["errors"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_server_started_by_the_bench_dies_with_its_parent():
    """A killed benchmark or test run leaves no ``python -m app`` behind (hora.bench.server.die_with_parent)."""
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time; from hora.bench.server import die_with_parent; "
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], "
            "preexec_fn=die_with_parent); print(child.pid, flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie has exited; nobody may be left to reap it
