"""Models tab: load more bases and adapters (Hub repo id or local folder) into this session.

Its first paint is the table of every model the explorer has, with what each is. A load that fails says why on the
Models tab only: the name is checked by the event's validator (shown on the name box), and the dropdowns of the
other tabs change only after a load succeeded (``.success``), so a failure never covers them.
"""

from __future__ import annotations

import json
from functools import partial

import gradio as gr

import hora
from app.compare import CompareTab
from app.context import Context, as_sentences, facts, in_lane, valid, variant_choices
from app.heads import HeadsTab, options
from app.settings import LIMITS
from app.store import Base, ModelStore, SessionModels, Variant, base_names, get_base, variants_of
from hora import analysis, hub
from hora.methods import label, method_of


LOADED = ["base", "model", "method", "rank r", "trained parameters", "held-out score", "from"]
SCORE_NOTE = "Held-out score: accuracy, or loss in nats/token (lower is better) on each held-out set."
REPORT = ["component", "adapter parameters", "total"]


def report_rows(model) -> list[list]:
    """What a model is made of, by component: the adapter's parameters (counted whether or not they are frozen
    now, so a loaded adapter does not read 0) and the totals."""
    report = analysis.adapter_report(model)
    rows = [[name, trained, total] for name, (trained, total) in report.rows.items()]
    return rows + [["all", report.trainable, report.total]]


def loaded_models(store: ModelStore, session: SessionModels | None):
    """Every base and variant this visitor can use, with its method, rank, size and held-out score."""
    import pandas as pd

    rows = []
    for base_name in base_names(store, session):
        base = get_base(store, session, base_name)
        for name, variant in variants_of(store, session, base_name).items():
            f = facts(variant, base.info if variant.method == "base" else None)
            rank = "—" if f.rank is None else f.rank
            rows.append([base_name, name, f.method, rank, f.params or "—", f.score or "—", variant.source])
    return pd.DataFrame(rows, columns=LOADED)


def visitor_message(error: Exception, name: str) -> str:
    """A load failure as a visitor can act on it: no environment variables or server folders."""
    cause = type(error.__cause__).__name__ if error.__cause__ is not None else ""
    known = ", ".join(n for n in hub.embedded_assets() if "/" not in n)
    if cause == "LocalEntryNotFoundError":
        return (
            f"This explorer runs offline: it cannot reach the Hugging Face Hub, and {name!r} is not among the "
            f"models it already has. Load one it has ({known}) or one of their adapters (such as <base>/hora)."
        )
    if cause in ("RepositoryNotFoundError", "GatedRepoError"):
        return (
            f"There is no public model {name!r} on the Hugging Face Hub (or it is private or gated): check the "
            "spelling, org/name."
        )
    problems = [p for line in str(error).strip().splitlines() for p in line.split("; ")] or [type(error).__name__]
    more = f" (and {len(problems) - 1} more problems like it)" if len(problems) > 1 else ""
    return problems[0].rstrip(".") + more + "."


def _resolve(name: str):
    return hub.resolve(name, allow_local=not hub.public_mode())


def check_base(store: ModelStore, session: SessionModels, name: str) -> list:
    """Validator of Load base: an empty name, or one that points at nothing, is refused on the name box."""
    name = (name or "").strip()
    if not name:
        return [None, valid("Type a Hub repo id (org/name), a local folder or an embedded model's name.")]
    if name in base_names(store, session):
        return [None, valid()]
    try:
        _resolve(name)
    except ValueError as error:
        return [None, valid(visitor_message(error, name))]
    return [None, valid()]


@as_sentences("load the base model")
def load_base(store: ModelStore, session: SessionModels, name: str):
    """Load a base for this session (or show the one already loaded); returns (report, message, session, models)."""
    name = (name or "").strip()
    if not name:
        raise gr.Error("Type a Hub repo id (org/name), a local folder or an embedded model's name.")
    if name in base_names(store, session):
        base = get_base(store, session, name)
        message = f"**{name}** is already loaded ({base.kind} model): here is its report."
        return report_rows(base.model), message, session, loaded_models(store, session)
    try:
        loaded = hora.load_base(name, allow_local=not hub.public_mode())
    except ValueError as err:  # HubError and bad configs
        raise gr.Error(visitor_message(err, name)) from err
    base = Base(name, loaded.kind, loaded.model.eval(), loaded.processor, f"{loaded.source}: {name}", str(loaded.path))
    base.variants["base"] = Variant("base", "base", base.model, base.source)
    session.bases[name] = base
    message = f"Loaded **{name}** ({loaded.kind} model, from {loaded.source}). It is visible in this session only."
    return report_rows(loaded.model), message, session, loaded_models(store, session)


def _base_named(store: ModelStore, session: SessionModels, named: object) -> str | None:
    """The loaded base an adapter's config names (its ``base_model_name_or_path``), if it is loaded here."""
    if not isinstance(named, str) or not named:
        return None
    for base_name in base_names(store, session):
        base = get_base(store, session, base_name)
        if named in (base_name, base.location) or (base.location and named.rstrip("/").endswith(f"/{base_name}")):
            return base_name
    return None


def _adapter_base(store: ModelStore, session: SessionModels, name: str) -> tuple[str | None, str | None]:
    """(the base the adapter's config names, that base if loaded here)."""
    folder = _resolve(name).path
    for file in ("adapter_config.json", "head_config.json"):
        if (folder / file).is_file():
            record = json.loads((folder / file).read_text(encoding="utf-8"))
            named = record.get("base_model_name_or_path") or record.get("base_model")
            return (named if isinstance(named, str) else None), _base_named(store, session, named)
    return None, None


def check_adapter(store: ModelStore, session: SessionModels, base_name: str, name: str) -> list:
    """Validator of Load adapter: the adapter must exist and fit the chosen base (or name a loaded one)."""
    name = (name or "").strip()
    if not name:
        return [None, valid(), valid("Type the adapter's Hub repo id (org/name), local folder or embedded name.")]
    try:
        named, match = _adapter_base(store, session, name)
    except (ValueError, OSError) as error:
        return [None, valid(), valid(visitor_message(error, name))]
    if not base_name and match is None:
        why = f"its config names {named!r}, which is not loaded here" if named else "its config names no base"
        return [None, valid(f"Pick a base under Onto base: {why} (load that base first, above)."), valid()]
    if base_name and match is not None and match != base_name:
        return [
            None,
            valid(f"This adapter is for {match} (its config says so): pick {match} under Onto base."),
            valid(),
        ]
    return [None, valid(), valid()]


@as_sentences("load the adapter")
def load_adapter(store: ModelStore, session: SessionModels, base_name: str, name: str):
    """Load an adapter onto a copy of its base (``base_name``, or the base its config names when empty) for this
    session; returns (report, message, session, models)."""
    name = (name or "").strip()
    if not name:
        raise gr.Error("Type the adapter's Hub repo id (org/name), local folder or embedded name.")
    try:
        base_name = base_name or _adapter_base(store, session, name)[1]
        if not base_name:
            raise gr.Error("Pick a base under Onto base: this adapter's config names no base that is loaded here.")
        base = get_base(store, session, base_name)
        model = hora.load_adapter(base.fresh_copy(), name, allow_local=not hub.public_mode()).eval()
    except ValueError as err:
        raise gr.Error(visitor_message(err, name)) from err
    method = method_of(model)
    variant_name = f"{label(method)}: {name}"
    session.add(base_name, Variant(variant_name, method, model, name))
    message = f"Loaded **{variant_name}** on {base_name}; pick it in Compare and Heads (this session only)."
    return report_rows(model), message, session, loaded_models(store, session)


def base_choices(store: ModelStore, session: SessionModels):
    """The base dropdowns of every tab, after a load: vision and language bases of Compare, Heads', Onto base."""
    onto = [("the base its config names", "")] + base_names(store, session)
    return (
        gr.update(choices=base_names(store, session, "image")),
        gr.update(choices=base_names(store, session, "lm")),
        gr.update(choices=base_names(store, session)),
        gr.update(choices=onto),
    )


def model_lists(store: ModelStore, session: SessionModels, vision: str, lm: str, heads: str):
    """The model checkboxes of Compare and Heads for their current bases, after an adapter was loaded."""
    return (
        variant_choices(store, session, vision),
        variant_choices(store, session, lm, generators_only=True),
        options(store, session, heads)[0] if heads else gr.update(),
    )


def build(ctx: Context, compare: CompareTab, heads: HeadsTab) -> None:
    """The Models tab's components and events (call inside ``gr.Tab``); what it loads joins ``compare`` and
    ``heads``."""
    gr.Markdown(
        "Every model the explorer has is listed below. Load another base model or adapter by Hugging Face Hub repo "
        "id (`org/name`), local folder, or embedded name. Only safetensors weights are read and no remote code "
        "runs. What you load here is visible in your session only.",
        elem_classes="about",
    )
    onto = [("the base its config names", "")] + ctx.store.names()
    with gr.Row():
        with gr.Column(min_width=300):
            base_name_box = gr.Textbox(
                label="Base model", placeholder="org/name or /path/to/model", elem_id="base-name"
            )
            load_base_btn = gr.Button("Load base", elem_id="load-base-btn")
        with gr.Column(min_width=300):
            adapter_base = gr.Dropdown(onto, value="", label="Onto base", elem_id="onto-base")
            adapter_name_box = gr.Textbox(
                label="Adapter", placeholder="org/name or /path/to/adapter", elem_id="adapter-name"
            )
            load_adapter_btn = gr.Button("Load adapter", elem_id="load-adapter-btn")
    message = gr.Markdown(label="Load message", elem_id="models-message")
    report = gr.Dataframe(headers=REPORT, label="Parameter report", elem_id="models-report")
    models = gr.Dataframe(loaded_models(ctx.store, None), label="Models in this explorer", elem_id="models-table")
    gr.Markdown(SCORE_NOTE, elem_classes="caption")

    session = ctx.session
    outputs = [report, message, session, models]
    load_base_btn.click(
        partial(load_base, ctx.store),
        [session, base_name_box],
        outputs,
        api_name="load_base",
        validator=in_lane(ctx, "loading", partial(check_base, ctx.store)),
        concurrency_limit=LIMITS.loading_concurrency,
        concurrency_id="loading",
    ).success(
        partial(base_choices, ctx.store),
        session,
        [compare.vision_base, compare.lm_base, heads.base, adapter_base],
        api_name="adapter_bases",
    )
    load_adapter_btn.click(
        partial(load_adapter, ctx.store),
        [session, adapter_base, adapter_name_box],
        outputs,
        api_name="load_adapter",
        validator=in_lane(ctx, "loading", partial(check_adapter, ctx.store)),
        concurrency_limit=LIMITS.loading_concurrency,
        concurrency_id="loading",
    ).success(
        partial(model_lists, ctx.store),
        [session, compare.vision_base, compare.lm_base, heads.base],
        [compare.vision_variants, compare.lm_variants, heads.adapters],
        api_name="refresh_model_lists",
    )
