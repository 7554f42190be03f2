"""Benchmarks: sample efficiency (held-out metric vs shots, with 95% confidence intervals) and speed
(training step time, memory and inference latency of HoRA and DoRAN against PEFT's LoRA and DoRA).

    >>> from hora import bench
    >>> report = bench.sample_efficiency("runs/vit", "digits.zip", methods=["lora", "hora"], out_dir="runs/se")
    >>> report = bench.speed("runs/vit", out_dir="runs/speed")
    >>> print(bench.speed_table(report))

Both write JSON (and a plotly HTML figure, plus PNG when ``kaleido`` is installed) through
``hora.io.atomic_dir``. Timings are medians over rounds that visit every method in turn (round-robin,
after warm-up), so slow drifts of the machine hit every method alike.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hora.io import atomic_dir
from hora.methods import apply_method, check_method, load_base_model, resolve_base
from hora.train import TrainConfig, load_data_for, train


# Two-sided 95% quantiles t_{0.975, df} of Student's t distribution; between tabulated df, interpolated
# linearly in 1/df (the standard table practice, accurate to ~1e-4).
_T975 = {
    1: 12.7062047, 2: 4.3026527, 3: 3.1824463, 4: 2.7764451, 5: 2.5705818, 6: 2.4469119, 7: 2.3646243,
    8: 2.3060041, 9: 2.2621572, 10: 2.2281389, 11: 2.2009852, 12: 2.1788128, 13: 2.1603687, 14: 2.1447867,
    15: 2.1314495, 16: 2.1199053, 17: 2.1098156, 18: 2.1009220, 19: 2.0930241, 20: 2.0859634, 21: 2.0796138,
    22: 2.0738731, 23: 2.0686576, 24: 2.0638986, 25: 2.0595386, 26: 2.0555294, 27: 2.0518305, 28: 2.0484071,
    29: 2.0452296, 30: 2.0422725, 40: 2.0210754, 60: 2.0002978, 120: 1.9799304,
}  # fmt: skip
_Z975 = 1.9599640


def t_quantile_975(df: int) -> float:
    """t_{0.975} with ``df`` degrees of freedom (the half-width factor of a two-sided 95% interval)."""
    if df < 1:
        raise ValueError(f"Degrees of freedom must be at least 1, got {df}.")
    if df in _T975:
        return _T975[df]
    known = sorted(_T975) + [math.inf]
    hi = next(k for k in known if k > df)
    lo = max(k for k in known if k < df)
    t_lo, t_hi = _T975[lo], _T975.get(hi, _Z975)
    w = (1 / lo - 1 / df) / (1 / lo - (0 if hi == math.inf else 1 / hi))
    return t_lo + w * (t_hi - t_lo)


def mean_ci(values: Sequence[float]) -> dict[str, Any]:
    """Mean and 95% confidence interval (t-distribution) of ``values``; with one value the interval is that value."""
    n = len(values)
    if n == 0:
        raise ValueError("No values to summarise.")
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if n > 1 else 0.0
    half = t_quantile_975(n - 1) * std / math.sqrt(n) if n > 1 else 0.0
    return {"mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half, "n": n, "values": list(values)}


def _figure_files(fig: Any, tmp: Path, stem: str) -> dict[str, Any]:
    """Write ``fig`` as a self-contained HTML, and as PNG when kaleido is importable; say what was written."""
    fig.write_html(tmp / f"{stem}.html", include_plotlyjs=True)
    out: dict[str, Any] = {"html": f"{stem}.html", "png": None}
    if importlib.util.find_spec("kaleido") is None:
        out["png_note"] = "kaleido is not installed, so no PNG was written (pip install kaleido to get one)."
        return out
    try:
        fig.write_image(tmp / f"{stem}.png")
        out["png"] = f"{stem}.png"
    except Exception as error:  # kaleido needs a browser it may not find; the HTML is still there
        out["png_note"] = f"PNG export failed: {error}"
    return out


def _write(out_dir: str | os.PathLike, stem: str, report: dict, figure: Any | None) -> None:
    with atomic_dir(out_dir) as tmp:
        if figure is not None:
            report["figure"] = _figure_files(figure, tmp, stem)
        else:
            report["figure"] = {"html": None, "png": None, "png_note": "plotly is not installed; no figure."}
        (tmp / f"{stem}.json").write_text(json.dumps(report, indent=2, default=str))


def _plotly() -> Any | None:
    try:
        import plotly.graph_objects as go
    except ImportError:
        return None
    return go


# ---------------------------------------------------------------------------------------------------------------
# Sample efficiency


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
        _write(out_dir, "sample_efficiency", report, _sample_efficiency_figure(report))
    return report


def _sample_efficiency_figure(report: dict) -> Any | None:
    go = _plotly()
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


# ---------------------------------------------------------------------------------------------------------------
# Speed


REFERENCE_MODELS = {
    "config:vit-b16": "ViT-B/16 at 224 px (transformers' ViTConfig defaults), 10 classes",
    "config:gpt2": "GPT-2 small (124M; fused c_attn)",
    "config:smollm-135m": "a Llama with SmolLM-135M's dimensions (30 blocks, 9 query / 3 key-value heads)",
}
"""Full-size architectures for ``speed``, built from their configs with random weights (nothing downloaded):
the timing of a method depends on the shapes, not on the values of the weights."""


def reference_model(name: str) -> tuple[nn.Module, str]:
    """A ``REFERENCE_MODELS`` model with random weights, in eval mode, and its kind (``"image"`` or ``"lm"``)."""
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        ViTConfig,
        ViTForImageClassification,
    )

    if name == "config:vit-b16":
        return ViTForImageClassification(ViTConfig(num_labels=10)).eval(), "image"
    if name == "config:gpt2":
        return GPT2LMHeadModel(GPT2Config()).eval(), "lm"
    if name == "config:smollm-135m":
        config = LlamaConfig(
            vocab_size=49152,
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            max_position_embeddings=2048,
            tie_word_embeddings=True,
        )
        return LlamaForCausalLM(config).eval(), "lm"
    raise ValueError(f"Unknown reference model {name!r}; choose one of {', '.join(REFERENCE_MODELS)}.")


def _fake_batch(
    model: nn.Module, batch_size: int, seq_len: int, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Random inputs of the right shape for the base: pixels and labels, or token ids."""
    config = model.config
    if hasattr(config, "image_size"):
        size, channels = config.image_size, getattr(config, "num_channels", 3)
        return {
            "pixel_values": torch.randn(batch_size, channels, size, size, generator=generator),
            "labels": torch.randint(0, config.num_labels, (batch_size,), generator=generator),
        }
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", seq_len)
    ids = torch.randint(0, config.vocab_size, (batch_size, min(seq_len, limit)), generator=generator)
    return {"input_ids": ids, "labels": ids}


class _SavedActivations:
    """Bytes autograd saves for the backward pass (activations), parameters excluded; device-agnostic."""

    def __init__(self, model: nn.Module) -> None:
        self.params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.seen: set[int] = set()
        self.bytes = 0

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in self.params and ptr not in self.seen:
            self.seen.add(ptr)
            self.bytes += storage.nbytes()
        return tensor


def _sync(device: torch.device) -> None:
    """Wait for the device, so that a timer measures the work and not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: dict, device: torch.device) -> dict:
    """One timed training step (forward, backward, AdamW); on CUDA also the step's peak extra memory."""
    if device.type == "cuda":
        _sync(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    _sync(device)
    out = {"seconds": time.perf_counter() - start}
    if device.type == "cuda":
        out["peak_bytes"] = torch.cuda.max_memory_allocated(device) - before
    return out


@torch.no_grad()
def _infer(model: nn.Module, batch: dict, device: torch.device) -> float:
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    _sync(device)
    start = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        model(**inputs)
    _sync(device)
    return time.perf_counter() - start


def speed(
    base: str | os.PathLike,
    *,
    methods: Sequence[str] = ("lora", "dora", "hora", "doran"),
    steps: int = 20,
    warmup: int = 3,
    batch_size: int = 8,
    seq_len: int = 128,
    r: int = 8,
    hyper_hidden: int = 16,
    match_params: bool = False,
    device: str = "auto",
    out_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Training step time and memory of each method, and inference latency unmerged, merged and of the
    base model, all on the same base and the same random batch.

    Methods are visited round-robin within each round; the first ``warmup`` rounds are discarded and the
    medians of the next ``steps`` are reported, with ratios to LoRA (training) and to the base model
    (inference). Memory: on CUDA the measured peak of a step above what was allocated before it; on every
    device the activations saved for backward plus gradients and AdamW state of the trainable parameters.
    """
    methods = [check_method(m) for m in methods]
    if "lora" not in methods:
        methods = ["lora", *methods]  # the reference of every ratio
    if steps < 1 or warmup < 0:
        raise ValueError(f"steps must be >= 1 and warmup >= 0, got {steps} and {warmup}.")
    dev = torch.device("cpu") if device == "cpu" else _auto_device()
    torch.manual_seed(0)
    if str(base).startswith("config:"):
        base_model, kind = reference_model(str(base))
    else:
        base_dir = resolve_base(base)
        kind = "image" if _is_image_base(base_dir) else "lm"
        base_model = load_base_model(base_dir, kind)[0]
    base_model = base_model.to(dev).eval()
    batch = {
        k: v.to(dev) for k, v in _fake_batch(base_model, batch_size, seq_len, torch.Generator().manual_seed(0)).items()
    }

    models, optimizers, info = {}, {}, {}
    for method in methods:
        torch.manual_seed(0)
        model, method_info = apply_method(
            copy.deepcopy(base_model).train(),
            method,
            r=r,
            hyper_hidden=hyper_hidden,
            match_params=match_params and method in ("lora", "dora"),
        )
        models[method] = model.to(dev)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizers[method] = torch.optim.AdamW(params, lr=1e-5)
        trainable_bytes = sum(p.numel() * p.element_size() for p in params)
        recorder = _SavedActivations(model)
        with torch.autograd.graph.saved_tensors_hooks(recorder.pack, lambda t: t):
            model(**batch).loss.backward()
        model.zero_grad(set_to_none=True)
        info[method] = {
            "r": method_info.peft_config.r if method_info.peft_config is not None else None,
            "trainable_params": method_info.trainable_params,
            "activation_bytes": recorder.bytes,
            # gradients (1x) and AdamW's two moments (2x) of the trainable parameters
            "estimated_step_bytes": recorder.bytes + 3 * trainable_bytes,
        }

    step_times: dict[str, list[float]] = {m: [] for m in methods}
    peaks: dict[str, list[int]] = {m: [] for m in methods}
    for round_ in range(warmup + steps):
        for method in methods:
            timing = _train_step(models[method], optimizers[method], batch, dev)
            if round_ >= warmup:
                step_times[method].append(timing["seconds"])
                if "peak_bytes" in timing:
                    peaks[method].append(timing["peak_bytes"])

    # inference: the same adapters unmerged, merged into a copy of the base, and the base alone
    variants: dict[str, nn.Module] = {"base": base_model}
    for method in methods:
        variants[f"{method}/unmerged"] = models[method].eval()
        variants[f"{method}/merged"] = copy.deepcopy(models[method]).merge_and_unload().eval()
    latencies: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(warmup + steps):
        for name, model in variants.items():
            seconds = _infer(model, batch, dev)
            if round_ >= warmup:
                latencies[name].append(seconds)

    train_rows = {}
    for method in methods:
        row = {**info[method], "step_seconds": statistics.median(step_times[method])}
        row["peak_step_bytes"] = max(peaks[method]) if peaks[method] else None
        train_rows[method] = row
    inference = {name: statistics.median(values) for name, values in latencies.items()}
    lora = train_rows["lora"]
    memory_key = "peak_step_bytes" if dev.type == "cuda" else "estimated_step_bytes"
    ratios = {
        m: {
            "step_time": row["step_seconds"] / lora["step_seconds"],
            "memory": row[memory_key] / lora[memory_key] if lora[memory_key] else None,
            "trainable_params": row["trainable_params"] / lora["trainable_params"],
        }
        for m, row in train_rows.items()
    }
    report = {
        "benchmark": "speed",
        "base_model": os.fspath(base),
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev.type,
        "methods": methods,
        "settings": {
            "steps": steps,
            "warmup": warmup,
            "batch_size": batch_size,
            "seq_len": seq_len if kind == "lm" else None,
            "r": r,
            "hyper_hidden": hyper_hidden,
            "match_params": match_params,
            "bf16_autocast": dev.type == "cuda",
            "torch_threads": torch.get_num_threads(),
        },
        "memory_kind": "cuda peak of a step above the memory allocated before it"
        if dev.type == "cuda"
        else "estimate: activations saved for backward + gradients + AdamW state of the trainable parameters",
        "train": train_rows,
        "ratios_to_lora": ratios,
        "inference_seconds": inference,
        "inference_ratios_to_base": {name: seconds / inference["base"] for name, seconds in inference.items()},
    }
    if out_dir is not None:
        _write(out_dir, "speed", report, _speed_figure(report))
    return report


def _auto_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _is_image_base(base_dir: Path) -> bool:
    config = json.loads((base_dir / "config.json").read_text())
    return any(a.endswith("ForImageClassification") for a in config.get("architectures") or [])


def speed_table(report: dict) -> str:
    """A plain-text table of a ``speed`` report."""
    header = ("method", "r", "params", "step ms", "x LoRA", "mem x LoRA", "unmerged ms", "merged ms")
    lines = ["{:<8} {:>4} {:>10} {:>9} {:>7} {:>10} {:>12} {:>10}".format(*header)]
    for method, row in report["train"].items():
        ratio = report["ratios_to_lora"][method]
        memory = f"{ratio['memory']:.2f}" if ratio["memory"] is not None else "-"
        unmerged = report["inference_seconds"][f"{method}/unmerged"] * 1000
        merged = report["inference_seconds"][f"{method}/merged"] * 1000
        lines.append(
            f"{method:<8} {row['r'] or '-':>4} {row['trainable_params']:>10,} {row['step_seconds'] * 1000:>9.2f} "
            f"{ratio['step_time']:>7.2f} {memory:>10} {unmerged:>12.2f} {merged:>10.2f}"
        )
    lines.append(f"base model inference: {report['inference_seconds']['base'] * 1000:.2f} ms ({report['device']})")
    return "\n".join(lines)


def _speed_figure(report: dict) -> Any | None:
    go = _plotly()
    if go is None:
        return None
    methods = report["methods"]
    fig = go.Figure()
    fig.add_trace(go.Bar(name="step time", x=methods, y=[report["ratios_to_lora"][m]["step_time"] for m in methods]))
    fig.add_trace(go.Bar(name="memory", x=methods, y=[report["ratios_to_lora"][m]["memory"] for m in methods]))
    fig.update_layout(
        barmode="group", title=f"Training cost relative to LoRA ({report['device']})", template="plotly_white"
    )
    fig.update_yaxes(title_text="ratio to LoRA")
    return fig


__all__ = ["mean_ci", "sample_efficiency", "speed", "speed_table", "t_quantile_975"]
