"""Heads tab: what each adapter does to every attention head of one layer and projection.

First the answers: how alike the heads' own factors B_h are against what unrelated heads would score
(``hora.coupling``: the default measure is the subspace overlap, whose chance level r / head_dim every plot and
caption states), per layer, and which heads matter for one input (``app.heads_knockout``). Then the matrices: each
head's update ΔW_h, the factors it is made of and the PCA of the B columns.

Every control redraws the plots when it changes; the default view is drawn once when the app is built (first
paint). Big matrices are pooled for display by ``hora.analysis.display_view``, so the browser receives a few
thousand numbers per head whatever the model's size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from typing import Any

import gradio as gr
import plotly.graph_objects as go

from app import figures, heads_figures, heads_knockout, heads_text, paint
from app.context import Context, as_sentences, choices, facts, in_lane, short_label, valid
from app.settings import LIMITS
from app.store import ModelStore, SessionModels, Variant, summary_of, variants_of
from hora import analysis, coupling
from hora.methods import LOW_RANK_METHODS, label


logger = logging.getLogger(__name__)
BOUNDED = ("lora", "hora")  # ΔW_h = s·B_h·A: rank at most r. DoRA and DoRAN also rescale W0's rows: no such bound
CAPTIONS = {
    "deltas": "Each square is one head's update ΔW_h (rows: the head's output dimensions, columns: the input "
    "features) on a diverging colour scale: red adds to the weight, blue takes away, white leaves it alone. Each "
    "adapter (row) has its own scale, from minus to plus its largest |entry| (in the row label): adapters of very "
    "different sizes all stay visible, so compare sizes by those numbers, not by the colours. The row label's "
    "effective rank is that of ΔW_h in this layer (mean over its heads): how many directions one head's update uses. "
    "Large matrices are shown pooled, each cell the strongest entry of its block.",
    "factors": "A is the input-side factor every head shares; B_h is head h's own output-side factor "
    "(ΔW_h = s·B_h·A). Each factor is drawn on its own range (the colour bar reads relative to its largest entry); "
    "its norm is in the row label and the hover text.",
    "pca": "Every dot is one column of one head's B factor, projected on the two main axes of all of them (PC1+2: the "
    "share of their variance those two axes show); colours are heads (not methods), and beyond nine heads the "
    "marker's shape changes too. HoRA's columns all come out of one shared generator, LoRA's are independent "
    "parameters.",
}
PLOTS = {
    "similarity": "Similarity of B_h",
    "summary": "Per-layer summary",
    "deltas": "Per-head ΔW",
    "factors": "Factors",
    "pca": "Generator view",
}
VIEW_ORDER = ("deltas", "factors", "similarity", "summary", "pca")  # the order ``view`` returns its plots in
METRICS = [("subspace overlap", "subspace"), ("cosine", "cosine"), ("CKA", "cka")]
DEFAULT_METRIC = "subspace"


def adapter_variants(store: ModelStore, session: SessionModels | None, base_name: str) -> dict[str, Variant]:
    """Variants of a base that carry a low-rank adapter (the base itself and head-only probes have none)."""
    return {n: v for n, v in variants_of(store, session, base_name).items() if v.method in LOW_RANK_METHODS}


def options(store: ModelStore, session: SessionModels | None, base_name: str) -> tuple[dict, dict, dict]:
    """Choices for the adapter, layer and projection pickers of a base (adapters labelled with rank and size)."""
    variants = adapter_variants(store, session, base_name) if base_name else {}
    if not variants:
        return gr.update(choices=[], value=[]), gr.update(choices=[], value=None), gr.update(choices=[], value=None)
    first = summary_of(next(iter(variants.values())))  # what the page needs, without loading the model
    projections = [tuple(choice) for choice in first["projections"]]
    layers = first["layers"][projections[0][1]]
    default = [n for n in variants if variants[n].method in ("lora", "hora")] or list(variants)[:2]
    return (
        gr.update(choices=[(short_label(n, v), n) for n, v in variants.items()], value=default),
        gr.update(choices=layers, value=layers[0]),
        gr.update(choices=projections, value=projections[0][1]),
    )


def built_options(store: ModelStore, base_name: str | None) -> tuple[dict, dict, dict]:
    """The pickers as the page is built: ``base_name``'s values, among every base's adapters, layers and
    projections, since Gradio checks an API call's values against the choices the page was built with (a browser's
    page load narrows them to the base shown, ``init_heads``)."""
    adapters, layer, projection = options(store, None, base_name)
    names = dict((value, label) for label, value in adapters["choices"])
    layers, projections = set(layer["choices"]), dict((value, label) for label, value in projection["choices"])
    for other in store.names():
        for name, variant in adapter_variants(store, None, other).items():
            summary = summary_of(variant)
            names.setdefault(name, short_label(name, variant))
            projections.update({value: label for label, value in summary["projections"] if value not in projections})
            layers.update(n for numbers in summary["layers"].values() for n in numbers)
    adapters["choices"] = [(label, value) for value, label in names.items()]
    layer["choices"] = sorted(layers)
    projection["choices"] = [(label, value) for value, label in projections.items()]
    return adapters, layer, projection


def check_view(store, session, base_name, names, layer, projection, metric) -> list:
    """Validator of the Heads view: each problem is shown on the control it concerns."""
    variants = adapter_variants(store, session, base_name) if base_name else {}
    none = not [n for n in (names or []) if n in variants]
    adapters = "Tick at least one adapter (LoRA, HoRA, DoRA or DoRAN) to inspect." if none else None
    return [
        None,
        valid(None if base_name else "Pick a base model."),
        valid(adapters),
        valid(None if layer is not None else "Pick a layer."),
        valid(None if projection else "Pick a projection."),
        valid(),
    ]


def _row_label(name: str, variant: Variant, view: analysis.HeadView, layer: int) -> str:
    """An adapter's row label: its rank r, and the effective rank of ΔW_h in the layer shown (mean over its heads)."""
    f = facts(variant)
    rank = f" r={f.rank}" if f.rank is not None else ""
    here = [row for row in view.layers if row.layer == layer]
    shown = f"<br>ΔW_h eff. rank {analysis.mean_effective_rank(here):.1f}" if here else ""
    return f"{name}{rank}{shown}"


@as_sentences("draw the heads")
def view(
    store: ModelStore,
    session: SessionModels | None,
    base_name: str,
    names: list[str],
    layer: int,
    projection: str,
    metric: str,
) -> tuple[go.Figure, go.Figure, go.Figure, go.Figure, go.Figure, str, str]:
    """The five plots of the Heads tab for the chosen adapters, layer, projection and measure of B_h (in
    ``VIEW_ORDER``: ΔW_h, factors, similarity, per-layer summary, PCA), then the similarity's and the summary's
    captions, written from the same numbers."""
    variants = adapter_variants(store, session, base_name) if base_name else {}
    chosen = {n: variants[n] for n in (names or []) if n in variants}
    if not chosen:
        raise gr.Error("Tick at least one adapter (LoRA, HoRA, DoRA or DoRAN) to inspect.")
    if layer is None or not projection:
        raise gr.Error("Pick a layer and a projection.")
    metric = metric if metric in coupling.FACTOR_METRICS else DEFAULT_METRIC
    try:
        views = {n: analysis.explorer_view(v.model, int(layer), projection) for n, v in chosen.items()}
        layers = {n: coupling.cached_layer_couplings(v.model, projection, metric) for n, v in chosen.items()}
    except ValueError as err:  # e.g. a projection one adapter does not adapt
        raise gr.Error(str(err)) from err
    here = {n: next(row.coupling for row in rows if row.layer == int(layer)) for n, rows in layers.items()}
    shown = {n: analysis.display_view(v) for n, v in views.items()}
    rows = {n: _row_label(n, chosen[n], views[n], int(layer)) for n in chosen}
    labels = {n: short_label(n, v) for n, v in chosen.items()}
    where = f"layer {int(layer)}, {projection}"
    (hd, inputs), (shown_rows, shown_cols) = (
        next(iter(shown.values())).delta_shape,
        next(iter(shown.values())).deltas.shape[1:],
    )
    pooled = (
        f"; {hd} × {inputs} per head, shown as {shown_rows} × {shown_cols}"
        if (hd, inputs) != (shown_rows, shown_cols)
        else ""
    )
    methods = {n: v.method for n, v in chosen.items()}
    bounds = {n: facts(v).rank if v.method in BOUNDED else None for n, v in chosen.items()}
    summaries = {n: v.layers for n, v in views.items()}
    return (
        figures.head_heatmaps(shown, rows, f"Per-head updates ΔW_h ({where}{pooled})"),
        figures.factor_heatmaps(shown, rows, f"Low-rank factors ({where})"),
        heads_figures.coupling_heatmaps(here, labels, metric, where),
        heads_figures.coupling_summary(layers, summaries, metric, labels, methods, bounds),
        figures.factor_scatter({n: v.pca for n, v in views.items()}, labels),
        heads_text.similarity_caption(here, metric, where),
        heads_text.summary_caption(layers, metric, projection),
    )


@as_sentences("state the ranks")
def ranks(
    store: ModelStore,
    session: SessionModels | None,
    base_name: str,
    names: list[str],
    layer: int,
    projection: str,
    metric: str,
) -> str:
    """What the effective ranks of ΔW_h mean for the chosen adapters, with their own numbers: each one's method,
    rank r, trained parameters and mean effective rank of ΔW_h over every head and layer of the projection
    (remembered from the plots). ``metric`` is not used: the signature is the view's."""
    variants = adapter_variants(store, session, base_name) if base_name else {}
    chosen = {n: variants[n] for n in (names or []) if n in variants}
    if not chosen or not projection:
        return ""
    parts = []
    for name, variant in chosen.items():
        summaries = analysis.cached_layer_summaries(variant.model, projection)
        f = facts(variant)
        rank = f"r={f.rank}" if f.rank is not None else "rank unknown"
        size = f", {f.params:,} trained parameters" if f.params else ""
        bound = "at most r" if variant.method in BOUNDED else "not bounded by r (magnitude rescaling)"
        method = "" if name.split(" ")[0] == label(variant.method) else f"{label(variant.method)}, "  # no "HoRA (HoRA"
        parts.append(
            f"**{name}** ({method}{rank}{size}): mean effective rank "
            f"{analysis.mean_effective_rank(summaries):.1f}, {bound}"
        )
    lead = "Effective rank of each head's update ΔW_h (how many directions one head uses), mean over its heads "
    return lead + "and every layer of this projection: " + "; ".join(parts) + "."


def first_view(ctx: Context, base_name: str | None, pickers: tuple[dict, dict, dict]) -> tuple:
    """The default view, drawn once when the app is built: ``view``'s five plots and two captions, then the ranks'
    text (empty figures and texts if it cannot be drawn)."""
    adapters, layer, projection = pickers
    if base_name and adapters.get("value"):
        chosen = (ctx.store, None, base_name, adapters["value"], layer["value"], projection["value"], DEFAULT_METRIC)

        def draw() -> dict:
            *plots, similarity, summary = view(*chosen)
            texts = [similarity, summary, ranks(*chosen)]
            return {"plots": [figure.to_json() for figure in plots], "texts": texts}

        try:
            inputs = {"adapters": adapters["value"], "layer": layer["value"], "projection": projection["value"]}
            inputs["metric"] = DEFAULT_METRIC
            drawn = paint.remembered(ctx.store.bases[base_name], "heads", inputs, draw)
            return (*map(paint.as_plot, drawn["plots"]), *drawn["texts"])
        except Exception:  # a first paint that fails must not stop the app
            logger.exception("first paint of the Heads tab failed")
    return tuple(figures.placeholder("Pick adapters to inspect.") for _ in PLOTS) + ("", "", "")


# ---------------------------------------------------------------------------------------------------------------
# The tab


@dataclass
class HeadsTab:
    """The components other tabs update: the base picker and the adapter checkboxes."""

    base: gr.Dropdown
    adapters: gr.CheckboxGroup


def _plot(key: str, figure: Any, caption: str | None = None) -> tuple[gr.Plot, gr.Markdown]:
    """One plot of the tab and the caption under it (its ``caption``, else the plot's fixed one)."""
    plot = gr.Plot(figure, label=PLOTS[key], elem_id=f"heads-{key}")
    if caption is None:
        return plot, gr.Markdown(CAPTIONS[key], elem_classes="caption")
    label = f"What the {PLOTS[key].lower()} shows"
    return plot, gr.Markdown(caption, label=label, elem_id=f"heads-{key}-caption", elem_classes="caption")


def _knockout_section(ctx: Context, first: str | None, pickers: tuple[dict, dict, dict]) -> dict[str, Any]:
    """The knock-out's heading, input controls, button, bars and caption."""
    adapters, layer, projection = (p.get("value") for p in pickers)
    drawn = heads_knockout.first_knockout(ctx, first, adapters, layer, projection)
    gr.Markdown(
        "### Which heads matter for this input\nFor one input, each head's update in the layer and projection above "
        "is removed in turn, and the bars show how far the output moves.",
        elem_classes="about",
    )
    c: dict[str, Any] = {}
    with gr.Row():
        with gr.Column(scale=1, min_width=240):
            example, prompt = drawn["example"], drawn["prompt"]
            c["example"] = gr.Dropdown(  # every base's examples: API calls are checked against these (see init)
                heads_knockout.every_example(ctx),
                value=example["value"],
                label="Example image",
                elem_id="heads-example",
                visible=example["visible"],
            )
            c["image"] = gr.HTML(  # inline: a gr.Image would wrap it in a button without a name
                heads_knockout.preview(ctx, example.get("value")),
                label="The example",
                visible=example["visible"],
                elem_id="heads-example-image",
            )
            c["prompt"] = gr.Textbox(  # one line: Enter runs it
                prompt["value"],
                label="Prompt",
                lines=1,
                max_lines=1,
                elem_id="heads-prompt",
                visible=prompt["visible"],
            )
            c["button"] = gr.Button("Knock out heads", variant="primary", elem_id="heads-knock-btn")
        with gr.Column(scale=3, min_width=300):
            c["plot"] = gr.Plot(drawn["plot"], label="Knock-out", elem_id="heads-knockout")
            c["caption"] = gr.Markdown(
                drawn["caption"],
                label="What the knock-out shows",
                elem_id="heads-knockout-caption",
                elem_classes="caption",
            )
    return c


def build(ctx: Context, demo: gr.Blocks) -> HeadsTab:
    """The Heads tab's components and events (call inside ``gr.Tab``)."""
    bases = ctx.store.names()
    first = bases[0] if bases else None
    pickers = built_options(ctx.store, first)
    painted = dict(
        zip([*VIEW_ORDER, "similarity-caption", "summary-caption", "ranks"], first_view(ctx, first, pickers))
    )
    gr.Markdown(
        "How alike each adapter's attention heads are, against what unrelated heads would score, and which heads "
        "matter for one input; then what each adapter changed in every head of one layer: the update ΔW_h of each "
        "head, the low-rank factors it is made of and where their columns lie. Every change of a control redraws "
        "(the plots shown stay until the new ones are drawn; the first view of an adapter takes longest).",
        elem_classes="about",
    )
    with gr.Row():
        base = gr.Dropdown(bases, value=first, label="Base model", elem_id="heads-base", min_width=180)
        adapters = gr.CheckboxGroup(label="Adapters", elem_id="heads-adapters", min_width=260, **choices(pickers[0]))
        layer = gr.Dropdown(label="Layer", elem_id="heads-layer", min_width=120, **choices(pickers[1]))
        projection = gr.Dropdown(label="Projection", elem_id="heads-projection", min_width=140, **choices(pickers[2]))
        metric = gr.Radio(
            METRICS, value=DEFAULT_METRIC, label="Similarity of B_h", elem_id="heads-metric", min_width=220
        )
    rank_caption = gr.Markdown(painted["ranks"], label="Ranks of these adapters", elem_id="heads-ranks")
    controls = dict(
        base=base, adapters=adapters, layer=layer, projection=projection, metric=metric, ranks=rank_caption
    )
    plots, texts = {}, {}
    for key in ("similarity", "summary"):
        plots[key], texts[key] = _plot(key, painted[key], painted[f"{key}-caption"])
    knock = _knockout_section(ctx, first, pickers)
    for key in ("deltas", "factors", "pca"):
        plots[key], _ = _plot(key, painted[key])
    _wire(ctx, demo, controls, plots, texts, knock)
    return HeadsTab(base, adapters)


def _wire(ctx: Context, demo: gr.Blocks, controls: dict[str, Any], plots: dict, texts: dict, knock: dict) -> None:
    """The tab's events: every control redraws the plots (then states the ranks); a new base first brings its
    pickers and its knock-out input; the knock-out runs on its button, a new example, a prompt sent with Enter, and
    any change of the adapters, layer or projection."""
    c = controls
    inputs = [ctx.session, c["base"], c["adapters"], c["layer"], c["projection"], c["metric"]]
    outputs = [plots[k] for k in VIEW_ORDER] + [texts["similarity"], texts["summary"]]
    # progress on the caption, not the plots: the figures on screen stay until the new ones replace them
    draw = dict(fn=partial(view, ctx.store), inputs=inputs, outputs=outputs, show_progress_on=[c["ranks"]])
    state_ranks = dict(fn=partial(ranks, ctx.store), inputs=inputs, outputs=c["ranks"])
    lane = dict(concurrency_limit=LIMITS.inference_concurrency, concurrency_id="inference")
    gr.on(
        [c["adapters"].input, c["layer"].input, c["projection"].input, c["metric"].input],
        **draw,
        api_name="heads",
        validator=in_lane(ctx, "inference", partial(check_view, ctx.store)),
        trigger_mode="always_last",  # quick clicks through the layers draw only the last one
        **lane,
    ).then(**state_ranks, api_name="heads_ranks")
    knock_inputs = [ctx.session, c["base"], c["adapters"], c["layer"], c["projection"], knock["example"]]
    run = dict(
        fn=partial(heads_knockout.run, ctx),
        inputs=[*knock_inputs, knock["prompt"]],
        outputs=[knock["plot"], knock["caption"]],
        show_progress_on=[knock["caption"]],
        **lane,
    )
    pickers = c["base"].change(
        partial(options, ctx.store),
        [ctx.session, c["base"]],
        [c["adapters"], c["layer"], c["projection"]],
        api_name="heads_options",
    )
    pickers.then(**draw, api_name="heads_redraw", validator=partial(check_view, ctx.store), **lane).then(
        **state_ranks, api_name="heads_redraw_ranks"
    )
    pickers.then(
        partial(heads_knockout.input_options, ctx),
        [ctx.session, c["base"], c["adapters"]],
        [knock["example"], knock["image"], knock["prompt"]],
        api_name="heads_knockout_inputs",
    ).then(**run, api_name="heads_knockout_redraw", validator=partial(heads_knockout.check, ctx))
    gr.on(
        [
            c["adapters"].input,
            c["layer"].input,
            c["projection"].input,
            knock["example"].input,
            knock["prompt"].submit,
            knock["button"].click,
        ],
        **run,
        api_name="heads_knockout",
        validator=in_lane(ctx, "inference", partial(heads_knockout.check, ctx)),
        trigger_mode="always_last",
    )
    knock["example"].change(
        partial(heads_knockout.preview, ctx),
        knock["example"],
        knock["image"],
        api_name="heads_example_image",
        queue=False,
    )
    knock["prompt"].change(
        heads_knockout.cleared, None, [knock["plot"], knock["caption"]], api_name="heads_knockout_clear", queue=False
    )
    demo.load(
        partial(options, ctx.store),
        [ctx.session, c["base"]],
        [c["adapters"], c["layer"], c["projection"]],
        api_name="init_heads",
    ).then(  # after the pickers: the example its (default) adapters are least sure of
        partial(heads_knockout.input_options, ctx),
        [ctx.session, c["base"], c["adapters"]],
        [knock["example"], knock["image"], knock["prompt"]],
        api_name="init_heads_knockout",
    )
