"""The explorer as a first-time visitor meets it, through gradio_client on tiny models: no dead ends (a text
classifier trained on a language model stays out of generation, data problems are found before training, with the
fix), what the models are, named API outputs, and the Models tab's checks. The browser side is test_browser.py."""

from __future__ import annotations

import json
import zipfile

import peft
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError, ValidationError
from helpers import tiny_samples, tiny_store, tiny_vit
from PIL import Image

import hora
from app.main import build_app, launch


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    store = tiny_store(root)
    demo = build_app(store, samples=tiny_samples(root / "samples"))
    _, url, _ = launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    client = Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))
    yield client, store, root
    client.close()
    demo.close()


@pytest.fixture(scope="module")
def client(served):
    return served[0]


def test_the_api_names_its_outputs_and_makes_the_data_optional(client):
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    unnamed = {e: [r["label"] for r in v["returns"] if r["label"].startswith("value_")] for e, v in api.items()}
    assert {e: r for e, r in unnamed.items() if r} == {}
    params = {p["parameter_name"]: p for p in api["/finetune"]["parameters"]}
    assert params["upload"]["parameter_has_default"] and params["sample"]["parameter_has_default"]


def test_a_text_classifier_trained_on_the_language_model_stays_out_of_generation(client, tmp_path):
    data = tmp_path / "reviews.csv"
    rows = [
        f"{word} {i},{label}" for label, word in (("pos", "good"), ("neg", "bad"), ("meh", "okay")) for i in range(6)
    ]
    data.write_text("text,label\n" + "\n".join(rows) + "\n")
    from gradio_client import handle_file

    status, _, table, files, *_ = client.predict(
        "tiny-llama", handle_file(str(data)), None, ["lora"], 4, 3, 0.01, 2, 0, api_name="/finetune"
    )
    assert (
        status.startswith("Done.")
        and table["headers"][4] == "held-out accuracy (chance 0.33, 12 items)"
        and len(files) == 1
    )
    message, *_ = client.predict(api_name="/use_adapters")
    assert "LoRA (yours)" in message and "cannot generate" in message
    choices, _ = client.predict("tiny-llama", api_name="/lm_models")
    assert [c[1] for c in choices["choices"]] == ["base", "LORA", "HoRA"]  # not the classifier
    adapters, *_ = client.predict("tiny-llama", api_name="/heads_options")
    assert "LoRA (yours)" in [c[1] for c in adapters["choices"]]  # its heads can be inspected
    client.predict("tiny-llama", ["LoRA (yours)"], 0, "q", "cosine", api_name="/heads")
    with pytest.raises(AppError, match="not in the list of choices"):  # this session's checkboxes do not offer it
        client.predict("tiny-llama", "to be", ["base", "LoRA (yours)"], api_name="/next_tokens")
    table, _ = client.predict("tiny-llama", "to be or not", ["base", "HoRA"], api_name="/perplexity")
    assert table["headers"][1] == "perplexity (lower is better)" and len(table["data"]) == 2


def test_data_problems_are_found_before_training_with_the_fix(client, tmp_path):
    small = tmp_path / "small.zip"
    with zipfile.ZipFile(small, "w") as archive:
        for name, colour, count in (("cat", (200, 0, 0), 5), ("dog", (0, 200, 0), 7)):
            for i in range(count):
                image = tmp_path / f"{name}{i}.png"
                Image.new("RGB", (16, 16), colour).save(image)
                archive.write(image, f"{name}/{i}.png")
    from gradio_client import handle_file

    with pytest.raises(ValidationError, match="smallest class, 'cat', has 5 examples.*Set Shots to 4 or lower"):
        client.predict("tiny-vit", handle_file(str(small)), None, ["lora"], 4, 3, 0.01, 8, 0, api_name="/finetune")
    with pytest.raises(ValidationError, match="image data but tiny-llama is a language model"):
        client.predict("tiny-llama", handle_file(str(small)), None, ["lora"], 4, 3, 0.01, 2, 0, api_name="/finetune")
    status, *_ = client.predict(
        "tiny-vit", handle_file(str(small)), None, ["head"], 4, 2, 0.01, 4, 0, api_name="/finetune"
    )
    assert status.startswith("Done.")


def test_shots_are_hidden_for_language_modelling_text(served):
    client, _, root = served
    client.predict(None, "verse.txt", api_name="/finetune_data")  # the event behind the data controls answers
    from app import finetune

    samples = tiny_samples(root / "more-samples")
    assert finetune.data_controls(samples, None, "verse.txt")["visible"] is False
    assert finetune.data_controls(samples, None, "shapes.zip")["visible"] is True
    assert finetune.data_controls(samples, None, None)["visible"] is True


def test_models_tab_reports_a_loaded_base_and_places_an_adapter_on_its_own_base(served, tmp_path):
    client, store, root = served
    rows, message, _ = client.predict("tiny-vit", api_name="/load_base")
    assert "already loaded" in message and rows["data"][-1][0] == "all"
    vit = tiny_vit()
    vit.name_or_path = store.bases["tiny-vit"].location  # what PEFT records as the adapter's base
    peft.get_peft_model(vit, hora.HoraConfig(r=4, hyper_hidden=8)).save_pretrained(tmp_path / "vit-adapter")
    with pytest.raises(ValidationError, match="This adapter is for tiny-vit"):
        client.predict("tiny-llama", str(tmp_path / "vit-adapter"), api_name="/load_adapter")
    rows, message, models = client.predict("", str(tmp_path / "vit-adapter"), api_name="/load_adapter")
    assert "on tiny-vit" in message
    assert next(r for r in rows["data"] if r[0] == "generator")[1] > 0
    with pytest.raises(ValidationError, match="Type the adapter"):
        client.predict("", "  ", api_name="/load_adapter")


def test_what_the_models_are_comes_from_their_cards_with_a_fallback(served):
    from app.context import describe, describe_base, facts

    _, store, _ = served
    base = store.bases["tiny-vit"]
    assert "cannot say what it was trained on" in describe_base(base)  # no card at all
    base.info = {
        "data": {"source": "hand-drawn shapes"},
        "parameters": 123456,
        "metrics": {"per_class": {"zero": 1.0, "one": 0.9, "two": 0.0}},
    }
    try:
        text = describe_base(base)
        assert "image classifier with 123k parameters, trained on hand-drawn shapes" in text
        assert "3 classes (zero, one, two)" in text and "held-out accuracy is below 50% on two" in text
        lora = store.bases["tiny-vit"].variants["LORA"]
        lora.info = {"trainable_parameters": 999, "config": {"steps": 50, "shots": 4}, "metrics": {"accuracy": 0.5}}
        f = facts(lora)
        assert (f.method, f.rank, f.params, f.metric) == ("LoRA", 4, 999, "held-out accuracy 0.50")
        adapters = describe(store, None, "tiny-vit").split("\n\n")[1]
        assert adapters.startswith("Adapters — rank, trained parameters, held-out score: ")
        assert "**LORA** r=4, 999, accuracy 0.50, 50 steps, 4 examples per class; **HoRA** r=4, " in adapters
    finally:
        base.info = {}
        store.bases["tiny-vit"].variants["LORA"].info = {}


def test_example_labels_follow_one_naming_rule_or_a_manifest(tmp_path):
    from app.context import example_label, example_truths

    paths = [str(tmp_path / n) for n in ("digit-7-heldout-0017.png", "digit-x-1.png", "photo.png", "cat-9.png")]
    truths = example_truths(paths, [str(d) for d in range(10)])
    assert list(truths.values()) == ["7", None, None, "9"]  # "x" is no label the model knows
    assert example_label(paths[0], "7") == "digit 7" and example_label(paths[2], None) == "photo"
    (tmp_path / "examples.json").write_text(json.dumps({"photo.png": "3", "cat-9.png": "cat"}))
    assert list(example_truths(paths, [str(d) for d in range(10)]).values()) == ["7", None, "3", None]


def test_errors_become_sentences():
    from app.context import as_sentences

    @as_sentences("do the thing")
    def broken():
        raise RuntimeError("iteration over a 0-d tensor\nTraceback ...")

    @as_sentences("stream the thing")
    def broken_stream():
        yield 1
        raise KeyError("x")

    import gradio as gr

    with pytest.raises(gr.Error) as error:
        broken()
    assert error.value.message == "Could not do the thing: iteration over a 0-d tensor."
    stream = broken_stream()
    assert next(stream) == 1
    with pytest.raises(gr.Error) as error:
        next(stream)
    assert error.value.message == "Could not stream the thing: 'x'."


def test_subplot_grids_wrap_and_colour_by_method():
    from app import figures
    from hora.infer import Prediction

    predictions = {f"model number {i}": Prediction(["a", "b"], [0.7, 0.3], 1.0) for i in range(5)}
    methods = dict(zip(predictions, ["base", "lora", "hora", "dora", "doran"], strict=True))
    figure = figures.topk_bars(predictions, "t", methods, {n: "r=8" for n in predictions})
    assert max(int(a["xaxis"].lstrip("x") or 1) for a in figure.to_dict()["data"]) == 5
    assert {d["yaxis"] for d in figure.to_dict()["data"]} >= {"y4", "y5"} and figure.layout.height > 400  # 2 rows
    assert [d["marker"]["color"] for d in figure.to_dict()["data"]] == [
        figures.METHOD_COLOURS[m] for m in methods.values()
    ]
    assert figures.wrap("a very long adapter name (yours)", 12) == "a very long<br>adapter name<br>(yours)"


def test_first_paint_shows_a_base_s_precomputed_generations():
    from app.main import build_app

    store = tiny_store()
    store.bases["tiny-llama"].info = {
        "generations": {"prompts": ["to be", "or not"], "outputs": {"base": [" or not", "x"], "HoRA": [" <b>", "y"]}}
    }
    demo = build_app(store, sample_passage="the passage")
    values = {b.elem_id: b.value for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    assert values["prompt"] == "to be"
    assert ">base<" in values["generations"] and " or not" in values["generations"]
    assert "&lt;b&gt;" in values["generations"]  # generated text is escaped
    assert json.loads(values["token-plot"]["plot"])["data"]  # the next tokens of that prompt, drawn at build time
    plain = build_app(tiny_store(), sample_passage="first line\nsecond")  # no generations: the passage's first line
    prompt = next(b.value for b in plain.blocks.values() if getattr(b, "elem_id", None) == "prompt")
    assert prompt == "first line"


def test_heads_of_a_real_sized_model_stay_small_and_legible():
    """SmolLM2-135M's attention (30 layers, 9 query / 3 key-value heads of 64 × 576): every head drawn, each pooled
    to at most 32 × 48 cells, every layer in the summary, and a few hundred kB for the browser."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from app import heads
    from app.store import ModelStore, Variant

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=576,
        intermediate_size=16,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=32,
    )
    store = ModelStore()
    base = store.add_base("big", "lm", LlamaForCausalLM(config), None, "config")
    config = hora.HoraConfig(r=8, hyper_hidden=16, init_weights=False)
    store.add_variant("big", Variant("HoRA", "hora", peft.get_peft_model(base.fresh_copy(), config).eval(), "test"))
    figures = heads.view(store, None, "big", ["HoRA"], 29, "q", "cosine")
    deltas = figures[0].to_dict()
    heat = [t for t in deltas["data"] if t["type"] == "heatmap"]
    assert len(heat) == 9 and all(len(t["z"]) <= 32 and len(t["z"][0]) <= 48 for t in heat)
    assert "64 × 576 per head, shown as 32 × 48" in deltas["layout"]["title"]["text"].replace("<br>", " ")
    summary = figures[3].to_dict()
    assert max(len(t["x"]) for t in summary["data"]) == 30
    size = sum(len(f.to_json()) for f in figures[:5])
    assert size < 800_000, size
