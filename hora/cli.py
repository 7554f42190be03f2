"""Command line: ``python -m hora {demo,train,eval,bench}``.

    python -m hora demo
    python -m hora train --base runs/vit --data digits.zip --method hora --shots 8 --steps 200 --out runs/hora
    python -m hora eval --base runs/vit --adapter runs/hora --data digits.zip
    python -m hora bench sample-efficiency --base runs/vit --data digits.zip --methods lora,hora --out runs/bench
    python -m hora bench speed --base runs/vit --out runs/speed
    python -m hora bench cold-start --runs 3                       # the explorer, as a browser sees it
    python -m hora bench load --users 16 --seconds 120             # the explorer under concurrent users
    python -m hora bench load --adversarial                        # ... and while one client floods fine-tunes
    python -m hora bench serving --json serving.json               # side by side in one batch; a fine-tune's memory
    python -m hora push runs/hora user/my-hora-adapter          # token from HF_TOKEN
    accelerate launch --num_processes 2 -m hora train ...      # data-parallel, no code change

Progress bars go to stderr; the last line of stdout is always a JSON summary (``"ok": false`` and an
``"error"`` on failure, with exit status 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import threading
import typing
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


def _optional(parse: Any, zero_is_none: bool) -> Any:
    """A parser for an ``X | None`` field: "none" (and 0 where the field says so) is None."""

    def parse_optional(text: str) -> Any:
        if text.strip().lower() == "none":
            return None
        value = parse(text)
        return None if zero_is_none and value == 0 else value

    return parse_optional


def _add_config_options(p: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One option per ``TrainConfig`` field (but ``skip``), with the field's type, default and help."""
    from hora.config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        if f.name in skip:
            continue
        meta, hint = f.metadata, hints[f.name]
        flags = [meta.get("flag") or f"--{f.name.replace('_', '-')}"]
        if f"--{f.name.replace('_', '-')}" not in flags:
            flags.append(f"--{f.name.replace('_', '-')}")  # the field's own name works too
        default = getattr(defaults, f.name)
        kw: dict[str, Any] = {
            "dest": f.name,
            "default": default,
            "help": f"{meta.get('help', '')} (default: %(default)s)",
        }
        if hint is not bool and hint != (bool | None):
            kw["metavar"] = f.name.upper()
        args = typing.get_args(hint)
        if typing.get_origin(hint) is typing.Literal:
            kw["choices"] = list(args)
        elif "choices" in meta:
            kw["choices"] = list(meta["choices"])
        elif hint is bool or hint == (bool | None):
            kw["action"] = argparse.BooleanOptionalAction
        elif f.name == "method_args":
            kw.update(type=_method_arg, action="append", default=[], metavar="KEY=VALUE", help=meta["help"])
        elif f.name == "target_modules":
            kw["type"] = _csv
        else:
            base = next(t for t in (int, float, str) if t is hint or t in args)
            kw["type"] = _optional(base, meta.get("zero_is_none", False)) if type(None) in args else base
        p.add_argument(*flags, **kw)


def _train_config(args: argparse.Namespace, **fixed: Any):
    """The ``TrainConfig`` the options say, with ``fixed`` fields (a benchmark's swept ones) set as given."""
    from hora.config import TrainConfig

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    values["method_args"] = dict(values.get("method_args") or [])
    return TrainConfig(**{**values, **fixed})


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--base", required=True, help="base model: a folder (config.json + safetensors), embedded name or Hub repo"
    )
    p.add_argument("--data", required=True, help="dataset: class-folder zip/folder, csv, jsonl or txt")


class UsageError(ValueError):
    """Options the parser refuses: reported like every other failure (one line, a JSON summary), not by exiting."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print the usage and exit without a JSON line
        raise UsageError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def _add_bench_parsers(bench: Any) -> None:
    """``python -m hora bench ...``: one subcommand per benchmark."""
    p = bench.add_parser("sample-efficiency", help="held-out metric vs shots, seeds and methods, with 95%% CIs")
    _add_data_options(p)
    _add_config_options(p, skip=("method", "shots", "seed"))  # swept by the benchmark
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
    p = bench.add_parser(
        "cold-start", help="the explorer started in a fresh process until headless Chromium can use it"
    )
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--first", action="store_true", help="also a first-ever start: empty cache, bases converted")
    p = bench.add_parser(
        "quant-transfer", help="adapters trained on 4-bit-rounded weights, evaluated on the original ones and back"
    )
    p.add_argument("--base", default="lm-shakespeare", help="a Llama-like base: embedded or packaged name, folder")
    p.add_argument("--data", default=None, help="a text file to adapt to (default: the Folio Hamlet sample)")
    p.add_argument("--methods", type=_csv, default=["lora", "hora"])
    p.add_argument("--seeds", type=_ints, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--linear", default="Q4_1", help="GGML type of the linear weights' round trip")
    p.add_argument("--embedding", default="Q8_0", help="GGML type of the embedding's round trip, or none")
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--out", default=None, help="keep the quantised base and the runs here")
    p = bench.add_parser("variants", help="several adapters of one base: shared module trees vs one swapped model")
    p.add_argument("--base", required=True, help="a base (embedded or packaged name, folder or Hub repo)")
    p.add_argument("--adapters", type=_csv, required=True, help="one PEFT type, comma-separated (a name may repeat)")
    p.add_argument("--rounds", type=int, default=10)
    from hora.bench import load, serving, side_by_side

    for module in (load, serving, side_by_side):  # each registers its own options and its run_cli
        module.add_parser(bench)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m hora", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("demo", help="HoRA's and LoRA's parameter reports on a small ViT built from a config")

    p = sub.add_parser("train", help="fine-tune a base model on a few-shot dataset")
    _add_data_options(p)
    _add_config_options(p)
    p.add_argument("--out", required=True, help="output folder (written atomically)")

    p = sub.add_parser("eval", help="evaluate a trained adapter (or head / full run) on a dataset")
    p.add_argument("--base", required=True)
    p.add_argument("--adapter", required=True, help="folder written by `train`, or a PEFT adapter folder")
    p.add_argument("--data", required=True)
    p.add_argument("--task", default="auto", choices=["auto", "image", "text", "lm"])
    p.add_argument("--all", action="store_true", help="every example, not the run's held-out split")
    p.add_argument("--batch-size", type=int, default=64)

    _add_bench_parsers(sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench", required=True))
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


def _stderr_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cmd_bench(args: argparse.Namespace) -> dict:
    from hora import bench

    if args.bench == "cold-start":
        from hora.bench import coldstart

        report = coldstart.run(args.runs, args.first, log=_stderr_line)
        return {"command": "bench cold-start", **report}
    if args.bench == "quant-transfer":
        from hora.bench import quant_transfer

        keys = ("methods", "seeds", "steps", "linear", "context", "batch_size", "lr")
        embedding = None if args.embedding.lower() == "none" else args.embedding
        options = {k: getattr(args, k) for k in keys} | {"embedding": embedding, "out_dir": args.out}
        report = quant_transfer.measure(args.base, args.data, **options, log=_stderr_line)
        return {"command": "bench quant-transfer", **report}
    if hasattr(args, "run_cli"):  # a benchmark that parses and runs itself (load, serving, side-by-side)
        report = args.run_cli(args, log=_stderr_line)
        if report.get("failures"):
            raise BenchFailedError(f"{report['failures']} requests failed", report)
        return report
    if args.bench == "variants":
        from hora.bench import variants

        report = variants.compare_sharing(args.base, args.adapters, rounds=args.rounds)
        return {"command": "bench variants", **report}
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


class BenchFailedError(Exception):
    """A benchmark that ran but measured a failure (requests that failed): its report still goes out."""

    def __init__(self, message: str, report: dict) -> None:
        super().__init__(message)
        self.report = report


COMMANDS = {"demo": cmd_demo, "train": cmd_train, "eval": cmd_eval, "bench": cmd_bench, "push": cmd_push}


def _failure(error: BaseException) -> tuple[str, int]:
    """The one-line message and exit status of a failure: what went wrong, never a traceback.

    2: the input was refused (``DataError``, ``HubError``, ``AdapterError``, bad options, a file that cannot be
    read); 130: interrupted; 1: anything else, named by its type (a bug to report).
    """
    if isinstance(error, KeyboardInterrupt):
        return "interrupted (Ctrl-C); nothing was saved from the step in progress", 130
    if isinstance(error, MemoryError):
        return "out of memory: use a smaller model, batch or dataset", 1
    if isinstance(error, FileNotFoundError) and error.filename:
        return f"{error.filename} does not exist", 2
    if isinstance(error, (ValueError, OSError)):  # hora's refusals are ValueErrors; OSError: a file, the network
        return str(error) or type(error).__name__, 2
    if type(error).__name__ == "SafetensorError":  # safetensors' own error type is no ValueError
        return f"a safetensors file is damaged or not a safetensors file ({error})", 2
    return f"{type(error).__name__}: {error}", 1


def main(argv: list[str] | None = None) -> int:
    """Run one command; print its JSON summary as the last line of stdout (main process only).

    Every failure, whatever raised it, ends the same way: one ``error: ...`` line on stderr, a non-zero exit and
    a JSON summary with ``"ok": false``.
    """
    command = None
    try:
        args = _parser().parse_args(argv)
        command = args.command
        world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        if world > 1:  # data-parallel processes on one machine share its cores
            import torch

            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
        summary = {"ok": True, **COMMANDS[args.command](args)}
        status = 0
    except BenchFailedError as failure:
        summary, status = {"ok": False, **failure.report, "error": str(failure)}, 1
    except (Exception, KeyboardInterrupt) as error:  # DataError, HubError, bad settings, damaged files, bugs
        message, status = _failure(error)
        print(f"error: {' '.join(message.split())}", file=sys.stderr)
        summary = {"ok": False, "command": command, "error": message}
    if _is_main_process():
        print(json.dumps(summary, default=str), flush=True)
    return status


__all__ = ["main"]
