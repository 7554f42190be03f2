"""Compare tab: the same input through the base model and each adapter, side by side."""

from __future__ import annotations

import html
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import gradio as gr
import plotly.graph_objects as go
from PIL import Image

from app import figures
from app.context import Context, choices, variant_choices
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


# ---------------------------------------------------------------------------------------------------------------
# The tab


@dataclass
class CompareTab:
    """The components other tabs update: the base pickers and the model checkboxes."""

    vision_base: gr.Dropdown
    vision_variants: gr.CheckboxGroup
    lm_base: gr.Dropdown
    lm_variants: gr.CheckboxGroup


def _first(names: list[str]) -> str | None:
    return names[0] if names else None


def _vision_section(ctx: Context) -> tuple[gr.Dropdown, gr.Image, gr.CheckboxGroup]:
    image_bases = ctx.store.names("image")
    with gr.Row():
        with gr.Column(scale=1):
            gr.Markdown("### Vision")
            base = gr.Dropdown(image_bases, value=_first(image_bases), label="Base model")
            image = gr.Image(type="pil", label="Image", height=220, elem_id="compare-image")
            if ctx.examples:
                gr.Examples(ctx.examples, inputs=image, cache_examples=False, label="Held-out examples")
            initial = variant_choices(ctx.store, None, _first(image_bases))  # API clients never run demo.load
            variants = gr.CheckboxGroup(label="Models", elem_id="vision-variants", **choices(initial))
            button = gr.Button("Classify", variant="primary", elem_id="classify-btn")
        with gr.Column(scale=2):
            plot = gr.Plot(label="Top-5 classes", elem_id="vision-plot")
            table = gr.Dataframe(headers=["model", "top class", "probability", "latency (ms)"], label="Summary")
    button.click(
        partial(classify, ctx.store),
        [ctx.session, base, image, variants],
        [plot, table],
        api_name="classify",
        concurrency_limit=LIMITS.inference_concurrency,
    )
    return base, image, variants


def _language_section(ctx: Context) -> tuple[gr.Dropdown, gr.CheckboxGroup]:
    lm_bases = ctx.store.names("lm")
    gr.Markdown("### Language")
    with gr.Row():
        with gr.Column(scale=1):
            base = gr.Dropdown(lm_bases, value=_first(lm_bases), label="Base model")
            prompt = gr.Textbox(label="Prompt", lines=3, value="ROMEO.\n")
            initial = variant_choices(ctx.store, None, _first(lm_bases))
            variants = gr.CheckboxGroup(label="Models", **choices(initial))
            with gr.Row():
                max_new = gr.Slider(1, LIMITS.max_new_tokens, value=80, step=1, label="Max new tokens")
                temperature = gr.Slider(0.0, 2.0, value=0.8, step=0.05, label="Temperature (0 = greedy)")
            with gr.Row():
                top_k = gr.Slider(0, 200, value=40, step=1, label="Top-k (0 = all)")
                seed = gr.Number(value=0, precision=0, label="Seed")
            generate_btn = gr.Button("Generate", variant="primary", elem_id="generate-btn")
        with gr.Column(scale=2):
            generations = gr.HTML(elem_id="generations")
            notice = gr.Markdown()
            token_plot = gr.Plot(label="Next-token distribution")
    with gr.Row():
        passage = gr.Textbox(label="Passage to score", lines=4, value=ctx.passage)
        ppl_table = gr.Dataframe(headers=["model", "perplexity", "loss (nats/token)", "tokens"], label="Perplexity")
    ppl_notice = gr.Markdown()
    ppl_btn = gr.Button("Score passage", elem_id="ppl-btn")

    generate_btn.click(
        partial(generate, ctx.store),
        [ctx.session, base, prompt, variants, max_new, temperature, top_k, seed],
        [generations, notice],
        api_name="generate",
        concurrency_limit=LIMITS.inference_concurrency,
    ).then(
        partial(next_tokens, ctx.store),
        [ctx.session, base, prompt, variants],
        token_plot,
        api_name="next_tokens",
        concurrency_limit=LIMITS.inference_concurrency,
    )
    ppl_btn.click(
        partial(passage_perplexity, ctx.store),
        [ctx.session, base, passage, variants],
        [ppl_table, ppl_notice],
        api_name="perplexity",
        concurrency_limit=LIMITS.inference_concurrency,
    )
    return base, variants


def build(ctx: Context, demo: gr.Blocks) -> CompareTab:
    """The Compare tab's components and events (call inside ``gr.Tab``)."""
    vision_base, _, vision_variants = _vision_section(ctx)
    lm_base, lm_variants = _language_section(ctx)
    refresh = partial(variant_choices, ctx.store)
    vision_base.change(refresh, [ctx.session, vision_base], vision_variants, api_name="vision_models")
    lm_base.change(refresh, [ctx.session, lm_base], lm_variants, api_name="lm_models")
    demo.load(refresh, [ctx.session, vision_base], vision_variants, api_name="init_vision")
    demo.load(refresh, [ctx.session, lm_base], lm_variants, api_name="init_lm")
    return CompareTab(vision_base, vision_variants, lm_base, lm_variants)
