"""The real bases' benchmark grid (hora.assets.real_bench): every variant trains what its name says."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest

from hora.assets import dino, smollm
from hora.assets.lr_sweep import RATES, choose
from hora.assets.real_bench import PARETO, READINGS, grid, reading, variants


VARIANTS = variants(budget_rank=10)


@pytest.mark.parametrize("recipe", [smollm.recipe, dino.recipe], ids=["smollm2", "dinov2"])
@pytest.mark.parametrize("name", [*VARIANTS, *PARETO])
def test_every_variant_trains_what_its_name_says(recipe, name):
    fields = {**VARIANTS, **PARETO}[name]
    config = replace(recipe(fields["method"], 1e-3), **fields)
    # the recipes match LoRA's and DoRA's budget to HoRA's; every variant here names its rank instead
    assert not config.match_params
    assert config.method == name.split()[0].rstrip(",").lower()
    assert int(re.search(r"\br(\d+)\b", name).group(1)) == config.r
    assert config.method not in ("hora", "doran") or config.hyper_hidden >= config.r  # a generator needs p >= r
    reading = (config.method_args or {}).get("generate_a")
    if config.method == "hora":  # both readings named, neither left to the default
        assert reading is ("A and B" in name) and reading is not ("only B" in name)


def test_every_variant_takes_the_rate_of_its_own_reading():
    assert {reading(fields) for fields in {**VARIANTS, **PARETO}.values()} == set(READINGS)
    assert reading(VARIANTS["HoRA r8, A and B generated"]) == "hora-a-and-b"
    assert reading(VARIANTS["HoRA r8, only B generated (default)"]) == "hora"
    assert reading(VARIANTS["LoRA r10, HoRA's budget"]) == "lora"


def test_the_sweep_spans_the_issue_range_and_ties_go_to_the_lower_rate():
    assert len(RATES) >= 5 and min(RATES) == 3e-4 and max(RATES) == 1e-2
    assert choose({"0.001": 0.5, "0.003": 0.5, "0.0003": 0.4}, higher=True) == 1e-3
    assert choose({"0.001": 4.2, "0.003": 4.1}, higher=False) == 3e-3


def test_the_budget_rank_matches_hora_defaults_parameters():
    """LoRA at HoRA's budget: the rank whose trainable parameters are closest to HoRA's default (r = 8, only B)."""
    from hora.assets.real_bench import budget_rank
    from hora.loaders import load_base
    from hora.methods import adapter_param_count, peft_config

    model = load_base("vit-digits").model
    rank = budget_rank("vit-digits")
    target = adapter_param_count(model, peft_config("hora", model, r=8, generate_a=False))
    counts = {r: adapter_param_count(model, peft_config("lora", model, r=r)) for r in (rank - 1, rank, rank + 1)}
    assert min(counts, key=lambda r: abs(counts[r] - target)) == rank and rank > 8


def test_the_grid_runs_every_variant_at_every_size_and_extra_ranks_at_the_smaller():
    setup = {"extra": {"Head only": {"method": "head"}}, "budget_rank": 10, "pareto": PARETO, "shots": (2, 8)}
    (main, sizes), (extra, extra_sizes) = grid(setup)
    assert list(main) == ["Head only", *VARIANTS] and sizes == (2, 8)
    assert extra == PARETO and extra_sizes == (2,)
    assert not set(main) & set(extra)


@pytest.fixture
def fake_grid(tmp_path, monkeypatch):
    """A real-bench grid on a made-up base whose runs are recorded, not trained: the resume logic alone."""
    from hora import bench
    from hora.assets import cards, real_bench

    sweep = tmp_path / "bench" / "dinov2-small" / "lr_sweep.json"
    sweep.parent.mkdir(parents=True)
    sweep.write_text(json.dumps({"chosen": {name: 1e-3 for name in ("head", *READINGS)}}))
    setup = {
        "data": None,
        "recipe": lambda method, lr: dino.recipe(method, lr, steps=1),
        "test": None,
        "shots": (2, 8),
        "shots_label": "shots per class",
        "metric_label": "accuracy",
        "extra": {},
        "budget_rank": 10,
        "pareto": {},
        "validate": None,
        "validation_metric": "accuracy",
        "validation_label": "made-up validation",
        "reference": ("The base itself", lambda: {"accuracy": 0.25}),
    }
    monkeypatch.setitem(real_bench.SETUPS, "dinov2-small", lambda assets, quick: setup)
    monkeypatch.setattr(cards, "refresh_manifest", lambda root, **facts: None)
    calls = []

    def sample_efficiency(base, data, *, variants, shots, seeds, config, test, validate):
        (name,) = variants
        if calls and calls[-1] == "fail here":
            raise KeyboardInterrupt
        calls.append(name)
        validation = {"accuracy": 0.1 * len(calls)}
        runs = [{"trainable_params": 10 * len(calls), "method": name, "shots": k, "final": validation} for k in shots]
        mean = 0.05 * len(calls)  # test and validation rank the variants alike
        results = {name: {str(k): {"mean": mean, "ci_low": mean - 0.1, "ci_high": mean + 0.1} for k in shots}}
        report = {"metric": "accuracy", "higher_is_better": True, "seeds": list(seeds), "methods": [name]}
        return {**report, "variants": variants, "config": {}, "results": results, "runs": runs}

    monkeypatch.setattr(bench, "sample_efficiency", sample_efficiency)
    return tmp_path, calls


def test_an_interrupted_grid_resumes_where_it_stopped(fake_grid):
    from hora.assets.real_bench import run_real_bench

    assets, calls = fake_grid
    names = list(VARIANTS)
    calls.extend(["fail here"])  # the first run is interrupted at once: nothing is kept
    with pytest.raises(KeyboardInterrupt):
        run_real_bench(assets, "dinov2-small", log=lambda m: None)
    calls.clear()
    run_real_bench(assets, "dinov2-small", only=names[1:3], log=lambda m: None)  # two variants, kept
    assert calls == names[1:3]
    assert (assets / ".runs-bench-dinov2-small").is_dir()
    calls.clear()
    report = run_real_bench(assets, "dinov2-small", log=lambda m: None)  # the rest; the two are reused
    assert calls == names[:1] + names[3:]
    assert list(report["results"]) == names
    assert not (assets / ".runs-bench-dinov2-small").exists()  # the whole grid is written: nothing left to resume
    assert report["reference"] == {"name": "The base itself", "value": 0.25}
    written = (assets / "bench" / "dinov2-small" / "README.md").read_text()
    assert "| The base itself | 0 | 0.250 | 0.250 |" in written
    assert "rank the variants alike to Spearman's rho +1.00 at 2, +1.00 at 8" in written


def test_the_grid_refuses_to_run_without_a_sweep(fake_grid):
    from hora.assets.real_bench import run_real_bench

    assets, calls = fake_grid
    (assets / "bench" / "dinov2-small" / "lr_sweep.json").unlink()
    with pytest.raises(FileNotFoundError, match="python -m hora.assets sweep --base dinov2-small"):
        run_real_bench(assets, "dinov2-small", log=lambda m: None)
    assert calls == []


def test_unknown_variants_are_refused_by_name(fake_grid):
    from hora.assets.real_bench import run_real_bench

    assets, calls = fake_grid
    with pytest.raises(ValueError, match="Unknown variant.*'LoRA r9'"):
        run_real_bench(assets, "dinov2-small", only=["LoRA r9"], log=lambda m: None)
    assert calls == []
