"""Sample efficiency: the held-out metric of every method at several training-set sizes, with 95% intervals over
seeds. Each run is ``hora.train.train``; nothing else is timed or measured here."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from hora.bench.report import plotly_go, write_report
from hora.bench.stats import mean_ci
from hora.config import TrainConfig
from hora.methods import check_method
from hora.task import load_data_for
from hora.train import train


def sample_efficiency(
    base: str | os.PathLike,
    data: Any,
    *,
    methods: Sequence[str] = ("lora", "hora"),
    shots: Sequence[int] = (1, 2, 4, 8, 16),
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    config: TrainConfig | None = None,
    out_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train every method at every number of shots with every seed; report the held-out metric's mean
    and 95% confidence interval (t-distribution over seeds).

    The metric is held-out accuracy for classification and held-out loss for language modelling (where
    ``shots`` counts training chunks). ``config`` sets everything else (steps, lr, rank, ...). Writes
    ``sample_efficiency.json`` and ``sample_efficiency.html`` to ``out_dir`` when given.
    """
    methods = [check_method(m) for m in methods]
    if not shots or not seeds:
        raise ValueError("sample_efficiency needs at least one value of shots and one seed.")
    # The held-out examples are the test set here: no evaluations during training, no early stopping on them.
    config = replace(config or TrainConfig(steps=100), eval_every=None, patience=None)
    source = os.fspath(data) if isinstance(data, (str, os.PathLike)) else type(data).__name__
    dataset = load_data_for(data, config.task)  # loaded once, shared by every run
    runs: list[dict[str, Any]] = []
    grid = [(m, k, s) for k in shots for s in seeds for m in methods]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(grid), desc="sample efficiency", unit="run")
    metric = None
    for method, k, seed in grid:
        run_config = replace(config, method=method, shots=k, seed=seed)
        result = train(base, dataset, run_config, data_source=source)
        metric = result.task.metric
        runs.append(
            {
                "method": method,
                "shots": k,
                "seed": seed,
                "value": result.final[metric],
                "final": result.final,
                "stopped": result.stopped,
                "trainable_params": result.metrics["method_info"]["trainable_params"],
                "train_seconds": result.metrics["timing"]["train_seconds"],
            }
        )
        if bar is not None:
            bar.set_postfix({"method": method, "shots": k, metric: f"{result.final[metric]:.4f}"}, refresh=False)
            bar.update(1)
    if bar is not None:
        bar.close()
    results = {
        m: {str(k): mean_ci([r["value"] for r in runs if r["method"] == m and r["shots"] == k]) for k in shots}
        for m in methods
    }
    report = {
        "benchmark": "sample_efficiency",
        "base_model": os.fspath(base),
        "data": source,
        "metric": metric,
        "higher_is_better": metric != "loss",
        "confidence": 0.95,
        "interval": "t-distribution over seeds",
        "methods": methods,
        "shots": list(shots),
        "seeds": list(seeds),
        "config": {k: v for k, v in vars(config).items() if k not in ("method", "shots", "seed")},
        "results": results,
        "runs": runs,
    }
    if out_dir is not None:
        write_report(out_dir, "sample_efficiency", report, _sample_efficiency_figure(report))
    return report


def _sample_efficiency_figure(report: dict) -> Any | None:
    go = plotly_go()
    if go is None:
        return None
    fig = go.Figure()
    for method, rows in report["results"].items():
        xs = [int(k) for k in rows]
        means = [r["mean"] for r in rows.values()]
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=means,
                name=method,
                mode="lines+markers",
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [r["ci_high"] - r["mean"] for r in rows.values()],
                    "arrayminus": [r["mean"] - r["ci_low"] for r in rows.values()],
                },
            )
        )
    fig.update_xaxes(type="log", title_text="shots", tickvals=report["shots"])
    fig.update_yaxes(title_text=f"held-out {report['metric']} (mean, 95% CI over {len(report['seeds'])} seeds)")
    fig.update_layout(title="Sample efficiency", template="plotly_white")
    return fig


__all__ = ["sample_efficiency"]
