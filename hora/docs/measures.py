"""Renderers of what the methods cost: parameter counts, PEFT conformance, the packaged bases' answers, the
quantisation transfer, the step size, operator counts and training speed."""

from __future__ import annotations

from hora.docs.staleness import ROOT, config_notes, read_json, with_notes


PARAM_ROWS = (  # (label, method, extra config fields): the parameter table of docs/methods.md
    ("LoRA r=8", "lora", {}),
    ("HoRA r=8, p=16 (default: only B generated)", "hora", {}),
    ("HoRA r=8, p=16, `generate_a=True`", "hora", {"generate_a": True}),
    ("HoRA r=8, p=8, `generate_a=True`", "hora", {"generate_a": True, "hyper_hidden": 8}),
    ("DoRA r=8", "dora", {}),
    ("DoRAN r=8, p=16", "doran", {}),
    ("DoRAN r=8, p=16, `share_across_layers=True`", "doran", {"share_across_layers": True}),
)


def param_counts(model_name: str) -> str:
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


def conformance(_: str) -> str:
    """PEFT's own test suite run for HoRA and DoRAN with LoRA as the control (``python -m tests.peft_conformance``)."""
    from hora import cards as hora_cards

    report = read_json(ROOT / "assets" / "bench" / "peft_conformance.json")
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


def answers(base: str) -> str:
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


def quant_transfer(name: str) -> str:
    from hora.bench.quant_transfer import markdown_table

    report = read_json(ROOT / "assets" / "bench" / "quant-transfer" / f"{name}.json")
    configs = report.get("peft_configs") or {m: None for m in report["methods"]}
    runs = [(m, c, {}) for m, c in configs.items() if m in ("hora", "doran")]
    return with_notes(markdown_table(report), config_notes(runs))


def ops(_: str) -> str:
    """Operator calls of one training forward and backward per method (``python -m hora bench ops``)."""
    from hora import cards as hora_cards
    from hora.bench.speed import REFERENCE_MODELS

    report = read_json(ROOT / "assets" / "bench" / "ops" / "ops.json")
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


def speed(model: str) -> str:
    """Training step and memory against LoRA's, on a CPU and on a GPU side by side (``python -m hora bench speed``):
    ``assets/bench/speed/{cpu,h200}-<model>.json``, whichever were measured."""
    from hora import cards as hora_cards

    folder = ROOT / "assets" / "bench" / "speed"
    reports = {
        kind: read_json(path) for kind in ("cpu", "h200") if (path := folder / f"{kind}-{model}.json").is_file()
    }
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
    machines = "; ".join(  # the two columns measure memory differently: say how, beside each machine
        f"{'H200' if k == 'h200' else 'CPU'}: "
        + (f"{r['device_name']}, " if r.get("device_name", r["device"]) != r["device"] else "")
        + f"torch threads {r['settings'].get('torch_threads')}, memory is the {r['memory_kind']}"
        for k, r in reports.items()
    )
    return with_notes(hora_cards.table(header, rows) + f"\n\n{machines}.", config_notes(runs))


def step_size(_: str) -> str:
    from hora.bench.step_size import step_size_table

    return step_size_table(read_json(ROOT / "assets" / "bench" / "step_size.json"))
