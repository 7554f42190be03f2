"""Inference helpers: classification top-k, streamed sampling, next-token distribution, perplexity."""

from __future__ import annotations

import math

import peft
import pytest
import torch
from helpers import char_tokenizer, tiny_llama, tiny_vit
from PIL import Image
from transformers import ViTImageProcessor

import hora
from hora import infer


def test_classify_returns_sorted_top_k_with_labels():
    model = tiny_vit()
    model.config.id2label = {0: "cat", 1: "dog", 2: "猫"}
    processor = ViTImageProcessor(size={"height": 16, "width": 16})
    prediction = infer.classify(model, processor, Image.new("L", (5, 40), 128), top_k=5)
    assert sorted(prediction.labels) == ["cat", "dog", "猫"]  # k capped at the number of classes
    assert prediction.probabilities == sorted(prediction.probabilities, reverse=True)
    assert sum(prediction.probabilities) == pytest.approx(1, abs=1e-5)
    assert prediction.latency_ms > 0


def test_generation_is_streamed_and_reproducible_under_a_seed():
    model, tokenizer = tiny_llama(), char_tokenizer()
    steps = list(
        infer.generate_stream(model, tokenizer, "to be", max_new_tokens=12, temperature=1.0, top_k=20, seed=3)
    )
    assert 1 <= len(steps) <= 12
    assert all(steps[i + 1].startswith(steps[i]) for i in range(len(steps) - 1))  # each yield extends the last
    again = list(
        infer.generate_stream(model, tokenizer, "to be", max_new_tokens=12, temperature=1.0, top_k=20, seed=3)
    )
    assert again == steps
    greedy = list(infer.generate_stream(model, tokenizer, "to be", max_new_tokens=5, temperature=0))
    assert greedy == list(infer.generate_stream(model, tokenizer, "to be", max_new_tokens=5, temperature=0, seed=9))


def test_generation_with_cache_matches_full_recompute():
    model, tokenizer = tiny_llama(), char_tokenizer()
    text = list(infer.generate_stream(model, tokenizer, "abc", max_new_tokens=6, temperature=0))[-1]
    ids = tokenizer("abc", return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        for _ in range(len(text)):
            ids = torch.cat([ids, model(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert tokenizer.decode(ids[0, 3:]) == text


def test_long_prompts_keep_their_end_and_empty_prompts_work():
    model, tokenizer = tiny_llama(), char_tokenizer()
    assert len(list(infer.generate_stream(model, tokenizer, "ab " * 200, max_new_tokens=4, temperature=0))) == 4
    assert len(list(infer.generate_stream(model, tokenizer, "", max_new_tokens=3, temperature=0))) == 3


def test_next_token_distribution_and_perplexity():
    model, tokenizer = tiny_llama(), char_tokenizer()
    dist = infer.next_token_topk(model, tokenizer, "the ", k=7)
    assert len(dist.tokens) == 7 and dist.probabilities == sorted(dist.probabilities, reverse=True)
    text = "the quick brown fox jumps over the lazy dog " * 3  # longer than the 32-token context: 5 windows
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    result = infer.perplexity(model, tokenizer, text)
    assert result.tokens == ids.shape[1] - 1 and not result.truncated
    assert result.perplexity == pytest.approx(math.exp(result.loss))
    short = infer.perplexity(model, tokenizer, text[:20])
    with torch.no_grad():
        ids20 = tokenizer(text[:20], return_tensors="pt", add_special_tokens=False)["input_ids"]
        assert short.loss == pytest.approx(model(input_ids=ids20, labels=ids20).loss.item(), rel=1e-5)
    assert infer.perplexity(model, tokenizer, text, max_tokens=10).truncated
    with pytest.raises(ValueError, match="at least two tokens"):
        infer.perplexity(model, tokenizer, "a")


def test_adapters_change_predictions_side_by_side():
    base, tokenizer = tiny_llama(), char_tokenizer()
    adapted = peft.get_peft_model(tiny_llama(), hora.HoraConfig(r=4, hyper_hidden=8, init_weights=False)).eval()
    a = infer.next_token_topk(base, tokenizer, "hello", k=5).probabilities
    b = infer.next_token_topk(adapted, tokenizer, "hello", k=5).probabilities
    assert a != b


def test_a_chat_models_prompt_is_a_user_turn_of_its_template():
    from helpers import char_tokenizer

    from hora.infer import as_chat

    tokenizer = char_tokenizer()
    assert as_chat(tokenizer, "hello") == "hello"  # no template: a plain language model continues the text
    tokenizer.chat_template = (
        "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}[assistant]{% endif %}"
    )
    assert as_chat(tokenizer, "hello") == "[user]hello[assistant]"
    assert as_chat(tokenizer, "") == ""  # an empty prompt still starts from the start token
