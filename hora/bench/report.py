"""A benchmark's outputs: its JSON report and figure (HTML, and PNG when kaleido is installed), written atomically."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from hora.io import atomic_dir


def _figure_files(fig: Any, tmp: Path, stem: str) -> dict[str, Any]:
    """Write ``fig`` as a self-contained HTML, and as PNG when kaleido is importable; say what was written."""
    fig.write_html(tmp / f"{stem}.html", include_plotlyjs=True)
    out: dict[str, Any] = {"html": f"{stem}.html", "png": None}
    if importlib.util.find_spec("kaleido") is None:
        out["png_note"] = "kaleido is not installed, so no PNG was written (pip install kaleido to get one)."
        return out
    for attempt in range(3):  # kaleido's page sometimes loses a race with its own scripts on a busy machine
        try:
            fig.write_image(tmp / f"{stem}.png")
            out["png"] = f"{stem}.png"
            out.pop("png_note", None)
            break
        except Exception as error:  # kaleido needs a browser it may not find; the HTML is still there
            out["png_note"] = f"PNG export failed ({attempt + 1} tries): {error}"
    return out


def write_report(out_dir: str | os.PathLike, stem: str, report: dict, figure: Any | None) -> None:
    with atomic_dir(out_dir) as tmp:
        if figure is not None:
            report["figure"] = _figure_files(figure, tmp, stem)
        else:
            report["figure"] = {"html": None, "png": None, "png_note": "plotly is not installed; no figure."}
        (tmp / f"{stem}.json").write_text(json.dumps(report, indent=2, default=str))


def plotly_go() -> Any | None:
    try:
        import plotly.graph_objects as go
    except ImportError:
        return None
    return go


def adversarial_table(summary: dict) -> str:
    """The human summary of ``run_adversarial``: what the well-behaved users got with and without the flood."""
    lines, flood = [], summary["flood"]
    for name, phase in summary["phases"].items():
        lines.append(
            f"{name:>8}: {summary['users']} users served {phase['served']} requests, {phase['failures']} failed; "
            f"p50 {phase['p50_ms']:.0f} ms, p95 {phase['p95_ms']:.0f} ms; server peak {phase['rss_peak_mib']:.0f} MiB"
        )
    lines.append(f"p95 with the flood / without: {summary['p95_ratio']}")
    lines.append(
        f"flooder ({flood['outstanding']} outstanding fine-tunes of {flood['steps']} steps): {flood['submitted']} "
        f"submitted, {flood['refused']} refused, {flood['completed']} completed, {flood['cancelled']} cancelled; "
        f"first refusal: {flood['first_refusal'] or 'none'}"
    )
    return "\n".join(lines + [f"error: {e}" for e in summary["errors"]])


__all__ = ["adversarial_table", "plotly_go", "write_report"]
