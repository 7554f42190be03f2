"""Speed and memory of HoRA and DoRAN against PEFT's LoRA and DoRA: training step time and memory, and inference
latency unmerged and merged, measured side by side in one run on the same model and batch."""

from __future__ import annotations

import copy
import os
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from hora.bench.report import plotly_go, write_report
from hora.loaders import load_base
from hora.methods import METHODS, apply_method, check_method
from hora.optim import compile_model


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


def _base_model(base: str | os.PathLike, device: torch.device) -> tuple[nn.Module, str]:
    """The model to time (eval mode, on ``device``) and its kind: a reference architecture or a loaded base."""
    if str(base).startswith("config:"):
        model, kind = reference_model(str(base))
    else:
        loaded = load_base(base, dtype=torch.float32)
        model, kind = loaded.model, loaded.kind
    return model.to(device).eval(), kind


def _adapted(base_model: nn.Module, methods: Sequence[str], batch: dict, device: torch.device, **kw: Any) -> tuple:
    """Every method on its own copy of the base, with its optimiser and its memory estimate."""
    models, optimizers, info = {}, {}, {}
    for method in methods:
        torch.manual_seed(0)
        model, method_info = apply_method(
            copy.deepcopy(base_model).train(),
            method,
            r=kw["r"],
            hyper_hidden=kw["hyper_hidden"],
            match_params=kw["match_params"] and METHODS[method].budget_of is not None,
        )
        models[method] = model.to(device)
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
            "peft_config": method_info.to_dict()["peft_config"],  # what ran: the docs check it against today's
        }
    return models, optimizers, info


def _compiled(models: dict, info: dict, methods: Sequence[str]) -> tuple[dict, dict, dict]:
    """``<method>+compile``: a copy of each method's model run through ``torch.compile``, with its own optimiser."""
    compiled, optimizers, rows = {}, {}, {}
    for method in methods:
        model = copy.deepcopy(models[method])
        optimizers[method] = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        compiled[method] = compile_model(model)
        rows[method] = {**info[method], "compiled": True}
    return compiled, optimizers, rows


def _round_robin(run: dict[str, Any], rounds: int, warmup: int) -> dict[str, list]:
    """``run[name]()`` for every name in turn, ``warmup + rounds`` times; the results of the timed rounds."""
    results: dict[str, list] = {name: [] for name in run}
    for round_ in range(warmup + rounds):
        for name, fn in run.items():
            value = fn()
            if round_ >= warmup:
                results[name].append(value)
    return results


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
    compile: Sequence[str] = (),
    out_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Training step time and memory of each method, and inference latency unmerged, merged and of the
    base model, all on the same base and the same random batch.

    Methods are visited round-robin within each round; the first ``warmup`` rounds are discarded and the
    medians of the next ``steps`` are reported, with ratios to LoRA (training) and to the base model
    (inference). Memory: on CUDA the measured peak of a step above what was allocated before it; on every
    device the activations saved for backward plus gradients and AdamW state of the trainable parameters.
    ``compile`` names methods whose training step is also timed through ``torch.compile`` (rows
    ``<method>+compile``, with ratios to ``lora+compile`` when LoRA is one of them); their first (warm-up) round
    compiles.
    """
    methods = [check_method(m) for m in methods]
    compile = [check_method(m) for m in compile]
    if "lora" not in methods:
        methods = ["lora", *methods]  # the reference of every ratio
    methods += [m for m in compile if m not in methods]
    if steps < 1 or warmup < 0 or (compile and warmup < 1):
        raise ValueError(f"steps must be >= 1 and warmup >= 0 (1 to compile), got {steps} and {warmup}.")
    dev = torch.device("cpu") if device == "cpu" else _auto_device()
    torch.manual_seed(0)
    base_model, kind = _base_model(base, dev)
    generator = torch.Generator().manual_seed(0)
    batch = {k: v.to(dev) for k, v in _fake_batch(base_model, batch_size, seq_len, generator).items()}
    models, optimizers, info = _adapted(
        base_model, methods, batch, dev, r=r, hyper_hidden=hyper_hidden, match_params=match_params
    )
    step_of = {m: (lambda m=m: _train_step(models[m], optimizers[m], batch, dev)) for m in methods}
    compiled, compiled_optimizers, compiled_info = _compiled(models, info, compile)
    for m in compile:
        step_of[f"{m}+compile"] = lambda m=m: _train_step(compiled[m], compiled_optimizers[m], batch, dev)
        info[f"{m}+compile"] = compiled_info[m]
    timings = _round_robin(step_of, steps, warmup)
    # inference: the same adapters unmerged, merged into a copy of the base, and the base alone
    variants: dict[str, nn.Module] = {"base": base_model}
    for method in methods:
        variants[f"{method}/unmerged"] = models[method].eval()
        variants[f"{method}/merged"] = copy.deepcopy(models[method]).merge_and_unload().eval()
    latencies = _round_robin({n: (lambda m=m: _infer(m, batch, dev)) for n, m in variants.items()}, steps, warmup)

    train_rows = {}
    for name, measured in timings.items():
        peaks = [t["peak_bytes"] for t in measured if "peak_bytes" in t]
        row = {"compiled": False, **info[name], "step_seconds": statistics.median(t["seconds"] for t in measured)}
        row["peak_step_bytes"] = max(peaks) if peaks else None
        train_rows[name] = row
    inference = {name: statistics.median(values) for name, values in latencies.items()}
    report = _speed_report(base, dev, methods, train_rows, inference)
    report["precision"] = "bf16 autocast" if dev.type == "cuda" else "float32"
    report["compiled"] = [f"{m}+compile" for m in compile]
    report["settings"] = {
        "steps": steps,
        "warmup": warmup,
        "batch_size": batch_size,
        "seq_len": seq_len if kind == "lm" else None,
        "r": r,
        "hyper_hidden": hyper_hidden,
        "match_params": match_params,
        "bf16_autocast": dev.type == "cuda",
        "compile": compile,
        "torch_threads": torch.get_num_threads(),
    }
    if out_dir is not None:
        write_report(out_dir, "speed", report, _speed_figure(report))
    return report


def _speed_report(base, dev: torch.device, methods: list[str], train_rows: dict, inference: dict) -> dict[str, Any]:
    """The report of ``speed``: the measurements and their ratios to LoRA (training) and the base (inference)."""
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
    compiled_lora = train_rows.get("lora+compile")
    compiled_ratios = {
        m: {"step_time": row["step_seconds"] / compiled_lora["step_seconds"]}
        for m, row in train_rows.items()
        if compiled_lora is not None and row["compiled"]
    }
    return {
        "benchmark": "speed",
        "base_model": os.fspath(base),
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev.type,
        "methods": methods,
        "memory_kind": "cuda peak of a step above the memory allocated before it"
        if dev.type == "cuda"
        else "estimate: activations saved for backward + gradients + AdamW state of the trainable parameters",
        "train": train_rows,
        "ratios_to_lora": ratios,
        "ratios_to_compiled_lora": compiled_ratios,
        "inference_seconds": inference,
        "inference_ratios_to_base": {name: seconds / inference["base"] for name, seconds in inference.items()},
    }


def _auto_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def speed_table(report: dict) -> str:
    """A plain-text table of a ``speed`` report."""
    header = ("method", "r", "params", "step ms", "x LoRA", "mem x LoRA", "unmerged ms", "merged ms")
    lines = ["{:<13} {:>4} {:>10} {:>9} {:>7} {:>10} {:>12} {:>10}".format(*header)]
    latency = report["inference_seconds"]
    for method, row in report["train"].items():
        ratio = report["ratios_to_lora"][method]
        memory = f"{ratio['memory']:.2f}" if ratio["memory"] is not None else "-"
        unmerged, merged = (
            f"{latency[f'{method}/{kind}'] * 1000:.2f}" if f"{method}/{kind}" in latency else "-"
            for kind in ("unmerged", "merged")
        )
        lines.append(
            f"{method:<13} {row['r'] or '-':>4} {row['trainable_params']:>10,} {row['step_seconds'] * 1000:>9.2f} "
            f"{ratio['step_time']:>7.2f} {memory:>10} {unmerged:>12} {merged:>10}"
        )
    for method, ratio in report.get("ratios_to_compiled_lora", {}).items():
        lines.append(f"{method}: {ratio['step_time']:.2f}x lora+compile's step")
    lines.append(
        f"base model inference: {latency['base'] * 1000:.2f} ms ({report['device']}, {report.get('precision', '')})"
    )
    return "\n".join(lines)


def _speed_figure(report: dict) -> Any | None:
    go = plotly_go()
    if go is None:
        return None
    methods = list(report["ratios_to_lora"])  # with the compiled rows
    fig = go.Figure()
    fig.add_trace(go.Bar(name="step time", x=methods, y=[report["ratios_to_lora"][m]["step_time"] for m in methods]))
    fig.add_trace(go.Bar(name="memory", x=methods, y=[report["ratios_to_lora"][m]["memory"] for m in methods]))
    fig.update_layout(
        barmode="group", title=f"Training cost relative to LoRA ({report['device']})", template="plotly_white"
    )
    fig.update_yaxes(title_text="ratio to LoRA")
    return fig


__all__ = ["REFERENCE_MODELS", "reference_model", "speed", "speed_table"]
