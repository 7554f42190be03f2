"""hora.task: what the data becomes — the task of a dataset, its preprocessing on a base, the few-shot split and
the LM chunks, and evaluation."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import TEXT, save_gpt2, save_vit, write_image_folder

import hora
from hora.data import LanguageModelingData, load_data
from hora.task import (
    LM_SPLIT_SEED,
    Task,
    build_task,
    data_kind,
    evaluate,
    evaluate_examples,
    lm_documents,
    lm_held_out,
    make_split,
)


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    root = tmp_path_factory.mktemp("task")
    return hora.load_base(save_vit(root / "vit")), hora.load_base(save_gpt2(root / "gpt2")), root


def test_data_kind_reads_the_fields(tmp_path):
    images = load_data(write_image_folder(tmp_path / "img", per_class=2))
    assert data_kind(images) == "image"
    assert data_kind(LanguageModelingData(["a b", "c d"])) == "lm"
    with pytest.raises(ValueError, match="Cannot tell the task"):
        data_kind(object())


def test_image_task_follows_the_base(bases):
    vit, _, _ = bases
    task = build_task(vit, ["a", "b", "c"])
    assert (task.kind, task.image_size, task.mean, task.std) == ("image", 16, [0.5] * 3, [0.5] * 3)
    assert task.id2label == {0: "a", 1: "b", 2: "c"} and task.metric == "accuracy" and task.higher_is_better


def test_lm_context_is_capped_by_the_model(bases):
    _, gpt2, _ = bases
    task = build_task(gpt2, None, context=1000)
    assert task.kind == "lm" and task.context == 32  # tiny GPT-2: 32 positions
    assert task.metric == "loss" and not task.higher_is_better and task.metric_names == ("loss", "perplexity")


def test_task_record_round_trips_through_json():
    task = Task("image", {0: "cat", 1: "dog"}, 16, [0.5] * 3, [0.5] * 3)
    record = task.to_dict()
    assert record["id2label"] == {"0": "cat", "1": "dog"} and "tokenizer" not in record
    assert Task.from_dict(record) == task


def test_lm_documents_split_one_text_into_paragraphs_or_lines():
    assert lm_documents(LanguageModelingData(["one\n\ntwo\n\nthree"])) == ["one", "two", "three"]
    assert lm_documents(LanguageModelingData(["one\ntwo"])) == ["one", "two"]
    with pytest.raises(ValueError, match="at least two documents"):
        lm_documents(LanguageModelingData(["only one line"]))


def test_lm_held_out_documents_do_not_depend_on_the_seed(bases):
    _, gpt2, _ = bases
    train, held = lm_held_out(20, 0.1)
    assert len(held) == 2 and not set(train) & set(held) and sorted(train + held) == list(range(20))
    data = LanguageModelingData([TEXT * 4 for _ in range(10)])
    task = build_task(gpt2, None, context=16)
    splits = [make_split(data, task, shots=3, seed=seed) for seed in (0, 1)]
    assert splits[0].record["eval"] == splits[1].record["eval"]  # every seed is tested on the same documents
    assert splits[0].record["train_chunks"] != splits[1].record["train_chunks"]  # ... and trains on other chunks
    assert splits[0].record["split_seed"] == LM_SPLIT_SEED and len(splits[0].train) == 3


def test_classification_split_is_stratified_and_capped(tmp_path, bases):
    vit, _, _ = bases
    data = load_data(write_image_folder(tmp_path / "img", per_class=6))
    task = build_task(vit, data.classes)
    split = make_split(data, task, shots=2, seed=0, max_eval=6)
    assert len(split.train) == 6 and len(split.eval) == 6  # 2 shots x 3 classes; max_eval spread: 2 per class
    assert make_split(data, task, shots=2, seed=0, max_eval=6).record == split.record
    with pytest.raises(ValueError, match="shots"):
        make_split(data, task, shots=None, seed=0)


def test_evaluation_of_an_untrained_classifier_is_near_chance(tmp_path, bases):
    vit, _, _ = bases
    data = load_data(write_image_folder(tmp_path / "img", per_class=4))
    task = build_task(vit, data.classes)
    metrics = evaluate(vit.model, data, task)
    assert set(metrics) == {"accuracy", "loss"} and 0 <= metrics["accuracy"] <= 1 and metrics["loss"] > 0
    assert evaluate(vit.model, data, task, indices=[0, 1, 2]) == evaluate_examples(vit.model, task, data, [0, 1, 2])
    with pytest.raises(ValueError, match="no held-out examples"):
        evaluate_examples(vit.model, task, data, [])


def test_lm_evaluation_reports_perplexity(bases):
    _, gpt2, _ = bases
    task = build_task(gpt2, None, context=16)
    metrics = evaluate(gpt2.model, LanguageModelingData([TEXT * 3, TEXT * 3]), task)
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["loss"]))
    assert not gpt2.model.training  # evaluation leaves the mode as it found it
    batch = task.encode(torch.arange(32).view(2, 16), [1])
    assert batch["input_ids"].tolist() == [list(range(16, 32))]


def test_the_evaluation_cap_holds_with_thousands_of_classes():
    from types import SimpleNamespace

    data = SimpleNamespace(labels=[c for c in range(3000) for _ in range(3)])
    task = Task("image", {c: str(c) for c in range(3000)})
    split = make_split(data, task, shots=1, seed=0, max_eval=100)
    assert len(split.eval) == 100 and len(split.train) == 3000
