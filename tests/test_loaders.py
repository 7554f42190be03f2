"""hora.loaders: the one loader of bases and trained adapters (Hub and embedded names are tests/test_hub.py's)."""

from __future__ import annotations

import json
import threading

import peft
import pytest
import torch
from helpers import char_tokenizer, save_gpt2, tiny_gpt2, tiny_vit

from hora.hub import HubError
from hora.loaders import LoadedBase, load_adapter, load_base, run_labels


def test_a_causal_lm_for_text_classification_gets_a_fresh_head(tmp_path):
    base = save_gpt2(tmp_path / "gpt2")
    torch.manual_seed(0)
    first = load_base(base, task="text", id2label={0: "neg", 1: "pos"})
    torch.manual_seed(0)
    second = load_base(base, task="text", id2label={0: "neg", 1: "pos"})
    assert isinstance(first, LoadedBase) and (first.kind, first.task, first.head_replaced) == ("lm", "text", True)
    assert type(first.model).__name__ == "GPT2ForSequenceClassification"
    assert first.model.config.pad_token_id == first.processor.pad_token_id is not None
    assert torch.equal(first.model.score.weight, second.model.score.weight)  # the seeded draw, as training does
    with pytest.raises(HubError, match="label set"):
        load_base(base, task="text")


def test_a_task_the_base_cannot_do_is_refused(tmp_path):
    base = save_gpt2(tmp_path / "gpt2")
    with pytest.raises(HubError, match="language model"):
        load_base(base, task="image")
    tiny_vit().save_pretrained(tmp_path / "vit")
    with pytest.raises(HubError, match="sequence-classification head"):
        load_base(tmp_path / "vit", task="text", id2label={0: "a"})


def test_a_vit_without_a_processor_gets_the_engines_default(tmp_path):
    tiny_vit().save_pretrained(tmp_path / "vit")
    base = load_base(tmp_path / "vit")
    pixels = base.processor(images=__import__("PIL.Image").Image.new("RGB", (5, 9)), return_tensors="pt")
    assert pixels["pixel_values"].shape == (1, 3, 16, 16)


def test_labels_of_a_run(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"id2label": {"0": "a", "1": "b"}}))
    assert run_labels(tmp_path) == {0: "a", 1: "b"}
    (tmp_path / "metrics.json").write_text("{not json")
    with pytest.raises(HubError, match="not valid JSON"):
        run_labels(tmp_path)
    (tmp_path / "metrics.json").write_text(json.dumps({"id2label": ["a", "b"]}))
    with pytest.raises(HubError, match="id2label"):
        run_labels(tmp_path)


def test_a_head_only_run_cannot_go_onto_an_adapted_model(tmp_path):
    (tmp_path / "head").mkdir()
    (tmp_path / "head" / "head_config.json").write_text(json.dumps({"format": "hora-head"}))
    adapted = peft.get_peft_model(tiny_vit(), peft.LoraConfig(r=2, target_modules=["q_proj"]))
    with pytest.raises(HubError, match="head-only run"):
        load_adapter(adapted, tmp_path / "head")
    with pytest.raises(HubError, match="not a head-only run"):
        load_adapter(tiny_vit(), tmp_path / "head")


def test_an_adapter_loads_onto_its_loaded_base_and_matches(tmp_path):
    save_gpt2(tmp_path / "gpt2")
    torch.manual_seed(0)
    trained = peft.get_peft_model(
        tiny_gpt2(), peft.LoraConfig(r=2, target_modules=["c_attn"], init_lora_weights=False)
    )
    trained.save_pretrained(tmp_path / "lora")
    model = load_adapter(load_base(tmp_path / "gpt2"), tmp_path / "lora")
    ids = char_tokenizer()("to be", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, trained.eval()(input_ids=ids).logits)


def _held_by_another_thread(lock) -> bool:
    found = []

    def try_it():
        acquired = lock.acquire(blocking=False)
        found.append(not acquired)
        if acquired:
            lock.release()

    thread = threading.Thread(target=try_it)
    thread.start()
    thread.join()
    return found[0]


def test_building_sets_torchs_default_dtype_only_holding_the_lock_and_only_to_the_one_asked(tmp_path, monkeypatch):
    """transformers sets the process-wide default dtype while it builds a model. A float32 load of a bfloat16
    checkpoint must never set bfloat16, and never without ``BUILDING`` held: two threads building at once left
    SmolLM2 partly in bfloat16 when the explorer loaded its models while visitors' requests loaded others."""
    from helpers import tiny_llama

    from hora.models import BUILDING

    folder = tmp_path / "llama"
    tiny_llama().to(torch.bfloat16).save_pretrained(folder)  # its config says bfloat16
    char_tokenizer().save_pretrained(folder)
    seen, real = [], torch.set_default_dtype

    def spy(dtype):
        seen.append((dtype, _held_by_another_thread(BUILDING)))
        real(dtype)

    monkeypatch.setattr(torch, "set_default_dtype", spy)
    loaded = load_base(str(folder), dtype=torch.float32)
    assert seen and {dtype for dtype, _ in seen} == {torch.float32} and all(held for _, held in seen)
    assert {p.dtype for p in loaded.model.parameters()} == {
        torch.float32
    } and torch.get_default_dtype() == torch.float32
