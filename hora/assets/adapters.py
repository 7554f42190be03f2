"""Adapter training for the embedded bases, through the project's training engine (``hora.train``).

Every method runs through the same ``hora.train.train`` call as a user's run in the app or the CLI, at a
comparable parameter budget: HoRA and DoRAN at rank ``R``, LoRA and DoRA at the rank whose trainable
parameters match them (``match_params``). The engine never sees the held-out test data: for the digits it
gets the few-shot pool only (its internal evaluation is on pool images that were not drawn as shots), for
Shakespeare the Folio plays minus the held-out works.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hora.assets.common import read_sweep, write_metadata
from hora.data import ImageClassificationData, LanguageModelingData
from hora.methods import LOW_RANK_METHODS, METHODS
from hora.train import TrainConfig, TrainResult, train


R = 8
HYPER_HIDDEN = 16
VISION_METHODS = tuple(m for m in METHODS if m != "full")  # a head-only probe, then every low-rank method
LM_METHODS = LOW_RANK_METHODS


@dataclass
class Recipe:
    """Engine settings of one family of adapters; ``lr`` per method (the head alone wants a larger step)."""

    shots: int | None
    steps: int
    batch_size: int
    lr: dict[str, float]
    seed: int = 0
    context: int = 256
    max_eval: int | None = 256
    extra: dict[str, Any] = field(default_factory=dict)

    def config(self, method: str) -> TrainConfig:
        return TrainConfig(
            method=method,
            shots=self.shots,
            seed=self.seed,
            steps=self.steps,
            batch_size=self.batch_size,
            lr=self.lr.get(method, self.lr["default"]),
            warmup_ratio=0.1,
            eval_every=None,  # only the final evaluation: the builder's own held-out test decides the card
            max_eval=self.max_eval,
            context=self.context,
            r=R,
            hyper_hidden=HYPER_HIDDEN,
            match_params=method in ("lora", "dora"),
            device="cpu",
            **self.extra,
        )


# Learning rates were chosen per method on the engine's own validation split (few-shot-pool images that were
# not drawn as shots; never the held-out test set): validation accuracy after 150 steps at 10 shots, seed 0.
VISION_LR_SEARCH = {
    "head": {3e-3: 0.680, 1e-2: 0.720, 3e-2: 0.720, 1e-1: 0.724},
    "lora": {1e-3: 0.782, 3e-3: 0.813, 1e-2: 0.827},
    "hora": {1e-3: 0.800, 3e-3: 0.831, 1e-2: 0.538},
    "dora": {1e-3: 0.764, 3e-3: 0.791, 1e-2: 0.813},
    "doran": {1e-3: 0.769, 3e-3: 0.813, 1e-2: 0.800},
}
VISION_RECIPE = Recipe(
    shots=10,
    steps=150,
    batch_size=32,
    lr={"default": 3e-3} | {m: max(grid, key=grid.get) for m, grid in VISION_LR_SEARCH.items()},
)
# The same search for the language adapters: the engine's validation loss (Folio plays it held out itself,
# never Macbeth or The Tempest) after 200 steps, seed 0. 1e-2 was best for every method.
LM_LR_SEARCH = {
    "lora": {3e-3: 4.434, 1e-2: 4.345},
    "hora": {3e-3: 4.465, 1e-2: 4.421},
    "dora": {3e-3: 4.469, 1e-2: 4.423},
    "doran": {3e-3: 4.492, 1e-2: 4.447},
}
LM_RECIPE = Recipe(
    shots=None,
    steps=200,
    batch_size=16,
    lr={"default": 1e-2} | {m: min(grid, key=grid.get) for m, grid in LM_LR_SEARCH.items()},
    max_eval=64,
)


def quick(recipe: Recipe) -> Recipe:
    """The same recipe with a handful of steps, for a smoke build."""
    return Recipe(recipe.shots, 4, recipe.batch_size, recipe.lr, recipe.seed, recipe.context, 16, recipe.extra)


def train_adapter(
    base_dir: Path,
    data: ImageClassificationData | LanguageModelingData,
    method: str,
    recipe: Recipe,
    out_dir: Path,
    source: str,
) -> TrainResult:
    """Train one adapter with the engine and write it (adapter or head, ``metrics.json``) to ``out_dir``."""
    return train(base_dir, data, recipe.config(method), out_dir=out_dir, data_source=source)


def rename_base(folder: Path, base_dir: Path, base_name: str) -> dict:
    """Point the saved run at the embedded base by name instead of the builder's temporary path.

    Every string in the run's JSON files that names ``base_dir`` (top-level keys and the PEFT config recorded
    inside ``metrics.json`` alike) becomes ``base_name``, so no path of the building machine is committed.
    Returns the rewritten ``metrics.json``.
    """
    paths = {str(base_dir), str(base_dir.resolve())}

    def scrub(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        return base_name if isinstance(value, str) and value in paths else value

    for file, key in (
        ("adapter_config.json", "base_model_name_or_path"),
        ("head_config.json", "base_model"),
        ("metrics.json", "base_model"),
    ):
        path = folder / file
        if path.is_file():
            data = scrub(json.loads(path.read_text()))
            data[key] = base_name
            path.write_text(json.dumps(data, indent=2) + "\n")
    return json.loads((folder / "metrics.json").read_text())


def run_adapter(
    root: Path,
    base_name: str,
    method: str,
    data: Any,
    recipe: Recipe,
    source: str,
    log: Callable[[str], None],
    *,
    evaluate: Callable[[torch.nn.Module], dict],
    train_indices: Callable[[dict], list],
) -> dict:
    """Train one adapter with the engine, reload it from disk with ``hora.hub`` and evaluate it held-out."""
    from hora.loaders import load_adapter, load_base

    base_dir = root / base_name
    out = base_dir / "adapters" / method
    log(f"{base_name}: training {method} ({recipe.steps} steps)")
    train_adapter(base_dir, data, method, recipe, out, source)
    run = rename_base(out, base_dir, base_name)
    reloaded = load_adapter(load_base(base_dir), out)
    metrics = evaluate(reloaded)
    info = {
        "name": f"{base_name}/{method}",
        "method": method,
        "base_model": base_name,
        "engine": "hora.train.train",
        "config": {k: v for k, v in run["config"].items() if k not in ("device", "bf16")},
        "method_info": run["method_info"],
        "train_examples": train_indices(run["split"]),
        "engine_validation": run["final"],
        "training": {
            "seconds": round(run["timing"]["train_seconds"], 1),
            "steps": run["steps_done"],
            "stopped": run["stopped"],
        },
        "trainable_parameters": run["method_info"]["trainable_params"],
        "adapter_parameters": run["method_info"]["adapter_params"],
        "metrics": metrics,
    }
    write_metadata(out, info)
    headline = metrics.get("accuracy", metrics.get("folio", {}).get("loss"))
    log(
        f"{base_name}/{method}: held-out {headline:.4f}, {info['trainable_parameters']:,} trainable, {info['training']['seconds']:.0f}s"
    )
    return info


def train_at_swept_rate(
    root: Path,
    base: str,
    method: str,
    data: Any,
    recipe: Callable[[float], TrainConfig],
    out_dir: Path,
    data_source: str,
    *,
    validate: Callable[[torch.nn.Module], dict] | None = None,
    quick: bool = False,
) -> tuple[float, dict[str, float]]:
    """Train ``recipe(rate)`` into ``out_dir`` at the rate the base's own validation sweep chose for ``method``
    (``<root>/bench/<base>/lr_sweep.json``, ``python -m hora.assets sweep``); returns the rate and the validation
    score of every rate the sweep tried for that method. A smoke build (``quick``) without a sweep uses 1e-3."""
    sweep = read_sweep(root, base, required=not quick)
    rate, scores = (sweep["chosen"][method], sweep["scores"][method]) if sweep else (1e-3, {})
    train(base, data, recipe(rate), out_dir=out_dir, data_source=data_source, validate=validate)
    return rate, scores


def to_bf16(folder: Path) -> None:
    """Store the adapter's weights in bfloat16: half the bytes in the repository; PEFT loads them back to float32."""
    from safetensors.torch import load_file, save_file

    path = folder / "adapter_model.safetensors"
    if not path.is_file():  # a head-only run: a few thousand numbers, kept as they are
        return
    tensors = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in load_file(path).items()}
    save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata={"format": "pt"})
