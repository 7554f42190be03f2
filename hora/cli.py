"""Command line: ``python -m hora {demo,train,eval,bench}``.

    python -m hora demo
    python -m hora train --base runs/vit --data digits.zip --method hora --shots 8 --steps 200 --out runs/hora
    python -m hora eval --base runs/vit --adapter runs/hora --data digits.zip
    python -m hora bench sample-efficiency --base runs/vit --data digits.zip --methods lora,hora --out runs/bench
    python -m hora bench speed --base runs/vit --out runs/speed
    python -m hora push runs/hora user/my-hora-adapter          # token from HF_TOKEN
    accelerate launch --num_processes 2 -m hora train ...      # data-parallel, no code change

Progress bars go to stderr; the last line of stdout is always a JSON summary (``"ok": false`` and an
``"error"`` on failure, with exit status 2).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hora.methods import METHODS


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _ints(text: str) -> list[int]:
    return [int(part) for part in _csv(text)]


def _method_arg(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value  # a bare string, e.g. tau_granularity=channel


def _add_training_args(p: argparse.ArgumentParser, single: bool) -> None:
    """Options shared by ``train`` and ``bench sample-efficiency`` (which sweeps method, shots and seed)."""
    p.add_argument("--base", required=True, help="base model folder (config.json + safetensors), or embedded name")
    p.add_argument("--data", required=True, help="dataset: class-folder zip/folder, csv, jsonl or txt")
    p.add_argument("--task", default="auto", choices=["auto", "image", "text", "lm"])
    if single:
        p.add_argument("--method", default="hora", choices=METHODS)
        p.add_argument("--shots", type=int, default=8, help="examples per class (LM: training chunks)")
        p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=16, help="per process")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm; 0 turns clipping off")
    p.add_argument("--eval-every", type=int, default=50, help="evaluate every N steps (0: only at the end)")
    p.add_argument("--patience", type=int, default=None, help="early stopping: evaluations without improvement")
    p.add_argument("--eval-per-class", type=int, default=None, help="cap on held-out examples per class")
    p.add_argument("--context", type=int, default=128, help="LM: tokens per training chunk")
    p.add_argument("--rank", type=int, default=8, help="rank r of the low-rank update")
    p.add_argument("--alpha", type=float, default=None, help="lora_alpha (default 2r)")
    p.add_argument("--hyper-hidden", type=int, default=16, help="HoRA/DoRAN generator width p")
    p.add_argument("--targets", type=_csv, default=None, help="comma-separated target modules (default: q, v)")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--match-params", action="store_true", help="LoRA/DoRA rank matched to HoRA's/DoRAN's budget")
    p.add_argument(
        "--method-arg",
        type=_method_arg,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra PEFT config field, e.g. tau_init=0.05 (repeatable)",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu"])
    p.add_argument("--no-bf16", action="store_true", help="no bf16 autocast on CUDA")


def _train_config(args: argparse.Namespace, **fixed: Any):
    from hora.train import TrainConfig

    return TrainConfig(
        method=fixed.get("method", getattr(args, "method", "hora")),
        task=args.task,
        shots=fixed.get("shots", getattr(args, "shots", 8)),
        seed=fixed.get("seed", getattr(args, "seed", 0)),
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_ratio=args.warmup_ratio,
        grad_clip=args.grad_clip or None,
        eval_every=args.eval_every or None,
        patience=args.patience,
        eval_per_class=args.eval_per_class,
        context=args.context,
        r=args.rank,
        lora_alpha=args.alpha,
        hyper_hidden=args.hyper_hidden,
        target_modules=args.targets,
        dropout=args.dropout,
        match_params=args.match_params,
        method_args=dict(args.method_arg),
        device=args.device,
        bf16=False if args.no_bf16 else None,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hora", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("demo", help="HoRA's and LoRA's parameter reports on a small ViT built from a config")

    p = sub.add_parser("train", help="fine-tune a base model on a few-shot dataset")
    _add_training_args(p, single=True)
    p.add_argument("--out", required=True, help="output folder (written atomically)")

    p = sub.add_parser("eval", help="evaluate a trained adapter (or head / full run) on a dataset")
    p.add_argument("--base", required=True)
    p.add_argument("--adapter", required=True, help="folder written by `train`, or a PEFT adapter folder")
    p.add_argument("--data", required=True)
    p.add_argument("--task", default="auto", choices=["auto", "image", "text", "lm"])
    p.add_argument("--all", action="store_true", help="every example, not the run's held-out split")
    p.add_argument("--batch-size", type=int, default=64)

    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench", required=True)
    p = bench.add_parser("sample-efficiency", help="held-out metric vs shots, seeds and methods, with 95%% CIs")
    _add_training_args(p, single=False)
    p.add_argument("--methods", type=_csv, default=["lora", "hora"])
    p.add_argument("--shots", type=_ints, default=[1, 2, 4, 8, 16])
    p.add_argument("--seeds", type=int, default=5, help="number of seeds (0 .. N-1)")
    p.add_argument("--out", required=True)
    p = bench.add_parser("speed", help="training step time, memory and inference latency vs LoRA")
    p.add_argument(
        "--base",
        required=True,
        help="a base folder, embedded name or Hub repo, or a full-size model built from its config with random "
        "weights: config:vit-b16, config:gpt2 or config:smollm-135m",
    )
    p.add_argument("--methods", type=_csv, default=["lora", "dora", "hora", "doran"])
    p.add_argument("--steps", type=int, default=20, help="timed rounds (after warm-up)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=128, help="LM bases: tokens per sequence")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--hyper-hidden", type=int, default=16)
    p.add_argument("--match-params", action="store_true")
    p.add_argument("--device", default="auto", choices=["auto", "cpu"])
    p.add_argument("--out", required=True)
    p = sub.add_parser("push", help="upload an adapter folder (with its model card) to the Hugging Face Hub")
    p.add_argument("adapter_dir")
    p.add_argument("repo_id", help="user-or-org/name")
    p.add_argument("--public", action="store_true", help="create the repo public (default: private)")
    p.add_argument("--dry-run", metavar="DIR", help="write the exact repo content to DIR instead of uploading")
    return parser


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


@contextmanager
def _cancel_on_interrupt() -> Iterator[threading.Event]:
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
    methods = ["hora", "lora", "dora"] + (["doran"] if hasattr(hora, "DoranConfig") else [])
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

    config = _train_config(args)
    bar = tqdm(total=config.steps, desc=config.method, unit="step", disable=not _is_main_process(), file=sys.stderr)

    def progress(event) -> None:
        shown = {"loss": f"{event.loss:.4f}", "lr": f"{event.lr:.2e}"}
        if event.metrics:
            shown |= {k: f"{v:.4f}" for k, v in event.metrics.items()}
        bar.set_postfix(shown, refresh=False)
        bar.update(1)

    try:
        with _cancel_on_interrupt() as cancel:
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
    from hora.train import evaluate, load_data_for, load_trained

    model, task, run = load_trained(args.base, args.adapter)
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


def cmd_bench(args: argparse.Namespace) -> dict:
    from hora import bench

    if args.bench == "speed":
        report = bench.speed(
            args.base,
            methods=args.methods,
            steps=args.steps,
            warmup=args.warmup,
            batch_size=args.batch_size,
            seq_len=args.seq_len,
            r=args.rank,
            hyper_hidden=args.hyper_hidden,
            match_params=args.match_params,
            device=args.device,
            out_dir=args.out,
        )
        print(bench.speed_table(report), file=sys.stderr)
        return {"command": "bench speed", "out": args.out, "ratios_to_lora": report["ratios_to_lora"]}
    config = _train_config(args, shots=None, seed=0)  # both swept by the benchmark
    report = bench.sample_efficiency(
        args.base,
        args.data,
        methods=args.methods,
        shots=args.shots,
        seeds=list(range(args.seeds)),
        config=config,
        out_dir=args.out,
        progress=True,
    )
    means = {m: {s: r["mean"] for s, r in rows.items()} for m, rows in report["results"].items()}
    return {"command": "bench sample-efficiency", "out": args.out, "metric": report["metric"], "mean": means}


def cmd_push(args: argparse.Namespace) -> dict:
    from hora.push import push, push_plan

    plan = push_plan(args.adapter_dir, args.repo_id)
    where = push(args.adapter_dir, args.repo_id, private=not args.public, dry_run_dir=args.dry_run)
    return {"command": "push", "repo_id": args.repo_id, "files": plan.files, "to": where}


COMMANDS = {"demo": cmd_demo, "train": cmd_train, "eval": cmd_eval, "bench": cmd_bench, "push": cmd_push}


def main(argv: list[str] | None = None) -> int:
    """Run one command; print its JSON summary as the last line of stdout (main process only)."""
    args = _parser().parse_args(argv)
    world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if world > 1:  # data-parallel processes on one machine share its cores
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    try:
        summary = {"ok": True, **COMMANDS[args.command](args)}
        status = 0
    except (ValueError, FileNotFoundError) as error:  # DataError, HubError, bad settings: say what is wrong
        print(f"error: {error}", file=sys.stderr)
        summary, status = {"ok": False, "command": args.command, "error": str(error)}, 2
    if _is_main_process():
        print(json.dumps(summary, default=str), flush=True)
    return status


__all__ = ["main"]
