"""The real bases' benchmark grid (hora.assets.real_bench): every variant trains what its name says."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from hora.assets import dino, smollm
from hora.assets.real_bench import PARETO, VARIANTS, grid


@pytest.mark.parametrize("recipe", [smollm.recipe, dino.recipe], ids=["smollm2", "dinov2"])
@pytest.mark.parametrize("name", [*VARIANTS, *PARETO])
def test_every_variant_trains_what_its_name_says(recipe, name):
    fields = {**VARIANTS, **PARETO}[name]
    config = replace(recipe(fields["method"], 1e-3), **fields)
    # the recipes match LoRA's and DoRA's budget to HoRA's; only the variant named so may
    assert config.match_params == ("budget" in name)
    assert config.method == name.split()[0].rstrip(",").lower()
    rank = re.search(r"\br(\d+)\b", name)
    assert config.match_params or int(rank.group(1)) == config.r
    assert config.hyper_hidden >= config.r  # HoRA's generator needs p >= r
    assert (config.method_args or {}).get("generate_a", True) == ("only B" not in name)


def test_the_grid_runs_every_variant_at_every_size_and_extra_ranks_at_the_smaller():
    setup = {"extra": {"Head only": {"method": "head"}}, "pareto": PARETO, "shots": (2, 8)}
    (main, sizes), (extra, extra_sizes) = grid(setup)
    assert list(main) == ["Head only", *VARIANTS] and sizes == (2, 8)
    assert extra == PARETO and extra_sizes == (2,)
    assert not set(main) & set(extra)
