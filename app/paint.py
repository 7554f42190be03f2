"""First paints remembered across starts: what the page shows before anyone clicks (an example classified, the
next-token distribution of the default prompt, the Heads view of the default layer) is computed from the models the
first time, then read back by every later start with the same weights and code (``hora.memo``), so a warm
start builds its page without running a model or drawing a figure.

What is remembered is what the page receives: each figure as Plotly JSON, tables as rows, texts as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gradio.components.plot import PlotData

from app.store import Base, code_version
from hora import memo


def remembered(base: Base, what: str, inputs: dict[str, Any], compute: Callable[[], Any]) -> Any:
    """``compute()`` (JSON), or what it returned at an earlier start for the same base files, code and ``inputs``
    (the store's models run on the CPU, wherever fine-tuning runs). A base with no fingerprint (not embedded: loaded
    or trained in this run) always computes."""
    if base.fingerprint is None:
        return compute()
    key = {"what": what, "base": base.fingerprint, "code": code_version(), **inputs}
    return memo.remembered("first-paint", key, compute)


def as_plot(plotly_json: str) -> PlotData:
    """A remembered figure as ``gr.Plot`` takes it, without rebuilding a Plotly figure."""
    return PlotData(type="plotly", plot=plotly_json)
