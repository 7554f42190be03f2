"""``python -m hora demo``, ``train``, ``eval`` and ``push``: the commands that build, train, evaluate and publish
adapters."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hora.cli.options import train_config
from hora.methods import METHODS


def is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


@contextmanager
def cancel_on_interrupt() -> Iterator[threading.Event]:
    """While inside: the first Ctrl-C sets the event (training stops after the step and saves), a second
    one interrupts at once."""
    cancel = threading.Event()
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield cancel
        return

    def handler(signum: int, frame: Any) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        print("\nStopping after this step (Ctrl-C again to abort) ...", file=sys.stderr)
        cancel.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield cancel
    finally:
        signal.signal(signal.SIGINT, previous)


def cmd_demo(args: argparse.Namespace) -> dict:
    """Build a small ViT from a config, adapt it with HoRA, LoRA, DoRA and DoRAN, print their parameter reports."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers' deprecation notes, raised via PEFT
        return _demo()


def _demo() -> dict:
    import copy

    import torch
    from transformers import ViTConfig, ViTForImageClassification

    import hora
    from hora.methods import apply_method

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=128,
        num_labels=10,
    )
    base = ViTForImageClassification(config).eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference = base(pixel_values=pixels).logits
    blocks, width, heads = config.num_hidden_layers, config.hidden_size, config.num_attention_heads
    print(f"A ViT built from its config: {blocks} blocks, width {width}, {heads} heads; q and v adapted at rank 8.\n")
    summary: dict[str, Any] = {}
    methods = [name for name, method in METHODS.items() if method.low_rank]
    for method in methods:
        model, info = apply_method(copy.deepcopy(base), method, r=8, hyper_hidden=16)
        model.eval()
        with torch.no_grad():
            change = float((model(pixel_values=pixels).logits - reference).abs().max())
        print(f"== {method} ==")
        print(hora.param_report(model))
        print(f"max |logits - base logits| at initialisation: {change:.2e}\n")
        summary[method] = {"trainable_params": info.trainable_params, "max_abs_change_at_init": change}
    _, matched = apply_method(copy.deepcopy(base), "lora", r=8, hyper_hidden=16, match_params=True)
    rank, reference = matched.matched["r"], matched.matched["reference_params"]
    print(f"LoRA with HoRA's budget: rank {rank} ({matched.adapter_params:,} parameters vs HoRA's {reference:,}).")
    return {"command": "demo", "methods": summary, "matched_lora": matched.matched}


def cmd_train(args: argparse.Namespace) -> dict:
    from tqdm.auto import tqdm

    from hora.train import train

    config = train_config(args)
    bar = tqdm(total=config.steps, desc=config.method, unit="step", disable=not is_main_process(), file=sys.stderr)

    def progress(event) -> None:
        shown = {"loss": f"{event.loss:.4f}", "lr": f"{event.lr:.2e}"}
        if event.metrics:
            shown |= {k: f"{v:.4f}" for k, v in event.metrics.items()}
        bar.set_postfix(shown, refresh=False)
        bar.update(1)

    try:
        with cancel_on_interrupt() as cancel:
            result = train(args.base, args.data, config, out_dir=args.out, callback=progress, cancel=cancel)
    finally:
        bar.close()
    m = result.metrics
    return {
        "command": "train",
        "method": m["method"],
        "out": os.fspath(result.out_dir),
        "final": m["final"],
        "best": m["best"],
        "stopped": result.stopped,
        "message": result.message,
        "steps_done": m["steps_done"],
        "trainable_params": m["method_info"]["trainable_params"],
        "device": m["device"]["type"],
        "num_processes": m["device"]["num_processes"],
        "train_seconds": m["timing"]["train_seconds"],
    }


def cmd_eval(args: argparse.Namespace) -> dict:
    from hora.runs import load_run
    from hora.task import evaluate, load_data_for

    model, task, run = load_run(args.base, args.adapter)
    data = load_data_for(args.data, args.task)
    indices, cap, part = None, None, "all"
    recorded = run.get("data", {})
    same = recorded.get("path") and Path(recorded["path"]) == Path(args.data).resolve()
    if same and not args.all and recorded.get("num_examples") == _count(data):
        # the data the run was trained on: evaluate on its held-out part, as training did
        indices, cap, part = run["split"]["eval"], run["split"].get("eval_chunks"), "held_out"
    metrics = evaluate(model, data, task, indices=indices, max_examples=cap, batch_size=args.batch_size)
    return {"command": "eval", "method": run.get("method"), "metrics": metrics, "split": part}


def _count(data: Any) -> int:
    return len(data.labels) if hasattr(data, "labels") else len(data.texts)


def cmd_push(args: argparse.Namespace) -> dict:
    from hora.push import push, push_plan

    plan = push_plan(args.adapter_dir, args.repo_id)
    where = push(args.adapter_dir, args.repo_id, private=not args.public, dry_run_dir=args.dry_run)
    return {"command": "push", "repo_id": args.repo_id, "files": plan.files, "to": where}


__all__ = ["cmd_demo", "cmd_eval", "cmd_push", "cmd_train", "is_main_process"]
