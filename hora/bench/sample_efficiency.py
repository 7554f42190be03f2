"""Sample efficiency: the held-out metric of every method at several training-set sizes, with 95% intervals over
seeds. Each run is ``hora.train.train``; nothing else is timed or measured here."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
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
    variants: Mapping[str, Mapping[str, Any]] | None = None,
    test: Callable[[Any], dict[str, float]] | None = None,
    validate: Callable[[Any], dict[str, float]] | None = None,
    out_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train every method at every number of shots with every seed; report the held-out metric's mean
    and 95% confidence interval (t-distribution over seeds).

    ``variants`` names configurations beyond plain methods: ``{"hora-static-A": {"method": "hora", "method_args":
    {"generate_a": False}}, "lora-r16": {"method": "lora", "r": 16}}`` (fields of ``TrainConfig``); without it, one
    variant per method. ``config`` sets everything else (steps, lr, rank, ...).

    Without ``test``, the metric is the engine's held-out metric (accuracy, or the loss of held-out LM chunks, where
    ``shots`` counts training chunks) and, being the test set, it is never looked at during training (no
    evaluations, no early stopping). With ``test`` (model -> {metric: value}, its first metric reported; a loss if
    its name says so), that is the test set and the engine's own validation may select steps (``keep_best``);
    ``validate`` (``hora.train.train``'s) replaces the engine's validation examples with the caller's.
    Writes ``sample_efficiency.json`` and ``.html`` to ``out_dir`` when given.
    """
    variants = dict(variants or {m: {"method": m} for m in methods})
    for name, fields in variants.items():
        check_method(fields.get("method", name))
    if not shots or not seeds:
        raise ValueError("sample_efficiency needs at least one value of shots and one seed.")
    config = config or TrainConfig(steps=100)
    if test is None:
        config = replace(config, eval_every=None, patience=None, keep_best=False)
    source = os.fspath(data) if isinstance(data, (str, os.PathLike)) else type(data).__name__
    dataset = load_data_for(data, config.task)  # loaded once, shared by every run
    grid = [(v, k, s) for k in shots for s in seeds for v in variants]
    bar = _bar(len(grid)) if progress else None
    runs, metric = [], None
    for name, k, seed in grid:
        fields = {"method": name, **variants[name]}
        run_config = replace(config, **fields, shots=k, seed=seed)
        result = train(base, dataset, run_config, data_source=source, validate=validate)
        measured = test(result.model) if test is not None else result.final
        metric = next(iter(measured)) if test is not None else result.task.metric
        runs.append(
            {
                "method": name,
                "peft_method": fields["method"],
                "shots": k,
                "seed": seed,
                "value": measured[metric],
                "final": result.final,  # the validation metrics of the weights kept
                "lr": run_config.lr,
                "test": measured if test is not None else None,
                "stopped": result.stopped,
                "kept_step": result.metrics.get("kept_step"),
                "trainable_params": result.metrics["method_info"]["trainable_params"],
                "adapter_params": result.metrics["method_info"]["adapter_params"],
                "peft_config": result.metrics["method_info"]["peft_config"],  # what ran: docs check it against today's
                "train_seconds": result.metrics["timing"]["train_seconds"],
            }
        )
        if bar is not None:
            bar.set_postfix({"variant": name, "shots": k, metric: f"{measured[metric]:.4f}"}, refresh=False)
            bar.update(1)
    if bar is not None:
        bar.close()
    tested = (test is not None, validate is not None)
    return _report(base, source, metric, tested, list(variants), variants, shots, seeds, config, runs, out_dir)


def _bar(total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="sample efficiency", unit="run")


def _report(base, source, metric, given, names, variants, shots, seeds, config, runs, out_dir) -> dict[str, Any]:
    tested, validated = given
    results = {
        m: {str(k): mean_ci([r["value"] for r in runs if r["method"] == m and r["shots"] == k]) for k in shots}
        for m in names
    }
    report = {
        "benchmark": "sample_efficiency",
        "base_model": os.fspath(base),
        "data": source,
        "metric": metric,
        "higher_is_better": "loss" not in (metric or "") and "perplexity" not in (metric or ""),
        "test_set": "the caller's test" if tested else "the engine's held-out examples",
        "validation": "the caller's validation set" if validated else "the engine's held-out examples",
        "confidence": 0.95,
        "interval": "t-distribution over seeds",
        "methods": names,
        "variants": {n: dict(v) for n, v in variants.items()},
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
