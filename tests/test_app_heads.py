"""The Heads tab through gradio_client (issue #20): the similarity of the heads' B_h stated against its chance level,
captions written from the numbers plotted, and the knock-out's bars equal to ``hora.knockout.head_knockout`` for the
same input, on a store of tiny models with every method."""

from __future__ import annotations

import json
import re

import httpx
import peft
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError, ValidationError
from helpers import tiny_store
from PIL import Image

import hora
from app.main import build_app, launch
from app.store import Variant
from hora import coupling, knockout


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("heads")
    store = tiny_store()
    base = store.bases["tiny-llama"]
    for name, method, config in (
        ("DoRA", "dora", peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], use_dora=True)),
        ("DoRAN", "doran", hora.DoranConfig(r=4, hyper_hidden=8, init_weights=False)),
        ("LoRA r=2", "lora", peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)),
    ):
        model = peft.get_peft_model(base.fresh_copy(), config).eval()
        store.add_variant("tiny-llama", Variant(name, method, model, "test"))
    examples = []
    for label, colour in (("one", (200, 30, 30)), ("two", (30, 30, 200))):  # named by their true class
        path = root / f"square-{label}-0.png"
        Image.new("RGB", (16, 16), colour).save(path)
        examples.append(str(path))
    demo = build_app(store, examples=examples, sample_passage="To be, or not to be")
    _, url, _ = launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    client = Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))
    yield client, store, examples
    client.close()
    demo.close()


def plot(value) -> dict:
    return json.loads(value["plot"])


def caption_numbers(caption: str) -> dict[str, tuple[float, float, int, int]]:
    """Per adapter: (mean, chance, r, head size) as the similarity caption states them."""
    found = re.findall(
        r"\*\*(.+?)\*\* \(r = (\d+), heads of (\d+)\): (-?[\d.]+) against a chance level of ([\d.]+)", caption
    )
    return {name: (float(mean), float(chance), int(r), int(hd)) for name, r, hd, mean, chance in found}


def test_similarity_is_of_b_h_with_each_adapters_chance_level_on_the_plot_and_in_the_caption(served):
    client, store, _ = served
    names = ["LORA", "HoRA", "DoRA", "LoRA r=2"]
    _, _, similarity, summary, _, caption, summary_caption = client.predict(
        "tiny-llama", names, 1, "q", "subspace", api_name="/heads"
    )
    stated = caption_numbers(caption)
    assert list(stated) == names
    titles = [a["text"] for a in plot(similarity)["layout"]["annotations"]]
    for name, heat in zip(names, plot(similarity)["data"], strict=True):
        expected = coupling.layer_coupling(store.bases["tiny-llama"].variants[name].model, 1, "q", "subspace")
        mean, chance, r, hd = stated[name]
        z = heat["z"]
        shown_mean = sum(z[i][j] for i in range(len(z)) for j in range(len(z)) if i != j) / (len(z) * (len(z) - 1))
        assert mean == round(shown_mean, 2) == round(expected.mean_offdiagonal, 2)
        assert chance == round(coupling.chance_level("subspace", hd, r), 3) and (r, hd) == (expected.rank, 8)
        assert any(f"mean {mean:.2f}<br>chance {chance:.3f}" in t for t in titles)
    assert stated["DoRA"][0] < 0.99  # measured on its low-rank factors, not on the full-rank W' - W0
    assert "Their ranks differ (r = 2, 4)" in caption  # LoRA r=2 beside the others: chance 0.250 against 0.500
    chances = {t["meta"]["adapter"]: t["y"][0] for t in plot(summary)["data"] if t["meta"]["kind"] == "chance"}
    assert chances == {n: coupling.chance_level("subspace", 8, stated[n][2]) for n in names}
    assert sorted(chances.values()) == [0.25, 0.5, 0.5, 0.5]  # r = 2 and 4 of 8-wide heads
    assert "**LoRA r=2**: " in summary_caption and "(chance 0.250)" in summary_caption


def test_cosine_and_cka_of_b_h_state_their_own_chance_levels(served):
    client, store, _ = served
    for metric in ("cosine", "cka"):
        _, _, similarity, summary, _, caption, _ = client.predict(
            "tiny-llama", ["LORA", "HoRA"], 0, "q", metric, api_name="/heads"
        )
        chance = coupling.chance_level(metric, 8, 4)
        assert caption_numbers(caption)["HoRA"][1] == round(chance, 3)
        levels = [t["y"][0] for t in plot(summary)["data"] if t["meta"]["kind"] == "chance"]
        assert levels == [pytest.approx(chance)] * 2
    assert "output dimensions as samples" in caption  # CKA explained


def test_knockout_bars_are_the_librarys_for_the_same_prompt(served):
    client, store, _ = served
    figure, caption = client.predict(
        "tiny-llama", ["LORA", "HoRA"], 1, "q", None, "to be or not", api_name="/heads_knockout"
    )
    bars = plot(figure)["data"]
    base = store.bases["tiny-llama"]
    inputs, _ = knockout.prompt_inputs(base.processor, "to be or not")
    for name, bar in zip(["LORA", "HoRA"], bars, strict=True):
        result = knockout.head_knockout(base.variants[name].model, inputs, "q", 1)
        assert bar["x"] == ["h0", "h1", "h2", "h3", "whole"]
        assert bar["y"] == pytest.approx([*result.effects, result.whole], abs=1e-6)
        top = max(result.heads, key=lambda h: abs(result.effects[h]))
        reference = knockout.reference_name(base.variants[name].model, result, base.processor)
        assert f"**{name}** predicts the next token {reference}" in caption
        assert f"Head {top} matters the most" in caption or "rounds to 0.000" in caption
    assert "total variation" in caption and "next-token TV" in json.dumps(plot(figure)["layout"])


def test_knockout_of_an_example_image_and_its_bounds(served):
    client, store, examples = served
    figure, caption = client.predict("tiny-vit", ["LORA", "HoRA"], 0, "v", examples[1], "", api_name="/heads_knockout")
    base = store.bases["tiny-vit"]
    with Image.open(examples[1]) as image:
        inputs = knockout.image_inputs(base.processor, image)
    for name, bar in zip(["LORA", "HoRA"], plot(figure)["data"], strict=True):
        result = knockout.head_knockout(base.variants[name].model, inputs, "v", 0)
        assert bar["y"] == pytest.approx([*result.effects, result.whole], abs=1e-6)
    assert "drop in the probability of the predicted class" in caption
    five = ["LORA", "HoRA", "DoRA", "DoRAN", "LoRA r=2"]
    figure, caption = client.predict("tiny-llama", five, 0, "v", None, "x" * 300, api_name="/heads_knockout")
    assert len(plot(figure)["data"]) == knockout_limit() and "The first 4 of the 5 ticked adapters" in caption
    assert "cut to its last 32 tokens" in caption  # the tiny model's context is shorter than MAX_PROMPT_TOKENS


def knockout_limit() -> int:
    from app import heads_knockout

    return heads_knockout.MAX_ADAPTERS


def test_knockout_refuses_files_that_are_no_example_and_missing_choices(served, tmp_path):
    client, _, examples = served
    elsewhere = tmp_path / "square-one-9.png"  # a real image, named like an example, but not one
    Image.new("RGB", (16, 16)).save(elsewhere)
    with pytest.raises((ValidationError, AppError, httpx.HTTPStatusError)):  # not among the picker's choices
        client.predict("tiny-vit", ["LORA"], 0, "q", str(elsewhere), "", api_name="/heads_knockout")
    with pytest.raises(ValidationError, match="Tick at least one adapter"):
        client.predict("tiny-vit", [], 0, "q", examples[0], "", api_name="/heads_knockout")
    with pytest.raises(ValidationError, match="at most"):
        client.predict("tiny-llama", ["LORA"], 0, "q", None, "x" * 10_000, api_name="/heads_knockout")


def test_only_listed_examples_are_ever_opened(served, tmp_path):
    """Defence in depth behind Gradio's own check of the picker's choices: the validator, the run and the preview
    each refuse a path that is not one of the base's examples."""
    from app import heads_knockout
    from app.context import Context

    _, store, examples = served
    ctx = Context(store, None, examples=examples)
    outside = tmp_path / "square-one-1.png"
    Image.new("RGB", (16, 16)).save(outside)
    problems = heads_knockout.check(ctx, None, "tiny-vit", ["LORA"], 0, "q", str(outside), "")
    assert problems[5]["is_valid"] is False and "example images" in problems[5]["message"]
    assert heads_knockout.check(ctx, None, "tiny-vit", ["LORA"], 0, "q", examples[0], "")[5]["is_valid"]
    with pytest.raises(Exception, match="Pick one of the example images"):
        heads_knockout.run(ctx, None, "tiny-vit", ["LORA"], 0, "q", str(outside), "")
    assert heads_knockout.preview(ctx, str(outside)) == ""
    assert heads_knockout.preview(ctx, examples[0]).startswith('<img src="data:image/png;base64,')
