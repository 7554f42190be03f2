"""Attack: one request that costs the server minutes of CPU.

Perplexity tokenised the whole pasted passage before applying its token cap, once per model: an 8 MB passage cost
79 s of server CPU. Texts are now cut by characters before tokenisation (``hora.infer.cut_text``), keeping as many
characters per kept token as any tokenizer's tokens span, and the cut is reported as a truncation.
"""

from __future__ import annotations

import time

import pytest
from helpers import char_tokenizer, tiny_llama

from hora import infer


class CountingTokenizer:
    """The character tokenizer, recording how many characters each call had to tokenise."""

    def __init__(self) -> None:
        self.inner, self.seen = char_tokenizer(), []

    def __call__(self, text, **kw):
        self.seen.append(len(text))
        return self.inner(text, **kw)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture(scope="module")
def model():
    return tiny_llama()


PASSAGE = "to be or not to be, that is the question. " * 200_000  # 8.6 MB


def test_an_8_mb_passage_is_cut_before_it_is_tokenised(model):
    tokenizer = CountingTokenizer()
    start = time.perf_counter()
    result = infer.perplexity(model, tokenizer, PASSAGE, max_tokens=64)
    assert result.truncated and result.tokens <= 64
    assert max(tokenizer.seen) <= 64 * infer.CHARS_PER_TOKEN  # not 8.6 million characters
    assert time.perf_counter() - start < 2


def test_cutting_first_scores_the_same_tokens(model):
    tokenizer = char_tokenizer()
    text = "the quick brown fox jumps over the lazy dog. " * 3
    whole = infer.perplexity(model, tokenizer, text, max_tokens=None)
    capped = infer.perplexity(model, tokenizer, text * 50, max_tokens=whole.tokens + 1)
    assert capped.truncated and capped.tokens == whole.tokens
    assert capped.loss == pytest.approx(whole.loss, rel=1e-5)


def test_long_prompts_are_cut_from_their_start(model):
    tokenizer = CountingTokenizer()
    prompt = "x" * 5_000_000 + "the end"
    infer.next_token_topk(model, tokenizer, prompt, k=3)
    assert max(tokenizer.seen) <= infer.context_length(model) * infer.CHARS_PER_TOKEN
    text, cut = infer.cut_text(prompt, 4, keep="end")
    assert cut and text.endswith("the end") and len(text) == 4 * infer.CHARS_PER_TOKEN
    assert infer.cut_text("short", 4) == ("short", False) and infer.cut_text(prompt, None) == (prompt, False)
