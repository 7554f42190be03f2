"""Serving side by side (issue #21, the app's part): a fine-tune leaves adapters only, the explorer's Compare events
run the chosen variants through one ``hora.mixed.MixedModel`` batch per base, a visitor's own variants stay its
own, and the server refuses a fine-tune when its memory is above its ceiling."""

from __future__ import annotations

import gc
import threading
import weakref

import pytest
import torch
from gradio_client import Client
from gradio_client.exceptions import ValidationError
from helpers import tiny_samples, tiny_store

from hora import jobs
from hora.data import load_data
from hora.train import TrainConfig


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
FAST = {"lr": 1e-2, "batch_size": 4, "eval_every": 2, "r": 4, "hyper_hidden": 8, "context": 16}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    return tiny_store(root / "models"), tiny_samples(root / "samples")


IDS = {"input_ids": torch.arange(1, 13).unsqueeze(0)}
PIXELS = {"pixel_values": torch.linspace(-1, 1, 3 * 16 * 16).reshape(1, 3, 16, 16)}
RUNS = {  # what is trained on which served base; the text classifier is another model class over the LM's backbone
    "lm": ("tiny-llama", "verse.txt", ["lora", "hora"], IDS),
    "image": ("tiny-vit", "shapes.zip", ["head", "hora", "dora"], PIXELS),
    "text": ("tiny-llama", "reviews.csv", ["lora", "head"], IDS),
}


def _reviews(folder) -> str:
    rows = [f"{word} {i},{label}" for label, word in (("pos", "good"), ("neg", "bad")) for i in range(8)]
    (folder / "reviews.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    return str(folder / "reviews.csv")


@pytest.mark.parametrize("kind", list(RUNS))
def test_a_finished_run_keeps_its_adapter_on_the_served_base_and_frees_the_training_copy(models, tmp_path, kind):
    store, samples = models
    base_name, sample, methods, inputs = RUNS[kind]
    base = store.bases[base_name]
    samples = {**samples, "reviews.csv": _reviews(tmp_path)}
    training, logits = [], {}
    real = jobs.train

    def watched(*args, **kwargs):  # what the engine returns: the training copy, and what it answers
        result = real(*args, **kwargs)
        training.append(weakref.ref(result.model))
        with torch.no_grad():
            logits[result.metrics["method"]] = result.model(**inputs).logits
        return result

    configs = [TrainConfig(method=m, steps=2, shots=None if kind == "lm" else 4, **FAST) for m in methods]
    data = load_data(samples[sample])
    updates = jobs.train_in_turn(
        base.location, data, configs, out_root=tmp_path, cancel=threading.Event(), serve_on=base.model
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jobs, "train", watched)
        results = [u.result for u in updates if u.result is not None]
    gc.collect()
    assert len(results) == len(methods) == len(training)
    assert all(ref() is None for ref in training)  # nothing kept the training copies alive
    served = {p.data_ptr() for p in base.model.parameters()}
    for result in results:
        model = result.model
        tree = model.get_base_model() if hasattr(model, "get_base_model") else model
        weight = next(p for n, p in tree.named_parameters() if "embed" in n)
        assert weight.data_ptr() in served  # the served base's own tensors, not a copy
        with torch.no_grad():  # and it answers as the trained model did
            torch.testing.assert_close(model(**inputs).logits, logits[result.metrics["method"]])


def test_without_a_served_base_a_run_keeps_its_own_model(models, tmp_path):
    store, samples = models
    configs = [TrainConfig(method="lora", steps=1, **FAST)]
    data = load_data(samples["verse.txt"])
    updates = jobs.train_in_turn(
        store.bases["tiny-llama"].location, data, configs, out_root=tmp_path, cancel=threading.Event()
    )
    (result,) = [u.result for u in updates if u.result is not None]
    served = {p.data_ptr() for p in store.bases["tiny-llama"].model.parameters()}
    assert result.model.get_base_model().model.embed_tokens.weight.data_ptr() not in served


# ---------------------------------------------------------------------------------------------------------------
# The explorer's API


@pytest.fixture(scope="module")
def served(models):
    from app.main import build_app, launch

    store, samples = models
    demo = build_app(store, samples=samples)
    _, url, _ = launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    yield store, url
    demo.close()


@pytest.fixture
def visitor(served, tmp_path):
    """A client with its own session (as a visitor with its own browser tab)."""
    store, url = served
    client = Client(url, verbose=False, download_files=str(tmp_path))
    yield client
    client.close()


def _forwards(models) -> dict[str, list]:
    """A counter of forward calls on each of ``models`` (name -> module)."""
    calls = {name: [] for name in models}
    for name, model in models.items():
        model.register_forward_hook(lambda *_, name=name: calls[name].append(1))
    return calls


def _texts(html_text: str) -> dict[str, str]:
    import html
    import re

    pattern = r'<div class="gen-name">(.*?)</div><pre class="gen-text">(.*?)</pre>'
    return {html.unescape(n): html.unescape(t) for n, t in re.findall(pattern, html_text, flags=re.S)}


def test_side_by_side_runs_in_one_batch_and_answers_as_each_model_alone(served, visitor):
    from app.store import mixed_of
    from hora import infer

    store, _ = served
    base = store.bases["tiny-llama"]
    chosen = ["HoRA", "base", "LORA"]  # not the store's order: the columns keep the visitor's
    mixed = mixed_of(base)
    alone = _forwards({n: base.variants[n].model for n in chosen})
    together = _forwards({"mixed": mixed.model})
    job = visitor.submit("tiny-llama", "to be or", chosen, 8, 0.8, 20, 3, api_name="/generate")
    job.result()
    final, notice = job.outputs()[-1]
    texts = _texts(final)
    table, _ = visitor.predict("tiny-llama", "to be or not to be", chosen, api_name="/perplexity")
    assert list(texts) == chosen and "3 models answer together" in notice and any(texts.values())
    assert [r[0] for r in table["data"]] == chosen
    assert all(not calls for calls in alone.values())  # no model ran on its own ...
    assert 0 < len(together["mixed"]) <= 8 + 1  # ... one forward pass per token (and one to score) served them all
    tokenizer = base.processor
    for name in chosen:  # and each column is what that model writes alone with the same seed
        written = list(infer.generate_stream(base.variants[name].model, tokenizer, "to be or", 8, 0.8, 20, 3))
        assert texts[name] == (written[-1] if written else "")  # a model may end at once: an empty column
    for row in table["data"]:
        ppl = infer.perplexity(base.variants[row[0]].model, tokenizer, "to be or not to be").perplexity
        assert row[1] == pytest.approx(ppl, rel=1e-3)


def test_classify_reports_the_batchs_shared_latency(served, visitor, tmp_path):
    from gradio_client import handle_file
    from PIL import Image

    path = tmp_path / "red.png"
    Image.new("RGB", (16, 16), (200, 10, 10)).save(path)
    _, table, note = visitor.predict(
        "tiny-vit", handle_file(str(path)), ["LORA", "base", "HoRA"], api_name="/classify"
    )
    assert [r[0] for r in table["data"]] == ["LORA", "base", "HoRA"]
    assert len({r[3] for r in table["data"]}) == 1  # one batch: one time, shown for each of its models
    assert "through 3 models at once" in note and "share its time" in note


def test_a_visitors_own_adapter_is_never_served_to_another_visitor(served, visitor, tmp_path):
    from app.store import mixed_of

    store, url = served
    job = visitor.submit("tiny-llama", None, "verse.txt", ["hora"], 4, 3, 0.05, 4, 0, api_name="/finetune")
    job.result()
    message, *_ = visitor.predict(api_name="/use_adapters")
    assert "HoRA" in message
    names = ["base", "HoRA (yours)"]
    mine, _ = visitor.predict("tiny-llama", "to be or not", names, api_name="/perplexity")
    assert [r[0] for r in mine["data"]] == names and mine["data"][0][1] != mine["data"][1][1]
    registered = [n for n in mixed_of(store.bases["tiny-llama"]).names if n.endswith("/HoRA (yours)")]
    assert len(registered) == 1 and registered[0].startswith("session-")  # under the session's own prefix
    other = Client(url, verbose=False, download_files=str(tmp_path / "other"))
    try:  # another visitor naming it, or naming what it is registered as: refused at the door, or the base alone
        for asked in (names, ["base", registered[0]], ["HoRA (yours)"]):
            assert _rows_or_refused(other, asked) in (None, [mine["data"][0]])
    finally:
        other.close()
    from app.language import passage_perplexity  # past Gradio's own check of the choices: the handler itself
    from app.store import SessionModels

    for asked in (names, ["base", registered[0]]):
        theirs, _ = passage_perplexity(store, SessionModels(), "tiny-llama", "to be or not", asked)
        assert theirs.values.tolist() == [mine["data"][0]]


def _rows_or_refused(client: Client, names: list[str]) -> list | None:
    """The perplexity rows ``client`` gets for ``names``, or None when Gradio refuses a name it never offered."""
    import httpx

    try:
        table, _ = client.predict("tiny-llama", "to be or not", names, api_name="/perplexity")
    except httpx.HTTPStatusError as refused:
        assert refused.response.status_code == 400 and "choices" in refused.response.text
        return None
    except ValidationError as refused:
        assert "Tick at least one model" in str(refused)
        return None
    return table["data"]


def test_a_session_that_ends_takes_its_variants_out_of_the_shared_batch(models):
    from app import batch
    from app.store import SessionModels, Variant, mixed_of

    store, _ = models
    base = store.bases["tiny-llama"]
    session = SessionModels()
    session.add("tiny-llama", Variant("mine", "lora", base.variants["LORA"].model, "test"))
    plan = batch.plan(
        store, session, "tiny-llama", {"base": base.variants["base"], "mine": session.variants["tiny-llama"]["mine"]}
    )
    assert plan.routed == {"base": "base", "mine": session.prefix + "mine"} and not plan.alone
    assert session.prefix + "mine" in mixed_of(base)
    assert SessionModels().prefix != session.prefix  # each session its own
    session.close()
    assert session.prefix + "mine" not in mixed_of(base)
    assert not [n for n in mixed_of(base).names if n.startswith(session.prefix)]


def test_a_finetune_in_the_app_keeps_adapters_on_the_served_base(models, monkeypatch):
    from app import finetune
    from app.store import SessionModels

    store, samples = models
    training, real = [], jobs.train

    def watched(*args, **kwargs):
        result = real(*args, **kwargs)
        training.append(weakref.ref(result.model))
        return result

    monkeypatch.setattr(jobs, "train", watched)
    session = SessionModels()
    shown = list(finetune.run(store, samples, session, "tiny-llama", None, "verse.txt", ["lora", "hora"], 4, 2, 0.01))
    finetune._add_runs(store, session)  # "Use these adapters": they join Compare and Heads
    gc.collect()
    assert len(training) == 2 and all(ref() is None for ref in training)  # no status, curve or table kept them
    served = {p.data_ptr() for p in store.bases["tiny-llama"].model.parameters()}
    assert set(session.runs) == {"lora", "hora"} and shown
    for result in session.runs.values():
        assert result.model.get_base_model().model.embed_tokens.weight.data_ptr() in served
    session.close()


def test_a_server_above_its_memory_ceiling_refuses_a_new_finetune(served, visitor, monkeypatch):
    monkeypatch.setenv("HORA_MAX_SERVER_MEMORY", "2")  # MiB: far below what any server holds
    with pytest.raises(ValidationError, match=r"short of memory right now .* no new fine-tune above 0\.0 GiB"):
        visitor.predict("tiny-llama", None, "verse.txt", ["lora"], 4, 2, 0.01, 4, 0, api_name="/finetune")
    monkeypatch.setenv("HORA_MAX_SERVER_MEMORY", "0.9999")  # a fraction of the machine's memory: it starts
    status, *_ = visitor.predict("tiny-llama", None, "verse.txt", ["lora"], 4, 1, 0.01, 4, 0, api_name="/finetune")
    assert status.startswith("Done.")


def test_the_memory_ceiling_reads_mib_or_a_fraction():
    from app.settings import DEFAULT_SERVER_MEMORY, max_server_memory

    with pytest.MonkeyPatch.context() as patch:
        for value, expected in (("6000", 6000 * 2**20), ("0.5", 8 * 2**30), ("", DEFAULT_SERVER_MEMORY * 16 * 2**30)):
            patch.setenv("HORA_MAX_SERVER_MEMORY", value)
            assert max_server_memory(16 * 2**30) == int(expected)
        patch.setenv("HORA_MAX_SERVER_MEMORY", "lots")
        assert max_server_memory(16 * 2**30) == int(DEFAULT_SERVER_MEMORY * 16 * 2**30)
