"""Compare tab: the same input through the base model and each adapter, side by side."""

from __future__ import annotations

import html
from collections.abc import Iterator

import gradio as gr
import plotly.graph_objects as go
from PIL import Image

from app import figures
from app.settings import LIMITS, clamp
from app.store import ModelStore, SessionModels, Variant, get_base, variants_of
from hora import infer


def _chosen(
    store: ModelStore, session: SessionModels | None, base_name: str, names: list[str] | None
) -> dict[str, Variant]:
    if not base_name:
        raise gr.Error("Pick a base model first.")
    variants = variants_of(store, session, base_name)
    chosen = {n: variants[n] for n in (names or []) if n in variants}
    if not chosen:
        raise gr.Error("Tick at least one model to compare.")
    return chosen


def classify(
    store: ModelStore, session: SessionModels | None, base_name: str, image: Image.Image | None, names: list[str]
) -> tuple[go.Figure, list[list]]:
    """Top-5 classes of ``image`` under every chosen variant, plus a table of the top class and latency."""
    if image is None:
        raise gr.Error("Upload an image or pick one of the examples first.")
    chosen = _chosen(store, session, base_name, names)
    processor = get_base(store, session, base_name).processor
    predictions = {n: infer.classify(v.model, processor, image, top_k=5) for n, v in chosen.items()}
    table = [[n, p.labels[0], round(p.probabilities[0], 4), round(p.latency_ms, 2)] for n, p in predictions.items()]
    return figures.topk_bars(predictions, "Top-5 classes per model"), table


def _columns(texts: dict[str, str], prompt: str) -> str:
    """Generations side by side as HTML columns (escaped: generated text is untrusted)."""
    cells = "".join(
        f'<div class="gen-col"><div class="gen-name">{html.escape(n)}</div>'
        f'<pre class="gen-text"><span class="gen-prompt">{html.escape(prompt[-200:])}</span>{html.escape(t)}</pre></div>'
        for n, t in texts.items()
    )
    return f'<div class="gen-row">{cells}</div>'


def generate(
    store: ModelStore,
    session: SessionModels | None,
    base_name: str,
    prompt: str,
    names: list[str],
    max_new_tokens: float,
    temperature: float,
    top_k: float,
    seed: float,
) -> Iterator[tuple[str, str]]:
    """Stream every chosen variant's continuation, one token each in turn. Yields (html, notice)."""
    chosen = _chosen(store, session, base_name, names)
    tokenizer = get_base(store, session, base_name).processor
    prompt = prompt or ""
    notices = []
    if len(prompt) > LIMITS.max_prompt_chars:
        prompt = prompt[-LIMITS.max_prompt_chars :]
        notices.append(f"The prompt was cut to its last {LIMITS.max_prompt_chars} characters.")
    if not prompt.strip():
        notices.append("Empty prompt: generating from the start-of-text token.")
    max_new = int(clamp(max_new_tokens, 1, LIMITS.max_new_tokens))
    streams = {
        n: infer.generate_stream(
            v.model,
            tokenizer,
            prompt,
            max_new_tokens=max_new,
            temperature=clamp(temperature, 0.0, 2.0),
            top_k=int(clamp(top_k, 0, 1000)),
            seed=int(seed or 0),
        )
        for n, v in chosen.items()
    }
    texts = dict.fromkeys(streams, "")
    notice = " ".join(notices)
    yield _columns(texts, prompt), notice
    while streams:
        for name in list(streams):
            try:
                texts[name] = next(streams[name])
            except StopIteration:
                del streams[name]
        yield _columns(texts, prompt), notice


def next_tokens(
    store: ModelStore, session: SessionModels | None, base_name: str, prompt: str, names: list[str]
) -> go.Figure:
    """Each variant's 10 most likely next tokens after the prompt."""
    chosen = _chosen(store, session, base_name, names)
    tokenizer = get_base(store, session, base_name).processor
    prompt = (prompt or "")[-LIMITS.max_prompt_chars :]
    dists = {n: infer.next_token_topk(v.model, tokenizer, prompt, k=10) for n, v in chosen.items()}
    return figures.topk_bars(dists, "Next-token distribution (top 10)")


def passage_perplexity(
    store: ModelStore, session: SessionModels | None, base_name: str, passage: str, names: list[str]
) -> tuple[list[list], str]:
    """Perplexity of a pasted passage under each variant (lower: the passage looks more like its training)."""
    chosen = _chosen(store, session, base_name, names)
    if not passage or len(passage.strip()) < 2:
        raise gr.Error("Paste a passage of at least a few characters.")
    tokenizer = get_base(store, session, base_name).processor
    rows, truncated = [], False
    for n, v in chosen.items():
        result = infer.perplexity(v.model, tokenizer, passage, max_tokens=LIMITS.max_perplexity_tokens)
        truncated |= result.truncated
        rows.append([n, round(result.perplexity, 3), round(result.loss, 4), result.tokens])
    notice = f"Scored the first {LIMITS.max_perplexity_tokens} tokens only." if truncated else ""
    return rows, notice
