"""hora.models: the one place that says what kind of base a model is, which class a task needs, and its head."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_gpt2, tiny_llama, tiny_vit
from transformers import Dinov2Config, GPT2Config, LlamaConfig, T5Config, ViTConfig

from hora.models import (
    UnsupportedModelError,
    base_kind,
    fit_labels,
    head_modules,
    labels_of,
    model_class,
    new_head,
)


def test_base_kind_reads_the_architecture_then_the_model_type():
    assert base_kind(ViTConfig(architectures=["ViTForImageClassification"])) == "image"
    assert base_kind(LlamaConfig(architectures=["LlamaForCausalLM"])) == "lm"
    assert base_kind(GPT2Config(architectures=["GPT2LMHeadModel"])) == "lm"
    assert base_kind(GPT2Config(architectures=["GPT2ForSequenceClassification"])) == "lm"
    assert base_kind(Dinov2Config(architectures=["Dinov2Model"])) == "image"  # a bare backbone
    assert base_kind(ViTConfig()) == "image"  # no architectures saved
    with pytest.raises(UnsupportedModelError, match="causal language models"):
        base_kind(T5Config(architectures=["T5ForConditionalGeneration"]))


def test_model_class_per_task():
    assert model_class("image", ViTConfig()).__name__ == "AutoModelForImageClassification"
    assert model_class("lm", LlamaConfig()).__name__ == "AutoModelForCausalLM"
    assert model_class("text", GPT2Config()).__name__ == "AutoModelForSequenceClassification"
    with pytest.raises(UnsupportedModelError, match="sequence-classification head"):
        model_class("text", ViTConfig())


def test_head_modules():
    assert head_modules(tiny_vit()) == ["classifier"]
    assert head_modules(tiny_gpt2()) == ["lm_head"]
    assert head_modules(tiny_llama()) == ["lm_head"]
    with pytest.raises(ValueError, match="Cannot find the output head"):
        head_modules(torch.nn.Sequential(torch.nn.ReLU()))


def test_a_new_label_set_gets_a_fresh_head_and_the_same_one_does_not():
    model = tiny_vit()
    before = model.classifier.weight.clone()
    assert not fit_labels(model, labels_of(model)) and torch.equal(model.classifier.weight, before)
    torch.manual_seed(0)
    assert fit_labels(model, {0: "x", 1: "y", 2: "z", 3: "w"})
    assert model.classifier.out_features == 4 and labels_of(model)[3] == "w"
    assert model.config.label2id == {"x": 0, "y": 1, "z": 2, "w": 3}
    assert not fit_labels(tiny_gpt2(), {0: "a"})  # a causal LM has no classifier to fit
    torch.manual_seed(0)
    again = tiny_vit()
    new_head(again, {0: "x", 1: "y", 2: "z", 3: "w"})
    torch.manual_seed(0)
    other = tiny_vit()
    new_head(other, {0: "x", 1: "y", 2: "z", 3: "w"})
    assert torch.equal(again.classifier.weight, other.classifier.weight)  # drawn from the seeded RNG
