"""``python -m hora.assets bench``: the engine's sample-efficiency benchmark on the embedded ViT.

``hora.bench.sample_efficiency`` trains head-only, LoRA, HoRA, DoRA and DoRAN at 1-16 shots per digit with
five seeds each, on the few-shot pool of the digits (never the 500 test images of the cards, never the base's
pretraining images). Its held-out metric is the accuracy on pool images the run did not train on, 14 per
digit (the pool holds 30 of each digit 0-4, so 16 shots leave 14). Outputs, in ``<assets>/bench/``:
``sample_efficiency.json`` (the engine's report), ``.html`` (plotly, loading plotly.js from its CDN to stay
small), ``.png`` (matplotlib, when installed) and ``README.md`` (the table).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from hora.assets import adapters as adapter_stage
from hora.assets import cards
from hora.assets.build import VISION_BASE
from hora.assets.data import load_digit_splits
from hora.assets.vision import LABELS, digit_image
from hora.io import atomic_dir


SHOTS = (1, 2, 4, 8, 16)
SEEDS = (0, 1, 2, 3, 4)
EVAL_PER_CLASS = 14
METHOD_NAMES = {"head": "head-only", "lora": "LoRA", "hora": "HoRA", "dora": "DoRA", "doran": "DoRAN"}


def pool_data():
    """The few-shot pool of the digits as the engine's ``ImageClassificationData``."""
    from hora.data import ImageClassificationData

    splits = load_digit_splits()
    pool = splits.fewshot_pool
    return ImageClassificationData(
        images=[digit_image(splits.images[i]) for i in pool],
        labels=[int(splits.labels[i]) for i in pool],
        classes=LABELS,
        names=[f"digits-{i}" for i in pool],
    )


def run_bench(assets: str | Path = "assets", *, quick: bool = False, log: Callable[[str], None] = print) -> dict:
    """Run the benchmark on ``assets/vit-digits``, write ``assets/bench/`` and refresh the manifest."""
    from hora import bench

    assets = Path(assets)
    base = assets / VISION_BASE
    if not (base / "config.json").is_file():
        raise SystemExit(f"No {base}: build the assets first (python -m hora.assets build).")
    recipe = adapter_stage.VISION_RECIPE
    shots, seeds = ((1, 4), (0, 1)) if quick else (SHOTS, SEEDS)
    data = pool_data()
    started = time.perf_counter()
    reports = []
    for method in METHOD_NAMES:  # one call per method: each keeps the learning rate of its embedded adapter
        config = replace(
            recipe.config(method), steps=4 if quick else recipe.steps, eval_per_class=EVAL_PER_CLASS, max_eval=None
        )
        log(f"bench: {method}, shots {list(shots)}, seeds {list(seeds)}, lr {config.lr:g}")
        reports.append(bench.sample_efficiency(base, data, methods=[method], shots=shots, seeds=seeds, config=config))
    report = merge(reports, source="scikit-learn digits, few-shot pool", base_name=VISION_BASE)
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    report["quick"] = quick
    with atomic_dir(assets / "bench") as tmp:
        (tmp / "sample_efficiency.json").write_text(json.dumps(report, indent=1) + "\n")
        figure_html(report, tmp / "sample_efficiency.html")
        png = figure_png(report, tmp / "sample_efficiency.png")
        (tmp / "README.md").write_text(readme(report, png), encoding="utf-8")
    cards.refresh_manifest(assets, bench_seconds=report["wall_seconds"])
    log(f"bench: done in {report['wall_seconds'] / 60:.1f} min\n{markdown_table(report)}")
    return report


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
    """Held-out accuracy, mean [95% CI] over seeds, a row per method and a column per shot count."""
    header = ["method", "trainable params"] + [f"{k} shot{'s' if k > 1 else ''}" for k in report["shots"]]
    rows = []
    for method in report["methods"]:
        params = next(r["trainable_params"] for r in report["runs"] if r["method"] == method)
        cells = [
            f"{c['mean']:.3f} [{c['ci_low']:.3f}, {c['ci_high']:.3f}]"
            for c in (report["results"][method][str(k)] for k in report["shots"])
        ]
        rows.append([METHOD_NAMES.get(method, method), f"{params:,}"] + cells)
    return cards.table(header, rows)


def best_by_shots(report: dict) -> dict[int, str]:
    return {k: max(report["methods"], key=lambda m: report["results"][m][str(k)]["mean"]) for k in report["shots"]}


def readme(report: dict, png: bool) -> str:
    winners = ", ".join(f"{k}: {METHOD_NAMES[m]}" for k, m in best_by_shots(report).items())
    config = report["config"]["hora"]
    return f"""# Sample efficiency on the embedded ViT (`{report["base_model"]}`)

`python -m hora.assets bench` runs the training engine's benchmark (`hora.bench.sample_efficiency`): every
method at {", ".join(map(str, report["shots"]))} shots per digit, seeds {", ".join(map(str, report["seeds"]))}; each run
is `hora.train.train` with the recipe of the embedded adapters ({config["steps"]} steps, batch {config["batch_size"]},
rank {config["r"]} for HoRA/DoRAN and the parameter-matched rank for LoRA/DoRA, a fresh 10-way head for every method).
Training shots come from the few-shot pool of the digits; the held-out metric is the accuracy on
{report["eval_per_class"]} other pool images per digit ({10 * report["eval_per_class"]} images, different for every seed).
Cells: mean held-out accuracy [95% confidence interval, t-distribution over the {len(report["seeds"])} seeds].

{markdown_table(report)}

Best mean per shot count: {winners}. Overlapping intervals mean the data cannot separate the methods.
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
                name=METHOD_NAMES.get(method, method),
                mode="lines+markers",
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [r["ci_high"] - r["mean"] for r in rows],
                    "arrayminus": [r["mean"] - r["ci_low"] for r in rows],
                },
            )
        )
    fig.update_xaxes(type="log", title_text="shots per digit", tickvals=report["shots"])
    fig.update_yaxes(title_text=f"held-out accuracy (mean, 95% CI over {len(report['seeds'])} seeds)")
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
            label=METHOD_NAMES.get(method, method),
            marker="o",
            markersize=4,
            capsize=3,
        )
    ax.set_xscale("log")
    ax.set_xticks(shots, [str(k) for k in shots])
    ax.set_xlabel("shots per digit")
    ax.set_ylabel("held-out accuracy (mean, 95% CI)")
    ax.set_title(f"Sample efficiency on {report['base_model']} ({len(report['seeds'])} seeds)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
