"""Models tab: load more bases and adapters (Hub repo id or local folder) into this session."""

from __future__ import annotations

from functools import partial

import gradio as gr

import hora
from app.compare import CompareTab
from app.context import Context
from app.heads import HeadsTab
from app.store import Base, ModelStore, SessionModels, Variant, base_names, get_base
from hora.methods import label, method_of


def report_rows(model) -> list[list]:
    """``hora.param_report`` as table rows."""
    report = hora.param_report(model)
    rows = [[name, trainable, total] for name, (trainable, total) in report.rows.items()]
    return rows + [["all", report.trainable, report.total]]


def _choices(store: ModelStore, session: SessionModels) -> tuple[dict, dict, dict]:
    return (
        gr.update(choices=base_names(store, session, "image")),
        gr.update(choices=base_names(store, session, "lm")),
        gr.update(choices=base_names(store, session)),
    )


def load_base(store: ModelStore, session: SessionModels, name: str):
    """Load a base for this session; returns (rows, message, session, vision / lm / all base choices)."""
    name = (name or "").strip()
    if not name:
        raise gr.Error("Type a Hub repo id (org/name), a local folder or an embedded asset name.")
    if name in base_names(store, session):
        raise gr.Error(f"{name!r} is already loaded.")
    try:
        loaded = hora.load_base(name)
    except ValueError as err:  # HubError and bad configs: the message says what to do
        raise gr.Error(str(err)) from err
    base = Base(name, loaded.kind, loaded.model.eval(), loaded.processor, f"{loaded.source}: {name}", str(loaded.path))
    base.variants["base"] = Variant("base", "base", base.model, base.source)
    session.bases[name] = base
    message = f"Loaded **{name}** ({loaded.kind} model, from {loaded.source}). It is visible in this session only."
    return (report_rows(loaded.model), message, session, *_choices(store, session))


def load_adapter(store: ModelStore, session: SessionModels, base_name: str, name: str):
    """Load an adapter onto a copy of ``base_name`` for this session; returns (rows, message, session)."""
    name = (name or "").strip()
    if not base_name or not name:
        raise gr.Error("Pick a base and type the adapter's Hub repo id, local folder or embedded name.")
    base = get_base(store, session, base_name)
    try:
        model = hora.load_adapter(base.fresh_copy(), name).eval()
    except ValueError as err:
        raise gr.Error(str(err)) from err
    method = method_of(model)
    variant_name = f"{label(method)}: {name}"
    session.add(base_name, Variant(variant_name, method, model, name))
    message = f"Loaded **{variant_name}** on {base_name}; pick it in Compare and Heads (this session only)."
    return report_rows(model), message, session


def build(ctx: Context, compare: CompareTab, heads: HeadsTab) -> None:
    """The Models tab's components and events (call inside ``gr.Tab``); what it loads joins ``compare`` and
    ``heads``."""
    gr.Markdown(
        "Load another base model or adapter by Hugging Face Hub repo id (`org/name`), local folder, or embedded "
        "asset name. Only safetensors weights are read and no remote code runs. What you load here is visible "
        "in your session only."
    )
    bases = ctx.store.names()
    with gr.Row():
        with gr.Column():
            base_name_box = gr.Textbox(label="Base model", placeholder="org/name or /path/to/model")
            load_base_btn = gr.Button("Load base", elem_id="load-base-btn")
        with gr.Column():
            adapter_base = gr.Dropdown(bases, value=bases[0] if bases else None, label="Onto base")
            adapter_name_box = gr.Textbox(label="Adapter", placeholder="org/name or /path/to/adapter")
            load_adapter_btn = gr.Button("Load adapter", elem_id="load-adapter-btn")
    message = gr.Markdown()
    report = gr.Dataframe(headers=["component", "trainable", "total"], label="Parameter report")

    session = ctx.session
    load_base_btn.click(
        partial(load_base, ctx.store),
        [session, base_name_box],
        [report, message, session, compare.vision_base, compare.lm_base, heads.base],
        api_name="load_base",
    ).then(lambda s: gr.update(choices=base_names(ctx.store, s)), session, adapter_base, api_name="adapter_bases")
    load_adapter_btn.click(
        partial(load_adapter, ctx.store),
        [session, adapter_base, adapter_name_box],
        [report, message, session],
        api_name="load_adapter",
    )
