"""Command line: ``python -m hora {demo,train,eval,bench,push,docs}``.

    python -m hora demo
    python -m hora train --base runs/vit --data digits.zip --method hora --shots 8 --steps 200 --out runs/hora
    python -m hora eval --base runs/vit --adapter runs/hora --data digits.zip
    python -m hora bench sample-efficiency --base runs/vit --data digits.zip --methods lora,hora --out runs/bench
    python -m hora bench speed --base runs/vit --out runs/speed
    python -m hora bench ops --out runs/ops                        # operator calls per step, HoRA vs LoRA
    python -m hora bench cold-start --runs 3                       # the explorer, as a browser sees it
    python -m hora bench load --users 16 --seconds 120             # the explorer under concurrent users
    python -m hora bench load --adversarial                        # ... and while one client floods fine-tunes
    python -m hora bench serving --json serving.json               # side by side in one batch; a fine-tune's memory
    python -m hora bench step-size --out runs/step-size.json       # how far a step moves each method's update
    python -m hora bench side-by-side --out runs/sbs.json          # N variants in one batch vs one at a time
    python -m hora push runs/hora user/my-hora-adapter          # token from HF_TOKEN
    python -m hora docs [--check]                               # the docs' tables, rendered from their JSON
    accelerate launch --num_processes 2 -m hora train ...      # data-parallel, no code change

Progress bars go to stderr; the last line of stdout is always a JSON summary (``"ok": false`` and an
``"error"`` on failure, with exit status 2).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from hora.cli.bench import BenchFailedError, add_bench_parsers, cmd_bench
from hora.cli.options import add_config_options, add_data_options
from hora.cli.training import cmd_demo, cmd_eval, cmd_push, cmd_train, is_main_process


class UsageError(ValueError):
    """Options the parser refuses: reported like every other failure (one line, a JSON summary), not by exiting."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print the usage and exit without a JSON line
        raise UsageError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m hora", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("demo", help="HoRA's and LoRA's parameter reports on a small ViT built from a config")

    p = sub.add_parser("train", help="fine-tune a base model on a few-shot dataset")
    add_data_options(p)
    add_config_options(p)
    p.add_argument("--out", required=True, help="output folder (written atomically)")

    p = sub.add_parser("eval", help="evaluate a trained adapter (or head / full run) on a dataset")
    p.add_argument("--base", required=True)
    p.add_argument("--adapter", required=True, help="folder written by `train`, or a PEFT adapter folder")
    p.add_argument("--data", required=True)
    p.add_argument("--task", default="auto", choices=["auto", "image", "text", "lm"])
    p.add_argument("--all", action="store_true", help="every example, not the run's held-out split")
    p.add_argument("--batch-size", type=int, default=64)

    add_bench_parsers(sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench", required=True))
    p = sub.add_parser("push", help="upload an adapter folder (with its model card) to the Hugging Face Hub")
    p.add_argument("adapter_dir")
    p.add_argument("repo_id", help="user-or-org/name")
    p.add_argument("--public", action="store_true", help="create the repo public (default: private)")
    p.add_argument("--dry-run", metavar="DIR", help="write the exact repo content to DIR instead of uploading")
    p = sub.add_parser("docs", help="render the docs' benchmark tables from the JSON their benchmarks wrote")
    p.add_argument("--check", action="store_true", help="write nothing; fail if a table differs from its JSON")
    return parser


def cmd_docs(args: argparse.Namespace) -> dict:
    """Render the docs' generated tables from their JSON (``--check``: only say which are stale)."""
    from hora import docs

    stale = [str(p.relative_to(docs.ROOT)) for p in docs.sync(check=args.check)]
    if args.check and stale:
        raise ValueError(f"stale generated tables in {', '.join(stale)}: run `python -m hora docs`")
    return {"command": "docs", "rewritten" if not args.check else "stale": stale}


COMMANDS = {
    "demo": cmd_demo,
    "train": cmd_train,
    "eval": cmd_eval,
    "bench": cmd_bench,
    "push": cmd_push,
    "docs": cmd_docs,
}


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
    if is_main_process():
        print(json.dumps(summary, default=str), flush=True)
    return status


__all__ = ["COMMANDS", "main"]
