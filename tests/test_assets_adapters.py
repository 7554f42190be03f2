"""hora.assets.adapters: the builder's learning-rate search for the real bases' adapters."""

from __future__ import annotations

from helpers import save_vit, write_image_folder

from hora.assets.adapters import search_lr
from hora.config import TrainConfig
from hora.data import load_data


def test_search_lr_trains_every_rate_and_keeps_the_best_by_validation(tmp_path):
    base, data = save_vit(tmp_path / "vit"), load_data(write_image_folder(tmp_path / "data", per_class=5))
    lines: list[str] = []

    def recipe(lr: float) -> TrainConfig:
        return TrainConfig(method="lora", shots=2, steps=2, lr=lr, r=2, batch_size=4, eval_every=1, device="cpu")

    best, tried = search_lr(str(base), data, recipe, tmp_path / "runs", (1e-4, 1e-1), "accuracy", lines.append)
    assert set(tried) == {1e-4, 1e-1} and all((tmp_path / "runs" / f"lora-{lr:g}").is_dir() for lr in tried)
    scores = {lr: t["validation_accuracy"] for lr, t in tried.items()}
    assert scores[best] == max(scores.values()) and (best == 1e-4 or scores[1e-1] > scores[1e-4])
    assert len(lines) == 2 and "validation accuracy" in lines[0]
    best, tried = search_lr(str(base), data, recipe, tmp_path / "runs-loss", (1e-4, 1e-1), "loss", lines.append)
    losses = {lr: t["validation_loss"] for lr, t in tried.items()}
    assert losses[best] == min(losses.values())
