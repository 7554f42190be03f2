"""What every tab of the explorer is built from: the shared models, the session's state and the bundled files."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from app.store import ModelStore, SessionModels, variants_of


@dataclass
class Context:
    """``session`` is the per-visitor ``gr.State`` (a ``SessionModels``); ``samples`` maps a bundled dataset's
    name to its path and ``sample_tasks`` to its task; ``examples`` are image paths offered in Compare."""

    store: ModelStore
    session: gr.State
    samples: dict[str, str] = field(default_factory=dict)
    sample_tasks: dict[str, str] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    passage: str = ""


def choices(update: dict) -> dict[str, Any]:
    """The ``choices`` and ``value`` of a ``gr.update``, as keyword arguments for building a component."""
    return {k: v for k, v in update.items() if k in ("choices", "value")}


def variant_choices(store: ModelStore, session: SessionModels | None, base_name: str | None) -> dict:
    """Every variant of a base, all ticked."""
    names = list(variants_of(store, session, base_name)) if base_name else []
    return gr.update(choices=names, value=names)
