"""The embedded adapters of the real bases (SmolLM2-135M-Instruct, DINOv2-small): their weights are not in the
repository, only the adapters are; the base converts from the installed package, each adapter changes what the base
does, and the cards' numbers are what the adapters measure."""

from __future__ import annotations

import json
import os

import pytest
import torch

import hora
from hora import hub
from hora.assets.common import read_metadata
from hora.packaged import PACKAGED, PackageMissingError, source_file


def _require(name: str) -> None:
    if name not in hub.embedded_assets():
        pytest.skip(f"no embedded {name} assets (python -m hora.assets build --bases {name})")
    try:
        source_file(name)
    except PackageMissingError as error:
        if os.environ.get("HORA_REQUIRE_PACKAGED") == "1":
            raise
        pytest.skip(str(error))


def test_no_weights_of_a_packaged_base_are_in_the_repository():
    for name in PACKAGED:
        folder = hub.assets_dir() / name
        if folder.is_dir():
            big = [p for p in folder.rglob("*") if p.is_file() and p.stat().st_size > 8 * 2**20]
            assert not big and not (folder / "model.safetensors").exists() and not (folder / "config.json").exists()


def test_every_real_asset_has_a_card_with_its_measured_metric():
    from hora.cards import card_metrics
    from hora.cards import read as read_card

    for name, folder in hub.embedded_assets().items():
        base = name.split("/")[0]
        if base not in PACKAGED:
            continue
        card, record = read_card(folder), read_metadata(folder)
        assert card["license"] and card["base_model"] == PACKAGED[base].hub_repo
        key = "accuracy" if PACKAGED[base].kind == "image" else "loss"
        measured = record["metrics"][key] if "/" in name or key == "loss" else None
        if measured is not None:
            assert list(card_metrics(card).values()) == [pytest.approx(measured, abs=1e-4)], name


def test_a_packaged_base_fingerprint_covers_its_converted_weights(monkeypatch):
    """First paints are remembered under this key: it must change with the converted weights, not only the adapters."""
    name = "smollm2-135m-instruct"
    _require(name)
    from hora import packaged

    key = hub.embedded_fingerprint(name)
    assert key is not None and key != hub.embedded_fingerprint("dinov2-small")
    recorded = packaged.read_record

    def other_weights(folder):  # as if the conversion had written another model.safetensors
        record = recorded(folder)
        record["files"]["model.safetensors"]["sha256"] = "0" * 64
        return record

    monkeypatch.setattr(packaged, "read_record", other_weights)
    assert hub.embedded_fingerprint(name) not in (None, key)


@pytest.mark.slow
def test_smollm2_adapters_answer_differently_from_the_base():
    name = "smollm2-135m-instruct"
    _require(name)
    from hora.assets import smollm

    base = hora.load_base(name, dtype=torch.float32)
    record = read_metadata(hub.assets_dir() / name)
    outputs = record["generations"]["outputs"]
    # the first prompt the card says HoRA answers differently (a factual one, "Paris", every model answers alike)
    index = next(i for i, (b, h) in enumerate(zip(outputs["base"], outputs["HoRA"], strict=True)) if b != h)
    prompt = record["generations"]["prompts"][index]
    base_answer = smollm.answers(base.model, base.processor, (prompt,))[0]
    assert base_answer == outputs["base"][index]  # greedy: the card's answer, reproduced
    adapted = hora.load_adapter(hora.load_base(name, dtype=torch.float32), f"{name}/hora")
    assert smollm.answers(adapted, base.processor, (prompt,))[0] != base_answer


@pytest.mark.slow
def test_dinov2_card_reproduces_for_the_hora_adapter():
    name = "dinov2-small"
    _require(name)
    from hora.assets import dino
    from hora.assets.fashion import load_fashion_splits

    try:
        splits = load_fashion_splits()
    except RuntimeError as error:  # no npm here and no cached copy: the builder's data is not available
        pytest.skip(str(error))
    info = read_metadata(hub.assets_dir() / name / "adapters" / "hora")
    model = hora.load_adapter(hora.load_base(name), f"{name}/hora")
    measured = dino.test_metrics(model, dino.heldout_data(splits))
    assert measured["accuracy"] == pytest.approx(info["metrics"]["accuracy"], abs=1e-6)
    probe = hora.load_adapter(hora.load_base(name), f"{name}/head")
    assert not isinstance(probe, type(model))  # the reference is the backbone with its linear probe, no adapter
    runs = json.loads((hub.assets_dir() / name / "adapters" / "hora" / "metrics.json").read_text())
    assert runs["preprocessing"]["image_size"] == dino.IMAGE_SIZE
