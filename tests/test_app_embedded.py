"""The explorer as a user opens it: ``create_app()`` on the embedded assets, driven through gradio_client."""

from __future__ import annotations

import json

import pytest
from gradio_client import Client, handle_file

from hora import hub


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from app.main import create_app, launch

    demo = create_app()
    _, url, _ = launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    client = Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))
    yield client, demo
    client.close()
    demo.close()


@pytest.fixture(scope="module")
def client(served):
    return served[0]


def _value(demo, elem_id: str):
    """A component's value as the page first receives it (the first paint, computed when the app was built)."""
    return next(b.value for b in demo.blocks.values() if getattr(b, "elem_id", None) == elem_id)


def test_first_paint_is_computed_once_at_build_time(served):
    _, demo = served
    vision = json.loads(_value(demo, "vision-plot")["plot"])
    table = _value(demo, "vision-table")
    models = len([t for t in vision["data"] if t["type"] == "bar"])  # the default example, every model
    assert models >= 5 and table["headers"][-1] == "correct?" and len(table["data"]) == models
    assert {row[4] for row in table["data"]} <= {"✓ yes", "✗ no"}  # the example's truth is known
    assert json.loads(_value(demo, "token-plot")["plot"])["data"]  # next tokens of the default prompt
    deltas = json.loads(_value(demo, "heads-deltas")["plot"])
    assert [t for t in deltas["data"] if t["type"] == "heatmap"]
    assert "r=" in _value(demo, "heads-ranks")


def test_adapters_read_a_digit_the_base_never_saw(client):
    """vit-digits was pretrained on digits 0-4; every few-shot adapter learnt 5-9, so a held-out 7 tells them apart."""
    (seven,) = sorted((hub.assets_dir() / "examples").glob("digit-7-heldout-*.png"))
    models = ["base", "head-only", "LoRA", "HoRA", "DoRA", "DoRAN"]
    _, table, _ = client.predict("vit-digits", handle_file(str(seven)), models, "7", api_name="/classify")
    top = {row[0]: str(row[1]) for row in table["data"]}
    assert set(top) == set(models)
    assert top["base"] in {"0", "1", "2", "3", "4"}
    assert [m for m in models[1:] if top[m] != "7"] == []
    assert [row[4] for row in table["data"]] == ["✗ no"] + ["✓ yes"] * 5


def test_the_explorer_says_what_its_models_are(client):
    """From their cards: the base's classes and what it never learnt, each adapter's rank and size (LoRA's r=24
    matched to HoRA's budget at r=8 is said, so neither reads as a property of its method)."""
    _, about = client.predict("vit-digits", api_name="/vision_models")
    assert "It answers with one of 5 classes (0, 1, 2, 3, 4)" in about and "never trained on 5, 6, 7, 8, 9" in about
    assert "**LoRA** r=24, 37.8k, accuracy" in about and "**HoRA** r=8, 37.4k, accuracy" in about
    _, about = client.predict("lm-shakespeare", api_name="/lm_models")
    assert "nats/token, lower is better" in about


def test_heads_of_the_embedded_language_adapters(client):
    adapters, layers, projections = client.predict("lm-shakespeare", api_name="/heads_options")
    assert {"LoRA", "HoRA"} <= set(adapters["value"]) and len(layers["choices"]) >= 2
    deltas, *_ = client.predict("lm-shakespeare", ["LoRA", "HoRA"], 0, "q", "cosine", api_name="/heads")
    ranks = client.predict("lm-shakespeare", ["LoRA", "HoRA"], 0, "q", "cosine", api_name="/heads_ranks")
    assert len([t for t in json.loads(deltas["plot"])["data"] if t["type"] == "heatmap"]) >= 2
    assert "**LoRA** (r=24" in ranks and "**HoRA** (r=8" in ranks and "(HoRA," not in ranks  # no "HoRA (HoRA"


def test_a_short_fine_tune_on_the_bundled_digit_sample(client):
    status, _, table, files, *_ = client.predict(
        "vit-digits", None, "digits-10-shot.zip", ["hora"], 8, 3, 3e-3, 4, 0, api_name="/finetune"
    )
    # HoRA's default generates only B: 18,122 trainable parameters here (the embedded HoRA, with A generated, 37,386)
    assert status.startswith("Done.") and table["data"][0][:4] == ["HoRA", 8, 18122, 3] and len(files) == 1
    assert table["headers"][4] == "held-out accuracy (chance 0.10, 60 items)"


def test_an_adapter_goes_onto_its_own_base(client):
    """The Models tab reads which base an adapter was trained on: a ViT adapter offered to the language model is
    refused with that base's name (not a list of tensors that do not fit), and by default it finds its base."""
    from gradio_client.exceptions import ValidationError

    with pytest.raises(ValidationError, match="This adapter is for vit-digits"):
        client.predict("lm-shakespeare", "vit-digits/hora", api_name="/load_adapter")
    rows, message, _ = client.predict("", "vit-digits/hora", api_name="/load_adapter")
    assert "on vit-digits" in message and rows["data"][-1][1] > 0
