"""Heads tab, knock-out section: for one input, each head's update ΔW_h of the layer and projection shown removed in
turn (``hora.knockout.head_knockout``, one batched forward pass per adapter), and how far the output moves.

The input is one of the held-out example images of an image base (the Compare tab's list: only files from it are
accepted, never a path a client makes up) or a prompt for a language model (in its chat template, as
``hora.infer`` feeds a chat model). Work per request is bounded: at most ``MAX_ADAPTERS`` adapters, the prompt's last
``hora.knockout.MAX_PROMPT_TOKENS`` tokens, and ``hora.knockout.MAX_ROWS`` heads per projection. On one CPU core,
SmolLM2-135M's q (9 heads, a 37-token chat prompt) takes 2.4 s for LoRA and HoRA, 5 s for all four adapters;
DINOv2-small 0.4 s.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from typing import Any

import gradio as gr
import plotly.graph_objects as go
from PIL import Image

from app import figures, heads_figures, heads_text, paint
from app.context import Context, as_sentences, example_label, example_truths, labels_known, valid
from app.settings import LIMITS
from app.store import ModelStore, SessionModels, Variant, get_base, summary_of, variants_of
from hora import infer, knockout
from hora.memo import fingerprint
from hora.methods import LOW_RANK_METHODS


logger = logging.getLogger(__name__)
MAX_ADAPTERS = 4  # per request: each adapter is one forward pass of heads + 2 rows
FALLBACK_PROMPT = "Once upon a time"
PRESS = "Press Knock out heads to run this input."


def _adapters(store: ModelStore, session: SessionModels | None, base_name: str | None) -> dict[str, Variant]:
    variants = variants_of(store, session, base_name) if base_name else {}
    return {n: v for n, v in variants.items() if v.method in LOW_RANK_METHODS}


def examples_of(ctx: Context, session: SessionModels | None, base_name: str | None) -> list[tuple[str, str]]:
    """(label, path) of every held-out example image whose true label the base knows (none for a language model)."""
    if not base_name:
        return []
    base = get_base(ctx.store, session, base_name)
    if base.kind != "image":
        return []
    truths = example_truths(ctx.examples, labels_known(base))
    return [(example_label(p, t), p) for p, t in truths.items() if t is not None]


def every_example(ctx: Context) -> list[tuple[str, str]]:
    """The examples of every image base, each once: the choices the picker is built with, since Gradio checks an API
    call's value against those (a page load narrows them to the base shown, ``input_options``)."""
    seen: dict[str, str] = {}
    for name in ctx.store.names("image"):
        seen.update({path: label for label, path in examples_of(ctx, None, name) if path not in seen})
    return [(label, path) for path, label in seen.items()]


def least_sure_example(ctx: Context, base_name: str | None, adapters: list[str]) -> str | None:
    """The example image ``adapters`` are least sure of (the lowest mean probability of their top class), where
    removing a head can move the answer most: an image they all classify with certainty moves by nothing. Computed
    once per base, examples, adapters and code (``app.paint``); the first example if it cannot be."""
    examples = [p for _, p in examples_of(ctx, None, base_name)]
    base = ctx.store.bases.get(base_name or "")
    chosen = [n for n in adapters or [] if base is not None and n in base.variants]
    if len(examples) < 2 or not chosen:
        return examples[0] if examples else None

    def compute() -> str:
        sure = {}
        for path in examples:
            with Image.open(path) as image:
                tops = [
                    infer.classify(base.variants[n].model, base.processor, image, 1).probabilities[0] for n in chosen
                ]
            sure[path] = sum(tops) / len(tops)
        return min(examples, key=lambda p: sure[p])

    try:
        found = paint.remembered(
            base, "heads-example", {"examples": fingerprint(examples), "adapters": chosen}, compute
        )
        return found if found in examples else examples[0]
    except Exception:  # a default that cannot be chosen must not stop the page
        logger.exception("choosing the knock-out's example for %s failed", base_name)
        return examples[0]


def default_prompt(ctx: Context, session: SessionModels | None, base_name: str | None) -> str:
    """The prompt a language base starts with: the first it was built with, else the passage's first line."""
    if not base_name:
        return FALLBACK_PROMPT
    prompts = (get_base(ctx.store, session, base_name).info.get("generations") or {}).get("prompts") or []
    if prompts and isinstance(prompts[0], str):
        return prompts[0]
    return next((line.strip() for line in ctx.passage.splitlines() if line.strip()), FALLBACK_PROMPT)


def input_options(
    ctx: Context, session: SessionModels | None, base_name: str | None, adapters: list[str] | None = None
) -> tuple[dict, dict, dict]:
    """The example picker and its image (an image base: the example the ticked ``adapters`` are least sure of) or
    the prompt box (a language base) for ``base_name``."""
    kind = get_base(ctx.store, session, base_name).kind if base_name else None
    examples = examples_of(ctx, session, base_name)
    shown = least_sure_example(ctx, base_name, adapters or []) if examples and base_name in ctx.store.bases else None
    value = shown or (examples[0][1] if examples else None)
    example = gr.update(choices=examples, value=value, visible=kind == "image")
    prompt = gr.update(value=default_prompt(ctx, session, base_name), visible=kind != "image")
    return example, gr.update(visible=kind == "image"), prompt


def preview(ctx: Context, path: str | None) -> str:
    """The chosen example image as HTML, inline (a PNG of at most 160 pixels a side), named by its label; nothing for
    a path that is not one of the examples."""
    if not path or path not in ctx.examples:
        return ""
    with Image.open(path) as image:
        small = image.convert("RGB")
    small.thumbnail((160, 160))
    buffer = io.BytesIO()
    small.save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    name = html.escape(example_label(path, None))  # its file's name
    return (
        f'<img src="data:image/png;base64,{data}" alt="The example image ({name})" '
        'style="height:140px;image-rendering:pixelated">'
    )


def check(ctx: Context, session, base_name, names, layer, projection, example, prompt) -> list:
    """Validator of the knock-out: each problem is shown on the control it concerns."""
    chosen = [n for n in (names or []) if n in _adapters(ctx.store, session, base_name)]
    kind = get_base(ctx.store, session, base_name).kind if base_name else None
    known = [p for _, p in examples_of(ctx, session, base_name)]
    bad_example = "Pick one of the example images." if kind == "image" and example not in known else None
    long = prompt is not None and len(prompt) > LIMITS.max_prompt_chars
    return [
        None,
        valid(None if base_name else "Pick a base model."),
        valid(None if chosen else "Tick at least one adapter (LoRA, HoRA, DoRA or DoRAN) to knock out."),
        valid(None if layer is not None else "Pick a layer."),
        valid(None if projection else "Pick a projection."),
        valid(bad_example),
        valid(f"A prompt of at most {LIMITS.max_prompt_chars} characters, please." if long else None),
    ]


def _inputs(ctx: Context, session, base_name: str, example: str | None, prompt: str | None) -> tuple[dict, Any, str]:
    """The model inputs of one example, the tokenizer (a language base), and a note when the prompt was cut."""
    base = get_base(ctx.store, session, base_name)
    if base.kind == "image":
        if example not in [p for _, p in examples_of(ctx, session, base_name)]:
            raise gr.Error("Pick one of the example images.")
        with Image.open(example) as image:
            return knockout.image_inputs(base.processor, image), None, ""
    chat = summary_of(base)["can_generate"]  # a chat model's prompt goes in its template; a classifier's does not
    limit = min(knockout.MAX_PROMPT_TOKENS, infer.context_length(base.model))
    inputs, cut = knockout.prompt_inputs(base.processor, (prompt or "")[-LIMITS.max_prompt_chars :], chat, limit)
    note = f" The prompt was cut to its last {limit} tokens." if cut else ""
    return inputs, base.processor, note


@as_sentences("knock out the heads")
def run(
    ctx: Context,
    session: SessionModels | None,
    base_name: str,
    names: list[str],
    layer: int,
    projection: str,
    example: str | None,
    prompt: str | None,
) -> tuple[go.Figure, str]:
    """Each head of ``layer``'s ``projection`` knocked out in turn for the chosen adapters (the first
    ``MAX_ADAPTERS``), on the example image or prompt: the bars and the caption that reads them."""
    variants = _adapters(ctx.store, session, base_name)
    chosen = {n: variants[n] for n in (names or []) if n in variants}
    if not chosen:
        raise gr.Error("Tick at least one adapter (LoRA, HoRA, DoRA or DoRAN) to knock out.")
    if layer is None or not projection:
        raise gr.Error("Pick a layer and a projection.")
    inputs, tokenizer, note = _inputs(ctx, session, base_name, example, prompt)
    if len(chosen) > MAX_ADAPTERS:
        note += f" The first {MAX_ADAPTERS} of the {len(chosen)} ticked adapters are shown."
        chosen = dict(list(chosen.items())[:MAX_ADAPTERS])
    try:
        results = {n: knockout.head_knockout(v.model, inputs, projection, int(layer)) for n, v in chosen.items()}
    except ValueError as err:  # e.g. a projection one adapter does not adapt there
        raise gr.Error(str(err)) from err
    references = {n: knockout.reference_name(chosen[n].model, r, tokenizer) for n, r in results.items()}
    where = f"layer {int(layer)}, {projection}"
    labels = {n: f"{n} → {references[n]}" for n in results}
    methods = {n: v.method for n, v in chosen.items()}
    figure = heads_figures.knockout_bars(results, labels, methods, where)
    return figure, heads_text.knockout_caption(results, references, where, note)


def cleared() -> tuple[go.Figure, str]:
    """The knock-out, cleared: it belonged to the prompt before."""
    return figures.placeholder(PRESS), PRESS


def first_knockout(ctx: Context, base_name: str | None, adapters: list[str], layer: Any, projection: Any) -> dict:
    """The knock-out's first paint for the default view (remembered across starts like the tab's plots)."""
    image, _, prompt = input_options(ctx, None, base_name, adapters)
    first = {"example": image, "prompt": prompt, "plot": figures.placeholder(PRESS), "caption": PRESS}
    example = image.get("value")
    if not base_name or not adapters or (image.get("visible") and not example):
        return first
    shown = (ctx, None, base_name, adapters, layer, projection, example, prompt["value"])

    def draw() -> dict:
        figure, caption = run(*shown)
        return {"plot": figure.to_json(), "caption": caption}

    what = {"image": fingerprint([example])} if example else {"prompt": prompt["value"]}
    try:
        inputs = {"adapters": adapters, "layer": layer, "projection": projection, **what}
        drawn = paint.remembered(ctx.store.bases[base_name], "heads-knockout", inputs, draw)
        return {**first, "plot": paint.as_plot(drawn["plot"]), "caption": drawn["caption"]}
    except Exception:  # a first paint that fails must not stop the app
        logger.exception("first paint of the knock-out failed")
        return first
