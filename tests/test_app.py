"""The explorer driven through gradio_client, as any API user would: every endpoint, on a store of tiny
models (the embedded assets have their own test in test_app_embedded.py)."""

from __future__ import annotations

import json
import re

import peft
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError, ValidationError
from helpers import tiny_llama, tiny_samples, tiny_store
from PIL import Image

import hora
from app.main import build_app, launch


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    demo = build_app(tiny_store(root), samples=tiny_samples(root / "samples"))
    _, url, _ = launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    client = Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))
    yield client
    client.close()
    demo.close()


def plot(value) -> dict:
    return json.loads(value["plot"])


def test_every_event_is_a_named_endpoint(client):
    endpoints = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {
        "/classify",
        "/generate",
        "/next_tokens",
        "/perplexity",
        "/heads",
        "/heads_options",
        "/heads_knockout",
        "/load_base",
        "/load_adapter",
    } <= endpoints
    assert not client.view_api(print_info=False, return_format="dict")["unnamed_endpoints"]


def test_classify_returns_top_classes_per_model(client, tmp_path):
    path = tmp_path / "odd.png"
    Image.new("LA", (7, 31), (90, 255)).save(path)  # odd size and mode
    figure, table, note = client.predict(
        "tiny-vit", handle_file(str(path)), ["base", "LORA", "HoRA"], api_name="/classify"
    )
    bars = plot(figure)["data"]
    assert [b["name"] for b in bars] == ["base", "LORA", "HoRA"]
    assert all(sorted(label.strip() for label in b["y"]) == ["one", "two", "zero"] for b in bars)
    assert [row[0] for row in table["data"]] == ["base", "LORA", "HoRA"]
    assert all(row[3] > 0 for row in table["data"])  # latency in ms
    assert table["headers"][-1] == "correct?" and {row[4] for row in table["data"]} == {"—"}  # no truth given
    assert "one of the classes it was trained on" in note and "means nothing" in note  # for any image
    assert ("base model is unsure" in note) == (table["data"][0][2] < 0.5)  # flagged by the base's own confidence


def test_classify_says_whether_each_model_is_right_when_the_truth_is_known(client, tmp_path):
    path = tmp_path / "x.png"
    Image.new("RGB", (16, 16), (200, 10, 10)).save(path)
    _, table, _ = client.predict("tiny-vit", handle_file(str(path)), ["base", "HoRA"], "one", api_name="/classify")
    assert [r[4] == ("✓ yes" if r[1] == "one" else "✗ no") for r in table["data"]] == [True, True]


def test_classify_without_an_image_says_what_to_do(client):
    with pytest.raises(ValidationError, match="Upload an image"):
        client.predict("tiny-vit", None, ["base"], api_name="/classify")


def test_generation_streams_side_by_side(client):
    job = client.submit("tiny-llama", "to be", ["base", "HoRA"], 6, 0.0, 0, 0, api_name="/generate")
    outputs = job.outputs()
    job.result()
    assert len(outputs) >= 2  # streamed: the empty start, then one update per token round
    final_html, _ = outputs[-1]
    assert final_html.count('class="gen-col"') == 2 and ">base<" in final_html and ">HoRA<" in final_html


def test_generation_refuses_numbers_out_of_range_and_reports_edges(client):
    # Generate has a validator (the visitor's fair share, checked before the queue): Gradio then refuses values out
    # of a slider's range at the door, HTTP 400 whose body says why (gradio_client shows only the status).
    import httpx

    with pytest.raises(httpx.HTTPStatusError) as info:
        client.predict("tiny-llama", "x", ["base"], 10_000, 0.5, 5, 1, api_name="/generate")
    assert "greater than maximum value 256" in info.value.response.text
    with pytest.raises(httpx.HTTPStatusError) as info:
        client.predict("tiny-llama", "x", ["base"], 5, -1.0, 5, 1, api_name="/generate")
    assert "less than minimum" in info.value.response.text
    job = client.submit("tiny-llama", "", ["base"], 3, 2.0, 0, 1, api_name="/generate")
    job.result()
    assert "Empty prompt" in job.outputs()[-1][1]
    long = client.submit("tiny-llama", "ab " * 2000, ["base"], 2, 0.0, 0, 0, api_name="/generate")
    long.result()
    assert "cut to its last" in long.outputs()[-1][1]


def test_next_tokens_and_perplexity(client):
    figure = client.predict("tiny-llama", "hello", ["base", "HoRA"], api_name="/next_tokens")
    assert [len(b["x"]) for b in plot(figure)["data"]] == [10, 10]
    table, notice = client.predict("tiny-llama", "hello there friend", ["base", "HoRA"], api_name="/perplexity")
    assert [row[0] for row in table["data"]] == ["base", "HoRA"] and all(row[1] > 1 for row in table["data"])
    assert notice == ""


def test_heads_endpoints_return_head_by_head_matrices(client):
    adapters, layers, projections = client.predict("tiny-llama", api_name="/heads_options")
    assert set(adapters["value"]) == {"LORA", "HoRA"} and [c[1] for c in layers["choices"]] == [0, 1]
    assert [c[1] for c in projections["choices"]] == ["q", "v"]  # one entry per projection: no q and q_proj
    assert [c[0].rsplit(" · ", 1)[0] for c in adapters["choices"]] == ["LORA · r=4", "HoRA · r=4"]  # and size
    deltas, factors, similarity, summary, pca, *captions = client.predict(
        "tiny-llama", ["LORA", "HoRA"], 1, "v", "cka", api_name="/heads"
    )
    assert len(captions) == 2 and "CKA" in captions[0] and "chance" in captions[1]
    heat = [t for t in plot(deltas)["data"] if t["type"] == "heatmap"]
    assert len(heat) == 4  # 2 adapters x 2 key/value heads (GQA)
    assert all(len(t["z"]) == 8 and len(t["z"][0]) == 32 for t in heat)  # head_dim x in_features
    sims = plot(similarity)["data"]
    assert len(sims) == 2 and all(len(s["z"]) == 2 and len(s["z"][0]) == 2 for s in sims)
    assert all(s["z"][i][i] == pytest.approx(1, abs=1e-4) for s in sims for i in range(2))
    lines = [t for t in plot(summary)["data"] if t["meta"]["kind"] in ("mean", "joint", "rank")]  # not a level
    assert {t["name"].split(" · ")[0] for t in lines} == {"LORA", "HoRA"} and len(lines) == 2 * 3  # three panels
    assert sum(len(t["x"]) for t in plot(pca)["data"]) == 2 * 2 * 4  # adapters x heads x rank
    assert len([t for t in plot(factors)["data"] if t["type"] == "heatmap"]) == 2 * (1 + 2)
    ranks = client.predict("tiny-llama", ["LORA", "HoRA"], 1, "v", "cka", api_name="/heads_ranks")
    assert "**LORA** (LoRA, r=4" in ranks and "at most r" in ranks


def test_heads_plots_say_what_they_show(client):
    """Axis titles and colour bars on every heatmap, a diverging scale for signed cosine, a sequential one for CKA,
    heads in their own palette, and each adapter's rank where it is plotted."""
    from app import figures

    deltas, factors, cosine, summary, pca, *_ = client.predict(
        "tiny-llama", ["LORA", "HoRA"], 0, "q", "cosine", api_name="/heads"
    )
    for figure in (deltas, factors, cosine):
        layout, heat = plot(figure)["layout"], [t for t in plot(figure)["data"] if t["type"] == "heatmap"]
        assert any(t.get("showscale") for t in heat), "a colour bar"
        assert any(v.get("title", {}).get("text") for k, v in layout.items() if k.startswith(("xaxis", "yaxis")))
    assert "LORA r=4" in json.dumps(plot(deltas)["layout"])
    cosine_heat = plot(cosine)["data"][0]
    assert cosine_heat["zmin"] == -1 and cosine_heat["zmid"] == 0 and cosine_heat["colorscale"][0][1] != "#440154"
    _, _, cka, _, _, _, _ = client.predict("tiny-llama", ["LORA", "HoRA"], 0, "q", "cka", api_name="/heads")
    assert plot(cka)["data"][0]["zmin"] == 0 and "(CKA," in plot(cka)["layout"]["title"]["text"]
    head_colours = {t["marker"]["color"] for t in plot(pca)["data"]}
    assert head_colours <= set(figures.HEAD_COLOURS) and not head_colours & set(figures.METHOD_COLOURS.values())
    measured = ("mean", "joint", "rank")  # the dotted levels (chance, rank bound) are drawn in the same colours
    lines = {t["name"]: t["line"]["color"] for t in plot(summary)["data"] if t["meta"]["kind"] in measured}
    assert {n.split(" · ")[0]: c for n, c in lines.items()} == {
        "LORA": figures.METHOD_COLOURS["lora"],
        "HoRA": figures.METHOD_COLOURS["hora"],
    }
    bounds = [t for t in plot(summary)["data"] if t["meta"].get("kind") == "bound"]
    assert sorted(t["y"][0] for t in bounds) == [4, 4]  # r drawn for LoRA and HoRA: their effective rank's bound


def test_heads_refuses_a_base_without_adapters_choice(client):
    with pytest.raises(ValidationError, match="Tick at least one adapter"):
        client.predict("tiny-llama", [], 0, "q", "cosine", api_name="/heads")


def test_models_tab_loads_local_folders_for_this_session_only(client, tmp_path):
    base = tiny_llama()
    base.save_pretrained(tmp_path / "base")
    from helpers import char_tokenizer

    char_tokenizer().save_pretrained(tmp_path / "base")
    peft.get_peft_model(tiny_llama(), hora.HoraConfig(r=4, hyper_hidden=8)).save_pretrained(tmp_path / "adapter")
    rows, message, *_ = client.predict(str(tmp_path / "base"), api_name="/load_base")
    assert (
        "Loaded" in message
        and rows["data"][-1][0] == "all"
        and rows["data"][-1][2] == sum(p.numel() for p in base.parameters())
    )
    rows, message, models = client.predict("tiny-llama", str(tmp_path / "adapter"), api_name="/load_adapter")
    assert "HoRA" in message
    generator_row = next(r for r in rows["data"] if r[0] == "generator")
    assert generator_row[1] == generator_row[2] > 0  # a loaded (frozen) adapter still reports what it trained
    assert [r[1] for r in models["data"] if r[0] == "tiny-llama"][-1] == f"HoRA: {tmp_path / 'adapter'}"


def test_unreachable_hub_gives_a_clear_message(client, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValidationError) as err:
        client.predict("nobody/no-such-model", api_name="/load_base")
    text = str(err.value)
    assert "runs offline" in text and "nobody/no-such-model" in text
    assert "HF_HUB" not in text and "cache" not in text  # speaks to the visitor, not to the operator


def test_finetune_streams_curves_and_returns_loadable_adapters(client, tmp_path):
    job = client.submit(
        "tiny-vit", None, "shapes.zip", ["head", "lora", "hora"], 4, 12, 0.01, 4, 0, api_name="/finetune"
    )
    outputs = job.outputs() if job.result() is not None else []
    assert len(outputs) > 5  # streamed step by step
    status, curves, table, files, *_ = outputs[-1]
    assert status.startswith("Done.")
    rows = table["data"]
    assert [r[0] for r in rows] == ["head-only", "LoRA", "HoRA"] and all(r[3] == 12 for r in rows)
    assert table["headers"][4] == "held-out accuracy (chance 0.33, 24 items)" and [r[1] for r in rows] == ["—", 4, 4]
    assert all(re.fullmatch(r"\d+/24 \([01]\.\d\d\)", r[4]) for r in rows)  # right/total, then the fraction
    assert {r[6] for r in rows} == {"finished"}
    losses = [t for t in plot(curves)["data"] if t["xaxis"] == "x"]
    assert all(len(t["y"]) == 12 for t in losses)
    hora_loss = next(t["y"] for t in losses if t["name"] == "HoRA r=4")  # the legend says the rank
    assert sum(hora_loss[-3:]) < sum(hora_loss[:3])  # learning
    assert len(files) == 3
    import zipfile

    hora_zip = next(f for f in files if "hora" in f)
    with zipfile.ZipFile(hora_zip) as archive:
        archive.extractall(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "metrics.json").is_file()
    from helpers import tiny_vit

    base = tiny_vit()
    base.classifier = __import__("torch").nn.Linear(32, 3)
    loaded = peft.PeftModel.from_pretrained(base, tmp_path / "adapter")
    assert loaded.peft_config["default"].peft_type == "HORA"


def test_finetune_refuses_bad_data_with_a_message(client, tmp_path):
    bad = tmp_path / "bad.zip"
    import zipfile

    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("../evil.png", b"x")
    with pytest.raises(ValidationError, match=r"\.\."):
        client.predict("tiny-vit", handle_file(str(bad)), None, ["lora"], 4, 5, 0.01, 4, 0, api_name="/finetune")
    with pytest.raises(ValidationError, match="Tick at least one method"):
        client.predict("tiny-vit", None, "shapes.zip", [], 4, 5, 0.01, 4, 0, api_name="/finetune")
    with pytest.raises(ValidationError, match="is an image classifier: pick a language base or upload text"):
        client.predict("tiny-vit", None, "verse.txt", ["lora"], 4, 5, 0.01, 4, 0, api_name="/finetune")


def test_stop_really_stops_a_run(client):
    job = client.submit("tiny-llama", None, "verse.txt", ["lora", "hora"], 4, 400, 0.01, 4, 0, api_name="/finetune")
    import time

    deadline = time.monotonic() + 60
    while len(job.outputs()) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert client.predict(api_name="/stop").startswith("Stop requested: the run ends after the current step")
    deadline = time.monotonic() + 30
    while not job.done() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert job.done()
    status, _, table, files, *_ = job.outputs()[-1]
    # the generator itself ended the run: the engine stopped between steps and kept its adapter
    assert status.startswith("Stopped") and "LoRA: stopped by you after" in status and "HoRA: not started" in status
    assert len(table["data"]) == 1 and table["data"][0][3] < 400 and table["data"][0][6] == "stopped by you"
    assert len(files) == 1
    assert client.predict(api_name="/stop").startswith("Nothing is running")


def test_trained_adapters_join_compare_and_heads_for_this_session(client):
    job = client.submit("tiny-llama", None, "verse.txt", ["hora"], 4, 6, 0.01, 4, 0, api_name="/finetune")
    job.result()
    message, *_ = client.predict(api_name="/use_adapters")
    assert "HoRA" in message
    table, _ = client.predict("tiny-llama", "to be or not", ["base", "HoRA (yours)"], api_name="/perplexity")
    assert [r[0] for r in table["data"]] == ["base", "HoRA (yours)"]


def test_push_needs_a_token_and_a_run(client, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    job = client.submit("tiny-llama", None, "verse.txt", ["lora"], 4, 3, 0.01, 4, 0, api_name="/finetune")
    job.result()
    with pytest.raises(AppError, match="not a Hub repo id"):
        client.predict("no-slash", "", api_name="/push")
    with pytest.raises(AppError, match="No Hugging Face token"):  # the server runs in this process
        client.predict("me/adapter", "", api_name="/push")


def test_bundled_samples_follow_the_chosen_base(client, tmp_path):
    from app import finetune
    from app.finetune_data import sample_tasks

    tasks = sample_tasks(tiny_samples(tmp_path))
    assert tasks == {"shapes.zip": "image", "verse.txt": "lm"}
    store = tiny_store()
    assert finetune.sample_choices(store, tasks, None, "tiny-vit")["choices"] == ["shapes.zip"]
    assert finetune.sample_choices(store, tasks, None, "tiny-llama")["choices"] == ["verse.txt"]
    client.predict("tiny-llama", api_name="/finetune_samples")  # the event behind the base dropdown answers
    with pytest.raises(ValidationError, match="No bundled sample 'nope.zip'"):
        client.predict("tiny-vit", None, "nope.zip", ["lora"], 4, 5, 0.01, 4, 0, api_name="/finetune")


def test_a_failing_run_is_reported_to_its_user_and_others_train_on(client, monkeypatch):
    from hora import jobs

    real_train, calls = jobs.train, []

    def fails_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("disk on fire")
        return real_train(*args, **kwargs)

    monkeypatch.setattr(jobs, "train", fails_once)
    with pytest.raises(AppError, match="LoRA failed: disk on fire"):  # reported, after the check let it start
        client.predict("tiny-vit", None, "shapes.zip", ["lora"], 4, 3, 0.01, 4, 0, api_name="/finetune")
    other = Client(client.src, verbose=False)  # another user, another session
    try:
        status, *_ = other.predict("tiny-vit", None, "shapes.zip", ["lora"], 4, 3, 0.01, 4, 0, api_name="/finetune")
    finally:
        other.close()
    assert status.startswith("Done.") and len(calls) == 2


def test_a_session_past_its_training_time_is_told_so(tmp_path):
    from app import finetune
    from app.settings import LIMITS
    from app.store import SessionModels

    root = tmp_path / "models"
    store, samples = tiny_store(root), tiny_samples(tmp_path / "samples")
    session = SessionModels(train_seconds=LIMITS.max_session_train_seconds)
    with pytest.raises(Exception, match="used its fine-tuning time"):
        next(finetune.run(store, samples, session, "tiny-vit", None, "shapes.zip", ["lora"], 4, 3, 0.01, 4, 0))


def test_closing_a_session_stops_its_run_and_deletes_its_folder():
    import threading

    from app.store import SessionModels

    session = SessionModels(cancel=threading.Event())
    folder = session.folder()
    (folder / "upload.zip").write_bytes(b"x")
    session.close()
    assert session.cancel.is_set() and not folder.exists()


def test_the_session_state_is_closed_by_gradio_when_the_session_ends():
    from app.main import build_app
    from app.store import ModelStore, SessionModels

    demo = build_app(ModelStore())
    states = [b for b in demo.blocks.values() if type(b).__name__ == "State"]
    assert states and all(s.delete_callback == SessionModels.close and s.time_to_live for s in states)


def test_a_bases_recipe_sets_the_finetune_defaults_and_blank_lr_takes_each_methods_rate():
    from app.finetune import _configs
    from app.finetune_data import DEFAULT_LR, DEFAULT_STEPS, base_controls

    store = tiny_store()
    tasks = {"digits.zip": "image", "play.txt": "lm", "mine.jsonl": "lm"}
    sample, steps = base_controls(store, tasks, None, "tiny-llama")
    assert sample["choices"] == ["play.txt", "mine.jsonl"] and sample["value"] is None
    assert steps["value"] == DEFAULT_STEPS
    recipe = {
        "steps": 30,
        "batch_size": 4,
        "context": 64,
        "max_eval": 16,
        "keep_best": True,
        "lr": {"hora": 2e-3},
        "sample": "mine.jsonl",
    }
    store.bases["tiny-llama"].info = {"finetune": recipe}
    sample, steps = base_controls(store, tasks, None, "tiny-llama")
    assert sample["value"] == "mine.jsonl" and steps["value"] == 30
    hora_config, lora_config = _configs(["hora", "lora"], "lm", 8, 30, None, 8, 0, recipe)
    assert (hora_config.lr, lora_config.lr) == (2e-3, DEFAULT_LR)  # blank: the tuned rate, else the default
    assert (hora_config.batch_size, hora_config.context, hora_config.max_eval, hora_config.keep_best) == (
        4,
        64,
        16,
        True,
    )
    assert _configs(["hora"], "lm", 8, 30, 5e-4, 8, 0, recipe)[0].lr == 5e-4  # a rate typed in wins
    assert _configs(["hora"], "image", 8, 30, None, 8, 0, {})[0].batch_size == 16  # no recipe: the old defaults
