"""The ``python -m hora bench speed`` and ``bench ops`` subcommands: their options and what they run.

``hora.cli`` adds these parsers to its ``bench`` command and hands the parsed options to ``run``; they live here, with
the benchmarks they drive, so that the CLI's own module stays short.

    python -m hora bench speed --base config:vit-b16 --batch-size 32 --compile lora,hora --out runs/speed-vit
    python -m hora bench ops --base config:vit-b16,config:smollm-135m --out runs/ops
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def add_parsers(bench: Any) -> None:
    """Add ``speed`` and ``ops`` to the ``bench`` subparsers."""
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
    p.add_argument(
        "--compile",
        type=_csv,
        default=[],
        metavar="METHODS",
        help="also time these methods' training step through torch.compile, e.g. lora,hora (rows <method>+compile)",
    )
    p.add_argument("--out", required=True)
    p = bench.add_parser("ops", help="operator calls per training step: HoRA vs LoRA, DoRAN vs DoRA (CPU profiler)")
    p.add_argument("--base", type=_csv, default=["config:vit-b16", "config:smollm-135m"], help="comma-separated")
    p.add_argument("--methods", type=_csv, default=["lora", "dora", "hora", "doran"])
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--seq-len", type=int, default=128, help="LM bases: tokens per sequence")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--hyper-hidden", type=int, default=16)
    p.add_argument("--out", default=None, help="write ops.json here")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run ``bench speed`` or ``bench ops``; the tables go to stderr, the summary is returned."""
    from hora import bench

    settings = {"r": args.rank, "hyper_hidden": args.hyper_hidden, "out_dir": args.out}
    if args.bench == "ops":
        report = bench.ops(
            args.base, methods=args.methods, batch_size=args.batch_size, seq_len=args.seq_len, **settings
        )
        print(bench.ops_table(report), file=sys.stderr)
        ratios = {base: result["ratios"] for base, result in report["results"].items()}
        return {"command": "bench ops", "out": args.out, "ratios": ratios}
    report = bench.speed(
        args.base,
        methods=args.methods,
        steps=args.steps,
        warmup=args.warmup,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        match_params=args.match_params,
        device=args.device,
        compile=args.compile,
        **settings,
    )
    print(bench.speed_table(report), file=sys.stderr)
    return {"command": "bench speed", "out": args.out, "ratios_to_lora": report["ratios_to_lora"]}


__all__ = ["add_parsers", "run"]
