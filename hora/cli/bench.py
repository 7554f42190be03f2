"""``python -m hora bench ...``: one subcommand per benchmark, its options and how it runs.

Each benchmark's module does the measuring; this module only parses and dispatches. A benchmark whose module
declares its own options (``hora.bench.commands``: speed and ops; ``load``, ``serving``, ``side_by_side``) adds them
itself.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from hora.cli.options import add_config_options, add_data_options, csv_list, int_list, train_config


def add_bench_parsers(bench: Any) -> None:
    """``python -m hora bench ...``: one subcommand per benchmark."""
    p = bench.add_parser("sample-efficiency", help="held-out metric vs shots, seeds and methods, with 95%% CIs")
    add_data_options(p)
    add_config_options(p, skip=("method", "shots", "seed"))  # swept by the benchmark
    p.add_argument("--methods", type=csv_list, default=["lora", "hora"])
    p.add_argument("--shots", type=int_list, default=[1, 2, 4, 8, 16])
    p.add_argument("--seeds", type=int, default=5, help="number of seeds (0 .. N-1)")
    p.add_argument("--out", required=True)
    from hora.bench import commands

    commands.add_parsers(bench)  # speed, ops
    p = bench.add_parser(
        "cold-start", help="the explorer started in a fresh process until headless Chromium can use it"
    )
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--first", action="store_true", help="also a first-ever start: empty cache, bases converted")
    p.add_argument("--json", default=None, help="also write the report to this JSON file (what the docs render)")
    p = bench.add_parser(
        "quant-transfer", help="adapters trained on 4-bit-rounded weights, evaluated on the original ones and back"
    )
    p.add_argument("--base", default="lm-shakespeare", help="a Llama-like base: embedded or packaged name, folder")
    p.add_argument("--data", default=None, help="a text file to adapt to (default: the Folio Hamlet sample)")
    p.add_argument("--methods", type=csv_list, default=["lora", "hora"])
    p.add_argument("--seeds", type=int_list, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--linear", default="Q4_1", help="GGML type of the linear weights' round trip")
    p.add_argument("--embedding", default="Q8_0", help="GGML type of the embedding's round trip, or none")
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--out", default=None, help="keep the quantised base and the runs here")
    p.add_argument("--json", default=None, help="also write the report to this JSON file (what the docs render)")
    p = bench.add_parser("step-size", help="how far 1 and 5 AdamW steps move each method's update at the same rate")
    p.add_argument("--out", required=True, help="the JSON report to write")
    p = bench.add_parser("variants", help="several adapters of one base: shared module trees vs one swapped model")
    p.add_argument("--base", required=True, help="a base (embedded or packaged name, folder or Hub repo)")
    p.add_argument(
        "--adapters", type=csv_list, required=True, help="one PEFT type, comma-separated (a name may repeat)"
    )
    p.add_argument("--rounds", type=int, default=10)
    from hora.bench import load, serving, side_by_side

    for module in (load, serving, side_by_side):  # each registers its own options and its run_cli
        module.add_parser(bench)


def _stderr_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class BenchFailedError(Exception):
    """A benchmark that ran but measured a failure (requests that failed): its report still goes out."""

    def __init__(self, message: str, report: dict) -> None:
        super().__init__(message)
        self.report = report


def _write_json(path: str | None, report: dict) -> None:
    """A benchmark's report as a JSON file, when asked (``--json``): what ``python -m hora docs`` renders."""
    if path:
        from hora.io import write_atomic

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(report, indent=1, default=str) + "\n")


def cmd_bench(args: argparse.Namespace) -> dict:
    from hora import bench

    if args.bench == "cold-start":
        from hora.bench import coldstart

        report = coldstart.run(args.runs, args.first, log=_stderr_line)
        _write_json(args.json, report)
        return {"command": "bench cold-start", **report}
    if args.bench == "quant-transfer":
        from hora.bench import quant_transfer

        keys = ("methods", "seeds", "steps", "linear", "context", "batch_size", "lr")
        embedding = None if args.embedding.lower() == "none" else args.embedding
        options = {k: getattr(args, k) for k in keys} | {"embedding": embedding, "out_dir": args.out}
        report = quant_transfer.measure(args.base, args.data, **options, log=_stderr_line)
        _write_json(args.json, {"base_model": args.base, **options, **report})
        return {"command": "bench quant-transfer", **report}
    if hasattr(args, "run_cli"):  # a benchmark that parses and runs itself (load, serving, side-by-side)
        report = args.run_cli(args, log=_stderr_line)
        if report.get("failures"):
            raise BenchFailedError(f"{report['failures']} requests failed", report)
        return report
    if args.bench == "step-size":
        from hora.bench import step_size
        from hora.io import write_atomic

        report = step_size.step_size()
        write_atomic(args.out, json.dumps(report, indent=1) + "\n")
        print(step_size.step_size_table(report), file=sys.stderr)
        return {"command": "bench step-size", "out": args.out, "ratios": report["ratios"]}
    if args.bench == "variants":
        from hora.bench import variants

        report = variants.compare_sharing(args.base, args.adapters, rounds=args.rounds)
        return {"command": "bench variants", **report}
    if args.bench in ("speed", "ops"):
        from hora.bench import commands

        return commands.run(args)
    config = train_config(args, shots=None, seed=0)  # both swept by the benchmark
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


__all__ = ["BenchFailedError", "add_bench_parsers", "cmd_bench"]
