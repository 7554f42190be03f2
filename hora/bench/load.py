"""Load test of the explorer: ``python -m hora bench load [--users 16] [--seconds 120] [--port P]``.

Starts ``python -m app`` on 127.0.0.1 in a subprocess, then runs N concurrent gradio_client users (one thread
and one Client each) for a bounded time. Each user loops over a mix: classify a bundled held-out digit, generate a
few tokens, next-token distribution, passage perplexity, the Heads view of a layer and projection; a few users also
run short fine-tunes on a bundled sample. It records per-endpoint counts, failures (an exception or a wrong-looking
result), latency p50 / p95 / max and the server's RSS (with its children; sampled every 0.5 s), prints a table and,
as the last line, a JSON summary. Exit code 1 if any request failed. Every request goes to 127.0.0.1. The users are
``gradio_client`` clients (a dev requirement): the app is driven from outside; hora itself never imports gradio.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

from hora.bench.coldstart import free_port


MIX = ("classify", "generate", "next_tokens", "perplexity", "heads")  # what every user loops over
ENDPOINTS = (*MIX, "finetune")  # fine-tunes: only the first ``finetune_users`` users
PROMPTS = ("ROMEO.\n", "First Witch.\nWhen shall we three meet again\n", "To be, or not to be", "KING.\n")
PASSAGES = (
    "Is this a dagger which I see before me, the handle toward my hand?",
    "Tomorrow, and tomorrow, and tomorrow, creeps in this petty pace from day to day.",
    "Fair is foul, and foul is fair: hover through the fog and filthy air.",
)


@dataclass
class Record:
    endpoint: str
    seconds: float
    error: str | None = None


@dataclass
class Plan:
    """What the users send, discovered from the running app's API and the bundled assets."""

    image_base: str
    lm_base: str
    examples: list[str]  # held-out digit PNGs
    finetune_base: str
    finetune_sample: str  # a bundled sample of the Fine-tune tab


# ---------------------------------------------------------------------------------------------------------------
# The server and its memory


def start_app(port: int, log: Path, timeout: float = 180.0) -> subprocess.Popen:
    """``python -m app`` on 127.0.0.1:``port``, returned once it answers HTTP (its output goes to ``log``)."""
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    with open(log, "wb") as out:  # the child keeps its own copy of the descriptor
        server = subprocess.Popen(
            [sys.executable, "-m", "app", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    start = time.monotonic()
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"the app exited with code {server.returncode}:\n{_tail(log)}")
        if time.monotonic() - start > timeout:
            stop_app(server)
            raise TimeoutError(f"the app did not answer within {timeout:.0f} s:\n{_tail(log)}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
            return server
        except OSError:
            time.sleep(0.2)


def stop_app(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=30)


def _tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.is_file() else ""


def rss(pid: int) -> int:
    """Resident memory of ``pid`` and all its children, in bytes (0 once it is gone)."""
    try:
        process = psutil.Process(pid)
        total = process.memory_info().rss
        for child in process.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:  # a child that just exited
                pass
        return total
    except psutil.Error:
        return 0


class RssSampler(threading.Thread):
    """Samples ``rss(pid)`` every ``interval`` seconds and keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak = pid, interval, rss(pid)
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.peak = max(self.peak, rss(self.pid))

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        self.peak = max(self.peak, rss(self.pid))
        return self.peak


# ---------------------------------------------------------------------------------------------------------------
# The users


def discover(client, assets: Path) -> Plan:
    """Base names from the app's API (dropdown defaults), example images and samples from ``assets``."""
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]

    def parameter(endpoint: str, name: str) -> dict:
        return next(p for p in endpoints[endpoint]["parameters"] if p["parameter_name"] == name)

    image_base = parameter("/classify", "base_name")["parameter_default"]
    lm_base = parameter("/generate", "base_name")["parameter_default"]
    examples = sorted(str(p) for p in (assets / "examples").glob("*.png"))
    if not (image_base and lm_base and examples):
        raise SystemExit(f"The app needs an image base, a language base and example PNGs under {assets / 'examples'}.")
    text_samples = sorted(p.name for p in (assets / "samples").glob("*.txt"))  # the Fine-tune tab's bundled samples
    if not text_samples:
        raise SystemExit(f"No bundled text sample to fine-tune on under {assets / 'samples'}.")
    return Plan(image_base, lm_base, examples, lm_base, text_samples[0])


def _choices(update: dict) -> list:
    return [c[1] if isinstance(c, (list, tuple)) else c for c in update["choices"]]


def _rows(table: dict) -> list[list]:
    return table["data"]


def _checks(names: list[str]) -> dict:
    """Per endpoint: result -> None if it looks right, else what is wrong (an error result counts as a failure)."""
    n = len(names)

    def classify(out):
        return None if len(_rows(out[1])) == n else f"{len(_rows(out[1]))} rows for {n} models"

    def generate(out):
        return None if out[0].count('class="gen-col"') == n else "not one column per model"

    def next_tokens(out):
        return None if len(json.loads(out["plot"])["data"]) == n else "not one distribution per model"

    def perplexity(out):
        values = [row[1] for row in _rows(out[0])]
        return None if len(values) == n and all(math.isfinite(v) and v > 0 for v in values) else f"bad {values}"

    return {"classify": classify, "generate": generate, "next_tokens": next_tokens, "perplexity": perplexity}


def _call(client, records: list[Record], endpoint: str, args: tuple, timeout: float, check=None):
    """One request through the queue (submit, then wait for the final output); records latency and any failure."""
    start = time.perf_counter()
    error, result, job = None, None, None
    try:
        job = client.submit(*args, api_name=f"/{endpoint}")
        result = job.result(timeout=timeout)
        error = check(result) if check is not None else None
    except Exception as err:  # every exception is a failed request, reported as it is
        error = f"{type(err).__name__}: {err}"[:300] or type(err).__name__
        if job is not None:
            job.cancel()
    records.append(Record(endpoint, time.perf_counter() - start, error))
    return result if error is None else None


def user(
    index: int,
    url: str,
    plan: Plan,
    deadline: float,
    records: list[Record],
    downloads: Path,
    finetune_steps: int = 0,
    max_requests: int = 500,
    timeout: float = 120.0,
) -> None:
    """One simulated user: its own Client (so its own session), looping over the mix until ``deadline``.

    ``finetune_steps`` > 0 makes this user also fine-tune (that many steps) once per loop, first thing.
    """
    from gradio_client import Client, handle_file

    rng = random.Random(index)
    start = time.perf_counter()
    try:
        client = Client(url, verbose=False, download_files=str(downloads / f"user-{index}"))
    except Exception as err:  # a failed connection is a failed request
        records.append(Record("connect", time.perf_counter() - start, f"{type(err).__name__}: {err}"[:300]))
        return
    records.append(Record("connect", time.perf_counter() - start))
    try:
        vision = _call(client, records, "vision_models", (plan.image_base,), timeout)
        lm = _call(client, records, "lm_models", (plan.lm_base,), timeout)
        heads_base = rng.choice([plan.lm_base, plan.image_base])
        options = _call(client, records, "heads_options", (heads_base,), timeout)
        if vision is None or lm is None or options is None:
            return
        vision_names, lm_names = _choices(vision), _choices(lm)
        adapters, layers, projections = (_choices(o) for o in options)
        vision_checks, lm_checks = _checks(vision_names), _checks(lm_names)

        def request(endpoint: str) -> None:
            if endpoint == "classify":
                image = handle_file(rng.choice(plan.examples))
                args, check = (plan.image_base, image, vision_names), vision_checks["classify"]
            elif endpoint == "generate":
                tokens, temperature = rng.randint(4, 12), rng.choice([0.0, 0.8])
                args = (plan.lm_base, rng.choice(PROMPTS), lm_names, tokens, temperature, 40, rng.randint(0, 9))
                check = lm_checks["generate"]
            elif endpoint == "next_tokens":
                args, check = (plan.lm_base, rng.choice(PROMPTS), lm_names), lm_checks["next_tokens"]
            elif endpoint == "perplexity":
                args, check = (plan.lm_base, rng.choice(PASSAGES), lm_names), lm_checks["perplexity"]
            elif endpoint == "heads":
                chosen = rng.sample(adapters, min(2, len(adapters)))
                metric = rng.choice(["cosine", "subspace", "cka"])
                args = (heads_base, chosen, rng.choice(layers), rng.choice(projections), metric)
                check = lambda out: None if len(out) == 5 else f"{len(out)} plots"  # noqa: E731
            else:  # finetune
                method = ["lora", "hora"][index % 2]
                args = (plan.finetune_base, None, plan.finetune_sample, [method], 4, finetune_steps, 3e-3, 4, index)
                check = lambda out: None if str(out[0]).startswith("Done.") else f"status {out[0]!r}"[:300]  # noqa: E731
            _call(client, records, endpoint, args, timeout, check)

        loop = (["finetune"] if finetune_steps > 0 else []) + list(MIX[index % len(MIX) :] + MIX[: index % len(MIX)])
        sent = 0
        while time.monotonic() < deadline and sent < max_requests:
            request(loop[sent % len(loop)])
            sent += 1
    finally:
        client.close()


# ---------------------------------------------------------------------------------------------------------------
# The run and its report


def _percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def summarize(records: list[Record]) -> dict[str, dict]:
    by_endpoint: dict[str, list[Record]] = {}
    for record in records:
        by_endpoint.setdefault(record.endpoint, []).append(record)
    stats = {}
    order = [e for e in ENDPOINTS if e in by_endpoint] + sorted(set(by_endpoint) - set(ENDPOINTS))
    for endpoint in order:  # the mix first, then set-up calls
        group = by_endpoint[endpoint]
        ms = [r.seconds * 1000 for r in group]
        stats[endpoint] = {
            "count": len(group),
            "failures": sum(r.error is not None for r in group),
            "p50_ms": round(_percentile(ms, 50), 1),
            "p95_ms": round(_percentile(ms, 95), 1),
            "max_ms": round(max(ms), 1),
        }
    return stats


def _run_users(
    url: str,
    plan: Plan,
    users: int,
    deadline: float,
    scratch: Path,
    finetune_users: int,
    finetune_steps: int,
    max_requests: int,
    timeout: float,
) -> list[Record]:
    """``users`` concurrent users until ``deadline``; every request they made, and any user still stuck after."""
    per_user: list[list[Record]] = [[] for _ in range(users)]
    threads = [
        threading.Thread(
            target=user,
            args=(i, url, plan, deadline, per_user[i], scratch),
            kwargs={
                "finetune_steps": finetune_steps if i < finetune_users else 0,
                "max_requests": max_requests,
                "timeout": timeout,
            },
            daemon=True,
            name=f"user-{i}",
        )
        for i in range(users)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:  # a request in flight at the deadline may run on, for at most `timeout`
        thread.join(timeout=max(0.0, deadline + timeout + 30 - time.monotonic()))
    records = [r for group in per_user for r in group]
    stuck = [t.name for t in threads if t.is_alive()]
    return records + [Record("stuck_user", 0.0, f"{name} still waiting at the end") for name in stuck]


def run(
    users: int = 16,
    seconds: float = 120.0,
    port: int | None = None,
    finetune_users: int | None = None,
    finetune_steps: int = 5,
    max_requests: int = 500,
    timeout: float = 120.0,
) -> dict:
    """Start the app, load it with ``users`` concurrent clients for ``seconds``, stop it; returns the summary."""
    from gradio_client import Client

    from hora import hub

    finetune_users = max(1, users // 4) if finetune_users is None else min(finetune_users, users)
    port = port or free_port()
    url = f"http://127.0.0.1:{port}/"
    scratch = Path(tempfile.mkdtemp(prefix="hora-loadtest-"))
    load_before = os.getloadavg()[0]
    server = start_app(port, scratch / "server.log")
    try:
        rss_start = rss(server.pid)
        sampler = RssSampler(server.pid)
        sampler.start()
        probe = Client(url, verbose=False, download_files=False)
        plan = discover(probe, hub.assets_dir())
        probe.close()
        started = time.monotonic()
        records = _run_users(
            url, plan, users, started + seconds, scratch, finetune_users, finetune_steps, max_requests, timeout
        )
        wall = time.monotonic() - started
        if server.poll() is not None:
            records.append(Record("server", 0.0, f"the app exited with code {server.returncode}"))
        rss_end = rss(server.pid)
        rss_peak = max(sampler.stop(), rss_end)
    finally:
        stop_app(server)
        log = _tail(scratch / "server.log")
        shutil.rmtree(scratch, ignore_errors=True)
    errors = [f"{r.endpoint}: {r.error}" for r in records if r.error is not None]
    return {
        "users": users,
        "finetune_users": finetune_users,
        "finetune_steps": finetune_steps,
        "seconds": seconds,
        "wall_s": round(wall, 1),
        "requests": len(records),
        "failures": len(errors),
        "throughput_rps": round(sum(r.endpoint in ENDPOINTS for r in records) / wall, 2),
        "endpoints": summarize(records),
        "errors": errors[:20],
        "server_log_tail": log[-2000:] if errors else "",
        "rss_mib": {k: round(v / 2**20, 1) for k, v in (("start", rss_start), ("peak", rss_peak), ("end", rss_end))},
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
        "machine": {
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
    }


def table(summary: dict) -> str:
    lines = [f"{'endpoint':<15}{'requests':>9}{'failed':>8}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}"]
    for endpoint, s in summary["endpoints"].items():
        lines.append(
            f"{endpoint:<15}{s['count']:>9}{s['failures']:>8}{s['p50_ms']:>10.1f}{s['p95_ms']:>10.1f}{s['max_ms']:>10.1f}"
        )
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


__all__ = ["ENDPOINTS", "MIX", "run", "table"]
