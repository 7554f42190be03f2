"""Serving side by side, through the explorer's API: ``python -m hora bench serving --json PATH``.

Starts ``python -m app`` on 127.0.0.1 (``hora.bench.server.start_app``: every model loaded) and drives it with
``gradio_client``, as a visitor would, to measure the two numbers of issue #21:

- **side by side**: ``/generate`` on SmolLM2-135M-Instruct with the base and its four adapters against the base
  alone (48 new tokens, temperature 0.8, top-k 40), each timed from submission to the last streamed update; after
  one warm-up of each, ``repeats`` rounds that run both in turn with the same seed (the base's column is then the
  same text in both), the ratio of the medians. The columns' texts and their lengths in tokens (the answers
  tokenised again) are reported, since a column that ends early (end of sequence) ends sooner.
- **a fine-tune's memory**: the server's resident memory (with its children) at rest after those rounds, then a
  new visitor (its own session) fine-tunes ``methods`` for ``steps`` steps each on the base's bundled sample, and the
  memory is read again once the run has ended (the sample is the one the Fine-tune tab selects for the base), and once more after that visitor has added its adapters to Compare
  and run them (``/use_adapters``, then ``/next_tokens`` with its own adapters in the batch); its session lives
  throughout. Each reading is the median of a few samples a fraction of a second apart, taken after the server
  has been idle for ``settle`` seconds; the peak during the run is sampled every 0.5 s.

The report (JSON, with the machine's load average before and after) goes to ``--json``; a few lines to stderr.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hora.bench.load import _machine, write_json
from hora.bench.load_users import choices, visitor
from hora.bench.server import RssSampler, free_port, rss, start_app, stop_app


LM_BASE = "smollm2-135m-instruct"
PROMPT = "Tell me a long story about a ship lost at sea, with its captain and its crew."
NEW_TOKENS, TEMPERATURE, TOP_K = 48, 0.8, 40


def _mib(value: float) -> float:
    return round(value / 2**20, 1)


def _settled_rss(pid: int, settle: float, samples: int = 5) -> int:
    """The server's resident memory once it has been idle ``settle`` seconds: the median of a few readings."""
    time.sleep(settle)
    readings = []
    for _ in range(samples):
        readings.append(rss(pid))
        time.sleep(0.2)
    return int(statistics.median(readings))


def _generate(client: Any, base: str, names: list[str], seed: int) -> tuple[float, dict[str, str]]:
    """Seconds from submitting ``/generate`` to its last update, and each column's text."""
    import html
    import re

    start = time.perf_counter()
    job = client.submit(base, PROMPT, names, NEW_TOKENS, TEMPERATURE, TOP_K, seed, api_name="/generate")
    final = job.result()
    seconds = time.perf_counter() - start
    cells = re.findall(r'<div class="gen-name">(.*?)</div><pre class="gen-text">(.*?)</pre>', final[0], flags=re.S)
    return seconds, {html.unescape(n): html.unescape(t) for n, t in cells}


def _token_counts(base: str, texts: dict[str, str]) -> dict[str, int]:
    """Each column's length in tokens, its text tokenised again with the base's tokenizer."""
    from transformers import AutoTokenizer

    from hora import hub

    tokenizer = AutoTokenizer.from_pretrained(hub.resolve(base).path)
    return {n: len(tokenizer(t, add_special_tokens=False)["input_ids"]) for n, t in texts.items()}


def side_by_side(client: Any, base: str, repeats: int, log: Callable[[str], None]) -> dict[str, Any]:
    """The base and every adapter together against the base alone, through ``/generate``."""
    names = choices(client.predict(base, api_name="/lm_models"))
    if "base" not in names or len(names) < 2:
        raise SystemExit(f"{base} is not served with its adapters: its models are {names}.")
    ways = {"alone": ["base"], "together": names}
    for chosen in ways.values():  # warm-up: a model's first forward passes are slower than any later one
        _generate(client, base, chosen, seed=99)
    seconds: dict[str, list[float]] = {way: [] for way in ways}
    texts: dict[str, dict[str, str]] = {}
    for round_ in range(repeats):
        for way, chosen in ways.items() if round_ % 2 == 0 else reversed(ways.items()):
            took, texts[way] = _generate(client, base, chosen, seed=round_)
            seconds[way].append(round(took, 3))
        log(
            f"round {round_ + 1}/{repeats}: alone {seconds['alone'][-1]:.2f} s, together {seconds['together'][-1]:.2f} s"
        )
    medians = {way: statistics.median(s) for way, s in seconds.items()}
    return {
        "base": base,
        "models": names,
        "prompt": PROMPT,
        "max_new_tokens": NEW_TOKENS,
        "temperature": TEMPERATURE,
        "top_k": TOP_K,
        "seconds": seconds,
        "median_seconds": medians,
        "ratio": round(medians["together"] / medians["alone"], 3),
        "texts_last_round": texts["together"],
        "tokens_last_round": _token_counts(base, texts["together"]),
    }


def finetune_memory(
    url: str, pid: int, base: str, methods: list[str], steps: int, settle: float, log: Callable
) -> dict:
    """The server's memory at rest, at its peak during a new visitor's fine-tune of ``base``, after the run, and
    after that visitor used its adapters; the visitor's session lives until the end."""
    from gradio_client import Client

    before = _settled_rss(pid, settle)
    client = Client(url, verbose=False, download_files=False, headers=visitor(1))
    try:
        update = next(u for u in client.predict(base, api_name="/finetune_samples") if "choices" in u)
        sample = update.get("value") or choices(update)[0]  # the base's own sample, as the tab selects it
        sampler = RssSampler(pid)
        sampler.start()
        start = time.perf_counter()
        status = client.predict(base, None, sample, methods, 8, steps, "", 8, 0, api_name="/finetune")[0]
        took = time.perf_counter() - start
        peak = sampler.stop()
        log(f"fine-tune ({', '.join(methods)}, {steps} steps each): {took:.1f} s; {status.splitlines()[0]}")
        after_run = _settled_rss(pid, settle)
        message = client.predict(api_name="/use_adapters")[0]
        yours = [n for n in choices(client.predict(base, api_name="/lm_models")) if n.endswith("(yours)")]
        client.predict(base, PROMPT, ["base", *yours], api_name="/next_tokens")  # registered and run
        after_use = _settled_rss(pid, settle)
    finally:
        client.close()
    growth = {"after_run": _mib(after_run - before), "after_use": _mib(after_use - before)}
    return {
        "base": base,
        "methods": methods,
        "steps": steps,
        "sample": sample,
        "status": status,
        "use_adapters": message,
        "seconds": round(took, 1),
        "rss_mib": {
            "before": _mib(before),
            "peak": _mib(peak),
            "after_run": _mib(after_run),
            "after_use": _mib(after_use),
        },
        "growth_mib": growth,
        "settle_seconds": settle,
    }


def run(
    base: str = LM_BASE,
    repeats: int = 3,
    methods: tuple[str, ...] = ("lora", "hora"),
    steps: int = 2,
    settle: float = 5.0,
    port: int | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Start the app, measure both, stop it; returns the report."""
    from gradio_client import Client

    load_before = os.getloadavg()[0]
    port = port or free_port()
    url = f"http://127.0.0.1:{port}/"
    scratch = Path(tempfile.mkdtemp(prefix="hora-serving-"))
    server = start_app(port, scratch / "server.log")
    try:
        client = Client(url, verbose=False, download_files=False, headers=visitor(0))
        try:
            generation = side_by_side(client, base, repeats, log)
        finally:
            client.close()
        memory = finetune_memory(url, server.pid, base, list(methods), steps, settle, log)
    finally:
        stop_app(server)
        shutil.rmtree(scratch, ignore_errors=True)
    report = {"side_by_side": generation, "finetune_memory": memory, "machine": _machine()}
    return report | {"load_average_before": round(load_before, 2), "load_average_after": round(os.getloadavg()[0], 2)}


def table(report: dict) -> str:
    """The two numbers, in words."""
    side, memory = report["side_by_side"], report["finetune_memory"]
    return "\n".join(
        [
            f"generate, {len(side['models'])} models together vs the base alone ({side['max_new_tokens']} tokens, "
            f"temperature {side['temperature']}): {side['median_seconds']['together']:.2f} s vs "
            f"{side['median_seconds']['alone']:.2f} s, {side['ratio']:.2f}x (median of {len(side['seconds']['alone'])})",
            f"fine-tune of {' + '.join(memory['methods'])}, {memory['steps']} steps each: server {memory['rss_mib']['before']:.0f}"
            f" MiB before, peak {memory['rss_mib']['peak']:.0f} MiB; +{memory['growth_mib']['after_run']:.0f} MiB after"
            f" the run, +{memory['growth_mib']['after_use']:.0f} MiB after using its adapters",
            f"load average before {report['load_average_before']}, after {report['load_average_after']}",
        ]
    )


def add_parser(bench: Any) -> None:
    """``python -m hora bench serving``: registered by ``hora.cli``."""
    p = bench.add_parser("serving", help="side by side in one batch vs the base alone; a fine-tune's memory left")
    p.add_argument("--json", default=None, metavar="PATH", help="write the report to PATH (JSON)")
    p.add_argument("--base", default=LM_BASE, help="an embedded language base the explorer serves")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds of each generation")
    p.add_argument("--steps", type=int, default=2, help="steps of each method's fine-tune")
    p.add_argument("--methods", default="lora,hora", help="comma-separated methods to fine-tune")
    p.add_argument("--settle", type=float, default=5.0, help="idle seconds before each memory reading")
    p.add_argument("--port", type=int, default=None, help="default: a free port")
    p.set_defaults(run_cli=run_cli)


def run_cli(args: argparse.Namespace, log: Callable[[str], None]) -> dict:
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    report = run(args.base, args.repeats, methods, args.steps, args.settle, args.port, log=log)
    log(table(report))
    report = {"command": "bench serving", **report}
    if args.json:
        write_json(report, args.json)
    return report


__all__ = ["add_parser", "finetune_memory", "run", "run_cli", "side_by_side", "table"]
