"""Inference helpers for side-by-side comparisons: top-k classes, sampled generation streamed token by
token, the next-token distribution and the perplexity of a passage.

Work per request is bounded before tokenisation: a text is cut to ``CHARS_PER_TOKEN`` characters per token the
caller will keep (its end for prompts, its start for passages), so an 8 MB paste costs what its kept part costs.
"""

from __future__ import annotations

import functools
import inspect
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
from PIL import Image
from torch import nn


if TYPE_CHECKING:
    from hora.mixed import MixedModel


@dataclass
class Prediction:
    """Top-k classes of one image under one model."""

    labels: list[str]
    probabilities: list[float]
    latency_ms: float


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def classify(model: nn.Module, processor, image: Image.Image, top_k: int = 5) -> Prediction:
    """Top-k classes of ``image``. ``processor`` is the base model's image processor (resizing and
    normalisation); the latency covers preprocessing and the forward pass."""
    start = time.perf_counter()
    pixels = processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"]
    logits = model(pixel_values=pixels.to(model_device(model))).logits[0].float()
    id2label = getattr(getattr(model, "config", None), "id2label", None) or {}
    return _prediction(logits, id2label, top_k, start)


def _prediction(logits: torch.Tensor, id2label: dict, top_k: int, start: float) -> Prediction:
    """Top-k of (L,) logits; the latency counts from ``start`` (a ``time.perf_counter()``)."""
    probabilities = logits.softmax(-1)
    top = probabilities.topk(min(top_k, probabilities.numel()))
    latency = (time.perf_counter() - start) * 1000
    labels = [str(id2label.get(int(i), int(i))) for i in top.indices]
    return Prediction(labels, [float(p) for p in top.values], latency)


CHARS_PER_TOKEN = 32
"""Characters kept per token before tokenising: more than any tokenizer's token spans (a BPE token of runs of
spaces or a long word stays far below), so cutting first never changes the tokens that are kept, only their count."""


def cut_text(text: str, max_tokens: int | None, keep: str = "end") -> tuple[str, bool]:
    """``text`` cut to ``CHARS_PER_TOKEN * max_tokens`` characters (its ``"end"`` or ``"start"``) before
    tokenising; also whether it was cut. ``max_tokens=None``: unchanged."""
    if max_tokens is None or len(text) <= CHARS_PER_TOKEN * max_tokens:
        return text, False
    limit = CHARS_PER_TOKEN * max_tokens
    return (text[-limit:] if keep == "end" else text[:limit]), True


def _encode(tokenizer, text: str, max_tokens: int | None = None) -> tuple[torch.Tensor, bool]:
    """Token ids (1, T) of ``text``, keeping the last ``max_tokens``; also whether it was truncated."""
    text, cut = cut_text(text, max_tokens, keep="end")
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    if ids.shape[1] == 0:  # an empty prompt starts from the start-of-text token (GPT-2 style models use EOS)
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if start is None:
            raise ValueError("The prompt is empty and the tokenizer has no BOS/EOS token to start from.")
        ids = torch.tensor([[start]])
    truncated = max_tokens is not None and ids.shape[1] > max_tokens
    return (ids[:, -max_tokens:] if truncated else ids), truncated or cut


def as_chat(tokenizer, prompt: str) -> str:
    """``prompt`` as a user turn of the tokenizer's chat template, ready for the assistant's answer, when the
    tokenizer has one (an instruct model answers a question instead of continuing it); else ``prompt``. A prompt
    that already holds the template's markers is left alone."""
    template = getattr(tokenizer, "chat_template", None)
    if not template or not prompt.strip():
        return prompt
    specials = [t for t in getattr(tokenizer, "all_special_tokens", []) if len(t) > 2]
    if any(t in prompt for t in specials):
        return prompt
    messages = [{"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def context_length(model: nn.Module) -> int:
    config = model.config
    return int(getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", 1024))


def last_logits_only(model: nn.Module) -> dict[str, int]:
    """``{"logits_to_keep": 1}`` for a causal LM that takes it (then its forward computes the last position's
    logits only, not a (T, vocab) matrix for the whole prompt), else {}. Sampling reads the last position only."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {"logits_to_keep": 1} if _takes_logits_to_keep(type(inner)) else {}


@functools.cache
def _takes_logits_to_keep(model_class: type) -> bool:
    return "logits_to_keep" in inspect.signature(model_class.forward).parameters


def _sample(logits: torch.Tensor, temperature: float, top_k: int, generator: torch.Generator) -> int:
    """One token from (V,) logits: greedy at temperature 0, else softmax(logits / T) within the top k, drawn among
    those k only (a draw over the whole vocabulary with the rest masked out costs a pass over every entry, several
    milliseconds a token for a 49k vocabulary on a CPU, for the same distribution)."""
    if temperature <= 0:
        return int(logits.argmax())
    logits = logits.float() / temperature
    if 0 < top_k < logits.numel():
        top = logits.topk(top_k)
        return int(top.indices[int(torch.multinomial(top.values.softmax(-1).cpu(), 1, generator=generator))])
    return int(torch.multinomial(logits.softmax(-1).cpu(), 1, generator=generator))


@torch.no_grad()
def generate_stream(
    model: nn.Module,
    tokenizer,
    prompt: str,
    max_new_tokens: int = 64,
    temperature: float = 0.8,
    top_k: int = 40,
    seed: int = 0,
) -> Iterator[str]:
    """Yield the generated text so far after every new token (the prompt not included).

    Sampling uses its own seeded generator, so the same seed gives the same text for the same model. A chat
    model's tokenizer wraps the prompt in its chat template (``as_chat``). The prompt keeps its last tokens when it
    does not fit the context; generation stops at the context limit or an end-of-sequence token.
    """
    device = model_device(model)
    limit = context_length(model)
    ids, _ = _encode(tokenizer, as_chat(tokenizer, prompt), max_tokens=max(1, limit - max_new_tokens))
    ids = ids.to(device)
    generator = torch.Generator().manual_seed(seed)
    new: list[int] = []
    past = None
    step_input = ids
    for _ in range(max_new_tokens):
        if ids.shape[1] + len(new) > limit:
            break
        out = model(input_ids=step_input, past_key_values=past, use_cache=True, **last_logits_only(model))
        past = out.past_key_values
        token = _sample(out.logits[0, -1], temperature, top_k, generator)
        if token == tokenizer.eos_token_id:
            break
        new.append(token)
        step_input = torch.tensor([[token]], device=device)
        yield tokenizer.decode(new, skip_special_tokens=True)


@dataclass
class TokenDistribution:
    tokens: list[str]
    probabilities: list[float]


@torch.no_grad()
def next_token_topk(model: nn.Module, tokenizer, prompt: str, k: int = 10) -> TokenDistribution:
    """The k most likely next tokens after ``prompt`` (in the chat template of a chat model: the first token of its
    answer) and their probabilities."""
    ids, _ = _encode(tokenizer, as_chat(tokenizer, prompt), max_tokens=context_length(model))
    logits = model(input_ids=ids.to(model_device(model)), **last_logits_only(model)).logits
    return _distribution(tokenizer, logits[0, -1], k)


def _distribution(tokenizer, logits: torch.Tensor, k: int) -> TokenDistribution:
    probabilities = logits.float().softmax(-1)
    top = probabilities.topk(min(k, probabilities.numel()))
    tokens = [tokenizer.decode([int(i)]) for i in top.indices]
    return TokenDistribution(tokens, [float(p) for p in top.values])


@dataclass
class Perplexity:
    loss: float  # mean negative log-likelihood per token, nats
    perplexity: float
    tokens: int
    truncated: bool


def _passage(tokenizer, text: str, max_tokens: int | None) -> tuple[torch.Tensor, bool]:
    """The (T,) token ids of a passage to score, its first ``max_tokens`` kept; also whether it was cut."""
    text, cut = cut_text(text, max_tokens, keep="start")
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"][0]
    if ids.numel() < 2:
        raise ValueError("The passage needs at least two tokens to score.")
    truncated = cut or (max_tokens is not None and ids.numel() > max_tokens)
    return (ids[:max_tokens] if max_tokens is not None else ids), truncated


@torch.no_grad()
def perplexity(model: nn.Module, tokenizer, text: str, max_tokens: int | None = None) -> Perplexity:
    """Perplexity of ``text`` under ``model``, over windows of the model's context (no overlap).

    ``max_tokens`` caps the work on long pastes (the first tokens are scored and ``truncated`` says so); the text
    is cut by characters first (``cut_text``), so a huge paste is never tokenised whole.
    """
    ids, truncated = _passage(tokenizer, text, max_tokens)
    window = context_length(model)
    total, count = 0.0, 0
    device = model_device(model)
    for start in range(0, ids.numel() - 1, window):
        chunk = ids[start : start + window + 1].to(device)
        if chunk.numel() < 2:
            break
        logits = model(input_ids=chunk[:-1].unsqueeze(0)).logits[0].float()
        total += float(torch.nn.functional.cross_entropy(logits, chunk[1:], reduction="sum"))
        count += chunk.numel() - 1
    loss = total / count
    return Perplexity(loss, math.exp(loss), count, truncated)


# ---------------------------------------------------------------------------------------------------------------
# Several variants in one forward pass (``hora.mixed.MixedModel``): the comparisons above, side by side.
# Row i of each batch goes through variant ``names[i]`` and gives what the call above gives for that variant alone.


def _names(names: Sequence[str]) -> list[str]:
    if isinstance(names, str) or not names:
        raise ValueError("Give a list of at least one variant name.")
    names = list(names)
    if len(set(names)) != len(names):
        raise ValueError(f"Each variant may be named once: {names}.")
    return names


@torch.no_grad()
def classify_many(
    mixed: MixedModel, processor, image: Image.Image, names: Sequence[str], top_k: int = 5
) -> dict[str, Prediction]:
    """``classify`` under every variant of ``names`` in one forward pass (one row each); every prediction's latency
    is that one call's, the same for all (preprocessing included). Labels are each variant's own."""
    names = _names(names)
    start = time.perf_counter()
    pixels = processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"].to(mixed.device)
    logits = mixed(names, pixel_values=pixels.expand(len(names), *pixels.shape[1:])).logits.float()  # (N, L)
    found = {name: _prediction(logits[i], mixed.labels(name), top_k, start) for i, name in enumerate(names)}
    latency = (time.perf_counter() - start) * 1000
    return {name: replace(prediction, latency_ms=latency) for name, prediction in found.items()}


@torch.no_grad()
def generate_stream_many(
    mixed: MixedModel,
    tokenizer,
    prompt: str,
    names: Sequence[str],
    max_new_tokens: int = 64,
    temperature: float = 0.8,
    top_k: int = 40,
    seed: int | Sequence[int] = 0,
) -> Iterator[dict[str, str]]:
    """``generate_stream`` for every variant of ``names`` at once, one batched forward pass per token: yields
    ``{name: text so far}`` after every step that made a token.

    Row i samples with its own generator, seeded as ``generate_stream`` seeds it (``seed``, or ``seed[i]``), so
    its texts are that call's. A variant that ends (end-of-sequence) keeps its text and leaves the batch; the
    others go on.
    """
    names = _names(names)
    seeds = [seed] * len(names) if isinstance(seed, int) else [int(s) for s in seed]
    if len(seeds) != len(names):
        raise ValueError(f"{len(seeds)} seeds for {len(names)} variants.")
    device, limit = mixed.device, context_length(mixed.model)
    ids, _ = _encode(tokenizer, as_chat(tokenizer, prompt), max_tokens=max(1, limit - max_new_tokens))
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    new: list[list[int]] = [[] for _ in names]
    texts = dict.fromkeys(names, "")
    rows = list(range(len(names)))  # the variants still generating, in batch order
    past, step_input = None, ids.to(device).expand(len(names), -1)  # (N, T)
    for step in range(max_new_tokens):
        if ids.shape[1] + step > limit:
            break
        batch = [names[i] for i in rows]
        out = mixed(batch, input_ids=step_input, past_key_values=past, use_cache=True, **last_logits_only(mixed.model))
        past, kept, tokens = out.past_key_values, [], []
        for j, i in enumerate(rows):
            token = _sample(out.logits[j, -1], temperature, top_k, generators[i])
            if token != tokenizer.eos_token_id:
                new[i].append(token)
                texts[names[i]] = tokenizer.decode(new[i], skip_special_tokens=True)
                kept.append(j)
                tokens.append(token)
        if not kept:
            return
        if len(kept) < len(rows):  # the ended rows leave the batch and its cache
            past.batch_select_indices(torch.tensor(kept, device=device))
            rows = [rows[j] for j in kept]
        yield dict(texts)
        step_input = torch.tensor(tokens, device=device).unsqueeze(1)  # (N', 1)


@torch.no_grad()
def next_token_topk_many(
    mixed: MixedModel, tokenizer, prompt: str, names: Sequence[str], k: int = 10
) -> dict[str, TokenDistribution]:
    """``next_token_topk`` under every variant of ``names`` in one forward pass."""
    names = _names(names)
    ids, _ = _encode(tokenizer, as_chat(tokenizer, prompt), max_tokens=context_length(mixed.model))
    ids = ids.to(mixed.device).expand(len(names), -1)  # (N, T)
    logits = mixed(names, input_ids=ids, **last_logits_only(mixed.model)).logits[:, -1]  # (N, V)
    return {name: _distribution(tokenizer, logits[i], k) for i, name in enumerate(names)}


MAX_LOGITS = 1 << 27
"""Logit values one batched perplexity forward may produce (512 MiB in float32): a long passage scores fewer
variants per forward pass (down to one: then as ``perplexity`` does), never N (T, vocab) matrices at once."""


@torch.no_grad()
def perplexity_many(
    mixed: MixedModel, tokenizer, text: str, names: Sequence[str], max_tokens: int | None = None
) -> dict[str, Perplexity]:
    """``perplexity`` of ``text`` under every variant of ``names``: the same windows, the variants as rows of each
    window's batch (as many per forward pass as ``MAX_LOGITS`` allows)."""
    names = _names(names)
    ids, truncated = _passage(tokenizer, text, max_tokens)
    window, device = context_length(mixed.model), mixed.device
    totals, count = dict.fromkeys(names, 0.0), 0
    for start in range(0, ids.numel() - 1, window):
        chunk = ids[start : start + window + 1].to(device)
        if chunk.numel() < 2:
            break
        length = chunk.numel() - 1
        per_pass = max(1, MAX_LOGITS // (length * mixed.config.vocab_size))
        for first in range(0, len(names), per_pass):
            group = names[first : first + per_pass]
            inputs = chunk[:-1].unsqueeze(0).expand(len(group), -1)  # (n, T)
            logits = mixed(group, input_ids=inputs).logits.float()  # (n, T, V)
            for i, name in enumerate(group):
                totals[name] += float(torch.nn.functional.cross_entropy(logits[i], chunk[1:], reduction="sum"))
        count += length
    return {n: Perplexity(t / count, math.exp(t / count), count, truncated) for n, t in totals.items()}
