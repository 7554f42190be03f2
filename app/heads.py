"""Heads tab: what each adapter does to every attention head of one layer and projection."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import gradio as gr
import plotly.graph_objects as go

from app import figures
from app.context import Context, choices
from app.settings import LIMITS
from app.store import ModelStore, SessionModels, Variant, variants_of
from hora import analysis
from hora.methods import LOW_RANK_METHODS


CAPTIONS = {
    "deltas": "Each square is one head's update ΔW_h (rows: the head's output dimensions, columns: the input features), "
    "all on one colour scale: red adds to the weight, blue takes away, white leaves it alone.",
    "factors": "A is the input-side factor every head shares; B_h is head h's own output-side factor (ΔW_h = s·B_h·A). "
    "The norms in the titles say how much each factor carries.",
    "similarity": "How alike the heads' updates are: 1 on the diagonal, and the brighter an off-diagonal cell, the more "
    "two heads were changed in the same way (cosine of the weights, overlap of their column spaces, or CKA).",
    "summary": "Left: the mean off-diagonal similarity in every adapted layer (higher means the heads were adapted "
    "more jointly). Right: how many independent directions each head's update uses on average (at most the rank r).",
    "pca": "Every dot is one column of one head's B factor, projected on the two main axes of all of them; colours are "
    "heads. HoRA's columns all come out of one shared generator, LoRA's are independent parameters.",
}
PLOTS = {
    "deltas": "Per-head ΔW",
    "factors": "Factors",
    "similarity": "Similarity",
    "summary": "Per-layer summary",
    "pca": "Generator view",
}


def adapter_variants(store: ModelStore, session: SessionModels | None, base_name: str) -> dict[str, Variant]:
    """Variants of a base that carry a low-rank adapter (the base itself and head-only probes have none)."""
    return {n: v for n, v in variants_of(store, session, base_name).items() if v.method in LOW_RANK_METHODS}


def options(store: ModelStore, session: SessionModels | None, base_name: str) -> tuple[dict, dict, dict]:
    """Choices for the adapter, layer and projection pickers of a base."""
    variants = adapter_variants(store, session, base_name) if base_name else {}
    if not variants:
        return gr.update(choices=[], value=[]), gr.update(choices=[], value=None), gr.update(choices=[], value=None)
    first = next(iter(variants.values())).model
    projections = analysis.projections(first)
    layers = analysis.adapted_layers(first, projections[0])
    default = [n for n in variants if variants[n].method in ("lora", "hora")] or list(variants)[:2]
    return (
        gr.update(choices=list(variants), value=default),
        gr.update(choices=layers, value=layers[0]),
        gr.update(choices=projections, value=projections[0]),
    )


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
        raise gr.Error("Pick at least one adapter (LoRA, HoRA, DoRA or DoRAN) to inspect.")
    if layer is None or not projection:
        raise gr.Error("Pick a layer and a projection.")
    metric = metric or "cosine"
    try:
        views = {n: analysis.head_view(v.model, int(layer), projection, metric) for n, v in chosen.items()}
    except ValueError as err:  # e.g. a projection one adapter does not adapt
        raise gr.Error(str(err)) from err
    where = f"layer {int(layer)}, {projection}"
    return (
        figures.head_heatmaps({n: v.deltas for n, v in views.items()}, f"Per-head updates ΔW_h ({where})"),
        figures.factor_heatmaps({n: v.factors for n, v in views.items()}, f"Low-rank factors ({where})"),
        figures.similarity_heatmaps({n: v.similarity for n, v in views.items()}, metric),
        figures.layer_summary_lines({n: v.layers for n, v in views.items()}, metric),
        figures.factor_scatter({n: v.pca for n, v in views.items()}),
    )


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
    adapters0, layer0, projection0 = options(ctx.store, None, first)
    with gr.Row():
        base = gr.Dropdown(bases, value=first, label="Base model")
        adapters = gr.CheckboxGroup(label="Adapters", **choices(adapters0))
        layer = gr.Dropdown(label="Layer", **choices(layer0))
        projection = gr.Dropdown(label="Projection", **choices(projection0))
        metric = gr.Radio(["cosine", "subspace", "cka"], value="cosine", label="Similarity")
    button = gr.Button("Show heads", variant="primary", elem_id="heads-btn")
    plots = []
    for key, label in PLOTS.items():
        plots.append(gr.Plot(label=label, elem_id=f"heads-{key}"))
        gr.Markdown(CAPTIONS[key], elem_classes="caption")

    pickers = [adapters, layer, projection]
    base.change(partial(options, ctx.store), [ctx.session, base], pickers, api_name="heads_options")
    demo.load(partial(options, ctx.store), [ctx.session, base], pickers, api_name="init_heads")
    button.click(
        partial(view, ctx.store),
        [ctx.session, base, adapters, layer, projection, metric],
        plots,
        api_name="heads",
        concurrency_limit=LIMITS.inference_concurrency,
    )
    return HeadsTab(base, adapters)
