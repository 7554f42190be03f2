"""Training: every method learns, runs are reproducible, cancel / NaN guard / atomic writes behave, and
what is saved loads back and evaluates to the same numbers."""

from __future__ import annotations

import math
import threading
from dataclasses import replace
from pathlib import Path

import peft
import pytest
import torch
from helpers import TEXT, char_tokenizer, save_gpt2, save_vit, tiny_llama, write_image_folder
from safetensors.torch import load_file

import hora
import hora.optim
import hora.train as train_module
from hora.data import load_data
from hora.runs import load_run
from hora.task import evaluate
from hora.train import StepEvent, TrainConfig, lr_at, train


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def image_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("image")
    return save_vit(root / "vit"), write_image_folder(root / "data")


@pytest.fixture(scope="module")
def lm_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    (root / "corpus.txt").write_text("".join(TEXT for _ in range(24)))
    return save_gpt2(root / "gpt2"), root / "corpus.txt"


@pytest.fixture(scope="module")
def llama_base(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama") / "llama"
    tiny_llama().save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return folder


FAST = {"shots": 3, "steps": 12, "lr": 1e-2, "batch_size": 6, "eval_every": None, "r": 4, "hyper_hidden": 8}
# Tests that compare a run with a re-evaluation on the CPU, or two runs bit for bit, train on the CPU: on CUDA the
# engine trains and evaluates under bf16 autocast, and some CUDA kernels are not deterministic.
ON_CPU = {**FAST, "device": "cpu"}


def training_device() -> str:
    """The device type the engine picks with ``device="auto"`` (``hora.optim.make_accelerator``)."""
    if torch.cuda.is_available():
        return "cuda"
    return "mps" if torch.backends.mps.is_available() else "cpu"


def _adapter_tensors(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "adapter_model.safetensors")


@pytest.mark.parametrize("method", ["head", "full", "lora", "dora", "hora", "doran"])
def test_every_method_lowers_the_loss_on_images(image_setup, method):
    if method == "doran" and not hasattr(hora, "DoranConfig"):
        pytest.skip("hora.DoranConfig is not available yet")
    base, data = image_setup
    result = train(base, data, TrainConfig(method=method, **FAST))
    losses = result.history["loss"]
    assert result.stopped == "completed" and len(losses) == FAST["steps"]
    assert min(losses[-3:]) < losses[0]
    assert result.final["loss"] < math.log(3)  # better than chance on the held-out images


@pytest.mark.parametrize(("arch", "method"), [("gpt2", "lora"), ("gpt2", "hora"), ("llama", "doran")])
def test_language_modelling_lowers_the_held_out_loss(lm_setup, llama_base, arch, method):
    if method == "doran" and not hasattr(hora, "DoranConfig"):
        pytest.skip("hora.DoranConfig is not available yet")
    base, corpus = lm_setup
    base = llama_base if arch == "llama" else base
    config = TrainConfig(method=method, shots=None, steps=10, lr=1e-2, batch_size=4, context=32, r=4, hyper_hidden=8)
    result = train(base, corpus, config, eval_every=5)
    assert result.history["eval_step"] == [5, 10]
    assert min(result.history["loss"][-3:]) < result.history["loss"][0]
    assert result.final["perplexity"] == pytest.approx(math.exp(result.final["loss"]))
    split = result.metrics["split"]
    assert split["train"] and split["eval"] and not set(split["train"]) & set(split["eval"])


def test_text_classification_on_a_causal_lm(tmp_path, lm_setup):
    base, _ = lm_setup
    rows = ["text,label"] + [f"{w} {w} {w},{w[0]}" for w in ["apple", "banana", "cherry"] * 4]
    (tmp_path / "t.csv").write_text("\n".join(rows))
    result = train(base, tmp_path / "t.csv", TrainConfig(method="lora", shots=2, steps=8, lr=1e-2, r=4))
    assert result.metrics["task"] == "text" and result.task.id2label == {0: "a", 1: "b", 2: "c"}
    assert min(result.history["loss"][-3:]) < result.history["loss"][0]


def test_text_classification_needs_a_classification_head(tmp_path, image_setup):
    base, _ = image_setup  # a ViT has no sequence-classification head
    (tmp_path / "t.csv").write_text("text,label\n" + "\n".join(f"w{i},{i % 2}" for i in range(8)))
    with pytest.raises(ValueError, match="sequence-classification head"):
        train(base, tmp_path / "t.csv", TrainConfig(method="lora", shots=2, steps=2))


def test_same_seed_gives_bit_identical_runs(image_setup, tmp_path):
    base, data = image_setup
    config = TrainConfig(method="hora", **ON_CPU)
    first = train(base, data, config, out_dir=tmp_path / "a")
    second = train(base, data, config, out_dir=tmp_path / "b")
    assert first.history["loss"] == second.history["loss"]
    a, b = _adapter_tensors(tmp_path / "a"), _adapter_tensors(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    other = train(base, data, config, seed=1)
    assert other.history["loss"] != first.history["loss"]
    assert other.metrics["split"]["train"] != first.metrics["split"]["train"]


def test_step_events_stream_loss_lr_time_and_metrics(image_setup):
    base, data = image_setup
    events: list[StepEvent] = []
    config = TrainConfig(method="lora", **{**FAST, "steps": 6, "eval_every": 3}, warmup_ratio=0.34)
    train(base, data, config, callback=events.append)
    assert [e.step for e in events] == [1, 2, 3, 4, 5, 6]
    assert all(torch.device(e.device).type == training_device() for e in events)
    assert all(e.step_time > 0 and e.examples_per_s > 0 for e in events)
    assert [e.metrics is not None for e in events] == [False, False, True, False, False, True]
    assert set(events[2].metrics) == {"accuracy", "loss"}
    assert events[0].lr < events[1].lr  # warm-up ...
    assert events[-1].lr < events[2].lr  # ... then cosine decay


def test_warmup_then_cosine():
    config = TrainConfig(steps=10, lr=1.0, warmup_ratio=0.2)
    assert [lr_at(s, config) for s in (0, 1)] == [0.5, 1.0]
    assert lr_at(2, config) == pytest.approx(1.0)
    assert lr_at(6, config) == pytest.approx(0.5)
    assert lr_at(9, config) < 0.05


def test_cancel_returns_and_saves_a_usable_adapter(image_setup, tmp_path):
    base, data = image_setup
    cancel = threading.Event()

    def stop_after_three(event: StepEvent) -> None:
        if event.step == 3:
            cancel.set()

    out = tmp_path / "run"
    result = train(
        base, data, TrainConfig(method="hora", **ON_CPU), out_dir=out, callback=stop_after_three, cancel=cancel
    )
    assert result.stopped == "cancelled" and result.metrics["steps_done"] == 3
    assert "Cancelled after 3" in result.message
    loaded, task, run = load_run(base, out)
    assert isinstance(loaded, peft.PeftModel) and run["stopped"] == "cancelled"
    # the folder is a plain PEFT adapter too
    from transformers import ViTForImageClassification

    fresh = ViTForImageClassification.from_pretrained(base)
    plain = peft.PeftModel.from_pretrained(fresh, out).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(plain(pixel_values=x).logits, result.model(pixel_values=x).logits)
    assert evaluate(loaded, load_data(data), task, indices=run["split"]["eval"]) == pytest.approx(result.final)


def test_huge_learning_rate_stops_with_a_message_and_finite_weights(image_setup, tmp_path):
    base, data = image_setup
    result = train(base, data, TrainConfig(method="lora", **{**FAST, "lr": 1e30}), out_dir=tmp_path / "nan")
    assert result.stopped == "non_finite"
    assert "learning rate" in result.message
    assert result.metrics["steps_done"] < FAST["steps"]
    saved = _adapter_tensors(tmp_path / "nan")
    assert all(torch.isfinite(t).all() for t in saved.values())
    assert math.isfinite(result.final["loss"])


def test_injected_nan_keeps_the_last_good_weights(image_setup, tmp_path, monkeypatch):
    base, data = image_setup
    config = TrainConfig(method="hora", **ON_CPU)
    # reference: the weights after two steps, from a run cancelled there
    cancel = threading.Event()
    train(base, data, config, out_dir=tmp_path / "two", callback=lambda e: e.step == 2 and cancel.set(), cancel=cancel)

    real_loss, calls = train_module.compute_loss, {"train": 0}

    def nan_on_fourth_step(task, model, batch):
        loss, logits = real_loss(task, model, batch)
        if model.training:
            calls["train"] += 1
            if calls["train"] == 4:
                return loss * float("nan"), logits
        return loss, logits

    monkeypatch.setattr(train_module, "compute_loss", nan_on_fourth_step)
    result = train(base, data, config, out_dir=tmp_path / "nan")
    assert result.stopped == "non_finite" and "step 4" in result.message
    assert result.metrics["steps_done"] == 3
    # step 4's loss came from the weights after step 3; the guard goes back to those step 3 started from
    good, kept = _adapter_tensors(tmp_path / "two"), _adapter_tensors(tmp_path / "nan")
    assert all(torch.equal(good[k], kept[k]) for k in good)


def test_early_stopping(image_setup):
    base, data = image_setup
    # a learning rate so small that the held-out accuracy cannot change: stops after `patience` evaluations
    result = train(base, data, TrainConfig(method="lora", **{**FAST, "lr": 1e-12, "eval_every": 1}), patience=2)
    assert result.stopped == "early_stopping" and result.metrics["steps_done"] == 3
    assert result.best["step"] == 1


def test_clear_errors(image_setup, tmp_path):
    base, data = image_setup
    with pytest.raises(ValueError, match="Unknown method"):
        TrainConfig(method="qlora")
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="examples per class"):
        train(base, data, TrainConfig(method="lora", **{**FAST, "shots": 50}))
    with pytest.raises(ValueError, match="task='lm'"):
        train(base, load_data(data), TrainConfig(method="lora", task="lm", **FAST))
    with pytest.raises(ValueError, match="not a .txt file"):  # hora.data's DataError, a ValueError
        train(base, data, TrainConfig(method="lora", task="lm", **FAST))


def test_keep_best_ends_with_the_best_evaluations_weights(image_setup, tmp_path):
    """The weights kept are those of the best evaluation, not the last. The evaluations are scripted (``validate``)
    so that the best is step 4's on any machine; the weights each evaluation saw are recorded to compare."""
    base, data = image_setup

    def scripted(scores: list[float], seen: dict[int, dict]):
        steps = iter([2, 4, 6, 8, 10])

        def validate(model):
            trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
            seen[next(steps)] = trainable
            return {"accuracy": scores.pop(0), "loss": 1.0}

        return validate

    config = TrainConfig(method="lora", **{**ON_CPU, "lr": 1e-2, "eval_every": 2, "steps": 10}, keep_best=True)
    seen: dict[int, dict] = {}
    result = train(base, data, config, out_dir=tmp_path / "best", validate=scripted([0.5, 0.9, 0.6, 0.4, 0.3], seen))
    assert result.best["step"] == 4 and result.metrics["kept_step"] == 4 and result.final["accuracy"] == 0.9
    kept = dict(result.model.named_parameters())
    assert all(torch.equal(kept[n].detach(), value) for n, value in seen[4].items())
    assert not all(torch.equal(kept[n].detach(), value) for n, value in seen[10].items())  # training moved on
    model, _, _ = load_run(base, tmp_path / "best")
    saved = dict(model.named_parameters())
    assert all(torch.allclose(saved[n].detach(), value) for n, value in seen[4].items())
    plain_seen: dict[int, dict] = {}
    plain = train(
        base, data, replace(config, keep_best=False), validate=scripted([0.5, 0.9, 0.6, 0.4, 0.3], plain_seen)
    )
    plain_weights = dict(plain.model.named_parameters())
    assert plain.metrics["kept_step"] == 10
    assert all(torch.equal(plain_weights[n].detach(), value) for n, value in plain_seen[10].items())


def test_image_size_overrides_the_bases(image_setup):
    base, data = image_setup
    result = train(base, data, TrainConfig(method="head", **{**FAST, "steps": 2}, image_size=8))
    assert result.task.image_size == 8 and result.metrics["preprocessing"]["image_size"] == 8


@pytest.mark.slow
def test_compile_runs_the_training_step_through_torch_compile(image_setup, monkeypatch):
    """``compile=True``: the step calls the model compiled (the same parameters, so the same losses), and what is
    returned and saved is the plain PEFT model. The backend is aot_eager here, whose graph capture and autograd are
    inductor's, with no C++ compiler needed."""
    base, data = image_setup
    monkeypatch.setattr(hora.optim, "COMPILE_BACKEND", "aot_eager")
    compiled_with, real_compile = [], torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: compiled_with.append(kw) or real_compile(model, **kw))
    config = TrainConfig(method="hora", **{**ON_CPU, "steps": 3})
    eager = train(base, data, config)
    assert compiled_with == []
    compiled = train(base, data, config, compile=True)
    assert compiled_with == [{"backend": "aot_eager"}]
    assert compiled.metrics["config"]["compile"] is True and isinstance(compiled.model, peft.PeftModel)
    assert compiled.history["loss"] == pytest.approx(eager.history["loss"], rel=1e-4)
    assert compiled.final == pytest.approx(eager.final, rel=1e-4)
