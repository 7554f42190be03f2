"""``python -m hora.assets sweep --base smollm2-135m-instruct|dinov2-small``: every method's learning rate from its own
validation sweep, on the recipe the real-base benchmark runs.

Each reading of ``hora.assets.real_bench.READINGS`` (LoRA, HoRA with only B generated, HoRA with A and B generated,
DoRA, DoRAN; the vision base's linear probe too) trains at every rate of ``RATES`` (3e-4 to 1e-2), at the benchmark's
smaller training-set size, with the seeds ``SEEDS``. A run's score is the validation metric of the weights the
engine keeps (``keep_best``); a rate's score is the mean over seeds, and each reading takes its best rate (ties: the
lower rate). Validation never touches the test set: the replies of whole unseen scenes for the language base, unseen
pool photos for the vision base. Output: ``<assets>/bench/<base>/lr_sweep.json`` (every run, the scores, the choice),
which ``python -m hora.assets bench`` and the embedded adapters' build read.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from hora import cards as hora_cards
from hora.assets.common import SWEEP_FILE, read_sweep
from hora.io import write_atomic


RATES = (3e-4, 1e-3, 2e-3, 4e-3, 1e-2)
SEEDS = (0, 1)


def readings(setup: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Reading name -> TrainConfig fields: what the base's benchmark trains (the vision probe, the low-rank ones)."""
    return setup["readings"]


def sweep_setup(assets: Path, base: str, quick: bool) -> dict[str, Any]:
    """The benchmark setup of ``base``: a real base's (``hora.assets.real_bench``) or a tiny one's
    (``hora.assets.bench``)."""
    from hora.assets import bench
    from hora.assets.real_bench import SETUPS

    if base in SETUPS:
        return SETUPS[base](assets, quick)
    if base in bench.SPECS:
        return bench.sweep_setup(assets, base, quick)
    raise ValueError(f"No benchmark for {base!r}; choose one of {sorted({*SETUPS, *bench.SPECS})}.")


def run_sweep(
    assets: str | Path,
    base: str,
    *,
    quick: bool = False,
    only: list[str] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Sweep every reading (or those named in ``only``, keeping the others' earlier results); write ``lr_sweep.json``.

    Each finished (reading, rate) is kept in ``<assets>/.runs-sweep-<base>/`` until the sweep is written, so an
    interrupted sweep resumes where it stopped.
    """
    assets = Path(assets)
    setup = sweep_setup(assets, base, quick)
    every = readings(setup)
    unknown = sorted(set(only or []) - set(every))
    if unknown:
        raise ValueError(f"Unknown reading(s) {unknown} for {base}; choose from {sorted(every)}.")
    seeds = setup.get("sweep_seeds", SEEDS)  # a tiny base validates on its benchmark's pool: other seeds, other splits
    rates, seeds, size = (RATES[:2], seeds[:1], setup["shots"][0]) if quick else (RATES, seeds, setup["shots"][0])
    earlier = read_sweep(assets, base, required=False) if only else None
    finished = assets / f".runs-sweep-{base}"
    finished.mkdir(parents=True, exist_ok=True)
    runs, configs, seconds = [], {}, 0.0
    for name, fields in every.items():
        if only and name not in only:
            runs += [r for r in (earlier or {}).get("runs", []) if r["reading"] == name]
            configs[name] = (earlier or {}).get("peft_configs", {}).get(name)
            continue
        for lr in rates:
            config = replace(setup["recipe"](fields["method"], lr), **fields, shots=setup.get("sweep_size", size))
            done, config_record = _sweep_point(base, setup, name, config, seeds, finished, log)
            runs += done
            configs[name] = config_record
            seconds += sum(r["seconds"] for r in done)
    report = _report(base, setup, every, rates, seeds, size, runs, configs, seconds, quick)
    write_atomic(assets / "bench" / base / SWEEP_FILE, json.dumps(report, indent=1) + "\n")
    if not only:
        for path in finished.glob("*.json"):
            path.unlink()
        finished.rmdir()
    log(f"sweep {base}: chosen {report['chosen']}\n{table(report)}")
    return report


def _sweep_point(base, setup, name, config, seeds, finished: Path, log) -> tuple[list[dict], dict | None]:
    """One reading at one rate, every seed (reused when an interrupted sweep finished it with the same settings)."""
    from hora.train import train

    settings = json.loads(json.dumps([name, seeds, asdict(config)], default=str))
    saved = finished / f"{name}-{config.lr:g}.json"
    if saved.is_file() and (kept := json.loads(saved.read_text()))["settings"] == settings:
        log(f"sweep {base}: {name} lr {config.lr:g} done before, reused")
        return kept["runs"], kept["peft_config"]
    done, peft_config = [], None
    for seed in seeds:
        started = time.perf_counter()
        result = train(base, setup["data"], replace(config, seed=seed), validate=setup["validate"])
        metric = result.task.metric
        done.append(
            {
                "reading": name,
                "lr": config.lr,
                "seed": seed,
                "validation": result.best[metric],
                "kept_step": result.metrics["kept_step"],
                "stopped": result.stopped,
                "trainable_params": result.metrics["method_info"]["trainable_params"],
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
        peft_config = result.metrics["method_info"]["peft_config"]
        log(f"sweep {base}: {name} lr {config.lr:g} seed {seed}: validation {metric} {result.best[metric]:.4f}")
    write_atomic(saved, json.dumps({"settings": settings, "runs": done, "peft_config": peft_config}))
    return done, peft_config


def _report(base, setup, every, rates, seeds, size, runs, configs, seconds, quick) -> dict[str, Any]:
    metric = setup["validation_metric"]
    higher = metric == "accuracy"
    scores = {
        name: {
            f"{lr:g}": statistics.fmean(r["validation"] for r in runs if r["reading"] == name and r["lr"] == lr)
            for lr in sorted({r["lr"] for r in runs if r["reading"] == name})
        }
        for name in every
    }
    chosen = {name: choose(by_rate, higher) for name, by_rate in scores.items() if by_rate}
    recipe = asdict(setup["recipe"]("lora", rates[0]))
    return {
        "benchmark": "lr_sweep",
        "base_model": base,
        "metric": f"validation {metric}",
        "higher_is_better": higher,
        "validation": setup["validation_label"],
        "size": setup.get("sweep_size", size),
        "shots_label": setup["shots_label"],
        "rates": list(rates),
        "seeds": list(seeds),
        "recipe": {k: v for k, v in recipe.items() if k not in ("method", "lr", "seed", "shots", "r", "match_params")},
        "readings": every,
        "peft_configs": configs,
        "scores": scores,
        "chosen": chosen,
        "runs": runs,
        "wall_seconds": round(seconds, 1),
        "quick": quick,
    }


def choose(by_rate: dict[str, float], higher: bool) -> float:
    """The best rate by mean validation score; ties go to the lower rate."""
    return min((float(lr) for lr in by_rate), key=lambda lr: ((-1 if higher else 1) * by_rate[f"{lr:g}"], lr))


def table(report: dict[str, Any]) -> str:
    """Mean validation score per reading and rate; the chosen rate in bold."""
    header = ["reading", *[f"lr {lr:g}" for lr in report["rates"]]]
    rows = []
    for name, by_rate in report["scores"].items():
        cells = []
        for lr in report["rates"]:
            value = by_rate.get(f"{lr:g}")
            text = "-" if value is None else f"{value:.4f}"
            cells.append(f"**{text}**" if report["chosen"].get(name) == lr else text)
        rows.append([name, *cells])
    return hora_cards.table(header, rows)


__all__ = ["RATES", "SEEDS", "choose", "readings", "run_sweep", "sweep_setup", "table"]
