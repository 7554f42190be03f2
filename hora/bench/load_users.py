"""The simulated visitors of the load tests (``hora.bench.load``): what each sends, how a result is checked, and the
latency summary of what they got.

Each user is a thread with its own ``gradio_client.Client`` and its own forwarded address (``visitor``), looping over
classify, generate, next-token, perplexity and Heads against the running app (a few also fine-tune). A request that
raises, or whose result does not look right (``_checks``), is a failure, recorded with its latency.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

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


def choices(update: dict | tuple) -> list:
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


def finetune_args(plan: Plan, index: int, steps: int) -> tuple:
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
        vision_names, lm_names = choices(vision), choices(lm)
        adapters, layers, projections = (choices(o) for o in options if isinstance(o, dict) and "choices" in o)
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
                args = finetune_args(plan, index, finetune_steps)
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


def run_users(url: str, plan: Plan, deadline: float, scratch: Path, specs: list[dict]) -> list[Record]:
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


__all__ = [
    "ENDPOINTS",
    "MIX",
    "Plan",
    "Record",
    "choices",
    "discover",
    "finetune_args",
    "run_users",
    "summarize",
    "user",
]
