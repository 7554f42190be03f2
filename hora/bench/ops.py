"""Operator calls per training step, each method against its reference: HoRA against LoRA, DoRAN against DoRA.

On a GPU the step of a model this size is launch-bound: the host launches operators one by one and the device waits
for them, so what a method costs is, to first order, how many operators it calls. This benchmark counts them with
torch's profiler on the CPU (the count does not depend on the device): one training forward and backward (no
optimiser step) at batch 1, after one warm-up step, every event of ``key_averages()`` (operators, the operators
they call, and autograd's nodes).

    python -m hora bench ops --base config:vit-b16,config:smollm-135m --out runs/ops
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from hora.bench.report import plotly_go, write_report
from hora.bench.speed import _base_model, _fake_batch
from hora.methods import apply_method, check_method


REFERENCES = {"hora": "lora", "doran": "dora"}
"""Each method of this project and the PEFT method it is held to."""
BOUNDS = {"hora": 1.20, "doran": 1.35}
"""Issue #25's bounds on the ratio of operator calls to the reference."""


def count_step_ops(model: nn.Module, batch: dict[str, torch.Tensor]) -> int:
    """Operator calls of one training forward and backward of ``model`` on ``batch`` (after a warm-up step)."""
    model.train()
    model(**batch).loss.backward()  # warm-up: lazy initialisations are not the step's
    model.zero_grad(set_to_none=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model(**batch).loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(event.count for event in prof.key_averages())


def count_methods(
    base_model: nn.Module, batch: dict[str, torch.Tensor], methods: Sequence[str], **method_kwargs: Any
) -> dict[str, int]:
    """Operator calls per training step of each method, each on its own copy of ``base_model``."""
    counts = {}
    for method in methods:
        torch.manual_seed(0)
        model, _ = apply_method(copy.deepcopy(base_model), method, **method_kwargs)
        counts[method] = count_step_ops(model, batch)
    return counts


def ratios(counts: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Each counted method of ``REFERENCES`` against its counted reference, with issue #25's bound."""
    return {
        method: {
            "reference": reference,
            "ratio": counts[method] / counts[reference],
            "bound": BOUNDS[method],
            "within_bound": counts[method] / counts[reference] <= BOUNDS[method],
        }
        for method, reference in REFERENCES.items()
        if method in counts and reference in counts
    }


def ops(
    bases: Sequence[str | os.PathLike] = ("config:vit-b16", "config:smollm-135m"),
    *,
    methods: Sequence[str] = ("lora", "dora", "hora", "doran"),
    batch_size: int = 1,
    seq_len: int = 128,
    r: int = 8,
    hyper_hidden: int = 16,
    out_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Operator calls per training step of every method on every base, and the ratios to the references.

    A method named without its reference gets it added (``hora`` brings ``lora``). Writes ``ops.json`` to
    ``out_dir`` when given.
    """
    wanted = [check_method(m) for m in methods]
    methods = list(dict.fromkeys(m for method in wanted for m in (REFERENCES.get(method), method) if m is not None))
    results = {}
    for base in bases:
        torch.manual_seed(0)
        base_model, _ = _base_model(base, torch.device("cpu"))
        batch = _fake_batch(base_model, batch_size, seq_len, torch.Generator().manual_seed(0))
        counts = count_methods(base_model, batch, methods, r=r, hyper_hidden=hyper_hidden)
        results[os.fspath(base)] = {"counts": counts, "ratios": ratios(counts)}
    report = {
        "benchmark": "ops",
        "what": "operator calls (profiler events, key_averages counts) of one training forward + backward, CPU",
        "methods": methods,
        "results": results,
        "settings": {"batch_size": batch_size, "seq_len": seq_len, "r": r, "hyper_hidden": hyper_hidden},
        "torch": torch.__version__,
    }
    if out_dir is not None:
        write_report(out_dir, "ops", report, _ops_figure(report))
    return report


def _ops_figure(report: dict) -> Any | None:
    go = plotly_go()
    if go is None:
        return None
    fig = go.Figure()
    for base, result in report["results"].items():
        pairs = [f"{method}/{row['reference']}" for method, row in result["ratios"].items()]
        fig.add_trace(go.Bar(name=base, x=pairs, y=[row["ratio"] for row in result["ratios"].values()]))
    pairs = [f"{method}/{reference}" for method, reference in REFERENCES.items()]
    marker = {"symbol": "line-ew-open", "size": 40, "line": {"width": 3}}
    fig.add_trace(go.Scatter(name="bound", x=pairs, y=list(BOUNDS.values()), mode="markers", marker=marker))
    fig.update_layout(barmode="group", title="Operator calls per training step", template="plotly_white")
    fig.update_yaxes(title_text="ratio to the reference method")
    return fig


def ops_table(report: dict) -> str:
    """A plain-text table of an ``ops`` report: counts per method, then each ratio and its bound."""
    lines = []
    for base, result in report["results"].items():
        counts = ", ".join(f"{method} {count:,}" for method, count in result["counts"].items())
        lines.append(f"{base}: {counts}")
        for method, row in result["ratios"].items():
            verdict = "within" if row["within_bound"] else "OVER"
            lines.append(f"  {method}/{row['reference']}: {row['ratio']:.3f} ({verdict} the bound {row['bound']:.2f})")
    return "\n".join(lines)


__all__ = ["BOUNDS", "REFERENCES", "count_methods", "count_step_ops", "ops", "ops_table", "ratios"]
