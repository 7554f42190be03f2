"""Numbers in the docs that cannot go stale: every benchmark table in ``README.md`` and ``docs/*.md`` is rendered from
the JSON its benchmark command wrote (committed beside it, under ``assets/bench/``), between two markers::

    <!-- generated: real-grid smollm2-135m-instruct -->
    | variant | ... |
    <!-- end generated -->

``python -m hora docs`` rewrites every such block from its JSON; ``python -m hora docs --check`` (and
``tests/test_docs.py``) fails when a block differs from what its JSON renders. A table whose JSON was measured with
settings that are no longer the defaults says so under the table, automatically: each report records the PEFT
configuration its adapters ran with, and ``config_notes`` compares it with today's defaults.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(
    r"(<!-- generated: (?P<name>[\w-]+)(?: (?P<arg>[^ ]+?))? -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S
)
DOCS = ("README.md", "docs/*.md")


def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} is missing.")
    return json.loads(path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------------------------
# Staleness: what a report ran with against today's defaults


def _defaults(peft_type: str) -> dict[str, Any]:
    from hora import DoranConfig, HoraConfig

    cls = {"HORA": HoraConfig, "DORAN": DoranConfig}.get(peft_type.upper())
    if cls is None:
        return {}
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


WATCHED = ("generator_scale", "generate_a", "hyper_hidden", "share_qv", "seed_std", "tau_init", "init_weights")
"""The fields of HoRA's and DoRAN's configs whose value changes what a benchmark measures."""


def config_notes(runs: Iterable[tuple[str, dict | None, dict]]) -> list[str]:
    """Sentences saying where a report's adapters ran with other settings than today's defaults.

    ``runs`` are (variant name, the PEFT config it recorded or None, the fields its variant set on purpose). A field
    the variant set on purpose (``generate_a`` of "HoRA, A and B generated") is not a stale default.
    """
    notes: dict[str, None] = {}
    for name, config, chosen in runs:
        if config is None:
            notes[
                "This report does not record its adapters' configurations, so whether it ran with today's "
                "defaults cannot be checked: regenerate it."
            ] = None
            continue
        defaults = _defaults(str(config.get("peft_type", "")))
        for field in WATCHED:
            if field not in defaults or field in chosen:
                continue
            recorded = config.get(field, "absent (it predates the field)")
            if recorded != defaults[field]:
                notes[
                    f"{name} ran with `{field}` = {recorded!r}; the default is now {defaults[field]!r}: the row "
                    "predates that change."
                ] = None
    return list(notes)


def _grid_runs(report: dict) -> Iterable[tuple[str, dict | None, dict]]:
    variants = report.get("variants") or {}
    for run in report["runs"]:
        fields = variants.get(run["method"], {})
        if fields.get("method", run.get("peft_method", run["method"])) not in ("hora", "doran"):
            continue
        yield run["method"], run.get("peft_config"), {**fields.get("method_args", {}), **fields}


def _with_notes(table: str, notes: list[str]) -> str:
    return table + "".join(f"\n\n*{note}*" for note in notes)


# ---------------------------------------------------------------------------------------------------------------
# Renderers: name -> function(argument) -> Markdown


def _real_grid(base: str) -> str:
    from hora.assets.real_bench import table

    report = _json(ROOT / "assets" / "bench" / base / "sample_efficiency.json")
    return _with_notes(table(report), config_notes(_grid_runs(report)))


PAIRS = (  # the comparisons the papers' claims are about, A minus B on the same seeds (the same shots for both)
    ("HoRA r8, only B generated (default)", "LoRA r8"),
    ("HoRA r8, only B generated (default)", "LoRA r{budget}, HoRA's budget"),
    ("HoRA r8, A and B generated", "LoRA r8"),
    ("DoRA r8", "LoRA r8"),
    ("DoRAN r8", "DoRA r8"),
)


def paired_rows(report: dict) -> list[list[str]]:
    """Rows of A − B per training-set size: mean [95% interval] over seeds and what it says (which is better, or no
    difference shown when the interval covers 0). The sign reads as the metric: for a loss, negative favours A."""
    from hora.bench.stats import paired_difference

    names = list(report["results"])
    budget = next((n for n in names if n.endswith("HoRA's budget")), "")
    rows = []
    for a, b in PAIRS:
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
                f"{a.split(',')[0]} better"
                if favours_a
                else f"{b.split(',')[0]} better"
                if favours_b
                else "no difference shown"
            )
            cell = f"{diff['mean']:+.3f} [{diff['ci_low']:+.3f}, {diff['ci_high']:+.3f}]"
            rows.append([f"{a} − {b}", str(k), cell, verdict])
    return rows


def _paired(base: str) -> str:
    from hora import cards as hora_cards

    report = _json(ROOT / "assets" / "bench" / base / "sample_efficiency.json")
    header = [
        "A − B",
        report["shots_label"],
        f"mean difference [95% interval], {len(report['seeds'])} seeds",
        "reading",
    ]
    return hora_cards.table(header, paired_rows(report))


def _agreement(base: str) -> str:
    from hora.assets.real_bench import rank_agreement

    report = _json(ROOT / "assets" / "bench" / base / "sample_efficiency.json")
    rho = ", ".join(f"{value:+.2f} at {k} {report['shots_label']}" for k, value in rank_agreement(report).items())
    return (
        f"Validation ({report['validation_label']}) and test rank the variants alike to Spearman's rho {rho} "
        "(1: the same order)."
    )


def _lr_sweep(base: str) -> str:
    from hora.assets.lr_sweep import table

    report = _json(ROOT / "assets" / "bench" / base / "lr_sweep.json")
    runs = [(name, config, report["readings"][name]) for name, config in report["peft_configs"].items()]
    return _with_notes(
        table(report), config_notes(r for r in runs if r[1] and r[1].get("peft_type") in ("HORA", "DORAN"))
    )


def _tiny_grid(base: str) -> str:
    from hora.assets.bench import markdown_table

    report = _json(ROOT / "assets" / "bench" / base / "sample_efficiency.json")
    runs = ((r["method"], r.get("peft_config"), {}) for r in report["runs"] if r["method"] in ("hora", "doran"))
    return _with_notes(markdown_table(report), config_notes(runs))


def _embedded(base: str) -> str:
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
    return _with_notes(hora_cards.table(header, rows), config_notes(runs))


_METHOD_ORDER = ["head", "lora", "hora", "dora", "doran"]

PARAM_ROWS = (  # (label, method, extra config fields): the parameter table of docs/methods.md
    ("LoRA r=8", "lora", {}),
    ("HoRA r=8, p=16 (default: only B generated)", "hora", {}),
    ("HoRA r=8, p=16, `generate_a=True`", "hora", {"generate_a": True}),
    ("HoRA r=8, p=8, `generate_a=True`", "hora", {"generate_a": True, "hyper_hidden": 8}),
    ("DoRA r=8", "dora", {}),
    ("DoRAN r=8, p=16", "doran", {}),
    ("DoRAN r=8, p=16, `share_across_layers=True`", "doran", {"share_across_layers": True}),
)


def _param_counts(model_name: str) -> str:
    """Trainable adapter parameters of each method on a reference model built from its config on the meta device (no
    weights: the count is exact and costs nothing), query and value adapted."""
    import torch

    from hora import cards as hora_cards
    from hora.bench.speed import reference_model
    from hora.methods import adapter_param_count, peft_config

    with torch.device("meta"):
        model, _ = reference_model(model_name)
    counts = [
        (name, adapter_param_count(model, peft_config(method, model, r=8, **fields)))
        for name, method, fields in PARAM_ROWS
    ]
    lora = counts[0][1]
    rows = [[name, f"{n:,}", f"{n / lora:.2f}"] for name, n in counts]
    return hora_cards.table(["adapter (query + value)", "trainable parameters", "vs LoRA"], rows)


def _conformance(_: str) -> str:
    """PEFT's own test suite run for HoRA and DoRAN with LoRA as the control (``python -m tests.peft_conformance``)."""
    from hora import cards as hora_cards

    report = _json(ROOT / "assets" / "bench" / "peft_conformance.json")
    header = ["method", "tests run", "passed", "skipped", "failed", "not applicable", "held to LoRA"]
    header.append("fail where LoRA passes")
    rows = []
    for method, c in report["counts"].items():
        skipped = c.get("skipped", 0) + c.get("xfailed", 0)
        cells = [c.get("run", 0), c.get("passed", 0), skipped, c.get("failed", 0)]
        if method == "LoRA":
            rows.append(["LoRA (control)", *cells, "—", "—", "—"])
        else:
            rows.append([method, *cells, c.get("not applicable", 0), c.get("compared", 0), c.get("regressions", 0)])
    classes = ", ".join(f"`{c}`" for c in report["test_classes"])
    lines = [
        f"PEFT {report['peft']}, `{report['test_file']}` ({classes}), run {report['date']} in {report['seconds']} s:"
    ]
    lines += ["", hora_cards.table(header, rows), "", "Not applicable (run, but not compared with LoRA):", ""]
    lines += [f"- `{name}`: {reason}" for name, reason in report["not_applicable"].items()]
    return "\n".join(lines)


def _answers(base: str) -> str:
    """The base's and its adapters' precomputed greedy answers to the Compare tab's prompts (its ``asset.json``)."""
    from hora import cards as hora_cards
    from hora.assets.common import read_metadata

    generations = read_metadata(ROOT / "assets" / base)["generations"]
    names = list(generations["outputs"])

    def cell(text: str) -> str:
        text = " ".join(text.split()).replace("|", "\\|")
        return text if len(text) <= 110 else text[:107].rsplit(" ", 1)[0] + " …"

    rows = [
        [prompt, *(cell(generations["outputs"][n][i]) for n in names)]
        for i, prompt in enumerate(generations["prompts"])
    ]
    return hora_cards.table(["prompt", *names], rows)


def _quant_transfer(name: str) -> str:
    from hora.bench.quant_transfer import markdown_table

    report = _json(ROOT / "assets" / "bench" / "quant-transfer" / f"{name}.json")
    configs = report.get("peft_configs") or {m: None for m in report["methods"]}
    runs = [(m, c, {}) for m, c in configs.items() if m in ("hora", "doran")]
    return _with_notes(markdown_table(report), config_notes(runs))


def _cold_start(_: str) -> str:
    """``python -m hora bench cold-start --runs 3 --first --json ...``: the explorer's start, as a browser sees it."""
    r = _json(ROOT / "assets" / "bench" / "explorer" / "cold-start.json")
    runs = r["runs"]
    spread = f"{min(x['page_usable_s'] for x in runs):.1f}–{max(x['page_usable_s'] for x in runs):.1f} s"
    lines = [
        f"- **Page usable** in {r['median_page_usable_s']:.1f} s (median of {len(runs)} starts, {spread}); HTTP answers "
        f"at {r['median_http_ready_s']:.1f} s; every model in memory at {r['median_all_models_loaded_s']:.1f} s.",
    ]
    if "median_imports_s" in r:
        lines.append(
            f"- Before HTTP: importing gradio, torch, transformers and peft {r['median_imports_s']:.1f} s, registering "
            f"the models {r['median_models_s']:.1f} s, building the page {r['median_page_built_s']:.1f} s."
        )
    lines.append(f"- **Memory at rest**, every model loaded: {r['median_rss_at_rest_mib']:,.0f} MiB resident.")
    if r.get("first_start"):
        lines.append(
            f"- **First-ever start** (empty cache: both packaged bases converted, every first paint drawn): page usable "
            f"in {r['first_start']['page_usable_s']:.1f} s."
        )
    cpus = r["machine"]["cpus"]
    return "\n".join(lines) + f"\n\nMeasured on {cpus} CPU cores ({r['machine']['platform']})."


def _ops(_: str) -> str:
    """Operator calls of one training forward and backward per method (``python -m hora bench ops``)."""
    from hora import cards as hora_cards
    from hora.bench.speed import REFERENCE_MODELS

    report = _json(ROOT / "assets" / "bench" / "ops" / "ops.json")
    header = ["model", *[f"{m} calls" for m in ("LoRA", "DoRA", "HoRA", "DoRAN")], "HoRA × LoRA", "DoRAN × DoRA"]
    rows = []
    for model, result in report["results"].items():
        counts, ratios = result["counts"], result["ratios"]
        cells = [f"{counts[m]:,}" for m in ("lora", "dora", "hora", "doran")]
        bounds = [f"{ratios[m]['ratio']:.2f} (bound {ratios[m]['bound']:.2f})" for m in ("hora", "doran")]
        rows.append([REFERENCE_MODELS.get(model, model), *cells, *bounds])
    settings = report["settings"]
    return hora_cards.table(header, rows) + (
        f"\n\nBatch {settings['batch_size']} ({settings['seq_len']} tokens for the language model), r = {settings['r']}, "
        f"p = {settings['hyper_hidden']}; torch {report['torch']} on a CPU, counted with torch's profiler."
    )


def _speed(model: str) -> str:
    """Training step and memory against LoRA's, on a CPU and on a GPU side by side (``python -m hora bench speed``):
    ``assets/bench/speed/{cpu,h200}-<model>.json``, whichever were measured."""
    from hora import cards as hora_cards

    folder = ROOT / "assets" / "bench" / "speed"
    reports = {kind: _json(path) for kind in ("cpu", "h200") if (path := folder / f"{kind}-{model}.json").is_file()}
    if not reports:
        raise FileNotFoundError(f"no speed report for {model} under {folder}")
    header, columns = ["method", "trainable params"], []
    for kind, report in reports.items():
        s = report["settings"]
        batch = f"{s['batch_size']} × {s['seq_len']} tokens" if s.get("seq_len") else f"{s['batch_size']} images"
        where = "H200" if kind == "h200" else "CPU"
        header += [f"{where} step ms ({batch}, {report['precision']})", f"{where} × LoRA", f"{where} memory × LoRA"]
        columns.append(report)
    methods = list(dict.fromkeys(m for r in columns for m in r["train"]))
    rows = []
    for method in methods:
        params = next(r["train"][method]["trainable_params"] for r in columns if method in r["train"])
        row = [method.replace("+compile", " (torch.compile)"), f"{params:,}"]
        for report in columns:
            if method not in report["train"]:
                row += ["—", "—", "—"]
                continue
            ratios = report["ratios_to_lora"][method]
            compiled = report.get("ratios_to_compiled_lora", {}).get(method)
            versus = f"{ratios['step_time']:.2f}" + (
                f" ({compiled['step_time']:.2f} × compiled LoRA)" if compiled else ""
            )
            row += [f"{report['train'][method]['step_seconds'] * 1000:,.1f}", versus, f"{ratios['memory']:.2f}"]
        rows.append(row)
    runs = [
        (f"{method} ({kind})", row.get("peft_config"), {})
        for kind, report in reports.items()
        for method, row in report["train"].items()
        if method.split("+")[0] in ("hora", "doran")
    ]
    machines = "; ".join(
        f"{'H200' if k == 'h200' else 'CPU'}: {r.get('device_name', r['device'])}, torch threads {r['settings'].get('torch_threads')}"
        for k, r in reports.items()
    )
    return _with_notes(hora_cards.table(header, rows) + f"\n\n{machines}.", config_notes(runs))


def _step_size(_: str) -> str:
    from hora.bench.step_size import step_size_table

    return step_size_table(_json(ROOT / "assets" / "bench" / "step_size.json"))


RENDERERS: dict[str, Callable[[str], str]] = {
    "real-grid": _real_grid,
    "paired": _paired,
    "agreement": _agreement,
    "lr-sweep": _lr_sweep,
    "tiny-grid": _tiny_grid,
    "embedded": _embedded,
    "param-count": _param_counts,
    "step-size": _step_size,
    "conformance": _conformance,
    "answers": _answers,
    "quant-transfer": _quant_transfer,
    "cold-start": _cold_start,
    "ops": _ops,
    "speed": _speed,
}


# ---------------------------------------------------------------------------------------------------------------
# Files


def doc_files(root: Path = ROOT) -> list[Path]:
    """The README and every page under docs/."""
    return [p for pattern in DOCS for p in sorted(root.glob(pattern))]


def render_blocks(text: str) -> str:
    """``text`` with every generated block rendered afresh from its JSON."""

    def replace(match: re.Match) -> str:
        name, arg = match["name"], match["arg"] or ""
        if name not in RENDERERS:
            raise ValueError(f"Unknown generated block {name!r}; known: {', '.join(sorted(RENDERERS))}.")
        return f"{match.group(1)}{RENDERERS[name](arg).rstrip()}\n{match.group(5)}"

    return BLOCK.sub(replace, text)


def sync(root: Path = ROOT, check: bool = False) -> list[Path]:
    """Render every doc file's generated blocks; the files whose blocks were stale (rewritten unless ``check``)."""
    stale = []
    for path in doc_files(root):
        text = path.read_text(encoding="utf-8")
        fresh = render_blocks(text)
        if fresh != text:
            stale.append(path)
            if not check:
                path.write_text(fresh, encoding="utf-8")
    return stale


__all__ = ["BLOCK", "RENDERERS", "WATCHED", "config_notes", "doc_files", "render_blocks", "sync"]
