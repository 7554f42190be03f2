"""First paints (app.paint): the Compare and Heads tabs' first views are drawn from the models once, then read back
on the next start with the same weights and code (hora.memo), and never reused for other weights."""

from __future__ import annotations

import json

import pytest
from helpers import tiny_store
from PIL import Image

from app import compare, heads, heads_knockout, language
from app.context import Context
from hora import analysis, infer, knockout


@pytest.fixture
def ctx(tmp_path, monkeypatch):
    monkeypatch.setenv("HORA_CACHE", str(tmp_path / "cache"))
    store = tiny_store()
    for base in store.bases.values():
        base.fingerprint = f"weights of {base.name}"
    example = tmp_path / "square-one.png"  # named by its true class, as the explorer's examples are
    Image.new("RGB", (16, 16), (200, 30, 30)).save(example)
    return Context(store, None, examples=[str(example)], passage="To be, or not to be")


def calls_of(monkeypatch, module, name: str) -> list:
    calls, real = [], getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def traces(plot) -> list:
    return [(t["type"], t.get("name"), t.get("x"), t.get("z")) for t in json.loads(plot.plot)["data"]]


def heads_view(ctx: Context) -> tuple:
    return heads.first_view(ctx, "tiny-vit", heads.options(ctx.store, None, "tiny-vit"))


def test_the_second_start_paints_from_memory(ctx, monkeypatch):
    classified = calls_of(monkeypatch, infer, "classify_many")  # the base and its adapters in one batch
    predicted = calls_of(monkeypatch, infer, "next_token_topk_many")
    viewed = calls_of(monkeypatch, analysis, "explorer_view")
    vision, lm, view = (
        compare.first_vision(ctx, "tiny-vit"),
        language.first_language(ctx, "tiny-llama"),
        heads_view(ctx),
    )
    # the batch of the base and its two adapters warmed up once before its latency is measured; 2 adapters
    assert (len(classified), len(predicted), len(viewed)) == (2, 1, 2)
    again_vision, again_lm, again_view = (
        compare.first_vision(ctx, "tiny-vit"),
        language.first_language(ctx, "tiny-llama"),
        heads_view(ctx),
    )
    assert (len(classified), len(predicted), len(viewed)) == (2, 1, 2)
    assert traces(again_vision["plot"]) == traces(vision["plot"]) and traces(vision["plot"])
    assert again_vision["table"].equals(vision["table"]) and len(vision["table"]) == 3 and vision["truth"] == "one"
    assert again_vision["note"] == vision["note"]
    assert traces(again_lm["plot"]) == traces(lm["plot"]) and traces(lm["plot"])
    assert [traces(p) for p in again_view[:5]] == [traces(p) for p in view[:5]] and again_view[5:] == view[5:]
    assert "r=4" in view[-1] and any(t[0] == "heatmap" for t in traces(view[0]))
    assert "chance level of 0.500" in view[5] and "(chance 0.500)" in view[6]  # r = 4 of 8-wide heads: 4 / 8


def test_the_knockout_paints_once_with_the_example_its_adapters_are_least_sure_of(ctx, tmp_path, monkeypatch):
    for name, colour in (("square-two.png", (30, 30, 200)), ("square-zero.png", (30, 200, 30))):
        Image.new("RGB", (16, 16), colour).save(tmp_path / name)
        ctx.examples.append(str(tmp_path / name))
    store = ctx.store.bases["tiny-vit"]
    sure = {}
    for path in ctx.examples:
        with Image.open(path) as image:
            tops = [
                infer.classify(store.variants[n].model, store.processor, image, 1).probabilities[0]
                for n in ("LORA", "HoRA")
            ]
        sure[path] = sum(tops) / 2
    knocked = calls_of(monkeypatch, knockout, "head_knockout")
    first = heads_knockout.first_knockout(ctx, "tiny-vit", ["LORA", "HoRA"], 0, "q")
    again = heads_knockout.first_knockout(ctx, "tiny-vit", ["LORA", "HoRA"], 0, "q")
    assert len(knocked) == 2  # one batched forward per adapter, once
    assert traces(first["plot"]) == traces(again["plot"]) and first["caption"] == again["caption"]
    assert [t[0] for t in traces(first["plot"])] == ["bar", "bar"] and "predicts the class" in first["caption"]
    assert first["example"]["value"] == min(sure, key=sure.get) and first["prompt"]["visible"] is False
    assert len(set(sure.values())) == 3  # the examples differ: choosing the least sure one is a real choice
    lm = heads_knockout.first_knockout(ctx, "tiny-llama", ["LORA", "HoRA"], 1, "v")
    assert lm["prompt"]["value"] == "To be, or not to be" and "next token" in lm["caption"]


def test_other_weights_or_no_fingerprint_are_computed_afresh(ctx, monkeypatch):
    classified = calls_of(monkeypatch, infer, "classify_many")
    compare.first_vision(ctx, "tiny-vit")
    ctx.store.bases["tiny-vit"].fingerprint = "retrained weights"
    compare.first_vision(ctx, "tiny-vit")
    ctx.store.bases["tiny-vit"].fingerprint = None  # e.g. a base that is not embedded
    compare.first_vision(ctx, "tiny-vit")
    compare.first_vision(ctx, "tiny-vit")
    assert len(classified) == 8  # one batch of 3 models, a warm-up and a measured run, 4 times


def test_the_language_first_paint_scores_its_passage_and_remembers_it(ctx, monkeypatch):
    """The perplexity table is filled on first paint (it was empty), from memory on the next start."""
    scored = calls_of(monkeypatch, infer, "perplexity_many")  # the three models in one batch
    first = language.first_language(ctx, "tiny-llama")
    again = language.first_language(ctx, "tiny-llama")
    assert len(scored) == 1 and len(first["table"]) == 3 and again["table"].equals(first["table"])
    assert first["passage"] == "To be, or not to be"  # a tokenizer without a chat template: the plain passage
