"""``python -m hora.assets bench --base smollm2-135m-instruct|dinov2-small``: sample efficiency and a parameter
Pareto front on the real bases, sized for about an hour on a 2-core CPU.

Every method at two training-set sizes with three seeds: LoRA, DoRA and DoRAN at HoRA's rank (r = 8), HoRA in both
readings (only the per-head B generated, the default; A and B generated), and LoRA at the rank whose trainable
parameters match HoRA's default; then, on the vision base (whose runs are cheap enough), LoRA and HoRA at ranks 4 and
16 at the smaller size as well. Each variant trains at the learning rate its own method and reading chose in its
validation sweep on this recipe (``python -m hora.assets sweep``, ``lr_sweep.json``); the engine keeps the weights of
the best validation (``keep_best``). The test set is the one of the base's card (replies of Macbeth and The Tempest;
500 held-out photos), never seen by training, validation or the sweep. The Pareto plot draws the test metric against
trainable parameters at the smaller size for every variant run there (as PEFT's method-comparison Space draws it).
Outputs in ``<assets>/bench/<base>/``: JSON (every run, the grid), PNG figures (with matplotlib), README.md.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from hora import cards as hora_cards
from hora.assets import cards
from hora.assets.common import SWEEP_FILE, evenly, read_sweep
from hora.io import atomic_dir, write_atomic


SEEDS = (0, 1, 2)
A_AND_B, ONLY_B = {"generate_a": True}, {"generate_a": False}  # HoRA's two readings; only B is the default
# A variant's learning rate is that of its method and reading, from that reading's own validation sweep
# (``hora.assets.lr_sweep``) on this benchmark's recipe; other ranks of a reading use the rate swept at rank 8.
READINGS: dict[str, dict[str, Any]] = {
    "lora": {"method": "lora", "r": 8, "match_params": False},
    "hora": {"method": "hora", "r": 8, "match_params": False, "method_args": ONLY_B},
    "hora-a-and-b": {"method": "hora", "r": 8, "match_params": False, "method_args": A_AND_B},
    "dora": {"method": "dora", "r": 8, "match_params": False},
    "doran": {"method": "doran", "r": 8, "match_params": False},
}


def reading(fields: dict[str, Any]) -> str:
    """The sweep reading a variant takes its rate from: its method, and for HoRA whether A is generated."""
    if fields["method"] == "hora" and (fields.get("method_args") or {}).get("generate_a"):
        return "hora-a-and-b"
    return fields["method"]


def variants(budget_rank: int) -> dict[str, dict[str, Any]]:
    """Name -> TrainConfig fields over the base's recipe, for every size. Every rank and reading is explicit: LoRA and
    DoRA at HoRA's rank, and LoRA at the rank whose trainable parameters match HoRA's default (``budget_rank``)."""
    return {
        "LoRA r8": READINGS["lora"],
        "HoRA r8, only B generated (default)": READINGS["hora"],
        "HoRA r8, A and B generated": READINGS["hora-a-and-b"],
        f"LoRA r{budget_rank}, HoRA's budget": {**READINGS["lora"], "r": budget_rank},
        "DoRA r8": READINGS["dora"],
        "DoRAN r8": READINGS["doran"],
    }


PARETO = {  # more ranks, at the smaller training-set size only
    "LoRA r4": {**READINGS["lora"], "r": 4},
    "LoRA r16": {**READINGS["lora"], "r": 16},
    "HoRA r4, only B generated": {**READINGS["hora"], "r": 4},
    "HoRA r16, only B generated": {**READINGS["hora"], "r": 16},
}


def budget_rank(base: str) -> int:
    """The LoRA rank whose trainable parameters are closest to HoRA's default (r = 8, only B generated) on ``base``."""
    from hora.loaders import load_base
    from hora.methods import match_lora_rank, peft_config

    model = load_base(base).model
    return match_lora_rank(model, peft_config("hora", model, r=8, generate_a=False))


def _lm_setup(assets: Path, quick: bool) -> dict[str, Any]:
    from hora.assets import smollm
    from hora.assets.dialogue import VALIDATION_SCENES, chat_documents, load_conversations
    from hora.data import LanguageModelingData
    from hora.loaders import load_base

    tokenizer = load_base(smollm.BASE).processor
    conversations = load_conversations()
    heldout = evenly(conversations.heldout, 48)  # half the card's test: 48 exchanges, ~4.5k reply tokens
    validation = evenly(conversations.validation, smollm.VALIDATION_EXCHANGES)

    def test(model: Any) -> dict[str, float]:
        return {"test_reply_loss": smollm.reply_loss(model, tokenizer, heldout)["loss"]}

    return {
        "data": LanguageModelingData(chat_documents(tokenizer, conversations.train)),
        # the replies of whole scenes training never sees (the engine's own split would score the chat template and
        # prompts of exchanges whose replies reappear as training prompts: it ranked the methods the wrong way round)
        "validate": lambda model: smollm.reply_loss(model, tokenizer, validation),
        "validation_metric": "loss",
        "validation_label": (
            f"reply loss of {len(validation)} exchanges of the next {VALIDATION_SCENES} scenes of the training plays, "
            "which training never sees"
        ),
        # 12 steps (4 x 128 tokens) validated every 4, to fit the CPU: the embedded adapters' validation loss made most
        # of its 40 steps' gain by step 10 (3.41 at step 5, 3.08 at 10, 2.86 at 40), and keep-best guards overfitting
        "recipe": lambda method, lr: replace(smollm.recipe(method, lr, steps=4 if quick else 12), eval_every=4),
        "test": test,
        "reference": ("SmolLM2 itself (no adapter)", lambda: test(load_base(smollm.BASE).model)),
        "shots": (8, 32),
        "shots_label": "training chunks of 128 tokens",
        "metric_label": "test reply loss (nats/token, lower is better), Macbeth and The Tempest",
        "extra": {},
        "readings": READINGS,
        "budget_rank": budget_rank(smollm.BASE),
        "pareto": {},  # a real-LM run costs about 2 minutes here: the six variants are the Pareto plot's points
    }


def _vision_setup(assets: Path, quick: bool) -> dict[str, Any]:
    from hora.assets import dino
    from hora.assets.fashion import load_fashion_splits

    splits = load_fashion_splits()
    test_data = dino.heldout_data(splits)
    return {
        "data": dino.pool_data(splits),
        "recipe": lambda method, lr: dino.recipe(method, lr, steps=4 if quick else 30),
        "test": lambda model: {"test_accuracy": dino.test_metrics(model, test_data)["accuracy"]},
        "shots": (2, 8),
        "shots_label": "shots per class",
        "metric_label": "test accuracy on 500 held-out photos (chance 0.10)",
        "extra": {"Head only (linear probe)": {"method": "head"}},  # the reference: a backbone has no head of its own
        "readings": {"head": {"method": "head"}, **READINGS},
        "budget_rank": budget_rank(dino.BASE),
        "validate": None,  # the engine's own: few-shot-pool photos not drawn as shots (whole photos, never trained on)
        "validation_metric": "accuracy",
        "validation_label": "accuracy on few-shot-pool photos not drawn as training shots (10 per class)",
        "pareto": PARETO,
    }


SETUPS = {"smollm2-135m-instruct": _lm_setup, "dinov2-small": _vision_setup}


def run_real_bench(
    assets: str | Path,
    base: str,
    *,
    quick: bool = False,
    only: list[str] | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """The grid on ``base`` (or only the variants named in ``only``); writes ``<assets>/bench/<base>/`` and refreshes
    the manifest.

    Every finished variant is kept in ``<assets>/.runs-bench-<base>/`` until the whole grid's report is written, so an
    interrupted run resumes where it stopped (a variant is reused only if its settings are the same).
    """
    from hora import bench

    assets = Path(assets)
    setup = SETUPS[base](assets, quick)
    known = [name for group_variants, _ in grid(setup) for name in group_variants]
    unknown = sorted(set(only or []) - set(known))
    if unknown:
        raise ValueError(f"Unknown variant(s) {unknown} for {base}; choose from {known}.")
    lrs = read_sweep(assets, base)["chosen"]  # each reading's rate from its own validation sweep
    seeds = SEEDS[:2] if quick else SEEDS
    reference = None
    if setup.get("reference"):  # the base's own test metric, on the same test set, next to every adapter's
        name, measure = setup["reference"]
        reference = {"name": name, "value": next(iter(measure().values()))}
        log(f"bench {base}: {name}: {reference['value']:.4f}")
    finished = assets / f".runs-bench-{base}"
    finished.mkdir(parents=True, exist_ok=True)
    reports, seconds = [], 0.0
    for group, (group_variants, shots) in enumerate(grid(setup)):
        for index, (name, fields) in enumerate(group_variants.items()):
            if only and name not in only:
                continue
            config = setup["recipe"](fields["method"], lrs[reading(fields)])
            settings = json.loads(json.dumps([name, fields, shots, seeds, asdict(config)], default=str))
            saved = finished / f"{group}-{index:02d}.json"
            if saved.is_file() and (kept := json.loads(saved.read_text()))["settings"] == settings:
                log(f"bench {base}: {name} done before, reused")
                reports.append(kept["report"])
                seconds += kept["seconds"]
                continue
            log(f"bench {base}: {name}, sizes {list(shots)}, seeds {list(seeds)}, lr {config.lr:g}")
            started = time.perf_counter()
            report = bench.sample_efficiency(
                base,
                setup["data"],
                variants={name: fields},
                shots=shots,
                seeds=seeds,
                config=config,
                test=setup["test"],
                validate=setup["validate"],
            )
            elapsed = time.perf_counter() - started
            write_atomic(saved, json.dumps({"settings": settings, "report": report, "seconds": elapsed}))
            reports.append(report)
            seconds += elapsed
    report = {**_merge(reports, base, setup, quick, seconds), "reference": reference, "learning_rates": lrs}
    _write(assets / "bench" / base, report)
    cards.refresh_manifest(assets, **{f"bench_seconds_{base}": report["wall_seconds"]})
    if not only:
        shutil.rmtree(finished)
    log(f"bench {base}: done in {report['wall_seconds'] / 60:.1f} min\n{table(report)}")
    return report


def grid(setup: dict[str, Any]) -> list[tuple[dict[str, dict], tuple[int, ...]]]:
    """(variants, training-set sizes) pairs: every variant at every size, then the extra ranks at the smaller size."""
    every_size = {**setup["extra"], **variants(setup["budget_rank"])}
    return [(every_size, tuple(setup["shots"])), (setup["pareto"], tuple(setup["shots"][:1]))]


def _merge(reports: list[dict], base: str, setup: dict, quick: bool, seconds: float) -> dict:
    first = reports[0]
    return {
        "benchmark": "sample_efficiency_and_pareto",
        "base_model": base,
        "metric": first["metric"],
        "metric_label": setup["metric_label"],
        "shots_label": setup["shots_label"],
        "higher_is_better": first["higher_is_better"],
        "confidence": 0.95,
        "interval": "t-distribution over seeds",
        "seeds": first["seeds"],
        "shots": list(setup["shots"]),
        "variants": {name: fields for r in reports for name, fields in r["variants"].items()},
        "config": {r["methods"][0]: r["config"] for r in reports},
        "results": {name: rows for r in reports for name, rows in r["results"].items()},
        "params": {r["methods"][0]: r["runs"][0]["trainable_params"] for r in reports},
        "runs": [run for r in reports for run in r["runs"]],
        "validation_metric": setup["validation_metric"],
        "validation_label": setup["validation_label"],
        "wall_seconds": round(seconds, 1),
        "quick": quick,
    }


def validation_means(report: dict) -> dict[str, dict[str, float]]:
    """Variant -> size -> mean validation metric of the weights kept (the runs' ``final``), beside the test's."""
    metric, out = report["validation_metric"], {}
    for run in report["runs"]:
        out.setdefault(run["method"], {}).setdefault(str(run["shots"]), []).append(run["final"][metric])
    return {name: {k: sum(v) / len(v) for k, v in sizes.items()} for name, sizes in out.items()}


def rank_agreement(report: dict) -> dict[str, float]:
    """Size -> Spearman's rank correlation of the variants' mean validation and mean test metrics (1: both rank the
    variants alike). The check before trusting a validation sweep: a split that ranks methods unlike the test misleads
    every choice made on it."""
    valid = validation_means(report)
    out = {}
    for k in map(str, report["shots"]):
        names = [n for n, rows in report["results"].items() if k in rows and k in valid.get(n, {})]
        if len(names) < 3:
            continue
        ranks = [_ranks([valid[n][k] for n in names]), _ranks([report["results"][n][k]["mean"] for n in names])]
        n = len(names)
        out[k] = 1 - 6 * sum((a - b) ** 2 for a, b in zip(*ranks)) / (n * (n * n - 1))
    return out


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    for rank, index in enumerate(order):
        ranks[index] = float(rank)
    return ranks


def table(report: dict) -> str:
    """Mean [95% CI] of the test metric per variant and training-set size."""
    header = ["variant", "trainable params"] + [f"{k} {report['shots_label']}" for k in report["shots"]]
    rows = []
    if report.get("reference"):
        reference = report["reference"]
        rows.append([reference["name"], "0", *[f"{reference['value']:.3f}" for _ in report["shots"]]])
    for name, results in report["results"].items():
        cells = [
            f"{results[str(k)]['mean']:.3f} [{results[str(k)]['ci_low']:.3f}, {results[str(k)]['ci_high']:.3f}]"
            if str(k) in results
            else "-"
            for k in report["shots"]
        ]
        rows.append([name, f"{report['params'][name]:,}", *cells])
    return hora_cards.table(header, rows)


def _write(folder: Path, report: dict) -> None:
    with atomic_dir(folder) as tmp:
        if (folder / SWEEP_FILE).is_file():  # the sweep the rates came from stays beside the grid
            shutil.copy2(folder / SWEEP_FILE, tmp / SWEEP_FILE)
        (tmp / "sample_efficiency.json").write_text(json.dumps(report, indent=1) + "\n")
        pngs = _figures(report, tmp)
        better = "higher" if report["higher_is_better"] else "lower"
        images = "\n".join(f"![{p.stem}]({p.name})" for p in pngs)
        agreement = ", ".join(f"{rho:+.2f} at {k}" for k, rho in rank_agreement(report).items())
        (tmp / "README.md").write_text(
            f"# Sample efficiency and Pareto front on `{report['base_model']}`\n\n"
            f"{__doc__.split(chr(10) + chr(10))[1]}\n\nCells: mean {report['metric_label']} ({better} is better) "
            f"[95% interval over seeds {report['seeds']}].\n\n{table(report)}\n\n{images}\n\n"
            f"Validation ({report['validation_label']}) and test rank the variants alike to Spearman's "
            f"rho {agreement or 'n/a'} ({report['shots_label']}).\n\n"
            f"Wall time: {report['wall_seconds'] / 60:.0f} minutes on a shared 2-core CPU.\n",
            encoding="utf-8",
        )


def families(report: dict) -> dict[str, list[str]]:
    """Variants grouped by method and reading (HoRA with only B generated is its own), for the Pareto plot."""
    groups: dict[str, list[str]] = {}
    for name, fields in report["variants"].items():
        family = name if fields["method"] == "head" else name.split()[0].rstrip(",")
        reading = (fields.get("method_args") or {}).get("generate_a")
        if fields["method"] == "hora":
            family += ", A and B generated" if reading else ", only B generated (default)"
        groups.setdefault(family, []).append(name)
    return groups


def _rank_label(name: str) -> str:
    rank = re.search(r"\br\d+\b", name)
    return rank.group() if rank else ""


def _reference_line(ax: Any, report: dict) -> None:
    if report.get("reference"):
        ax.axhline(report["reference"]["value"], color="grey", linestyle="--", label=report["reference"]["name"])


def _figures(report: dict, folder: Path) -> list[Path]:
    """Sample efficiency (metric against size) and the Pareto plot (metric against trainable parameters)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    out = []
    fig, ax = plt.subplots(figsize=(7, 4.4), dpi=110)
    for name, results in report["results"].items():
        sizes = [k for k in report["shots"] if str(k) in results]
        if len(sizes) < 2:
            continue
        rows = [results[str(k)] for k in sizes]
        ax.errorbar(
            sizes,
            [r["mean"] for r in rows],
            yerr=[[r["mean"] - r["ci_low"] for r in rows], [r["ci_high"] - r["mean"] for r in rows]],
            label=name,
            marker="o",
            capsize=3,
        )
    _reference_line(ax, report)
    ax.set_xscale("log")
    ax.set_xticks(report["shots"], [str(k) for k in report["shots"]])
    ax.minorticks_off()
    ax.set_xlabel(report["shots_label"])
    ax.set_ylabel(report["metric_label"], fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "sample_efficiency.png")
    out.append(folder / "sample_efficiency.png")
    plt.close(fig)

    size = str(report["shots"][0])
    fig, ax = plt.subplots(figsize=(7, 4.4), dpi=110)
    for family, names in families(report).items():  # one colour and one line per method, its ranks as points
        points = sorted((report["params"][n], report["results"][n][size], n) for n in names)
        ax.errorbar(
            [x for x, _, _ in points],
            [r["mean"] for _, r, _ in points],
            yerr=[[r["mean"] - r["ci_low"] for _, r, _ in points], [r["ci_high"] - r["mean"] for _, r, _ in points]],
            marker="o",
            capsize=3,
            label=family,
        )
        for x, r, name in points:
            ax.annotate(_rank_label(name), (x, r["mean"]), textcoords="offset points", xytext=(4, 3), fontsize=6)
    _reference_line(ax, report)
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel(report["metric_label"], fontsize=8)
    ax.set_title(f"{size} {report['shots_label']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "pareto.png")
    out.append(folder / "pareto.png")
    plt.close(fig)
    return out


__all__ = ["PARETO", "SEEDS", "families", "grid", "run_real_bench", "table", "variants"]
