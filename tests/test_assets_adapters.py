"""hora.assets.adapters: the real bases' adapters train at the rate their own validation sweep chose."""

from __future__ import annotations

import json

import pytest
from helpers import save_vit, write_image_folder

from hora.assets.adapters import train_at_swept_rate
from hora.config import TrainConfig
from hora.data import load_data


def test_an_adapter_trains_at_the_rate_its_sweep_chose(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the base by a relative name, as the embedded bases are named
    save_vit(tmp_path / "vit")
    base, data = "vit", load_data(write_image_folder(tmp_path / "data", per_class=5))
    sweep = tmp_path / "bench" / base / "lr_sweep.json"
    sweep.parent.mkdir(parents=True)
    sweep.write_text(json.dumps({"chosen": {"lora": 0.004}, "scores": {"lora": {"0.001": 0.3, "0.004": 0.5}}}))
    asked: list[float] = []

    def recipe(lr: float) -> TrainConfig:
        asked.append(lr)
        return TrainConfig(method="lora", shots=2, steps=2, lr=lr, r=2, batch_size=4, eval_every=1, device="cpu")

    rate, scores = train_at_swept_rate(tmp_path, base, "lora", data, recipe, tmp_path / "out", "sample")
    assert rate == 0.004 and asked == [0.004] and scores == {"0.001": 0.3, "0.004": 0.5}
    record = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert record["config"]["lr"] == 0.004


def test_without_a_sweep_only_a_smoke_build_trains(tmp_path):
    base, data = save_vit(tmp_path / "vit"), load_data(write_image_folder(tmp_path / "data", per_class=5))

    def recipe(lr: float) -> TrainConfig:
        return TrainConfig(method="lora", shots=2, steps=1, lr=lr, r=2, batch_size=4, device="cpu")

    with pytest.raises(FileNotFoundError, match="hora.assets sweep"):
        train_at_swept_rate(tmp_path, str(base), "lora", data, recipe, tmp_path / "out", "sample")
    rate, scores = train_at_swept_rate(tmp_path, str(base), "lora", data, recipe, tmp_path / "out", "s", quick=True)
    assert rate == 1e-3 and scores == {}
