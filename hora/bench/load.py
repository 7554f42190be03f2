"""Load test of the explorer: ``python -m hora bench load [--users 16] [--seconds 120] [--adversarial]``.

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
import math
import os
import platform
import random
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

from hora.bench.report import adversarial_table
from hora.bench.server import RssSampler, free_port, rss, start_app, stop_app, tail
from hora.bench.stats import latency_spread


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
class Plan:  # what the users send, discovered from the running app's API and the bundled assets
    image_base: str
    lm_base: str
    examples: list[str]  # held-out digit PNGs
    finetune_base: str
    finetune_sample: str  # a bundled sample of the Fine-tune tab


# --- The users ---------------------------------------------------------------------------------------------------


def discover(client, assets: Path) -> Plan:
    """Base names from the app's API (dropdown defaults), example images and samples from ``assets``."""
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]

    def parameter(endpoint: str, name: str) -> dict:
        return next(p for p in endpoints[endpoint]["parameters"] if p["parameter_name"] == name)

    image_base = parameter("/classify", "base_name")["parameter_default"]
    lm_base = parameter("/generate", "base_name")["parameter_default"]
    examples = sorted(str(p) for p in (assets / "examples").glob("*.png"))
    text_samples = sorted(p.name for p in (assets / "samples").glob("*.txt"))  # the Fine-tune tab's bundled samples
    if not (image_base and lm_base and examples and text_samples):
        raise SystemExit(f"The app needs an image and a language base, example PNGs and text samples under {assets}.")
    return Plan(image_base, lm_base, examples, lm_base, text_samples[0])


def _choices(update: dict | tuple) -> list:
    """The choices of a dropdown update (the first output that has them, for an event with several outputs)."""
    update = next(u for u in update if isinstance(u, dict) and "choices" in u) if isinstance(update, tuple) else update
    return [c[1] if isinstance(c, (list, tuple)) else c for c in update["choices"]]


def _checks(names: list[str]) -> dict:
    """Per endpoint: result -> None if it looks right, else what is wrong (an error result counts as a failure)."""
    n = len(names)

    def perplexity(out):
        values = [row[1] for row in out[0]["data"]]
        return None if len(values) == n and all(math.isfinite(v) and v > 0 for v in values) else f"bad {values}"

    return {
        "classify": lambda out: None if len(out[1]["data"]) == n else f"{len(out[1]['data'])} rows for {n} models",
        "generate": lambda out: None if out[0].count('class="gen-col"') == n else "not one column per model",
        "next_tokens": lambda out: None if len(json.loads(out["plot"])["data"]) == n else "not one distribution",
        "perplexity": perplexity,
    }


HEADS_PLOTS = 5  # similarity, per-layer summary, ΔW_h, factors, generator PCA; then the two captions


def _heads_check(out: tuple) -> str | None:
    """The Heads view: its plots, each a plotly figure, and its captions, each a sentence."""
    plots = [o for o in out if isinstance(o, dict) and "plot" in o]
    captions = [o for o in out if isinstance(o, str) and o.strip()]
    if len(plots) != HEADS_PLOTS or len(captions) != len(out) - HEADS_PLOTS:
        return f"{len(plots)} plots and {len(captions)} captions in {len(out)} outputs"
    return None


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


def visitor(index: int) -> dict[str, str]:
    """The headers of simulated visitor ``index``: its own address, as the Space's proxy would forward it (the app
    is started with ``HORA_PROXY_HOPS=1``), so that per-visitor limits see many visitors, not one 127.0.0.1."""
    return {"X-Forwarded-For": f"10.{index % 250 + 1}.0.1" if index >= 0 else "10.255.0.1"}


def _finetune_args(plan: Plan, index: int, steps: int) -> tuple:
    method = ["lora", "hora"][index % 2]
    return (plan.finetune_base, None, plan.finetune_sample, [method], 4, steps, 3e-3, 4, index)


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
    mix: tuple[str, ...] = MIX,
) -> None:
    """One simulated user: its own Client (so its own session), looping over ``mix`` until ``deadline``.

    ``finetune_steps`` > 0 makes this user also fine-tune (that many steps) once per loop, first thing.
    """
    from gradio_client import Client, handle_file

    rng = random.Random(index)
    start = time.perf_counter()
    try:
        client = Client(url, verbose=False, download_files=str(downloads / f"user-{index}"), headers=visitor(index))
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
        adapters, layers, projections = (_choices(o) for o in options if isinstance(o, dict) and "choices" in o)
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
                check = _heads_check
            else:  # finetune
                args = _finetune_args(plan, index, finetune_steps)
                check = lambda out: None if str(out[0]).startswith("Done.") else f"status {out[0]!r}"[:300]  # noqa: E731
            _call(client, records, endpoint, args, timeout, check)

        loop = (["finetune"] if finetune_steps > 0 else []) + list(mix[index % len(mix) :] + mix[: index % len(mix)])
        sent = 0
        while time.monotonic() < deadline and sent < max_requests:
            request(loop[sent % len(loop)])
            sent += 1
    except Exception as err:  # the app's API changed under the user, say: a failure, never a silent stop
        records.append(Record("user", 0.0, f"{type(err).__name__}: {err}"[:300]))
    finally:
        client.close()


def summarize(records: list[Record]) -> dict[str, dict]:
    by_endpoint: dict[str, list[Record]] = {r.endpoint: [] for r in records}
    stats = {}
    for record in records:
        by_endpoint[record.endpoint].append(record)
    order = [e for e in ENDPOINTS if e in by_endpoint] + sorted(set(by_endpoint) - set(ENDPOINTS))
    for endpoint in order:  # the mix first, then set-up calls
        group = by_endpoint[endpoint]
        ms = [r.seconds * 1000 for r in group]
        stats[endpoint] = {"count": len(group), "failures": sum(r.error is not None for r in group)} | latency_spread(
            ms
        )
    return stats


def _run_users(url: str, plan: Plan, deadline: float, scratch: Path, specs: list[dict]) -> list[Record]:
    """One concurrent user per ``specs`` entry (keyword arguments of ``user``) until ``deadline``; every request
    they made, and any user still stuck after."""
    per_user: list[list[Record]] = [[] for _ in specs]
    threads = [
        threading.Thread(target=user, args=(i, url, plan, deadline, per_user[i], scratch), kwargs=spec, daemon=True)
        for i, spec in enumerate(specs)
    ]
    for thread in threads:
        thread.start()
    timeout = max(spec.get("timeout", 120.0) for spec in specs)
    for thread in threads:  # a request in flight at the deadline may run on, for at most `timeout`
        thread.join(timeout=max(0.0, deadline + timeout + 30 - time.monotonic()))
    records = [r for group in per_user for r in group]
    stuck = [f"user-{i}" for i, t in enumerate(threads) if t.is_alive()]
    return records + [Record("stuck_user", 0.0, f"{name} still waiting at the end") for name in stuck]


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
        records = _run_users(url, plan, started + seconds, scratch, specs)
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
                jobs.append(client.submit(*_finetune_args(plan, flood.submitted, flood.steps), api_name="/finetune"))
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
    records = _run_users(url, plan, deadline, scratch, [{"timeout": timeout, "mix": POLITE_MIX}] * users)
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
