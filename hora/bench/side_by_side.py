"""Several variants side by side in one forward pass, against one model alone and against one call per variant
(``python -m hora bench side-by-side --out report.json``).

What the explorer runs side by side: the top-5 classes of one image under every adapter of DINOv2-small (LoRA,
DoRA, HoRA, DoRAN and the linear probe, the base's reference) and 48 sampled tokens (temperature 0.8) of
SmolLM2-135M-Instruct, the base and its four adapters. Each is timed three ways in one run, round-robin after a
warm-up (a slow drift of the machine hits every way alike), medians over the repeats:

- **batched**: every variant in one ``hora.mixed.MixedModel`` call per forward pass (``hora.infer.*_many``);
- **alone**: one variant alone (``hora.infer.classify`` / ``generate_stream``), the cost of a single column: LoRA
  for classify; for generate the variant that writes the most tokens (a batched call lasts as long as that one);
- **separate**: one such call per variant in turn, what the explorer does without mixed batches.

Batched and separate outputs are compared too (same top classes, same generated texts). The report (JSON, with the
machine: CPUs, torch version and threads, load average) goes to ``--out``; a short table to stderr.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn


IMAGE_BASE = "dinov2-small"
LM_BASE = "smollm2-135m-instruct"
PROMPT = "Write two sentences about the sea."
WAYS = ("batched", "alone", "separate")


def _timed(ways: dict[str, Callable[[], Any]], repeats: int, warmup: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Median seconds of each way over ``repeats`` rounds that run every way in turn, after ``warmup`` rounds;
    and what each way returned last."""
    times: dict[str, list[float]] = {way: [] for way in ways}
    results: dict[str, Any] = {}
    for round_ in range(warmup + repeats):
        for way, run in ways.items():
            start = time.perf_counter()
            results[way] = run()
            if round_ >= warmup:
                times[way].append(time.perf_counter() - start)
    return {way: statistics.median(t) for way, t in times.items()}, results


def _ways(variants: dict[str, nn.Module], alone: str, batched: Callable, single: Callable) -> dict[str, Callable]:
    """The three ways: ``batched()`` for every variant, ``single(model)`` for ``alone`` and for each in turn."""
    return {
        "batched": batched,
        "alone": lambda: single(variants[alone]),
        "separate": lambda: {n: single(m) for n, m in variants.items()},
    }


def _alone(variants: dict[str, nn.Module], alone: str | None) -> str:
    """The variant timed alone: ``alone``, else LoRA, else the first."""
    name = alone or ("lora" if "lora" in variants else next(iter(variants)))
    if name not in variants:
        raise ValueError(f"No variant {name!r} to time alone; the variants are {list(variants)}.")
    return name


def _summary(case: str, medians: dict[str, float], mixed: Any, alone: str, same: bool) -> dict[str, Any]:
    return {
        "case": case,
        "variants": mixed.names,
        "alone": alone,
        "seconds": medians,
        "separate_over_batched": medians["separate"] / medians["batched"],
        "batched_over_alone": medians["batched"] / medians["alone"],
        "outputs_identical": same,
        "variant_bytes": {n: mixed.nbytes(n) for n in mixed.names},
        "base_bytes": sum(p.numel() * p.element_size() for p in mixed.model.parameters()),
    }


def classify_case(
    base: nn.Module,
    processor: Any,
    variants: dict[str, nn.Module],
    image: Any,
    repeats: int = 5,
    warmup: int = 1,
    alone: str | None = None,
) -> dict[str, Any]:
    """Top-5 classes of ``image`` under every variant: batched, one variant alone (``alone``, default LoRA) and
    each variant in turn. Same outputs: the same classes, probabilities within 1e-4."""
    from hora import infer

    mixed, alone = _mixed(base, variants), _alone(variants, alone)
    ways = _ways(
        variants,
        alone,
        lambda: infer.classify_many(mixed, processor, image, list(variants)),
        lambda model: infer.classify(model, processor, image),
    )
    medians, results = _timed(ways, repeats, warmup)
    batched, separate = results["batched"], results["separate"]
    same = all(
        batched[n].labels == p.labels
        and max(abs(a - b) for a, b in zip(batched[n].probabilities, p.probabilities)) < 1e-4
        for n, p in separate.items()
    )
    report = _summary("classify", medians, mixed, alone, same)
    return report | {"top_class": {n: p.labels[0] for n, p in batched.items()}}


def generate_case(
    base: nn.Module,
    tokenizer: Any,
    variants: dict[str, nn.Module],
    prompt: str = PROMPT,
    max_new_tokens: int = 48,
    temperature: float = 0.8,
    repeats: int = 3,
    warmup: int = 1,
    alone: str | None = None,
) -> dict[str, Any]:
    """Sampled generations of every variant (seed 0, the explorer's default): batched, one variant alone and each
    variant in turn. A batched call lasts as long as its longest generation, so the variant timed alone is by
    default the one that writes the most tokens (found by a first, untimed call of each). Same outputs: the same
    texts."""
    from hora import infer

    mixed = _mixed(base, variants)
    settings = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_k=40, seed=0)

    def single(model: nn.Module) -> tuple[str, int]:
        steps = list(infer.generate_stream(model, tokenizer, prompt, **settings))
        return (steps[-1] if steps else ""), len(steps)

    def batched() -> dict[str, str]:
        steps = infer.generate_stream_many(mixed, tokenizer, prompt, list(variants), **settings)
        return ([dict.fromkeys(variants, "")] + list(steps))[-1]

    tokens = {n: single(m)[1] for n, m in variants.items()}
    alone = _alone(variants, alone or max(tokens, key=tokens.get))
    medians, results = _timed(_ways(variants, alone, batched, single), repeats, warmup)
    same = results["batched"] == {n: text for n, (text, _) in results["separate"].items()}
    report = _summary("generate", medians, mixed, alone, same)
    return report | {"settings": settings, "prompt": prompt, "new_tokens": tokens}


def _mixed(base: nn.Module, variants: dict[str, nn.Module]) -> Any:
    """A MixedModel over ``base`` serving ``variants`` (a variant that is ``base`` itself is the base's own row)."""
    from hora.mixed import MixedModel

    served = next((n for n, m in variants.items() if m is base), None)
    mixed = MixedModel(base, base_name=served)
    for name, model in variants.items():
        if model is not base:
            mixed.register(name, model)
    return mixed


def _embedded(name: str) -> tuple[Any, dict[str, nn.Module]]:
    """An embedded base (float32) and its embedded adapters, each on a shared copy; the base itself when it is
    runnable (its card names no reference, e.g. a linear probe, to use instead)."""
    import json

    import hora
    from hora import hub
    from hora.variants import shared_copy

    loaded = hora.load_base(name, dtype=torch.float32)
    record = hub.assets_dir() / name / "asset.json"
    reference = json.loads(record.read_text(encoding="utf-8")).get("reference") if record.is_file() else None
    variants = {} if reference else {"base": loaded.model}
    for adapter in sorted(a for a in hub.embedded_assets() if a.startswith(f"{name}/")):
        variants[adapter.split("/", 1)[1]] = hora.load_adapter(shared_copy(loaded.model), adapter).eval()
    return loaded, variants


def _example_image(name: str) -> Any:
    from PIL import Image

    from hora import hub

    images = sorted((hub.assets_dir() / name / "examples").glob("*.png"))
    if not images:
        raise ValueError(f"The embedded {name} has no example images to classify.")
    return Image.open(images[0]).convert("RGB")


def machine() -> dict[str, Any]:
    """What the timings ran on."""
    return {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def run(
    out: str | os.PathLike,
    *,
    repeats: int = 3,
    max_new_tokens: int = 48,
    threads: int | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Both cases on the embedded real bases (``threads``: torch's intra-op threads, default as they are); the
    report is written to ``out`` (JSON) and returned."""
    if threads is not None:
        torch.set_num_threads(threads)
    start = machine()
    loaded, variants = _embedded(IMAGE_BASE)
    log(f"classify: {IMAGE_BASE} with {', '.join(variants)}")
    classify = classify_case(loaded.model, loaded.processor, variants, _example_image(IMAGE_BASE), repeats=repeats + 2)
    loaded, variants = _embedded(LM_BASE)
    log(f"generate: {LM_BASE} with {', '.join(variants)}")
    generate = generate_case(loaded.model, loaded.processor, variants, max_new_tokens=max_new_tokens, repeats=repeats)
    return write({"cases": [classify, generate], "machine": start}, out)


def write(report: dict, out: str | os.PathLike) -> dict:
    """Write ``report`` (JSON, with the load average now, after the timings) to ``out``; return it."""
    import json

    from hora.io import write_atomic

    report = report | {"load_average_after": machine()["load_average"]}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, json.dumps(report, indent=1))
    return report


def table(report: dict) -> str:
    """The report as a few lines of text: seconds per way and the two ratios, per case."""
    lines = [f"{'case':<9} {'N':>2} {'batched':>8} {'alone':>8} {'separate':>9} {'sep/bat':>8} {'bat/alone':>9} same"]
    for case in report["cases"]:
        s = case["seconds"]
        lines.append(
            f"{case['case']:<9} {len(case['variants']):>2} {s['batched']:>7.3f}s {s['alone']:>7.3f}s {s['separate']:>8.3f}s"
            f" {case['separate_over_batched']:>7.2f}x {case['batched_over_alone']:>8.2f}x {case['outputs_identical']}"
        )
    m = report["machine"]
    lines.append(
        f"{m['cpus_usable']} CPUs, torch {m['torch']} with {m['torch_threads']} threads, load {m['load_average']}"
    )
    return "\n".join(lines)


def add_parser(bench: Any) -> None:
    """``python -m hora bench side-by-side``: registered by ``hora.cli``."""
    p = bench.add_parser("side-by-side", help="N variants in one forward pass vs one model alone vs N separate calls")
    p.add_argument("--out", required=True, help="the JSON report's path")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds of the generation case (classify: 2 more)")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--threads", type=int, default=None, help="torch's threads (default: as torch sets them)")
    p.set_defaults(run_cli=run_cli)


def run_cli(args: argparse.Namespace, log: Callable[[str], None]) -> dict:
    report = run(args.out, repeats=args.repeats, max_new_tokens=args.max_new_tokens, threads=args.threads, log=log)
    log(table(report))
    ratios = {c["case"]: {k: c[k] for k in ("separate_over_batched", "batched_over_alone")} for c in report["cases"]}
    return {"command": "bench side-by-side", "out": os.fspath(args.out), "ratios": ratios}


__all__ = ["add_parser", "classify_case", "generate_case", "machine", "run", "run_cli", "table", "write"]
