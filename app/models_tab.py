"""Models tab: load more bases and adapters (Hub repo id or local folder) into this session."""

from __future__ import annotations

import gradio as gr

import hora
from app.store import METHOD_LABELS, Base, ModelStore, SessionModels, Variant, adapter_method, base_names, get_base
from hora import hub


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
        loaded = hub.load_base(name)
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
        model = hub.load_adapter(base.fresh_copy(), name).eval()
    except ValueError as err:
        raise gr.Error(str(err)) from err
    method = adapter_method(model)
    label = f"{METHOD_LABELS.get(method, method)}: {name}"
    session.add(base_name, Variant(label, method, model, name))
    message = f"Loaded **{label}** on {base_name}; pick it in Compare and Heads (this session only)."
    return report_rows(model), message, session
