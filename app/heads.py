"""Heads tab: what each adapter does to every attention head of one layer and projection.

Every control redraws the plots when it changes; the default view is drawn once when the app is built (first
paint). Big matrices are pooled for display by ``hora.analysis.display_view``, so the browser receives a few
thousand numbers per head whatever the model's size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial

import gradio as gr
import plotly.graph_objects as go

from app import figures, paint
from app.context import Context, as_sentences, choices, facts, in_lane, short_label, valid
from app.settings import LIMITS
from app.store import ModelStore, SessionModels, Variant, summary_of, variants_of
from hora import analysis
from hora.methods import LOW_RANK_METHODS, label


logger = logging.getLogger(__name__)
BOUNDED = ("lora", "hora")  # ΔW_h = s·B_h·A: rank at most r. DoRA and DoRAN also rescale W0's rows: no such bound
CAPTIONS = {
    "deltas": "Each square is one head's update ΔW_h (rows: the head's output dimensions, columns: the input "
    "features) on a diverging colour scale: red adds to the weight, blue takes away, white leaves it alone. Each "
    "adapter (row) has its own scale, from minus to plus its largest |entry| (in the row label): adapters of very "
    "different sizes all stay visible, so compare sizes by those numbers, not by the colours. Large matrices are "
    "shown pooled, each cell the strongest entry of its block.",
    "factors": "A is the input-side factor every head shares; B_h is head h's own output-side factor "
    "(ΔW_h = s·B_h·A). Each factor is drawn on its own range (the colour bar reads relative to its largest entry); "
    "its norm is in the row label and the hover text.",
    "similarity": "How alike the heads' updates are: the cosine of the weights (−1 to 1: red alike, blue opposite), "
    "the overlap of their column spaces, or CKA (both 0 to 1: brighter is more alike).",
    "summary": "Top: the mean off-diagonal similarity in every adapted layer (higher: the heads were adapted more "
    "jointly). Bottom: the effective rank of ΔW_h, how many independent directions a head's update uses. For LoRA "
    "and HoRA it can never exceed the adapter's rank r (the dotted lines), so compare adapters of equal r. DoRA and "
    "DoRAN also rescale every row of the original weight W0, so ΔW = W' − W0 holds a piece of W0 itself and is not "
    "low-rank: their effective rank is not bounded by r and measures that rescaling too.",
    "pca": "Every dot is one column of one head's B factor, projected on the two main axes of all of them (PC1+2: the "
    "share of their variance those two axes show); colours are heads (not methods), and beyond nine heads the "
    "marker's shape changes too. HoRA's columns all come out of one shared generator, LoRA's are independent "
    "parameters.",
}
PLOTS = {
    "deltas": "Per-head ΔW",
    "factors": "Factors",
    "similarity": "Similarity",
    "summary": "Per-layer summary",
    "pca": "Generator view",
}
METRICS = [("cosine", "cosine"), ("subspace overlap", "subspace"), ("CKA", "cka")]


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
    return f"{name}{rank}<br>eff. rank {analysis.mean_effective_rank(here):.1f} here" if here else f"{name}{rank}"


@as_sentences("draw the heads")
def view(
    store: ModelStore,
    session: SessionModels | None,
    base_name: str,
    names: list[str],
    layer: int,
    projection: str,
    metric: str,
) -> tuple[go.Figure, go.Figure, go.Figure, go.Figure, go.Figure]:
    """The five plots of the Heads tab for the chosen adapters, layer, projection and similarity metric."""
    variants = adapter_variants(store, session, base_name) if base_name else {}
    chosen = {n: variants[n] for n in (names or []) if n in variants}
    if not chosen:
        raise gr.Error("Tick at least one adapter (LoRA, HoRA, DoRA or DoRAN) to inspect.")
    if layer is None or not projection:
        raise gr.Error("Pick a layer and a projection.")
    metric = metric or "cosine"
    try:
        views = {n: analysis.explorer_view(v.model, int(layer), projection, metric) for n, v in chosen.items()}
    except ValueError as err:  # e.g. a projection one adapter does not adapt
        raise gr.Error(str(err)) from err
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
    return (
        figures.head_heatmaps(shown, rows, f"Per-head updates ΔW_h ({where}{pooled})"),
        figures.factor_heatmaps(shown, rows, f"Low-rank factors ({where})"),
        figures.similarity_heatmaps({n: v.similarity for n, v in views.items()}, labels, metric),
        figures.layer_summary_lines(
            {n: v.layers for n, v in views.items()},
            metric,
            labels,
            {n: v.method for n, v in chosen.items()},
            {n: facts(v).rank if v.method in BOUNDED else None for n, v in chosen.items()},
        ),
        figures.factor_scatter({n: v.pca for n, v in views.items()}, labels),
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
    """What the effective ranks mean for the chosen adapters, with their own numbers: each one's method, rank r,
    trained parameters and mean effective rank over every layer of the projection (remembered from the plots)."""
    variants = adapter_variants(store, session, base_name) if base_name else {}
    chosen = {n: variants[n] for n in (names or []) if n in variants}
    if not chosen or not projection:
        return ""
    parts = []
    for name, variant in chosen.items():
        summaries = analysis.cached_layer_summaries(variant.model, projection, metric=metric or "cosine")
        f = facts(variant)
        rank = f"r={f.rank}" if f.rank is not None else "rank unknown"
        size = f", {f.params:,} trained parameters" if f.params else ""
        bound = "at most r" if variant.method in BOUNDED else "not bounded by r (magnitude rescaling)"
        method = "" if name.split(" ")[0] == label(variant.method) else f"{label(variant.method)}, "  # no "HoRA (HoRA"
        parts.append(
            f"**{name}** ({method}{rank}{size}): mean effective rank "
            f"{analysis.mean_effective_rank(summaries):.1f}, {bound}"
        )
    return "Effective rank, all layers of this projection: " + "; ".join(parts) + "."


def first_view(ctx: Context, base_name: str | None, pickers: tuple[dict, dict, dict]) -> tuple:
    """The default view, drawn once when the app is built (empty figures if it cannot be drawn)."""
    adapters, layer, projection = pickers
    if base_name and adapters.get("value"):
        chosen = (ctx.store, None, base_name, adapters["value"], layer["value"], projection["value"], "cosine")

        def draw() -> dict:
            return {"plots": [figure.to_json() for figure in view(*chosen)], "ranks": ranks(*chosen)}

        try:
            inputs = {"adapters": adapters["value"], "layer": layer["value"], "projection": projection["value"]}
            drawn = paint.remembered(ctx.store.bases[base_name], "heads", inputs, draw)
            return (*map(paint.as_plot, drawn["plots"]), drawn["ranks"])
        except Exception:  # a first paint that fails must not stop the app
            logger.exception("first paint of the Heads tab failed")
    return tuple(figures.placeholder("Pick adapters to inspect.") for _ in PLOTS) + ("",)


# ---------------------------------------------------------------------------------------------------------------
# The tab


@dataclass
class HeadsTab:
    """The components other tabs update: the base picker and the adapter checkboxes."""

    base: gr.Dropdown
    adapters: gr.CheckboxGroup


def build(ctx: Context, demo: gr.Blocks) -> HeadsTab:
    """The Heads tab's components and events (call inside ``gr.Tab``)."""
    bases = ctx.store.names()
    first = bases[0] if bases else None
    pickers = options(ctx.store, None, first)
    first_plots = first_view(ctx, first, pickers)
    gr.Markdown(
        "What each adapter changed in every attention head of one layer: the update ΔW_h of each head, the "
        "low-rank factors it is made of, how alike the heads' updates are, and a per-layer summary. Every change "
        "of a control redraws (the plots shown stay until the new ones are drawn; the first view of an adapter "
        "takes longest).",
        elem_classes="about",
    )
    with gr.Row():
        base = gr.Dropdown(bases, value=first, label="Base model", elem_id="heads-base", min_width=180)
        adapters = gr.CheckboxGroup(label="Adapters", elem_id="heads-adapters", min_width=260, **choices(pickers[0]))
        layer = gr.Dropdown(label="Layer", elem_id="heads-layer", min_width=120, **choices(pickers[1]))
        projection = gr.Dropdown(label="Projection", elem_id="heads-projection", min_width=140, **choices(pickers[2]))
        metric = gr.Radio(METRICS, value="cosine", label="Similarity", elem_id="heads-metric", min_width=220)
    rank_caption = gr.Markdown(first_plots[-1], label="Ranks of these adapters", elem_id="heads-ranks")
    plots = []
    for (key, title), figure in zip(PLOTS.items(), first_plots, strict=False):
        plots.append(gr.Plot(figure, label=title, elem_id=f"heads-{key}"))
        gr.Markdown(CAPTIONS[key], elem_classes="caption")

    inputs = [ctx.session, base, adapters, layer, projection, metric]
    # progress on the caption, not the plots: the figures on screen stay until the new ones replace them
    draw = dict(fn=partial(view, ctx.store), inputs=inputs, outputs=plots, show_progress_on=[rank_caption])
    state_ranks = dict(fn=partial(ranks, ctx.store), inputs=inputs, outputs=rank_caption)
    gr.on(
        [adapters.input, layer.input, projection.input, metric.input],
        **draw,
        api_name="heads",
        validator=in_lane(ctx, "inference", partial(check_view, ctx.store)),
        concurrency_limit=LIMITS.inference_concurrency,
        concurrency_id="inference",
        trigger_mode="always_last",  # quick clicks through the layers draw only the last one
    ).then(**state_ranks, api_name="heads_ranks")
    pickers_out = [adapters, layer, projection]
    base.change(partial(options, ctx.store), [ctx.session, base], pickers_out, api_name="heads_options").then(
        **draw,
        api_name="heads_redraw",
        validator=partial(check_view, ctx.store),
        concurrency_limit=LIMITS.inference_concurrency,
        concurrency_id="inference",
    ).then(**state_ranks, api_name="heads_redraw_ranks")
    demo.load(partial(options, ctx.store), [ctx.session, base], pickers_out, api_name="init_heads")
    return HeadsTab(base, adapters)
