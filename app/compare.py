"""Compare tab: the same input through the base model and each adapter, side by side.

First paint is drawn when the app is built (not per visitor), or read back from an earlier start (``app.paint``):
the default example image classified and, for the language models, the default prompt's next-token distribution, plus
the base's precomputed generations from ``info["generations"]`` (``{"prompts": [...], "outputs": {variant: [...]}}``).
"""

from __future__ import annotations

import html
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import gradio as gr
import plotly.graph_objects as go
from PIL import Image

from app import figures, paint
from app.context import (
    Context,
    as_sentences,
    can_generate,
    choices,
    describe,
    example_label,
    example_truths,
    facts,
    in_lane,
    initial_variant_choices,
    labels_known,
    sentence,
    valid,
    variant_choices,
)
from app.settings import LIMITS, clamp
from app.store import ModelStore, SessionModels, Variant, get_base, variants_of
from hora import infer
from hora.memo import fingerprint


logger = logging.getLogger(__name__)
TABLE = ["model", "top class", "probability", "latency (ms)", "correct?"]
PPL_TABLE = ["model", "perplexity (lower is better)", "loss (nats/token, lower is better)", "tokens"]
FALLBACK_PROMPT = "Once upon a time"


def _chosen(
    store: ModelStore, session: SessionModels | None, base_name: str, names: list[str] | None, generate: bool = False
) -> dict[str, Variant]:
    base_problem, models_problem = _models_problem(store, session, base_name, names, generate)
    if base_problem or models_problem:
        raise gr.Error(base_problem or models_problem)
    variants = variants_of(store, session, base_name)
    return {n: variants[n] for n in names if n in variants}


def _models_problem(
    store: ModelStore, session: SessionModels | None, base_name: str, names: list[str] | None, generate: bool
) -> tuple[str | None, str | None]:
    """(problem with the base, problem with the ticked models), each a sentence or None."""
    if not base_name:
        return "Pick a base model first.", None
    try:
        variants = variants_of(store, session, base_name)
    except KeyError as error:
        return str(error.args[0]), None
    chosen = [n for n in (names or []) if n in variants]
    if not chosen:
        return None, "Tick at least one model to compare."
    mute = [n for n in chosen if generate and not can_generate(variants[n])]
    if mute:
        return None, f"{', '.join(mute)} classifies text and cannot generate it: untick it."
    return None, None


def check_classify(store, session, base_name, image, names, truth=None) -> list:
    """Validator of Classify: each problem is shown on the control it concerns."""
    base_problem, models_problem = _models_problem(store, session, base_name, names, generate=False)
    no_image = "Upload an image or pick one of the examples first." if image is None else None
    return [None, valid(base_problem), valid(no_image), valid(models_problem), valid()]


def check_text_sizes(*inputs: Any) -> list:
    """Validator of the language events: no text input longer than the request-size limit (a prompt beyond its
    own limit is cut to its end, with a notice; a passage is scored on its first tokens)."""
    too_long = f"At most {LIMITS.max_text_chars:,} characters, please: this text is longer."
    return [valid(too_long if isinstance(x, str) and len(x) > LIMITS.max_text_chars else None) for x in inputs]


def _note(store: ModelStore, session: SessionModels | None, base_name: str, predictions: dict) -> str:
    """What a visitor must know to read the answers: the models only know their classes, and whether the base is
    unsure."""
    base = get_base(store, session, base_name)
    source = (base.info.get("data") or {}).get("source")
    text = (
        "Every model answers with one of the classes it was trained on, whatever the image"
        + (f"; these models learnt from {source}" if source else "")
        + ". A confident answer to an image unlike that data (a photo, a letter) means nothing."
    )
    own = next((p for n, p in predictions.items() if n.split(" ")[0] == "base"), None)  # the base, or its probe
    if own is not None and own.probabilities and own.probabilities[0] < 0.5:
        text += (
            f" **The base model is unsure** (its top class gets only {own.probabilities[0]:.2f}): "
            "this image may be unlike anything it was trained on."
        )
    return text


@as_sentences("classify the image")
def classify(
    store: ModelStore,
    session: SessionModels | None,
    base_name: str,
    image: Image.Image | None,
    names: list[str],
    truth: str | None = None,
) -> tuple[go.Figure, object, str]:
    """Top-5 classes of ``image`` under every chosen variant; a table of the top class, its probability, the
    latency and, when ``truth`` is given, whether it is right; and a note on how far to trust the answers."""
    if image is None:
        raise gr.Error("Upload an image or pick one of the examples first.")
    chosen = _chosen(store, session, base_name, names)
    processor = get_base(store, session, base_name).processor
    predictions = {n: infer.classify(v.model, processor, image, top_k=5) for n, v in chosen.items()}
    truth = (truth or "").strip()
    table = [
        [n, p.labels[0], round(p.probabilities[0], 4), round(p.latency_ms, 2), _verdict(p.labels[0], truth)]
        for n, p in predictions.items()
    ]
    methods = {n: v.method for n, v in chosen.items()}
    subtitles = {n: _rank_text(v) + f"{predictions[n].latency_ms:.1f} ms" for n, v in chosen.items()}
    figure = figures.topk_bars(predictions, "Top-5 classes per model", methods, subtitles)
    return figure, _frame(table, TABLE), _note(store, session, base_name, predictions)


def _frame(rows: list[list], columns: list[str]):
    """A table with its headers (a bare list of rows would lose them)."""
    import pandas as pd

    return pd.DataFrame(rows, columns=columns)


def _verdict(top: str, truth: str) -> str:
    if not truth:
        return "—"
    return "✓ yes" if str(top) == truth else "✗ no"


def _rank_text(variant: Variant) -> str:
    rank = facts(variant).rank if variant.method != "base" else None
    return f"r={rank} · " if rank is not None else ""


def _columns(texts: dict[str, str], prompt: str) -> str:
    """Generations side by side as HTML columns (escaped: generated text is untrusted)."""
    cells = "".join(
        f'<div class="gen-col"><div class="gen-name">{html.escape(n)}</div>'
        f'<pre class="gen-text"><span class="gen-prompt">{html.escape(prompt[-200:])}</span>{html.escape(t)}</pre></div>'
        for n, t in texts.items()
    )
    return f'<div class="gen-row">{cells}</div>'


@as_sentences("generate text")
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
    """Stream every chosen variant's continuation, one token each in turn. Yields (html, notice).

    A model that fails shows the reason in its own column; the others go on.
    """
    chosen = _chosen(store, session, base_name, names, generate=True)
    tokenizer = get_base(store, session, base_name).processor
    prompt = prompt or ""
    notices = []
    if len(prompt) > LIMITS.max_prompt_chars:
        prompt = prompt[-LIMITS.max_prompt_chars :]
        notices.append(f"The prompt was cut to its last {LIMITS.max_prompt_chars} characters.")
    if not prompt.strip():
        notices.append("Empty prompt: generating from the start-of-text token.")
    max_new = int(clamp(max_new_tokens, 1, LIMITS.max_new_tokens))
    settings = dict(max_new_tokens=max_new, temperature=clamp(temperature, 0.0, 2.0), top_k=int(clamp(top_k, 0, 1000)))
    streams = {
        n: infer.generate_stream(v.model, tokenizer, prompt, seed=int(seed or 0), **settings)
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
            except Exception as error:  # one model's failure is shown in its column; the others go on
                texts[name] += f"\n[{sentence(f'generate with {name}', error)}]"
                del streams[name]
        yield _columns(texts, prompt), notice


@as_sentences("compute the next-token distribution")
def next_tokens(
    store: ModelStore, session: SessionModels | None, base_name: str, prompt: str, names: list[str]
) -> go.Figure:
    """Each variant's 10 most likely next tokens after the prompt."""
    chosen = _chosen(store, session, base_name, names, generate=True)
    tokenizer = get_base(store, session, base_name).processor
    prompt = (prompt or "")[-LIMITS.max_prompt_chars :]
    dists = {n: infer.next_token_topk(v.model, tokenizer, prompt, k=10) for n, v in chosen.items()}
    methods = {n: v.method for n, v in chosen.items()}
    subtitles = {n: _rank_text(v).rstrip(" ·") for n, v in chosen.items()}
    return figures.topk_bars(dists, "Next-token distribution (top 10)", methods, subtitles)


@as_sentences("score the passage")
def passage_perplexity(
    store: ModelStore, session: SessionModels | None, base_name: str, passage: str, names: list[str]
) -> tuple[object, str]:
    """Perplexity of a pasted passage under each variant (lower: the passage looks more like its training)."""
    chosen = _chosen(store, session, base_name, names, generate=True)
    if not passage or len(passage.strip()) < 2:
        raise gr.Error("Paste a passage of at least a few characters.")
    tokenizer = get_base(store, session, base_name).processor
    rows, truncated = [], False
    for n, v in chosen.items():
        result = infer.perplexity(v.model, tokenizer, passage, max_tokens=LIMITS.max_perplexity_tokens)
        truncated |= result.truncated
        rows.append([n, round(result.perplexity, 3), round(result.loss, 4), result.tokens])
    notice = f"Scored the first {LIMITS.max_perplexity_tokens} tokens only." if truncated else ""
    return _frame(rows, PPL_TABLE), notice


# ---------------------------------------------------------------------------------------------------------------
# First paint: computed once, when the app is built


def _default_example(base, truths: dict[str, str | None]) -> str:
    """The example whose class most separates the adapters from the base on their cards (mean per-class held-out
    accuracy of the adapters minus the base's), else the first one: the one that shows best what adapters add."""

    def per_class(info: dict) -> dict:
        return (info.get("metrics") or {}).get("per_class") or {}

    own = per_class(base.info)
    adapters = [per_class(v.info) for v in base.variants.values() if v.method != "base" and per_class(v.info)]
    labelled = [p for p, t in truths.items() if t is not None]
    if not (own or adapters) or not labelled:
        return next(iter(truths))

    def gain(path: str) -> float:
        label = truths[path]
        learnt = sum(a.get(label, 0.0) for a in adapters) / len(adapters) if adapters else 0.0
        return learnt - own.get(label, 1.0 if adapters else 0.0)

    return max(labelled, key=lambda p: (gain(p), -labelled.index(p)))


def first_vision(ctx: Context, base_name: str | None) -> dict:
    """The vision section's first paint: an example, its truth, and its classification by every model."""
    empty = {"image": None, "truth": "", "note": "", "truths": {}, "table": _frame([], TABLE)}
    empty["plot"] = figures.placeholder("Pick an example or upload an image.")
    if not base_name:
        return empty
    base = ctx.store.bases[base_name]
    truths = example_truths(ctx.examples, labels_known(base))
    if not truths:
        return empty
    path = _default_example(base, truths)
    names = list(base.variants)

    def draw() -> dict:
        with Image.open(path) as image:
            plot, table, note = classify(ctx.store, None, base_name, image.copy(), names, truths[path] or "")
        return {"plot": plot.to_json(), "rows": table.values.tolist(), "note": note}

    try:
        inputs = {"image": fingerprint([path]), "truth": truths[path], "models": names}
        drawn = paint.remembered(base, "classify", inputs, draw)
    except Exception:  # a first paint that fails must not stop the app: the visitor can still press Classify
        logger.exception("first paint of the vision section failed")
        return {**empty, "truths": truths}
    first = {"image": path, "truth": truths[path] or "", "note": drawn["note"], "truths": truths}
    return {**first, "plot": paint.as_plot(drawn["plot"]), "table": _frame(drawn["rows"], TABLE)}


def first_language(ctx: Context, base_name: str | None) -> dict:
    """The language section's first paint: the default prompt, precomputed generations if the base has them, and
    the next-token distribution of every model that can generate."""
    passage_line = next((line.strip() for line in ctx.passage.splitlines() if line.strip()), "")
    first = {"prompt": passage_line or FALLBACK_PROMPT, "prompts": [], "html": "", "notice": ""}
    first["plot"] = figures.placeholder("Press Generate.")
    if not base_name:
        return first
    base = ctx.store.bases[base_name]
    generations = base.info.get("generations") or {}
    prompts = [p for p in generations.get("prompts") or [] if isinstance(p, str)]
    if prompts:
        first["prompt"], first["prompts"] = prompts[0], prompts
        outputs = {n: o[0] for n, o in (generations.get("outputs") or {}).items() if n in base.variants and o}
        if outputs:
            first["html"] = _columns(outputs, prompts[0])
            first["notice"] = "Written when the models were built; press Generate to run them live."
    names = [n for n, v in base.variants.items() if can_generate(v)]

    def draw() -> str:
        return next_tokens(ctx.store, None, base_name, first["prompt"], names).to_json()

    try:
        first["plot"] = paint.as_plot(paint.remembered(base, "next-tokens", {"prompt": first["prompt"]}, draw))
    except Exception:
        logger.exception("first paint of the language section failed")
    return first


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


def refresh(store: ModelStore, generators_only: bool, session: SessionModels | None, base_name: str | None):
    """The model checkboxes and the orientation text of a section, for its base."""
    return variant_choices(store, session, base_name, generators_only), describe(store, session, base_name)


def _example_shelves(ctx: Context, shown: str | None, image: gr.Image, truth: gr.Textbox) -> dict[str, gr.Column]:
    """One shelf of held-out examples per image base (those whose true label that base knows), only the chosen
    base's visible: a digit is no example for a clothing classifier."""
    shelves = {}
    for name in ctx.store.names("image"):
        truths = {p: t for p, t in example_truths(ctx.examples, labels_known(ctx.store.bases[name])).items() if t}
        if not truths:
            continue
        with gr.Column(visible=name == shown, elem_classes="examples-shelf") as shelves[name]:
            gr.Examples(
                [[p, t] for p, t in truths.items()],
                inputs=[image, truth],
                example_labels=[example_label(p, t) for p, t in truths.items()],
                label="Held-out examples, named by their true label",
                cache_examples=False,
            )
    return shelves


def _vision_section(ctx: Context) -> tuple[gr.Dropdown, gr.CheckboxGroup, gr.Markdown]:
    base0 = _first(ctx.store.names("image"))
    first = first_vision(ctx, base0)
    gr.Markdown("### Vision")
    about = gr.Markdown(describe(ctx.store, None, base0), label="About these models", elem_classes="about")
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            base = gr.Dropdown(ctx.store.names("image"), value=base0, label="Base model", elem_id="vision-base")
            image = gr.Image(
                value=first["image"],
                type="pil",
                label="Image",
                height=220,
                elem_id="compare-image",
                alt_text="The image the models classify",
            )
            truth = gr.Textbox(
                value=first["truth"],
                label="True label",
                info="Filled in by an example; optional",
                max_lines=1,
                elem_id="truth",
            )
            shelves = _example_shelves(ctx, base0, image, truth)
            initial = initial_variant_choices(ctx.store, "image", base0)  # API clients never run demo.load
            variants = gr.CheckboxGroup(label="Models", elem_id="vision-variants", **choices(initial))
            button = gr.Button("Classify", variant="primary", elem_id="classify-btn")
        with gr.Column(scale=2, min_width=300):
            plot = gr.Plot(first["plot"], label="Top-5 classes", elem_id="vision-plot")
            table = gr.Dataframe(first["table"], headers=TABLE, label="Summary", elem_id="vision-table")
            note = gr.Markdown(first["note"], label="How far to trust the answers", elem_id="vision-note")
    if shelves:
        base.change(
            lambda name: [gr.update(visible=n == name) for n in shelves],
            base,
            list(shelves.values()),
            api_name="vision_examples",
            queue=False,
        )
    button.click(
        partial(classify, ctx.store),
        [ctx.session, base, image, variants, truth],
        [plot, table, note],
        api_name="classify",
        validator=in_lane(ctx, "inference", partial(check_classify, ctx.store)),
        concurrency_limit=LIMITS.inference_concurrency,
        concurrency_id="inference",
    )
    image.upload(lambda: "", None, truth, api_name="clear_truth", queue=False)  # a visitor's image: truth unknown
    return base, variants, about


def _language_controls(ctx: Context, base0: str | None, first: dict) -> dict:
    controls = {"base": gr.Dropdown(ctx.store.names("lm"), value=base0, label="Base model", elem_id="lm-base")}
    controls["prompt"] = gr.Textbox(label="Prompt", lines=3, value=first["prompt"], elem_id="prompt")
    if first["prompts"]:
        gr.Examples(
            [[p] for p in first["prompts"]], inputs=controls["prompt"], label="Prompts the models were built with"
        )
    initial = initial_variant_choices(ctx.store, "lm", base0, generators_only=True)
    controls["variants"] = gr.CheckboxGroup(label="Models", elem_id="lm-variants", **choices(initial))
    # One slider per line: side by side, their labels wrap on a phone.
    controls["max_new"] = gr.Slider(1, LIMITS.max_new_tokens, value=80, step=1, label="Max new tokens")
    controls["temperature"] = gr.Slider(
        0.0, 2.0, value=0.8, step=0.05, label="Temperature", info="0: always the likeliest"
    )
    controls["top_k"] = gr.Slider(0, 200, value=40, step=1, label="Top-k", info="sample among the k likeliest; 0: all")
    controls["seed"] = gr.Number(value=0, precision=0, label="Seed")
    return controls


def _language_section(ctx: Context) -> tuple[gr.Dropdown, gr.CheckboxGroup, gr.Markdown]:
    base0 = _first(ctx.store.names("lm"))
    first = first_language(ctx, base0)
    gr.Markdown("### Language")
    about = gr.Markdown(describe(ctx.store, None, base0), label="About these models", elem_classes="about")
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            c = _language_controls(ctx, base0, first)
            generate_btn = gr.Button("Generate", variant="primary", elem_id="generate-btn")
        with gr.Column(scale=2, min_width=300):
            generations = gr.HTML(first["html"], label="Generations", elem_id="generations")
            notice = gr.Markdown(first["notice"], label="Generation notice")
            token_plot = gr.Plot(first["plot"], label="Next-token distribution", elem_id="token-plot")
    with gr.Row():
        passage = gr.Textbox(label="Passage to score", lines=4, value=ctx.passage, min_width=300)
        ppl_table = gr.Dataframe(
            headers=PPL_TABLE, label="Perplexity: how surprised each model is by the passage", elem_id="ppl-table"
        )
    ppl_notice = gr.Markdown(label="Scoring notice")
    ppl_btn = gr.Button("Score passage", elem_id="ppl-btn")

    models = [ctx.session, c["base"], c["prompt"], c["variants"]]
    generate_btn.click(
        partial(generate, ctx.store),
        models + [c["max_new"], c["temperature"], c["top_k"], c["seed"]],
        [generations, notice],
        api_name="generate",
        validator=in_lane(ctx, "inference", check_text_sizes),
        concurrency_limit=LIMITS.inference_concurrency,
        concurrency_id="inference",
    ).then(
        partial(next_tokens, ctx.store),
        models,
        token_plot,
        api_name="next_tokens",
        concurrency_limit=LIMITS.inference_concurrency,
        concurrency_id="inference",
    )
    ppl_btn.click(
        partial(passage_perplexity, ctx.store),
        [ctx.session, c["base"], passage, c["variants"]],
        [ppl_table, ppl_notice],
        api_name="perplexity",
        validator=in_lane(ctx, "inference", check_text_sizes),
        concurrency_limit=LIMITS.inference_concurrency,
        concurrency_id="inference",
    )
    return c["base"], c["variants"], about


def build(ctx: Context, demo: gr.Blocks) -> CompareTab:
    """The Compare tab's components and events (call inside ``gr.Tab``)."""
    vision_base, vision_variants, vision_about = _vision_section(ctx)
    lm_base, lm_variants, lm_about = _language_section(ctx)
    vision = partial(refresh, ctx.store, False)
    language = partial(refresh, ctx.store, True)
    vision_base.change(vision, [ctx.session, vision_base], [vision_variants, vision_about], api_name="vision_models")
    lm_base.change(language, [ctx.session, lm_base], [lm_variants, lm_about], api_name="lm_models")
    demo.load(vision, [ctx.session, vision_base], [vision_variants, vision_about], api_name="init_vision")
    demo.load(language, [ctx.session, lm_base], [lm_variants, lm_about], api_name="init_lm")
    return CompareTab(vision_base, vision_variants, lm_base, lm_variants)
