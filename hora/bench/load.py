"""Load test of the explorer: ``python -m hora bench load [--users 16] [--seconds 120] [--adversarial]``: the server
and the report (the simulated users are ``hora.bench.load_users``).

Starts ``python -m app`` on 127.0.0.1 in a subprocess and runs N concurrent gradio_client users (a thread and a
Client each) for a bounded time, looping over classify, generate, next-token, perplexity and Heads (a few also
fine-tune). It prints per-endpoint counts, failures (an exception or a wrong-looking result), latency p50 / p95 / max
and the server's RSS (with its children, every 0.5 s), then a JSON summary; exit code 1 if a request failed.
``run_adversarial`` (``--adversarial``): well-behaved users who classify and generate, alone, then while one client
floods fine-tunes (``flood`` kept submitted without waiting, at most ``FLOOD_RATE`` a second); per phase what they
got (served, failures, p50 / p95), the p95 ratio, what became of the flood, the server's peak memory.
``--json PATH`` also writes the summary to PATH (JSON), for the docs' tables.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hora.bench.load_users import (
    ENDPOINTS,
    MIX,
    Plan,
    Record,
    discover,
    finetune_args,
    run_users,
    summarize,
    visitor,
)
from hora.bench.report import adversarial_table
from hora.bench.server import RssSampler, free_port, rss, start_app, stop_app, tail
from hora.bench.stats import latency_spread


@contextmanager
def _serving(port: int | None) -> Iterator[tuple[str, subprocess.Popen, Plan, Path, dict]]:
    """The app started on a free port (or ``port``) with its plan; the dict gets the server log's tail at exit."""
    from gradio_client import Client

    from hora import hub

    port = port or free_port()
    url = f"http://127.0.0.1:{port}/"
    scratch = Path(tempfile.mkdtemp(prefix="hora-loadtest-"))
    server = start_app(port, scratch / "server.log")
    after: dict = {}
    try:
        probe = Client(url, verbose=False, download_files=False)
        plan = discover(probe, hub.assets_dir())
        probe.close()
        yield url, server, plan, scratch, after
    finally:
        stop_app(server)
        after["log"] = tail(scratch / "server.log")
        shutil.rmtree(scratch, ignore_errors=True)


def _machine() -> dict:
    found = {"machine": platform.machine(), "cpus": os.cpu_count(), "platform": platform.platform()}
    return found | {"python": platform.python_version()}


_mib = lambda value: round(value / 2**20, 1)  # noqa: E731 - bytes as MiB, for the reports


def run(
    users: int = 16,
    seconds: float = 120.0,
    port: int | None = None,
    finetune_users: int | None = None,
    finetune_steps: int = 5,
    max_requests: int = 500,
    timeout: float = 120.0,
) -> dict:
    """Start the app, load it with ``users`` concurrent clients for ``seconds``, stop it; returns the summary.

    ``finetune_users`` (default a quarter) also run ``finetune_steps``-step fine-tunes; ``max_requests`` per user;
    ``timeout`` per request (seconds); ``port`` default: a free one."""
    finetune_users = max(1, users // 4) if finetune_users is None else min(finetune_users, users)
    load_before = os.getloadavg()[0]
    with _serving(port) as (url, server, plan, scratch, after):
        rss_start, sampler, started = rss(server.pid), RssSampler(server.pid), time.monotonic()
        sampler.start()
        specs = [{"finetune_steps": finetune_steps if i < finetune_users else 0} for i in range(users)]
        specs = [spec | {"max_requests": max_requests, "timeout": timeout} for spec in specs]
        records = run_users(url, plan, started + seconds, scratch, specs)
        wall = time.monotonic() - started
        if server.poll() is not None:
            records.append(Record("server", 0.0, f"the app exited with code {server.returncode}"))
        rss_end = rss(server.pid)
        rss_peak = max(sampler.stop(), rss_end)
    errors = [f"{r.endpoint}: {r.error}" for r in records if r.error is not None]
    summary = {"users": users, "finetune_users": finetune_users, "finetune_steps": finetune_steps, "seconds": seconds}
    summary |= {"wall_s": round(wall, 1), "requests": len(records), "failures": len(errors)}
    summary |= {"throughput_rps": round(sum(r.endpoint in ENDPOINTS for r in records) / wall, 2)}
    summary |= {"endpoints": summarize(records), "errors": errors[:20]}
    summary |= {"server_log_tail": after["log"][-2000:] if errors else ""}
    summary |= {"rss_mib": {"start": _mib(rss_start), "peak": _mib(rss_peak), "end": _mib(rss_end)}}
    summary |= {"load_average_before": round(load_before, 2), "load_average_after": round(os.getloadavg()[0], 2)}
    return summary | {"machine": _machine()}


def table(summary: dict) -> str:
    lines = [f"{'endpoint':<15}{'requests':>9}{'failed':>8}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}"]
    for endpoint, s in summary["endpoints"].items():
        timing = f"{s['p50_ms']:>10.1f}{s['p95_ms']:>10.1f}{s['max_ms']:>10.1f}"
        lines.append(f"{endpoint:<15}{s['count']:>9}{s['failures']:>8}{timing}")
    if "phases" in summary:  # run_adversarial: the flood phase's endpoints, then its own summary
        return "\n".join(lines) + "\n" + adversarial_table(summary)
    mem, machine = summary["rss_mib"], summary["machine"]
    lines += [
        f"{summary['users']} users ({summary['finetune_users']} also fine-tuning, {summary['finetune_steps']} steps) "
        f"for {summary['seconds']:.0f} s (wall {summary['wall_s']:.1f} s): {summary['requests']} requests, "
        f"{summary['failures']} failed, {summary['throughput_rps']} mix requests/s",
        f"server RSS (with children): start {mem['start']:.0f} MiB, peak {mem['peak']:.0f} MiB, end {mem['end']:.0f} MiB",
        f"machine: {machine['machine']}, {machine['cpus']} CPUs; load average before {summary['load_average_before']}, "
        f"after {summary['load_average_after']}",
    ]
    lines += [f"error: {e}" for e in summary["errors"]]
    return "\n".join(lines)


# --- Adversarial: one client floods fine-tunes while well-behaved users classify and generate --------------------

POLITE_MIX = ("classify", "generate")
FLOOD_RATE = 10.0  # the flooder's submissions per second at most (a refusal is answered at once)


def _refusal_text(error: BaseException) -> str:
    """What the server said: a validator's refusal comes back as HTTP 400 whose JSON body holds the message."""
    with contextlib.suppress(Exception):  # no response, or not JSON: the error's own words
        return f"{type(error).__name__}: {error.response.json()['detail']}"
    return f"{type(error).__name__}: {error}"


@dataclass
class Flood:
    outstanding: int  # fine-tunes the flooder keeps submitted (all reach the queue: one client thread each)
    steps: int
    submitted: int = 0
    refused: int = 0  # refused when submitted (a full queue, a per-visitor limit) or failed
    completed: int = 0
    cancelled: int = 0  # still queued or running at the end
    first_refusal: str = ""

    def settle(self, job) -> None:
        """Count one submission, once: completed or refused when it has ended, else cancelled (now)."""
        if not job.done():
            self.cancelled += 1
            with contextlib.suppress(Exception):  # the server may be gone already
                job.cancel()
            return
        error = job.exception()
        self.completed, self.refused = self.completed + (error is None), self.refused + (error is not None)
        self.first_refusal = self.first_refusal or (_refusal_text(error)[:300] if error else "")


def flooder(url: str, plan: Plan, deadline: float, flood: Flood) -> None:
    """One client keeping ``flood.outstanding`` fine-tunes submitted without waiting for any, until ``deadline``."""
    from gradio_client import Client

    client = Client(url, verbose=False, download_files=False, max_workers=flood.outstanding + 8, headers=visitor(-1))
    jobs = []
    try:
        while time.monotonic() < deadline:
            for job in [j for j in jobs if j.done()]:
                jobs.remove(job)
                flood.settle(job)
            if len(jobs) < flood.outstanding:
                jobs.append(client.submit(*finetune_args(plan, flood.submitted, flood.steps), api_name="/finetune"))
                flood.submitted += 1
            time.sleep(1 / FLOOD_RATE)
    finally:
        for job in jobs:  # each submission is counted once
            flood.settle(job)
        client.close()


def _phase(url: str, plan: Plan, pid: int, scratch: Path, users: int, seconds: float, timeout: float, flood=None):
    """``users`` well-behaved users for ``seconds``, with the flooder running when ``flood`` is given."""
    sampler, deadline = RssSampler(pid), time.monotonic() + seconds
    sampler.start()
    thread = threading.Thread(target=flooder, args=(url, plan, deadline, flood or Flood(0, 0)), daemon=True)
    thread.start()  # with no flood (the baseline), a flooder that submits nothing
    time.sleep(min(5.0, seconds / 10) if flood else 0)  # the flood is queued before the users arrive
    records = run_users(url, plan, deadline, scratch, [{"timeout": timeout, "mix": POLITE_MIX}] * users)
    thread.join(timeout=60)
    polite = [r for r in records if r.endpoint in POLITE_MIX]
    ms = [r.seconds * 1000 for r in polite if r.error is None] or [0.0]  # the latency of what was served
    errors = [f"{r.endpoint}: {r.error}" for r in records if r.error is not None]
    summary = {"served": sum(r.error is None for r in polite), "failures": len(errors), "errors": errors[:20]}
    summary |= latency_spread(ms)
    return summary | {"endpoints": summarize(records), "rss_peak_mib": _mib(sampler.stop())}


def run_adversarial(
    users: int = 8,
    seconds: float = 60.0,
    port: int | None = None,
    flood: int = 80,
    steps: int = 60,
    timeout: float = 120.0,
) -> dict:
    """Both phases against one app: ``users`` well-behaved users alone, then with a flooder keeping ``flood``
    fine-tunes of ``steps`` steps submitted. ``failures`` counts the well-behaved users' failures."""
    with _serving(port) as (url, server, plan, scratch, after):
        rss_start, stats = rss(server.pid), Flood(flood, steps)
        baseline = _phase(url, plan, server.pid, scratch, users, seconds, timeout)
        flooded = _phase(url, plan, server.pid, scratch, users, seconds, timeout, stats)
        alive = server.poll() is None
    failures = baseline["failures"] + flooded["failures"] + (not alive)
    ratio = round(flooded["p95_ms"] / baseline["p95_ms"], 2) if baseline["served"] and flooded["served"] else None
    summary = {"adversarial": True, "users": users, "seconds": seconds, "flood": vars(stats)}
    summary |= {"phases": {"baseline": baseline, "flood": flooded}, "p95_ratio": ratio, "failures": failures}
    summary |= {"errors": (flooded["errors"] + baseline["errors"])[:20] + ([] if alive else ["the app exited"])}
    summary |= {"server_log_tail": after["log"][-2000:] if failures else "", "endpoints": flooded["endpoints"]}
    peak = max(baseline["rss_peak_mib"], flooded["rss_peak_mib"])
    return summary | {"rss_mib": {"start": _mib(rss_start), "peak": peak}, "machine": _machine()}


def write_json(report: dict, path: str | os.PathLike) -> None:
    """``report`` as JSON at ``path`` (written atomically; its folder is made)."""
    from hora.io import write_atomic

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(report, indent=1, default=str))


# --- Command line ------------------------------------------------------------------------------------------------


def add_parser(bench: Any) -> None:
    """``python -m hora bench load``: registered by ``hora.cli``."""
    p = bench.add_parser("load", help="N concurrent gradio_client users against the explorer on 127.0.0.1")
    p.add_argument("--users", type=int, default=None, help="default: 16 (--adversarial: 8 well-behaved users)")
    p.add_argument("--seconds", type=float, default=None, help="default: 120 (--adversarial: 60 per phase)")
    p.add_argument(
        "--adversarial",
        action="store_true",
        help="the users classify and generate, alone and then while one client floods fine-tunes",
    )
    p.add_argument("--flood", type=int, default=80, help="--adversarial: fine-tunes the flooder keeps submitted")
    p.add_argument("--flood-steps", type=int, default=60, help="--adversarial: steps of each flooded fine-tune")
    p.add_argument("--port", type=int, default=None, help="default: a free port")
    p.add_argument("--finetune-users", type=int, default=None, help="default: a quarter of the users")
    p.add_argument("--finetune-steps", type=int, default=5)
    p.add_argument("--max-requests", type=int, default=500, help="per user")
    p.add_argument("--timeout", type=float, default=120.0, help="per request, seconds")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the summary to PATH (JSON)")
    p.set_defaults(run_cli=run_cli)


def run_cli(args: argparse.Namespace, log: Callable[[str], None]) -> dict:
    """Run what the options say; the table (and the server log's tail, after a failure) goes to ``log``."""
    if args.adversarial:
        users, seconds = args.users or 8, args.seconds or 60.0
        report = run_adversarial(users, seconds, args.port, args.flood, args.flood_steps, args.timeout)
    else:
        users, seconds = args.users or 16, args.seconds or 120.0
        report = run(
            users, seconds, args.port, args.finetune_users, args.finetune_steps, args.max_requests, args.timeout
        )
    log(table(report))
    if report["server_log_tail"]:
        log("server log (tail):\n" + report["server_log_tail"])
    report = {"command": "bench load", **report}
    if args.json:
        write_json(report, args.json)
    return report


__all__ = [
    "ENDPOINTS",
    "MIX",
    "POLITE_MIX",
    "add_parser",
    "adversarial_table",
    "run",
    "run_adversarial",
    "run_cli",
    "table",
    "write_json",
]
