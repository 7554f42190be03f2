"""The docs' numbers come from the JSON their benchmark wrote: every generated block is what its JSON renders now,
every benchmark table is a generated block, and a report measured with other settings than today's defaults says so."""

from __future__ import annotations

import json
import re

import pytest

import hora
from hora import docs


def test_every_generated_block_is_what_its_json_renders():
    stale = docs.sync(check=True)
    assert not stale, f"stale tables in {[str(p.relative_to(docs.ROOT)) for p in stale]}: run `python -m hora docs`"


NUMBER = re.compile(r"\d\.\d|\d,\d{3}")


def test_every_table_of_numbers_is_generated():
    """A Markdown table holding measured numbers (decimals, thousands) lies inside a generated block."""
    typed = []
    for path in docs.doc_files():
        text = path.read_text(encoding="utf-8")
        outside = docs.BLOCK.sub("", text)
        for line in outside.splitlines():
            if line.startswith("|") and NUMBER.search(re.sub(r"`[^`]*`", "", line)):  # code (versions, values) aside
                typed.append(f"{path.relative_to(docs.ROOT)}: {line[:80]}")
    assert not typed, "tables typed by hand:\n" + "\n".join(typed)


def test_a_block_that_differs_from_its_json_is_stale():
    block = "<!-- generated: embedded dinov2-small -->\n| typed | by hand |\n<!-- end generated -->"
    fresh = docs.render_blocks(f"before\n{block}\nafter")
    assert fresh.startswith("before\n<!-- generated: embedded dinov2-small -->\n| model |") and "| typed" not in fresh
    assert fresh.endswith("<!-- end generated -->\nafter")
    assert docs.render_blocks(fresh) == fresh
    with pytest.raises(ValueError, match="Unknown generated block 'speedd'"):
        docs.render_blocks("<!-- generated: speedd x -->\n<!-- end generated -->")


def test_a_report_measured_with_an_old_default_says_so():
    today = hora.HoraConfig(r=8).to_dict()  # what a run records
    assert docs.config_notes([("HoRA r8", today, {})]) == []
    before = {**today, "generator_scale": 1.0}
    (note,) = docs.config_notes([("HoRA r8", before, {})])
    assert "`generator_scale` = 1.0" in note and "'unit_step'" in note
    legacy = {k: v for k, v in today.items() if k != "generator_scale"}
    assert "predates the field" in docs.config_notes([("HoRA r8", legacy, {})])[0]
    chosen = {**today, "generate_a": True}  # "HoRA, A and B generated" sets it on purpose: not a stale default
    assert docs.config_notes([("HoRA A+B", chosen, {"generate_a": True})]) == []
    assert "does not record" in docs.config_notes([("HoRA", None, {})])[0]


def test_paired_differences_say_which_is_better_only_when_the_interval_excludes_zero():
    def runs(name, values):
        return [{"method": name, "shots": 8, "seed": s, "value": v} for s, v in enumerate(values)]

    report = {
        "results": {"LoRA r8": {}, "HoRA r8, only B generated (default)": {}, "DoRA r8": {}},
        "shots": [8],
        "higher_is_better": False,  # a loss: negative differences favour A
        "runs": runs("LoRA r8", [4.0, 4.1, 4.2])
        + runs("HoRA r8, only B generated (default)", [4.1, 4.2, 4.31])
        + runs("DoRA r8", [4.1, 4.0, 4.2]),
    }
    rows = {row[0]: row for row in docs.paired_rows(report)}
    hora_row = rows["HoRA r8, only B generated (default) − LoRA r8"]
    assert hora_row[2].startswith("+0.103") and hora_row[3] == "LoRA r8 better"
    assert rows["DoRA r8 − LoRA r8"][3] == "no difference shown"


def test_a_tiny_grid_pairs_each_generated_method_with_its_static_one_by_seed():
    report = json.loads((docs.ROOT / "assets" / "bench" / "lm-shakespeare" / "sample_efficiency.json").read_text())
    block = docs.render_blocks("<!-- generated: tiny-grid lm-shakespeare -->\n<!-- end generated -->")
    paired = {}
    for line in block.split("Paired by seed:")[1].splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 4 and cells[0] in ("HoRA − LoRA", "DoRAN − DoRA"):
            paired[cells[0], int(cells[1])] = cells
    assert len(paired) == 2 * len(report["shots"])
    for (pair, size), (_, _, cell, reading) in paired.items():
        a, b = (name.strip().lower() for name in pair.split("−"))
        by_seed = {
            m: {r["seed"]: r["value"] for r in report["runs"] if r["method"] == m and r["shots"] == size}
            for m in (a, b)
        }
        mean = sum(by_seed[a][s] - by_seed[b][s] for s in by_seed[a]) / len(by_seed[a])
        assert cell.startswith(f"{mean:+.3f}")
        low, high = (float(x) for x in cell.split("[")[1].rstrip("]").split(","))
        # a loss: the interval above zero favours B, below zero favours A
        expected = "no difference shown" if low <= 0 <= high else f"{pair.split(' − ')[1 if low > 0 else 0]} better"
        assert reading == expected


def test_a_sweep_reading_that_sets_a_field_on_purpose_is_not_called_stale():
    sweep = json.loads((docs.ROOT / "assets" / "bench" / "smollm2-135m-instruct" / "lr_sweep.json").read_text())
    assert sweep["readings"]["hora-a-and-b"]["method_args"] == {"generate_a": True}
    block = docs.render_blocks("<!-- generated: lr-sweep smollm2-135m-instruct -->\n<!-- end generated -->")
    assert "hora-a-and-b" in block and "predates" not in block
