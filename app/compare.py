"""Compare tab: the same input through the base model and each adapter, side by side. This module draws the Vision
section and assembles the tab; the Language section is ``app.language``.

First paint is drawn when the app is built (not per visitor), or read back from an earlier start (``app.paint``):
the default example image classified by every model (after one warm-up run each, so that its latencies are not
cold-start times). A result on screen always belongs to the input on screen: a new image or another base clears it
until Classify is pressed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial

import gradio as gr
import plotly.graph_objects as go
from PIL import Image

from app import batch, figures, language, paint
from app.context import (
    Context,
    as_sentences,
    choices,
    chosen_variants,
    describe,
    example_label,
    example_truths,
    frame,
    in_lane,
    initial_variant_choices,
    labels_known,
    models_problem,
    rank_text,
    valid,
    variant_choices,
)
from app.settings import LIMITS
from app.store import ModelStore, SessionModels, get_base
from hora.memo import fingerprint


logger = logging.getLogger(__name__)
TABLE = ["model", "top class", "probability", "latency (ms)", "correct?"]
PRESS_CLASSIFY = "Press Classify to run the models on this image."


def check_classify(store, session, base_name, image, names, truth=None) -> list:
    """Validator of Classify: each problem is shown on the control it concerns."""
    base_problem, names_problem = models_problem(store, session, base_name, names, generate=False)
    no_image = "Upload an image or pick one of the examples first." if image is None else None
    return [None, valid(base_problem), valid(no_image), valid(names_problem), valid()]


def _note(store: ModelStore, session: SessionModels | None, base_name: str, predictions: dict, shared: int) -> str:
    """What a visitor must know to read the answers: the models only know their classes, whether the base is
    unsure, and what the latency measures (``shared``: the most models that ran in one batch)."""
    base = get_base(store, session, base_name)
    source = (base.info.get("data") or {}).get("source")
    latency = (
        f"preprocessing and one forward pass of this image through {shared} models at once (one batch, a row each), "
        "on this server's CPU: the models of a batch share its time."
        if shared > 1
        else "preprocessing and one forward pass of this image, on this server's CPU."
    )
    text = (
        "Every model answers with one of the classes it was trained on, whatever the image"
        + (f"; these models learnt from {source}" if source else "")
        + ". A confident answer to an image unlike that data (a photo, a letter) means nothing. Latency: "
        + latency
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
    """Top-5 classes of ``image`` under every chosen variant, in one batch (``app.batch``); a table of the top
    class, its probability, the latency (a batch's, shared by its models) and, when ``truth`` is given, whether it
    is right; and a note on how far to trust the answers."""
    if image is None:
        raise gr.Error("Upload an image or pick one of the examples first.")
    chosen = chosen_variants(store, session, base_name, names)
    plan = batch.plan(store, session, base_name, chosen)
    predictions = batch.classify(plan, get_base(store, session, base_name).processor, image, top_k=5)
    sizes = batch.batch_sizes(plan)
    truth = (truth or "").strip()
    table = [
        [n, p.labels[0], round(p.probabilities[0], 4), round(p.latency_ms, 2), _verdict(p.labels[0], truth)]
        for n, p in predictions.items()
    ]
    methods = {n: v.method for n, v in chosen.items()}
    subtitles = {n: rank_text(v) + _latency(predictions[n].latency_ms, sizes[n]) for n, v in chosen.items()}
    figure = figures.topk_bars(predictions, "Top-5 classes per model", methods, subtitles)
    return figure, frame(table, TABLE), _note(store, session, base_name, predictions, max(sizes.values()))


def _latency(ms: float, shared: int) -> str:
    """A plot's latency line: the model's own, or the batch's it shared with ``shared - 1`` others."""
    return f"{ms:.1f} ms" + (f" (batch of {shared})" if shared > 1 else "")


def _verdict(top: str, truth: str) -> str:
    if not truth:
        return "—"
    return "✓ yes" if str(top) == truth else "✗ no"


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
    empty = {"image": None, "truth": "", "note": "", "truths": {}, "table": frame([], TABLE)}
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
            shown = (ctx.store, None, base_name, image.copy(), names, truths[path] or "")
        classify(*shown)  # a warm-up run: a model's first forward pass is much slower than any later one
        plot, table, note = classify(*shown)
        note += (
            " These latencies were measured when the server started, after one warm-up run of each model, while it "
            "may have been busy loading others: press Classify for current ones."
        )
        return {"plot": plot.to_json(), "rows": table.values.tolist(), "note": note}

    try:
        inputs = {"image": fingerprint([path]), "truth": truths[path], "models": names}
        drawn = paint.remembered(base, "classify", inputs, draw)
    except Exception:  # a first paint that fails must not stop the app: the visitor can still press Classify
        logger.exception("first paint of the vision section failed")
        return {**empty, "truths": truths}
    first = {"image": path, "truth": truths[path] or "", "note": drawn["note"], "truths": truths}
    return {**first, "plot": paint.as_plot(drawn["plot"]), "table": frame(drawn["rows"], TABLE)}


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
    # an example picked, an image uploaded or removed, another base: the answers on screen were for something else
    gr.on(
        [image.change, base.change],
        vision_cleared,
        None,
        [plot, table, note],
        api_name="vision_clear",
        queue=False,
        trigger_mode="always_last",
    )
    return base, variants, about


def vision_cleared() -> tuple[go.Figure, object, str]:
    """The vision section's results, cleared: they belonged to the image or base before."""
    return figures.placeholder(PRESS_CLASSIFY), frame([], TABLE), PRESS_CLASSIFY


def build(ctx: Context, demo: gr.Blocks) -> CompareTab:
    """The Compare tab's components and events (call inside ``gr.Tab``)."""
    vision_base, vision_variants, vision_about = _vision_section(ctx)
    lm_base, lm_variants, lm_about = language.section(ctx)
    vision = partial(refresh, ctx.store, False)
    lm = partial(refresh, ctx.store, True)
    vision_base.change(vision, [ctx.session, vision_base], [vision_variants, vision_about], api_name="vision_models")
    lm_base.change(lm, [ctx.session, lm_base], [lm_variants, lm_about], api_name="lm_models")
    demo.load(vision, [ctx.session, vision_base], [vision_variants, vision_about], api_name="init_vision")
    demo.load(lm, [ctx.session, lm_base], [lm_variants, lm_about], api_name="init_lm")
    return CompareTab(vision_base, vision_variants, lm_base, lm_variants)
