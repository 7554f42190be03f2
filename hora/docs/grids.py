"""Renderers of the sample-efficiency grids, their learning-rate sweeps and the embedded adapters: name(argument) ->
Markdown, each from the JSON its command wrote under ``assets/``."""

from __future__ import annotations

from collections.abc import Callable

from hora.docs.staleness import ROOT, config_notes, grid_runs, read_json, with_notes


def real_grid(base: str) -> str:
    from hora.assets.real_bench import table

    report = read_json(ROOT / "assets" / "bench" / base / "sample_efficiency.json")
    return with_notes(table(report), config_notes(grid_runs(report)))


PAIRS = (  # the comparisons the papers' claims are about, A minus B on the same seeds (the same shots for both)
    ("HoRA r8, only B generated (default)", "LoRA r8"),
    ("HoRA r8, only B generated (default)", "LoRA r{budget}, HoRA's budget"),
    ("HoRA r8, A and B generated", "LoRA r8"),
    ("DoRA r8", "LoRA r8"),
    ("DoRAN r8", "DoRA r8"),
)


def paired_rows(
    report: dict, pairs: tuple[tuple[str, str], ...] = PAIRS, shown: Callable[[str], str] = str
) -> list[list[str]]:
    """Rows of A − B per training-set size: mean [95% interval] over seeds and what it says (which is better, or no
    difference shown when the interval covers 0). The sign reads as the metric: for a loss, negative favours A.
    ``shown`` names a variant on the page (a method id as its label)."""
    from hora.bench.stats import paired_difference

    names = list(report["results"])
    budget = next((n for n in names if n.endswith("HoRA's budget")), "")
    rows = []
    for a, b in pairs:
        b = budget if "{budget}" in b else b
        if a not in names or b not in names:
            continue
        for k in report["shots"]:
            values = {
                name: {r["seed"]: r["value"] for r in report["runs"] if r["method"] == name and r["shots"] == k}
                for name in (a, b)
            }
            if not values[a] or not values[b]:
                continue
            diff = paired_difference(values[a], values[b])
            favours_a = diff["ci_low"] > 0 if report["higher_is_better"] else diff["ci_high"] < 0
            favours_b = diff["ci_high"] < 0 if report["higher_is_better"] else diff["ci_low"] > 0
            verdict = (
                f"{shown(a).split(',')[0]} better"
                if favours_a
                else f"{shown(b).split(',')[0]} better"
                if favours_b
                else "no difference shown"
            )
            cell = f"{diff['mean']:+.3f} [{diff['ci_low']:+.3f}, {diff['ci_high']:+.3f}]"
            rows.append([f"{shown(a)} − {shown(b)}", str(k), cell, verdict])
    return rows


def paired(base: str) -> str:
    from hora import cards as hora_cards

    report = read_json(ROOT / "assets" / "bench" / base / "sample_efficiency.json")
    header = [
        "A − B",
        report["shots_label"],
        f"mean difference [95% interval], {len(report['seeds'])} seeds",
        "reading",
    ]
    return hora_cards.table(header, paired_rows(report))


def agreement(base: str) -> str:
    from hora.assets.real_bench import rank_agreement

    report = read_json(ROOT / "assets" / "bench" / base / "sample_efficiency.json")
    rho = ", ".join(f"{value:+.2f} at {k} {report['shots_label']}" for k, value in rank_agreement(report).items())
    return (
        f"Validation ({report['validation_label']}) and test rank the variants alike to Spearman's rho {rho} "
        "(1: the same order)."
    )


def lr_sweep(base: str) -> str:
    from hora.assets.lr_sweep import table

    report = read_json(ROOT / "assets" / "bench" / base / "lr_sweep.json")
    runs = [(name, config, report["readings"][name]) for name, config in report["peft_configs"].items()]
    return with_notes(
        table(report), config_notes(r for r in runs if r[1] and r[1].get("peft_type") in ("HORA", "DORAN"))
    )


TINY_PAIRS = (("hora", "lora"), ("doran", "dora"))  # each generated method against its static counterpart


def tiny_grid(base: str) -> str:
    """A tiny base's grid, then HoRA − LoRA and DoRAN − DoRA paired by seed (each seed draws the same chunks or
    shots for every method), so a loss is read off the same kind of interval as the real bases' headline."""
    from hora import cards as hora_cards
    from hora.assets.bench import SPECS, markdown_table
    from hora.methods import label

    report = read_json(ROOT / "assets" / "bench" / base / "sample_efficiency.json")
    runs = ((r["method"], r.get("peft_config"), {}) for r in report["runs"] if r["method"] in ("hora", "doran"))
    rows = paired_rows(report, TINY_PAIRS, shown=label)
    header = [
        "A − B",
        SPECS[report["base_model"]].shots_label,
        f"mean difference [95% interval], {len(report['seeds'])} seeds",
        "reading",
    ]
    paired_table = hora_cards.table(header, rows)
    return with_notes(markdown_table(report) + "\n\nPaired by seed:\n\n" + paired_table, config_notes(runs))


def embedded(base: str) -> str:
    """The embedded adapters of a base: rank, trainable parameters, learning rate and the card's held-out metric."""
    from hora import cards as hora_cards
    from hora.assets.common import read_metadata
    from hora.methods import label

    folder = ROOT / "assets" / base
    base_info = read_metadata(folder)
    loss = base_info.get("kind") == "lm"
    header = ["model", "rank", "trainable parameters", "learning rate"]
    header.append("held-out reply loss (nats/token, lower is better)" if loss else "held-out accuracy (chance 0.10)")
    rows = [["base", "—", "0", "—", f"{base_info['metrics']['loss']:.3f}"]] if loss else []
    runs = []
    for adapter in sorted((folder / "adapters").iterdir(), key=lambda p: _METHOD_ORDER.index(p.name)):
        info = read_metadata(adapter)
        config = info["method_info"].get("peft_config") or {}
        metric = f"{info['metrics']['loss']:.3f}" if loss else f"{info['metrics']['accuracy']:.3f}"
        name = "linear probe (head-only)" if info["method"] == "head" else label(info["method"])
        rows.append([name, config.get("r", "—"), f"{info['trainable_parameters']:,}", f"{info['lr']:g}", metric])
        if info["method"] in ("hora", "doran"):
            runs.append((label(info["method"]), config, {}))
    return with_notes(hora_cards.table(header, rows), config_notes(runs))


_METHOD_ORDER = ["head", "lora", "hora", "dora", "doran"]


HEADLINE_PAIRS = (PAIRS[0], PAIRS[1], PAIRS[4])  # HoRA against LoRA at its rank and at its budget; DoRAN against DoRA
REAL_BASES = {"dinov2-small": "DINOv2-small", "smollm2-135m-instruct": "SmolLM2-135M-Instruct"}


def headline(_: str) -> str:
    """The README's answer: on each real base, HoRA's default minus LoRA (at HoRA's rank and at its parameter budget)
    and DoRAN minus DoRA, paired by seed, at every training-set size."""
    from hora import cards as hora_cards

    rows, seeds = [], set()
    for base, label in REAL_BASES.items():
        report = read_json(ROOT / "assets" / "bench" / base / "sample_efficiency.json")
        seeds.add(len(report["seeds"]))
        for i, (pair, size, cell, verdict) in enumerate(paired_rows(report, HEADLINE_PAIRS)):
            where = f"**{label}**: {report['metric_label']}" if i == 0 else ""
            rows.append([where, pair, f"{size} {report['shots_label']}", cell, verdict])
    verdicts = [row[-1] for row in rows if row[1].startswith("HoRA")]
    wins = sum(v.startswith("HoRA") for v in verdicts)
    losses = sum(v.startswith("LoRA") for v in verdicts)
    sentence = (
        f"In {len(verdicts)} paired comparisons of HoRA's default with LoRA, HoRA is better in {wins}, worse in "
        f"{losses}, and no difference is shown in {len(verdicts) - wins - losses}."
    )
    header = ["base: test metric", "A − B", "training set", f"mean difference [95% interval], {max(seeds)} seeds"]
    return sentence + "\n\n" + hora_cards.table([*header, "reading"], rows)
