"""Do adapters trained on 4-bit-dequantised weights work on the original weights? Measured on a tiny model.

The packaged SmolLM2 (``hora.packaged``) is dequantised from a Q4_1 GGUF, while a Space with Hub access loads the
original weights of ``HuggingFaceTB/SmolLM2-135M-Instruct``. Neither original is reachable here, so this
benchmark asks the question of the embedded tiny Llama (``lm-shakespeare``), whose original weights we have:

1. its linear weights are quantised to Q4_1 and back with the ``gguf`` package's numpy implementation, its token
   embedding (tied to the output layer) to Q8_0, its norms left in float32: the recipe of the SmolLM2 GGUF;
2. LoRA and HoRA adapters are trained with the project's engine on each base, the dequantised one (the case in
   question) and the original (the control), for several seeds, on the Folio Hamlet sample;
3. every adapter, and each base alone, is evaluated on the engine's held-out chunks on both bases.

The tiny model turns out to be almost insensitive to 4-bit rounding, so the same procedure also runs on the packaged
SmolLM2 itself as a proxy at real scale: its (already dequantised) weights play the original, and a fresh 4-bit
rounding on another grid (``--linear Q4_0``; Q4_1 again would land on the grid they already sit on) plays the
quantisation::

    python -m hora bench quant-transfer                       # the tiny model, 2 methods x 2 bases x 3 seeds
    python -m hora bench quant-transfer --base smollm2-135m-instruct --linear Q4_0 --embedding none --seeds 0 \
        --steps 50 --context 128 --batch-size 4 --lr 1e-3

Each logs a table to stderr and prints the report as one JSON line on stdout (as every ``bench``).
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch


QUANTIZED_LINEAR = "Q4_1"  # SmolLM2's GGUF: the 210 linear weights
QUANTIZED_EMBEDDING = "Q8_0"  # SmolLM2's GGUF: the token embedding, tied to the output layer
BASES = ("quantized", "original")  # the weights after a 4-bit round trip, and before


def roundtrip(weight: torch.Tensor, kind: str) -> torch.Tensor:
    """``weight`` quantised to the GGML type ``kind`` along its rows (blocks of 32 inputs) and dequantised again."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize, quantize

    qtype = GGMLQuantizationType[kind]
    array = weight.detach().float().cpu().numpy()  # (out, in): GGUF blocks run along the contiguous in axis
    restored = dequantize(quantize(np.ascontiguousarray(array), qtype), qtype)
    return torch.from_numpy(np.asarray(restored, dtype=np.float32).reshape(array.shape))


def quantized_copy(
    base_dir: Path, out_dir: Path, linear: str = QUANTIZED_LINEAR, embedding: str | None = QUANTIZED_EMBEDDING
) -> dict[str, Any]:
    """Write ``base_dir``'s model with its decoder's linear weights passed through ``linear`` and its token embedding
    through ``embedding`` (None: left alone) into ``out_dir``, in float32; return the relative weight errors."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    errors: dict[str, list[float]] = {}
    with torch.no_grad():
        targets = [(m.weight, linear) for m in model.model.layers.modules() if isinstance(m, torch.nn.Linear)]
        if embedding is not None:
            targets.append((model.model.embed_tokens.weight, embedding))  # the tied lm_head follows
        for weight, kind in targets:
            restored = roundtrip(weight, kind)
            errors.setdefault(kind, []).append(((restored - weight).norm() / weight.norm()).item())
            weight.copy_(restored)
    model.save_pretrained(out_dir)
    for path in base_dir.iterdir():  # tokenizer and generation config; not the card, which describes the original
        if path.is_file() and path.name.startswith(("tokenizer", "special_tokens", "generation")):
            shutil.copy(path, out_dir / path.name)
    return {
        kind: {"tensors": len(values), "mean_relative_error": statistics.fmean(values)}
        for kind, values in errors.items()
    }


def _mean_sd(values: Sequence[float]) -> dict[str, Any]:
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "runs": list(values),
    }


def _config(method: str, seed: int, steps: int, batch_size: int, lr: float, context: int) -> Any:
    from hora.config import TrainConfig

    return TrainConfig(
        method=method,
        task="lm",
        shots=None,
        seed=seed,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        eval_every=None,
        eval_fraction=0.2,  # a fifth of Hamlet's paragraphs held out: about 10 chunks of 256 tokens
        max_eval=64,
        context=context,
        r=8,
        hyper_hidden=16,
        match_params=method in ("lora", "dora"),
        device="cpu",
    )


def _cross_evaluate(folders: dict[str, Path], run_dir: Path, dataset: Any, split: dict) -> tuple[dict, dict]:
    """The held-out loss of one trained run on every base, and of each base alone."""
    from hora.runs import load_run
    from hora.task import evaluate

    losses, alone = {}, {}
    for evaluated_on in BASES:
        model, task, _ = load_run(folders[evaluated_on], run_dir)
        kw = {"indices": split["eval"], "max_examples": split["eval_chunks"]}
        losses[evaluated_on] = evaluate(model, dataset, task, **kw)["loss"]
        with model.disable_adapter():
            alone[evaluated_on] = evaluate(model, dataset, task, **kw)["loss"]
    return losses, alone


def _named(config: dict | None, base: str) -> dict | None:
    """The run's PEFT config with the base as the caller named it: the runs load the original from the conversion
    cache and the rounded copy from a scratch folder, and a report must not record either path."""
    return None if config is None else {**config, "base_model_name_or_path": base}


def measure(
    base: str = "lm-shakespeare",
    data: str | Path | None = None,
    *,
    methods: Sequence[str] = ("lora", "hora"),
    seeds: Sequence[int] = (0, 1, 2),
    steps: int = 200,
    linear: str = QUANTIZED_LINEAR,
    embedding: str | None = QUANTIZED_EMBEDDING,
    context: int = 256,
    batch_size: int = 16,
    lr: float = 1e-2,
    out_dir: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train ``methods`` x ``seeds`` on the quantised and the original base, evaluate each on both; the report.

    ``base`` is an embedded name, a folder or a packaged base (``hora.packaged``). The defaults are the embedded
    language adapters' recipe (lr 1e-2 was best for LoRA and HoRA there). ``report["adapters"][method][trained_on]
    [evaluated_on]`` and ``report["base_alone"][evaluated_on]`` hold the held-out loss (nats/token) over the engine's
    held-out chunks of ``data`` (default: the embedded Folio Hamlet sample). Runs go to ``out_dir`` (default: a temporary folder, removed afterwards).
    """
    from hora import packaged
    from hora.data import load_data
    from hora.hub import assets_dir, resolve
    from hora.train import train

    data = data if data is not None else assets_dir() / "samples" / "folio-hamlet.txt"

    started = time.perf_counter()
    root = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="hora-quant-transfer-"))
    try:
        original = packaged.ensure_converted(base) if base in packaged.PACKAGED else resolve(base).path
        folders = {"original": original, "quantized": root / "base-quantized"}
        log(f"quant-transfer: {linear} / {embedding or 'no'} embedding round trip of {base}")
        quantization = quantized_copy(original, folders["quantized"], linear, embedding)
        dataset = load_data(data)
        adapters: dict[str, dict[str, dict[str, list[float]]]] = {}
        peft_configs: dict[str, dict | None] = {}  # what each method ran with, for the docs' staleness check
        for method in methods:
            adapters[method] = {t: {e: [] for e in BASES} for t in BASES}
            for trained_on, seed in ((t, s) for t in BASES for s in seeds):
                run_dir = root / "runs" / f"{method}-{trained_on}-seed{seed}"
                config = _config(method, seed, steps, batch_size, lr, context)
                metrics = train(folders[trained_on], dataset, config, out_dir=run_dir).metrics
                split, peft_configs[method] = metrics["split"], _named(metrics["method_info"]["peft_config"], base)
                losses, alone = _cross_evaluate(folders, run_dir, dataset, split)
                for evaluated_on, loss in losses.items():
                    adapters[method][trained_on][evaluated_on].append(loss)
                shown = {e: round(v, 4) for e, v in losses.items()}
                log(f"quant-transfer: {method} trained on the {trained_on} base, seed {seed}: held-out {shown}")
    finally:
        if out_dir is None:
            shutil.rmtree(root, ignore_errors=True)
    report = {
        "base": base,
        "data": Path(data).name,
        "quantization": quantization,
        "methods": list(methods),
        "seeds": list(seeds),
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "held_out_chunks": split["eval_chunks"],
        "context": context,
        "base_alone": alone,
        "adapters": {
            m: {t: {e: _mean_sd(v) for e, v in by_eval.items()} for t, by_eval in by_train.items()}
            for m, by_train in adapters.items()
        },
        "peft_configs": peft_configs,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    log(markdown_table(report))
    return report


def _mean_sd_cell(cell: dict[str, Any]) -> str:
    """``mean ± sd`` over seeds; the mean alone for one seed, whose spread is unknown rather than 0."""
    return f"{cell['mean']:.3f}" + (f" ± {cell['sd']:.3f}" if len(cell["runs"]) > 1 else "")


def markdown_table(report: dict[str, Any]) -> str:
    """Held-out loss of every adapter and base on both bases, mean ± sd over seeds, as a README table."""
    rows = [
        "| model | trained on | loss on the quantised base | loss on the original base |",
        "|---|---|---|---|",
        f"| base alone | — | {report['base_alone']['quantized']:.3f} | {report['base_alone']['original']:.3f} |",
    ]
    names = {"lora": "LoRA", "hora": "HoRA", "dora": "DoRA", "doran": "DoRAN"}
    for method, by_train in report["adapters"].items():
        for trained_on in BASES:
            cells = [_mean_sd_cell(by_train[trained_on][e]) for e in BASES]
            rows.append(f"| {names.get(method, method)} | {trained_on} | {cells[0]} | {cells[1]} |")
    return "\n".join(rows)
