"""Plotly figures for the explorer. Pure presentation: every number comes from ``hora``'s API."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from hora.analysis import FactorProjection, LayerSummary
from hora.infer import Prediction, TokenDistribution


PALETTE = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#FF9DA6", "#9D755D"]


def _layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(title=title, height=height, margin=dict(l=40, r=20, t=70, b=40), template="plotly_white")
    return fig


def topk_bars(predictions: Mapping[str, Prediction | TokenDistribution], title: str) -> go.Figure:
    """One horizontal bar chart per model: its top-k labels (or tokens) and probabilities."""
    names = list(predictions)
    fig = make_subplots(rows=1, cols=max(1, len(names)), subplot_titles=[_subtitle(n, predictions[n]) for n in names])
    for col, name in enumerate(names, start=1):
        p = predictions[name]
        labels = p.labels if isinstance(p, Prediction) else [repr(t)[1:-1] for t in p.tokens]
        fig.add_trace(
            go.Bar(
                x=p.probabilities[::-1],
                y=[f"{label} " for label in labels[::-1]],
                orientation="h",
                marker_color=PALETTE[(col - 1) % len(PALETTE)],
                name=name,
                text=[f"{v:.2f}" for v in p.probabilities[::-1]],
                textposition="auto",
            ),
            row=1,
            col=col,
        )
        fig.update_xaxes(range=[0, 1], row=1, col=col)
    fig.update_layout(showlegend=False)
    return _layout(fig, title, 320)


def _subtitle(name: str, p: Prediction | TokenDistribution) -> str:
    return f"{name} ({p.latency_ms:.1f} ms)" if isinstance(p, Prediction) else name


def head_heatmaps(deltas: Mapping[str, Sequence], title: str, max_heads: int = 8) -> go.Figure:
    """Rows = adapters, columns = heads; each cell is ΔW_h (head_dim × in_features), one shared colour scale.

    ``deltas`` maps an adapter name to its (heads, head_dim, in) tensor (or nested lists).
    """
    names = list(deltas)
    heads = min(max_heads, max(len(d) for d in deltas.values()))
    zmax = max(float(abs(d[:heads]).max()) for d in deltas.values()) or 1.0
    fig = make_subplots(
        rows=len(names),
        cols=heads,
        subplot_titles=[f"{n} · head {h}" for n in names for h in range(heads)],
        horizontal_spacing=0.01,
        vertical_spacing=0.12,
    )
    for row, name in enumerate(names, start=1):
        for h in range(min(heads, len(deltas[name]))):
            fig.add_trace(
                go.Heatmap(
                    z=deltas[name][h].tolist(),
                    zmin=-zmax,
                    zmax=zmax,
                    colorscale="RdBu",
                    reversescale=True,
                    showscale=(row == 1 and h == 0),
                    colorbar=dict(title="ΔW", len=0.8),
                    hovertemplate="row %{y}, input %{x}: %{z:.2e}<extra></extra>",
                ),
                row=row,
                col=h + 1,
            )
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False, autorange="reversed")
    return _layout(fig, title, 220 * len(names) + 80)


def factor_heatmaps(factors: Mapping[str, object], title: str, max_heads: int = 8) -> go.Figure:
    """Per adapter: A (r × in, shared by the heads) and every head's B_h (head_dim × r), with their norms."""
    names = list(factors)
    heads = min(max_heads, max(f.B.shape[0] for f in factors.values()))
    fig = make_subplots(
        rows=len(names),
        cols=heads + 1,
        column_widths=[3.0] + [1.0] * heads,
        subplot_titles=[
            t
            for n in names
            for t in [f"{n} · A (‖A‖={float(factors[n].A[0].norm()):.2f})"]
            + [f"B{h} (‖·‖={float(factors[n].B[h].norm()):.2f})" for h in range(heads)]
        ],
        horizontal_spacing=0.01,
        vertical_spacing=0.14,
    )
    for row, name in enumerate(names, start=1):
        f = factors[name]
        amax = float(abs(f.A[0]).max()) or 1.0
        bmax = float(abs(f.B).max()) or 1.0
        fig.add_trace(
            go.Heatmap(
                z=f.A[0].tolist(), zmid=0, zmin=-amax, zmax=amax, colorscale="RdBu", reversescale=True, showscale=False
            ),
            row=row,
            col=1,
        )
        for h in range(min(heads, f.B.shape[0])):
            fig.add_trace(
                go.Heatmap(
                    z=f.B[h].tolist(), zmin=-bmax, zmax=bmax, colorscale="RdBu", reversescale=True, showscale=False
                ),
                row=row,
                col=h + 2,
            )
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False, autorange="reversed")
    return _layout(fig, title, 220 * len(names) + 80)


def similarity_heatmaps(similarities: Mapping[str, object], metric: str) -> go.Figure:
    """One heads × heads matrix per adapter."""
    names = list(similarities)
    low = -1.0 if metric == "cosine" else 0.0
    fig = make_subplots(rows=1, cols=max(1, len(names)), subplot_titles=names, horizontal_spacing=0.06)
    for col, name in enumerate(names, start=1):
        sim = similarities[name]
        fig.add_trace(
            go.Heatmap(
                z=sim.tolist(),
                zmin=low,
                zmax=1.0,
                colorscale="Viridis",
                showscale=(col == 1),
                text=[[f"{v:.2f}" for v in row] for row in sim.tolist()],
                texttemplate="%{text}",
                hovertemplate="head %{y} vs head %{x}: %{z:.3f}<extra></extra>",
            ),
            row=1,
            col=col,
        )
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, f"Cross-head similarity ({metric})", 360)


def layer_summary_lines(summaries: Mapping[str, list[LayerSummary]], metric: str) -> go.Figure:
    """Per layer: mean off-diagonal head similarity and mean effective rank of ΔW_h, one line per adapter."""
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=[f"mean off-diagonal similarity ({metric})", "mean effective rank of ΔW_h"]
    )
    for i, (name, rows) in enumerate(summaries.items()):
        color = PALETTE[i % len(PALETTE)]
        layers = [r.layer for r in rows]
        fig.add_trace(
            go.Scatter(
                x=layers,
                y=[r.mean_offdiag_similarity for r in rows],
                name=name,
                mode="lines+markers",
                line_color=color,
            ),
            row=1,
            col=1,
        )
        ranks = [sum(r.effective_ranks) / len(r.effective_ranks) for r in rows]
        fig.add_trace(
            go.Scatter(x=layers, y=ranks, name=name, mode="lines+markers", line_color=color, showlegend=False),
            row=1,
            col=2,
        )
    fig.update_xaxes(title_text="layer", dtick=1)
    return _layout(fig, "Per-layer summary", 340)


def factor_scatter(projections: Mapping[str, FactorProjection]) -> go.Figure:
    """2-D PCA of every head's B columns, one panel per adapter, coloured by head."""
    names = list(projections)
    fig = make_subplots(
        rows=1,
        cols=max(1, len(names)),
        subplot_titles=[
            f"{n} (PC1+PC2: {100 * sum(projections[n].explained_variance):.0f}% of variance)" for n in names
        ],
    )
    for col, name in enumerate(names, start=1):
        p = projections[name]
        points = p.points.tolist()
        for head in sorted(set(p.head)):
            idx = [i for i, h in enumerate(p.head) if h == head]
            fig.add_trace(
                go.Scatter(
                    x=[points[i][0] for i in idx],
                    y=[points[i][1] for i in idx],
                    mode="markers",
                    marker=dict(size=9, color=PALETTE[head % len(PALETTE)]),
                    name=f"head {head}",
                    legendgroup=f"head {head}",
                    showlegend=(col == 1),
                    text=[f"head {head}, column {p.rank_index[i]}" for i in idx],
                    hoverinfo="text",
                ),
                row=1,
                col=col,
            )
    return _layout(fig, "What the generator produces: PCA of per-head B columns", 380)


def training_curves(histories: Mapping[str, Mapping[str, list]], metric: str) -> go.Figure:
    """Loss (left) and the evaluation metric (right) per method as training streams in.

    ``histories`` maps a method to ``{"step": [...], "loss": [...], "eval_step": [...], metric: [...]}``.
    """
    fig = make_subplots(rows=1, cols=2, subplot_titles=["training loss", f"held-out {metric}"])
    for i, (name, h) in enumerate(histories.items()):
        color = PALETTE[i % len(PALETTE)]
        fig.add_trace(
            go.Scatter(x=h.get("step", []), y=h.get("loss", []), name=name, mode="lines", line_color=color),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=h.get("eval_step", []),
                y=h.get(metric, []),
                name=name,
                mode="lines+markers",
                line_color=color,
                showlegend=False,
            ),
            row=1,
            col=2,
        )
    fig.update_xaxes(title_text="step")
    return _layout(fig, "Fine-tuning", 340)
