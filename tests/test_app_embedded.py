"""The explorer as a user opens it: ``create_app()`` on the embedded assets, driven through gradio_client."""

from __future__ import annotations

import json

import pytest
from gradio_client import Client, handle_file

from hora import hub


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from app.main import create_app, launch

    demo = create_app()
    _, url, _ = launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    client = Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))
    yield client
    client.close()
    demo.close()


def test_adapters_read_a_digit_the_base_never_saw(client):
    """vit-digits was pretrained on digits 0-4; every few-shot adapter learnt 5-9, so a held-out 7 tells them apart."""
    (seven,) = sorted((hub.assets_dir() / "examples").glob("digit-7-heldout-*.png"))
    models = ["base", "head-only", "LoRA", "HoRA", "DoRA", "DoRAN"]
    _, table = client.predict("vit-digits", handle_file(str(seven)), models, api_name="/classify")
    top = {row[0]: str(row[1]) for row in table["data"]}
    assert set(top) == set(models)
    assert top["base"] in {"0", "1", "2", "3", "4"}
    assert [m for m in models[1:] if top[m] != "7"] == []


def test_heads_of_the_embedded_language_adapters(client):
    adapters, layers, projections = client.predict("lm-shakespeare", api_name="/heads_options")
    assert {"LoRA", "HoRA"} <= set(adapters["value"]) and len(layers["choices"]) >= 2
    deltas, *_ = client.predict("lm-shakespeare", ["LoRA", "HoRA"], 0, "q", "cosine", api_name="/heads")
    assert len([t for t in json.loads(deltas["plot"])["data"] if t["type"] == "heatmap"]) >= 2


def test_a_short_fine_tune_on_the_bundled_digit_sample(client):
    status, _, table, files, *_ = client.predict(
        "vit-digits", None, "digits-10-shot.zip", ["hora"], 8, 3, 3e-3, 4, 0, api_name="/finetune"
    )
    assert status.startswith("Done.") and table["data"][0][:3] == ["HoRA", 37386, 3] and len(files) == 1
