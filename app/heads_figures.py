"""Plotly figures of the Heads tab's answers: how alike the heads' factors B_h are against chance, per layer and in
the layer shown, and how far the output moves when one head's update is knocked out. Pure presentation: every
number comes from ``hora.coupling``, ``hora.analysis`` and ``hora.knockout``; the colours are ``app.figures``'.

Reference levels (each adapter's chance level, its rank bound) are dotted lines in the adapter's colour; every such
trace carries ``meta = {"kind": "chance" | "joint-chance" | "bound", "adapter": name}`` so a reader of the figure's data can tell
them from the measured lines.
"""

from __future__ import annotations

from collections.abc import Mapping

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app.figures import DIVERGING, SEQUENTIAL, _grid, _layout, method_colour, title, wrap
from hora.analysis import LayerSummary
from hora.coupling import Coupling, LayerCoupling
from hora.knockout import Knockout


METRIC_NAMES = {"subspace": "subspace overlap", "cosine": "cosine", "cka": "CKA"}


def metric_name(metric: str) -> str:
    """How a measure of B_h is named on the page: ``"subspace overlap"``."""
    return METRIC_NAMES.get(metric, metric)


def chance_text(value: float) -> str:
    """A chance level as the page prints it everywhere (three decimals: 0.125, 0.359)."""
    return f"{value:.3f}"


def coupling_title(coupling: Coupling) -> str:
    """The second title line of an adapter's similarity matrix: its mean and chance level, as the caption says."""
    return f"mean {coupling.mean_offdiagonal:.2f}<br>chance {chance_text(coupling.chance)}"


def coupling_heatmaps(
    couplings: Mapping[str, Coupling], labels: Mapping[str, str], metric: str, where: str
) -> go.Figure:
    """One heads × heads matrix of B_h similarity per adapter, two to a row, each titled with its mean off-diagonal
    similarity and its chance level: a diverging scale for the cosine (−1…1), a sequential one otherwise (0…1)."""
    names = list(couplings)
    signed = metric == "cosine"
    rows, cols = _grid(len(names), 2)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[f"{title(labels.get(n, n))}<br>{coupling_title(couplings[n])}" for n in names],
        horizontal_spacing=0.14,
        vertical_spacing=min(0.3, 0.6 / rows),
    )
    for i, name in enumerate(names):
        sim = couplings[name].similarity.tolist()
        few = len(sim) <= 6  # numbers in the cells only while they fit
        fig.add_trace(
            go.Heatmap(
                z=sim,
                zmin=-1.0 if signed else 0.0,
                zmax=1.0,
                zmid=0.0 if signed else None,
                colorscale=DIVERGING if signed else SEQUENTIAL,
                showscale=(i == 0),
                colorbar=dict(title=dict(text=metric_name(metric).replace(" ", "<br>"))),
                text=[[f"{v:.2f}" for v in row] for row in sim] if few else None,
                texttemplate="%{text}" if few else None,
                hovertemplate="head %{y} vs head %{x}: %{z:.3f}<extra>" + name + "</extra>",
                name=name,
                meta={"kind": "similarity", "adapter": name, "chance": couplings[name].chance},
            ),
            row=i // cols + 1,
            col=i % cols + 1,
        )
    fig.update_xaxes(title_text="head", dtick=1)
    fig.update_yaxes(dtick=1, autorange="reversed")
    fig.update_yaxes(title_text="head", col=1)  # first column only: between two plots it would run into the left one
    return _layout(fig, f"How alike the heads' B_h are ({metric_name(metric)}, {where})", 360 * rows + 60, top=130)


def _reference(fig: go.Figure, name: str, kind: str, x: list[int], y: float, colour: str, text: str, row: int):
    """A dotted level in an adapter's colour across the layers ``x`` (its chance level or rank bound)."""
    fig.add_trace(
        go.Scatter(
            x=[x[0], x[-1]],
            y=[y, y],
            mode="lines",
            line=dict(color=colour, dash="dot", width=1.5),
            name=text,
            legendgroup=name,
            showlegend=False,
            meta={"kind": kind, "adapter": name},
            hovertemplate=f"{name}: {text}<extra></extra>",
        ),
        row=row,
        col=1,
    )


def coupling_summary(
    layers: Mapping[str, list[LayerCoupling]],
    summaries: Mapping[str, list[LayerSummary]],
    metric: str,
    labels: Mapping[str, str],
    methods: Mapping[str, str],
    bounds: Mapping[str, int | None],
) -> go.Figure:
    """Per layer, one line per adapter in its method's colour, each with its reference level dotted: the mean
    similarity of the heads' B_h (chance level), how many directions all the heads' B columns use together (what
    unrelated factors of that shape would use) and the mean effective rank of each head's ΔW_h (its rank r where
    that bounds it, ``bounds``)."""
    fig = make_subplots(  # one above the other: side by side, their titles and axes collide on a phone
        rows=3,
        cols=1,
        subplot_titles=[
            wrap(text, 40)
            for text in (
                f"mean {metric_name(metric)} of the heads' B_h (dotted: chance)",
                "directions the heads' B use together (dotted: random factors)",
                "directions each head's ΔW_h uses (dotted: its rank r)",
            )
        ],
        vertical_spacing=0.11,
    )
    seen: set[str] = set()
    for name, rows in layers.items():
        method = methods.get(name)
        colour, dash = method_colour(method), "dash" if method in seen else "solid"
        seen.add(method or "")
        x = [row.layer for row in rows]
        style = dict(mode="lines+markers", line=dict(color=colour, dash=dash), legendgroup=name)
        shown = labels.get(name, name)
        meta = {"mean": {"kind": "mean", "adapter": name}, "joint": {"kind": "joint", "adapter": name}}
        meta["rank"] = {"kind": "rank", "adapter": name}
        fig.add_trace(
            go.Scatter(x=x, y=[r.coupling.mean_offdiagonal for r in rows], name=shown, meta=meta["mean"], **style),
            row=1,
            col=1,
        )
        joint = [r.coupling.joint_effective_rank for r in rows]
        fig.add_trace(
            go.Scatter(x=x, y=joint, name=shown, showlegend=False, meta=meta["joint"], **style), row=2, col=1
        )
        if not x:
            continue
        first = rows[0].coupling
        _reference(fig, name, "chance", x, first.chance, colour, f"chance {chance_text(first.chance)}", 1)
        unrelated = first.joint_effective_rank_chance
        _reference(fig, name, "joint-chance", x, unrelated, colour, f"random factors: {unrelated:.1f}", 2)
        own = summaries.get(name) or []
        ranks = [sum(r.effective_ranks) / len(r.effective_ranks) for r in own]
        fig.add_trace(
            go.Scatter(x=[r.layer for r in own], y=ranks, name=shown, showlegend=False, meta=meta["rank"], **style),
            row=3,
            col=1,
        )
        if bounds.get(name) is not None:
            _reference(fig, name, "bound", x, bounds[name], colour, f"r = {bounds[name]}, the most it can be", 3)
    few = max((len(rows) for rows in layers.values()), default=0) <= 12
    fig.update_xaxes(dtick=1 if few else None)  # whole layers only (30 layers: every fifth or so)
    fig.update_xaxes(title_text="layer", row=3, col=1)  # once, at the bottom: between panels it crowds the titles
    fig.update_yaxes(title_text=wrap(metric_name(metric), 12), row=1, col=1)
    fig.update_yaxes(title_text="directions", rangemode="tozero", row=2, col=1)
    fig.update_yaxes(title_text="directions", rangemode="tozero", row=3, col=1)
    fig.update_layout(legend=dict(orientation="h", y=-0.08))
    return _layout(fig, "Per-layer summary", 860)


KNOCKED = "#BBBBBB"  # the whole projection's bar: for scale, not one of the heads


def knockout_bars(
    results: Mapping[str, Knockout], labels: Mapping[str, str], methods: Mapping[str, str], where: str
) -> go.Figure:
    """One row per adapter: a bar per head (how far the output moves when that head's update is removed) in the
    adapter's colour, and a grey bar for the whole projection's update removed, on one shared scale."""
    names = list(results)
    measure = next(iter(results.values())).measure if results else ""
    fig = make_subplots(
        rows=max(1, len(names)),
        cols=1,
        subplot_titles=[labels.get(n, n) for n in names],
        shared_xaxes=False,
        vertical_spacing=min(0.16, 0.45 / max(1, len(names))),
    )
    for i, name in enumerate(names, start=1):
        result = results[name]
        ticks = [f"h{h}" for h in result.heads] + ["whole"]
        values = [*result.effects, result.whole]
        fig.add_trace(
            go.Bar(
                x=ticks,
                y=values,
                marker_color=[method_colour(methods.get(name))] * len(result.heads) + [KNOCKED],
                name=name,
                meta={"kind": "knockout", "adapter": name},
                hovertemplate="%{x} removed: %{y:.4f}<extra>" + name + "</extra>",
            ),
            row=i,
            col=1,
        )
        fig.update_yaxes(title_text=wrap(_axis(measure), 18), title_font_size=11, row=i, col=1)
    fig.update_yaxes(rangemode="tozero")
    for row in range(2, len(names) + 1):  # one scale: adapters compare by bar height
        fig.update_yaxes(matches="y", row=row, col=1)
    fig.update_layout(showlegend=False)
    return _layout(fig, f"Each head's update removed in turn ({where})", 230 * max(1, len(names)) + 40, top=100)


def _axis(measure: str) -> str:
    """A measure's short name for an axis."""
    if measure.startswith("total variation"):
        return "next-token TV distance"
    if measure.startswith("drop"):
        return "drop in p(class)"
    return measure
