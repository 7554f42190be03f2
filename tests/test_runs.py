"""hora.runs: the run folder the engine writes (adapter or head or model, metrics.json, card), written atomically,
and loaded back by ``load_run`` to the same numbers."""

from __future__ import annotations

import json

import peft
import pytest
import torch
import yaml
from helpers import TEXT, save_gpt2, save_vit, tiny_gpt2, write_image_folder

import hora.runs as runs_module
from hora.cards import read as read_card
from hora.data import few_shot_split, load_data
from hora.runs import load_run, model_card, read_run
from hora.task import evaluate
from hora.train import TrainConfig, train


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
FAST = {"shots": 3, "steps": 12, "lr": 1e-2, "batch_size": 6, "eval_every": None, "r": 4, "hyper_hidden": 8}


@pytest.fixture(scope="module")
def image_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("image")
    return save_vit(root / "vit"), write_image_folder(root / "data")


@pytest.fixture(scope="module")
def lm_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    (root / "corpus.txt").write_text("".join(TEXT for _ in range(24)))
    return save_gpt2(root / "gpt2"), root / "corpus.txt"


def test_interrupted_save_leaves_no_partial_folder(image_setup, tmp_path, monkeypatch):
    base, data = image_setup
    out = tmp_path / "run"

    def broken_card(metrics):
        raise RuntimeError("disk full")

    monkeypatch.setattr(runs_module, "model_card", broken_card)
    with pytest.raises(RuntimeError, match="disk full"):
        train(base, data, TrainConfig(method="lora", **{**FAST, "steps": 2}), out_dir=out)
    assert not out.exists()
    assert not list(tmp_path.glob(".tmp-*"))
    # an earlier run in the same folder survives a failed overwrite
    monkeypatch.undo()
    train(base, data, TrainConfig(method="lora", **{**FAST, "steps": 2}), out_dir=out)
    before = sorted(p.name for p in out.iterdir())
    monkeypatch.setattr(runs_module, "model_card", broken_card)
    with pytest.raises(RuntimeError):
        train(base, data, TrainConfig(method="hora", **{**FAST, "steps": 2}), out_dir=out)
    assert sorted(p.name for p in out.iterdir()) == before
    assert json.loads((out / "metrics.json").read_text())["method"] == "lora"


def test_outputs_metrics_and_model_card(image_setup, tmp_path):
    base, data = image_setup
    out = tmp_path / "run"
    result = train(base, data, TrainConfig(method="hora", **{**FAST, "eval_every": 4}), out_dir=out)
    assert {"adapter_config.json", "adapter_model.safetensors", "metrics.json", "README.md"} <= {
        p.name for p in out.iterdir()
    }
    metrics = json.loads((out / "metrics.json").read_text())
    expected = few_shot_split(load_data(data).labels, FAST["shots"], 0)
    assert metrics["split"]["train"] == expected.train and metrics["split"]["eval"] == expected.eval
    assert metrics["seed"] == 0 and metrics["id2label"] == {"0": "blue", "1": "green", "2": "red"}
    assert metrics["final"] == result.final and metrics["best"]["step"] in (4, 8, 12)
    assert metrics["history"]["eval_step"] == [4, 8, 12] and len(metrics["history"]["eval_accuracy"]) == 3
    assert metrics["device"]["type"] == "cpu" and metrics["device"]["peak_memory_bytes"] > 0
    assert metrics["timing"]["examples_per_s"] > 0 and metrics["config"]["method"] == "hora"
    assert metrics["data"]["source"] == str(data)
    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["base_model"] == str(base) and front["library_name"] == "peft"
    assert "hora" in front["tags"] and front["hora"]["shots"] == FAST["shots"] and front["hora"]["seed"] == 0
    assert front["metrics"] == ["accuracy", "loss"] and front["datasets"] == [str(data)]
    assert json.loads((out / "adapter_config.json").read_text())["modules_to_save"] == ["classifier"]


@pytest.mark.parametrize("method", ["head", "full"])
def test_head_and_full_runs_load_back(image_setup, tmp_path, method):
    base, data = image_setup
    out = tmp_path / method
    result = train(base, data, TrainConfig(method=method, **{**FAST, "steps": 4}), out_dir=out)
    files = {p.name for p in out.iterdir()}
    assert ({"head.safetensors", "head_config.json"} if method == "head" else {"config.json"}) <= files
    model, task, run = load_run(base, out)
    assert model.config.id2label == {0: "blue", 1: "green", 2: "red"}
    metrics = evaluate(model, load_data(data), task, indices=run["split"]["eval"])
    assert metrics == pytest.approx(result.final)


def test_lm_round_trip(lm_setup, tmp_path):
    base, corpus = lm_setup
    out = tmp_path / "lm"
    config = TrainConfig(method="hora", shots=4, steps=4, context=32, r=4, hyper_hidden=8)
    result = train(base, corpus, config, out_dir=out)
    assert len(result.metrics["split"]["train_chunks"]) == 4
    model, task, run = load_run(base, out)
    split = run["split"]
    metrics = evaluate(model, load_data(corpus), task, indices=split["eval"], max_examples=split["eval_chunks"])
    assert metrics == pytest.approx(result.final)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_text_classification_runs_load_back(lm_setup, tmp_path, method):
    """A causal LM trained as a text classifier: the adapter's base gets a classifier; a full run is one."""
    base, _ = lm_setup
    rows = ["text,label"] + [f"{w} {w} {w},{w[0]}" for w in ["apple", "banana", "cherry"] * 4]
    (tmp_path / "t.csv").write_text("\n".join(rows))
    result = train(
        base, tmp_path / "t.csv", TrainConfig(method=method, shots=2, steps=4, lr=1e-2, r=4), out_dir=tmp_path / "run"
    )
    model, task, run = load_run(base, tmp_path / "run")
    assert type(model.get_base_model() if method == "lora" else model).__name__ == "GPT2ForSequenceClassification"
    assert task.kind == "text" and task.id2label == {0: "a", 1: "b", 2: "c"} and run["method"] == method
    metrics = evaluate(model, load_data(tmp_path / "t.csv"), task, indices=run["split"]["eval"])
    assert metrics == pytest.approx(result.final)


def test_a_bare_peft_adapter_loads_for_the_bases_own_task(lm_setup, tmp_path):
    base, _ = lm_setup
    peft.get_peft_model(tiny_gpt2(), peft.LoraConfig(r=2, target_modules=["c_attn"])).save_pretrained(tmp_path / "a")
    model, task, run = load_run(base, tmp_path / "a")
    assert run == {} == read_run(tmp_path / "a") and task.kind == "lm" and isinstance(model, peft.PeftModel)


def test_no_run_record_and_no_adapter_is_refused(lm_setup, tmp_path):
    base, _ = lm_setup
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.json").write_text(json.dumps({"final": {}}))
    with pytest.raises(ValueError, match="not a run record"):
        load_run(base, tmp_path / "empty")
    with pytest.raises(ValueError, match="not a folder"):
        load_run(base, tmp_path / "missing")


def test_non_finite_weights_are_never_saved(image_setup, tmp_path):
    base, data = image_setup
    result = train(base, data, TrainConfig(method="head", **{**FAST, "steps": 1}))
    with torch.no_grad():
        result.model.classifier.weight[0, 0] = float("nan")
    from hora.methods import MethodInfo

    info = MethodInfo("head", None, 0, 0, ["classifier"])
    with pytest.raises(ValueError, match="non-finite"):
        runs_module.save_run(tmp_path / "nan", result.model, info, result.task, result.metrics)
    assert not (tmp_path / "nan").exists()


def test_an_adapter_of_a_base_known_by_name_saves_without_asking_the_hub(image_setup, tmp_path, monkeypatch):
    # packaged bases record a bare name ("dinov2-small") as the adapter's base: PEFT's "auto" embedding check
    # would look that name up on the Hub (a network call and a warning offline)
    import peft.utils.save_and_load as peft_save

    base, data = image_setup
    result = train(base, data, TrainConfig(method="lora", **{**FAST, "steps": 1}))
    result.model.peft_config["default"].base_model_name_or_path = "a-base-known-by-name"

    def hub_lookup(*args, **kwargs):
        raise AssertionError(f"asked the Hub: {args}")

    monkeypatch.setattr(peft_save, "check_file_exists_on_hf_hub", hub_lookup)
    from hora.methods import MethodInfo

    info = MethodInfo("lora", result.model.peft_config["default"], 0, 0)
    out = runs_module.save_run(tmp_path / "named", result.model, info, result.task, result.metrics)
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == "a-base-known-by-name"


def test_the_card_is_yaml_whatever_the_names_say(tmp_path):
    """Front matter goes through a YAML library: a data source that looks like YAML stays a string."""
    metrics = {
        "method": "hora",
        "task": "lm",
        "data": {"source": "evil: [1, 2]\n---\nkey: value"},
        "final": {"loss": 1.5, "perplexity": 4.48},
        "base_model": "some/base",
        "shots": None,
        "seed": 0,
        "steps_done": 3,
        "stopped": "completed",
        "message": "Trained 3 steps.",
        "method_info": {"trainable_params": 10},
    }
    (tmp_path / "README.md").write_text(model_card(metrics), encoding="utf-8")
    front = read_card(tmp_path)
    assert front["datasets"] == ["evil: [1, 2]\n---\nkey: value"] and front["hora"]["results"] == {
        "loss": 1.5,
        "perplexity": 4.48,
    }


def test_a_named_dataset_leaves_no_path_of_this_machine_in_the_record(image_setup, tmp_path):
    base, data = image_setup
    result = train(base, data, TrainConfig(method="head", **{**FAST, "steps": 1}), data_source="my-upload.zip")
    assert result.metrics["data"]["path"] is None and result.metrics["data"]["source"] == "my-upload.zip"
    assert str(data) not in json.dumps(result.metrics)
    named_by_path = train(base, data, TrainConfig(method="head", **{**FAST, "steps": 1}))
    assert named_by_path.metrics["data"]["path"] == str(data.resolve())  # the CLI's eval recognises its data by it
