"""Renderers of the explorer's own benchmarks: its cold start, serving side by side, a fine-tune's memory and the
load tests (``python -m hora bench cold-start|serving|load ... --json``)."""

from __future__ import annotations

from hora.docs.staleness import ROOT, read_json


def cold_start(_: str) -> str:
    """``python -m hora bench cold-start --runs 3 --first --json ...``: the explorer's start, as a browser sees it."""
    r = read_json(ROOT / "assets" / "bench" / "explorer" / "cold-start.json")
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


EXPLORER = ROOT / "assets" / "bench" / "explorer"


def _machine_line(machine: dict, load_before: float | None, load_after: float | None) -> str:
    where = f"{machine.get('cpus_usable', machine.get('cpus'))} CPU cores ({machine.get('platform', '')})"
    if load_before is None:
        return f"Measured on {where}."
    return f"Measured on {where}; load average {load_before:.2f} before, {load_after:.2f} after."


def serving(_: str) -> str:
    """``python -m hora bench serving --json``: side by side through the API, and a fine-tune's memory left."""
    r = read_json(EXPLORER / "serving.json")
    side, memory = r["side_by_side"], r["finetune_memory"]
    rounds = len(side["seconds"]["alone"])
    tokens = side["tokens_last_round"]
    lines = [
        f"- **Side by side**: `/generate` on {side['base']} with {len(side['models'])} models together "
        f"({', '.join(side['models'])}; {side['max_new_tokens']} new tokens, temperature {side['temperature']}) took "
        f"**{side['ratio']:.2f}×** the base alone (medians of {rounds}: {side['median_seconds']['together']:.2f} s "
        f"and {side['median_seconds']['alone']:.2f} s; the columns wrote {min(tokens.values())}–"
        f"{max(tokens.values())} tokens).",
        f"- **A fine-tune's memory**: a new visitor fine-tuned {' and '.join(memory['methods'])} for {memory['steps']} "
        f"steps each on the bundled sample ({memory['seconds']:.0f} s); the server was "
        f"**{memory['growth_mib']['after_run']:+,.0f} MiB** bigger once the run ended and "
        f"{memory['growth_mib']['after_use']:+,.0f} MiB after that visitor ran its adapters in Compare, its session "
        f"alive throughout (resident {memory['rss_mib']['before']:,.0f} MiB before, "
        f"{memory['rss_mib']['peak']:,.0f} MiB at the run's peak).",
    ]
    return "\n".join(lines) + "\n\n" + _machine_line(r["machine"], r["load_average_before"], r["load_average_after"])


def side_by_side(_: str) -> str:
    """``python -m hora bench side-by-side --out``: batched vs one model alone vs one call per model."""
    from hora import cards as hora_cards

    r = read_json(EXPLORER / "side-by-side.json")
    header = ["case", "variants", "batched", "one model alone", "one call per model", "per model ÷ batched"]
    header.append("batched ÷ alone")
    rows = []
    for case in r["cases"]:
        s = case["seconds"]
        rows.append(
            [
                case["case"],
                ", ".join(case["variants"]),
                f"{s['batched']:.2f} s",
                f"{s['alone']:.2f} s ({case['alone']})",
                f"{s['separate']:.2f} s",
                f"{case['separate_over_batched']:.2f}×",
                f"{case['batched_over_alone']:.2f}×",
            ]
        )
    m = r["machine"]
    same = all(case["outputs_identical"] for case in r["cases"])
    return hora_cards.table(header, rows) + (
        f"\n\nBatched and separate outputs {'identical' if same else 'NOT identical'}; torch {m['torch']}, "
        f"{m['torch_threads']} threads. " + _machine_line(m, m["load_average"][0], r["load_average_after"][0])
    )


def load(_: str) -> str:
    """``python -m hora bench load --json``: concurrent users against the explorer."""
    from hora import cards as hora_cards

    r = read_json(EXPLORER / "load.json")
    header = ["endpoint", "requests", "failed", "p50 s", "p95 s", "max s"]
    rows = [
        [name, s["count"], s["failures"], f"{s['p50_ms'] / 1000:.1f}", f"{s['p95_ms'] / 1000:.1f}"]
        + [f"{s['max_ms'] / 1000:.1f}"]
        for name, s in r["endpoints"].items()
    ]
    mem = r["rss_mib"]
    return hora_cards.table(header, rows) + (
        f"\n\n{r['users']} users ({r['finetune_users']} also fine-tuning, {r['finetune_steps']} steps each run) for "
        f"{r['seconds']:.0f} s: {r['requests']} requests, **{r['failures']} failed**; server memory "
        f"{mem['start']:,.0f} MiB at start, peak {mem['peak']:,.0f} MiB, {mem['end']:,.0f} MiB at the end. "
        + _machine_line(r["machine"], r["load_average_before"], r["load_average_after"])
    )


def adversarial(_: str) -> str:
    """``python -m hora bench load --adversarial --json``: well-behaved users alone, then with a flood of fine-tunes."""
    from hora import cards as hora_cards

    r = read_json(EXPLORER / "adversarial.json")
    header = [
        "phase",
        f"requests served ({r['users']} users, {r['seconds']:.0f} s)",
        "failed",
        "p50 / p95",
        "server peak",
    ]
    rows = [
        [
            name,
            p["served"],
            p["failures"],
            f"{p['p50_ms'] / 1000:.1f} / {p['p95_ms'] / 1000:.1f} s",
            f"{p['rss_peak_mib']:,.0f} MiB",
        ]
        for name, p in r["phases"].items()
    ]
    flood = r["flood"]
    refusal = " ".join(str(flood["first_refusal"]).split()).split("base_name: ")[-1]  # the message, not its wrapper
    return hora_cards.table(header, rows) + (
        f"\n\nThe flooder kept {flood['outstanding']} fine-tunes of {flood['steps']} steps submitted: "
        f"{flood['submitted']} submitted, {flood['refused']} refused at the door, {flood['completed']} completed, "
        f'{flood["cancelled"]} cancelled at the end (the first refusal said: "{refusal}"). The users\' p95 with '
        f"the flood over without: {r['p95_ratio']}. " + _machine_line(r["machine"], None, None)
    )
