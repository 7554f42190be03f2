"""Plotly figures for the explorer. Pure presentation: every number comes from ``hora``'s API.

Colours mean one thing each, everywhere: a method always has the colour of ``METHOD_COLOURS`` (every plot of
every tab), and attention heads take theirs from ``HEAD_COLOURS``, a separate palette. Signed values (ΔW, factors,
cosine similarity) use a diverging scale centred on 0; values in 0…1 a sequential one. Subplot titles are short
and wrapped, and grids have at most three columns, so titles do not run into each other on a phone.
"""

from __future__ import annotations

from collections.abc import Mapping

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from hora.analysis import DisplayView, FactorProjection
from hora.infer import Prediction, TokenDistribution


# Okabe-Ito colours (distinguishable with colour-blindness), one per method of hora.methods.METHODS.
METHOD_COLOURS = {
    "base": "#5F6B7A",
    "head": "#8C6D31",
    "full": "#222222",
    "lora": "#0072B2",
    "hora": "#D55E00",
    "dora": "#009E73",
    "doran": "#CC79A7",
}
OTHER_COLOUR = "#7F7F7F"
# Heads: ColorBrewer Dark2 then Paired, never used for methods.
HEAD_COLOURS = ["#1B9E77", "#7570B3", "#E7298A", "#66A61E", "#E6AB02", "#A6761D", "#1F78B4", "#B15928", "#6A3D9A"]
HEAD_SYMBOLS = ["circle", "square", "diamond", "triangle-up"]
DIVERGING = "RdBu_r"  # red adds, blue takes away, white is 0
SEQUENTIAL = "Viridis"
TITLE_FONT = 12


def method_colour(method: str | None) -> str:
    """The colour of a method (``"lora"``) wherever it is drawn."""
    return METHOD_COLOURS.get(method or "", OTHER_COLOUR)


def head_style(head: int) -> tuple[str, str]:
    """Colour and marker symbol of head ``head``: beyond the palette the symbol changes, so no two heads look alike."""
    return HEAD_COLOURS[head % len(HEAD_COLOURS)], HEAD_SYMBOLS[(head // len(HEAD_COLOURS)) % len(HEAD_SYMBOLS)]


def wrap(text: str, width: int = 16) -> str:
    """Break ``text`` into lines of about ``width`` characters at spaces (``<br>``), so a subplot title stays
    within its column."""
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "<br>".join(lines + [line])


def title(label: str, width: int = 14) -> str:
    """A subplot title from a model's label (``"LoRA · r=24 · 37.8k"``): its name on the first line, the rest below,
    each wrapped to ``width`` characters so that two or three columns fit a phone."""
    return "<br>".join(wrap(part, width) for part in label.split(" · ", 1))


def _layout(fig: go.Figure, title: str, height: int, top: int = 80) -> go.Figure:
    text = wrap(title, 38)  # a phone's plot is about 40 characters wide; each extra line takes room from the top
    lines = text.count("<br>")
    fig.update_layout(
        # below the block's own label, which Gradio floats over the plot's top-left corner
        # (plotly lifts a wrapped title by about half a line per extra line: the pad makes up for it)
        title=dict(text=text, font=dict(size=15), y=1, yref="container", yanchor="top", pad=dict(t=42 + 11 * lines)),
        height=height + 32 + 31 * lines,
        margin=dict(l=60, r=20, t=top + 32 + 31 * lines, b=50),
        template="plotly_white",
        font=dict(color="#333333"),
    )
    fig.update_annotations(font_size=TITLE_FONT)  # the subplot titles
    return fig


def _grid(n: int, max_cols: int) -> tuple[int, int]:
    cols = max(1, min(n, max_cols))
    return -(-max(n, 1) // cols), cols


SHORT_LABEL = 4  # characters: bars three to a row fit a phone only while their labels are this short


def topk_bars(
    predictions: Mapping[str, Prediction | TokenDistribution],
    title: str,
    methods: Mapping[str, str] | None = None,
    subtitles: Mapping[str, str] | None = None,
) -> go.Figure:
    """One horizontal bar chart per model (its top-k labels or tokens and their probabilities).

    Three to a row while every label is short (digits); one to a row otherwise, the labels in the left margin that
    grows to fit them: between two columns, a long label ("T-shirt or top") runs into the plot beside it on a phone.
    ``methods`` maps a model to its method (for its colour); ``subtitles`` to a second title line (rank, latency).
    """
    names = list(predictions)
    labels = {
        n: p.labels if isinstance(p, Prediction) else [repr(t)[1:-1] for t in p.tokens] for n, p in predictions.items()
    }
    longest = max((len(label) for shown in labels.values() for label in shown), default=0)
    rows, cols = _grid(len(names), 3 if longest <= SHORT_LABEL else 1)
    bars = max((len(shown) for shown in labels.values()), default=1)
    row_height = 230 if cols > 1 else 17 * bars + 75
    width = 16 if cols > 1 else 60
    titles = [wrap(n, width) + (f"<br>{subtitles[n]}" if subtitles and subtitles.get(n) else "") for n in names]
    spacing = min(0.2, 90 / (row_height * rows))  # room for the titles of the row below, whatever the rows
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.12, vertical_spacing=spacing)
    for i, name in enumerate(names):
        p, row, col = predictions[name], i // cols + 1, i % cols + 1
        fig.add_trace(
            go.Bar(
                x=p.probabilities[::-1],
                y=[f"{label} " for label in labels[name][::-1]],
                orientation="h",
                marker_color=method_colour((methods or {}).get(name)),
                name=name,
                text=[f"{v:.2f}" for v in p.probabilities[::-1]],
                textposition="auto",
                hovertemplate="%{y}: %{x:.3f}<extra>" + name + "</extra>",
            ),
            row=row,
            col=col,
        )
        fig.update_xaxes(range=[0, 1], row=row, col=col, title_text="probability" if row == rows else None)
    fig.update_yaxes(automargin=True)
    fig.update_layout(showlegend=False)
    return _layout(fig, title, row_height * rows + 60, top=90)


def _cells(n: int, m: int) -> list[int]:
    """Where each of ``m`` displayed cells starts among ``n`` original indices (pooled plots keep real indices)."""
    return [round(i * n / m) for i in range(m)]


def head_heatmaps(
    views: Mapping[str, DisplayView], labels: Mapping[str, str], title: str, max_heads: int = 16
) -> go.Figure:
    """One row per adapter, one column per head: every ΔW_h on a diverging colour scale of the adapter's own.

    Each row runs from minus to plus its own largest |entry| (one scale for all would leave a small adapter blank
    beside a large one): the colour bar reads relative to that, and the row label says it.
    """
    names = list(views)
    heads = min(max_heads, max(len(v.deltas) for v in views.values()))
    fig = make_subplots(
        rows=len(names),
        cols=heads,
        subplot_titles=[f"h{h}" if row == 0 else "" for row in range(len(names)) for h in range(heads)],
        horizontal_spacing=0.008,
        vertical_spacing=0.1 / max(1, len(names)) + 0.04,
    )
    for row, name in enumerate(names, start=1):
        view = views[name]
        (hd, inputs), shown = view.delta_shape, view.deltas.shape[1:]
        zmax = view.delta_max or 1.0
        for h in range(min(heads, len(view.deltas))):
            fig.add_trace(
                go.Heatmap(
                    z=view.deltas[h].tolist(),
                    x=_cells(inputs, shown[1]),
                    y=_cells(hd, shown[0]),
                    zmin=-zmax,
                    zmax=zmax,
                    colorscale=DIVERGING,
                    showscale=(row == 1 and h == 0),
                    colorbar=dict(
                        title=dict(text="ΔW entry,<br>relative to<br>its row's max"),
                        tickvals=[-zmax, 0, zmax],
                        ticktext=["−max", "0", "+max"],
                        len=0.8,
                    ),
                    hovertemplate=f"{name}, head {h}<br>row %{{y}}, input %{{x}}: %{{z:.2e}}<extra></extra>",
                ),
                row=row,
                col=h + 1,
            )
        scale = f"<br>max |ΔW| {view.delta_max:.1e}"
        fig.update_yaxes(title_text=labels.get(name, name) + scale, title_font_size=11, row=row, col=1)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False, autorange="reversed")
    fig.update_xaxes(title_text="input features →", title_font_size=11, row=len(names), col=1)
    return _layout(fig, title, 170 * len(names) + 110)


def factor_heatmaps(
    views: Mapping[str, DisplayView], labels: Mapping[str, str], title: str, max_heads: int = 16
) -> go.Figure:
    """Per adapter (one row): A (r × inputs, shared by the heads) and each head's B_h (rows × r).

    Every factor is drawn on its own symmetric range (its largest |entry|), so the one colour bar reads relative to
    that; the true values and the norms ‖A‖, ‖B_h‖ are in the hover text and the row label.
    """
    names = list(views)
    heads = min(max_heads, max(v.B.shape[0] for v in views.values()))
    fig = make_subplots(
        rows=len(names),
        cols=heads + 1,
        column_widths=[3.0] + [1.0] * heads,
        subplot_titles=[
            t
            for row in range(len(names))
            for t in (["A"] + [f"B{h}" for h in range(heads)] if row == 0 else [""] * (heads + 1))
        ],
        horizontal_spacing=0.008,
        vertical_spacing=0.1 / max(1, len(names)) + 0.04,
    )
    for row, name in enumerate(names, start=1):
        v = views[name]
        amax, bmax = v.a_max or 1.0, v.b_max or 1.0
        fig.add_trace(
            go.Heatmap(
                z=v.A.tolist(),
                zmin=-amax,
                zmax=amax,
                colorscale=DIVERGING,
                showscale=row == 1,
                colorbar=dict(
                    title=dict(text="relative to the<br>factor's largest<br>|entry|"),
                    tickvals=[-amax, 0, amax],
                    ticktext=["−max", "0", "+max"],
                    len=0.8,
                ),
                hovertemplate=f"{name} A (‖A‖={v.a_norm:.2f})<br>rank %{{y}}, input %{{x}}: "
                + "%{z:.2e}<extra></extra>",
            ),
            row=row,
            col=1,
        )
        for h in range(min(heads, v.B.shape[0])):
            fig.add_trace(
                go.Heatmap(
                    z=v.B[h].tolist(),
                    zmin=-bmax,
                    zmax=bmax,
                    colorscale=DIVERGING,
                    showscale=False,
                    hovertemplate=f"{name} B{h} (‖B{h}‖={v.b_norms[h]:.2f})<br>row %{{y}}, rank %{{x}}: %{{z:.2e}}"
                    "<extra></extra>",
                ),
                row=row,
                col=h + 2,
            )
        fig.update_yaxes(
            title_text=f"{labels.get(name, name)}<br>‖A‖={v.a_norm:.2f}", title_font_size=11, row=row, col=1
        )
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False, autorange="reversed")
    fig.update_xaxes(title_text="A: inputs →", title_font_size=11, row=len(names), col=1)
    fig.update_xaxes(title_text="r", title_font_size=11, row=len(names), col=2)
    return _layout(fig, title, 170 * len(names) + 110)


def factor_scatter(projections: Mapping[str, FactorProjection], labels: Mapping[str, str]) -> go.Figure:
    """2-D PCA of every head's B columns, one panel per adapter (two to a row), heads in the head palette."""
    names = list(projections)
    rows, cols = _grid(len(names), 2)
    titles = [
        f"{title(labels.get(n, n))}<br>PC1+2: {100 * sum(projections[n].explained_variance):.0f}%" for n in names
    ]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.12, vertical_spacing=0.2)
    for i, name in enumerate(names):
        p = projections[name]
        points = p.points.tolist()
        for head in sorted(set(p.head)):
            idx = [j for j, h in enumerate(p.head) if h == head]
            colour, symbol = head_style(head)
            fig.add_trace(
                go.Scatter(
                    x=[points[j][0] for j in idx],
                    y=[points[j][1] for j in idx],
                    mode="markers",
                    marker=dict(size=8, color=colour, symbol=symbol),
                    name=f"head {head}",
                    legendgroup=f"head {head}",
                    showlegend=(i == 0),
                    text=[f"{name}: head {head}, column {p.rank_index[j]}" for j in idx],
                    hoverinfo="text",
                ),
                row=i // cols + 1,
                col=i % cols + 1,
            )
    fig.update_xaxes(title_text="PC1")
    fig.update_yaxes(title_text="PC2", col=1)
    return _layout(fig, "What the generator produces: PCA of per-head B columns", 340 * rows + 70, top=110)


def training_curves(
    histories: Mapping[str, Mapping[str, object]],
    metric: str,
    methods: Mapping[str, str] | None = None,
    metric_title: str | None = None,
    chance: float | None = None,
) -> go.Figure:
    """Training loss (left) and the held-out metric (right) per method as training streams in.

    ``histories`` maps a method's name to ``{"step": [...], "loss": [...], "eval_step": [...], "held_out": [...]}``
    (the training loss and the held-out ``metric`` kept apart), and ``"kept": (step, value)`` where the run kept the
    weights of an earlier evaluation (drawn as a star); ``chance`` draws the accuracy of a guess as a dashed line.
    """
    right = metric_title or f"held-out {metric}"
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=["training loss (nats)", wrap(right, 34)], horizontal_spacing=0.14
    )
    for name, h in histories.items():
        colour = method_colour((methods or {}).get(name))
        fig.add_trace(
            go.Scatter(x=h.get("step", []), y=h.get("loss", []), name=name, mode="lines", line_color=colour),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=h.get("eval_step", []),
                y=h.get("held_out", []),
                name=name,
                mode="lines+markers",
                line_color=colour,
                showlegend=False,
            ),
            row=1,
            col=2,
        )
        if h.get("kept"):
            step, value = h["kept"]
            fig.add_trace(
                go.Scatter(
                    x=[step],
                    y=[value],
                    name=f"{name}: kept step {step}",
                    mode="markers",
                    marker=dict(symbol="star", size=14, color=colour, line=dict(color="#222222", width=1)),
                    hovertemplate=f"{name}: the weights of step {step} were kept (best held-out)<extra></extra>",
                    showlegend=False,
                ),
                row=1,
                col=2,
            )
    if chance is not None:
        fig.add_hline(y=chance, line=dict(color="#555555", dash="dash", width=1), row=1, col=2)
        fig.add_annotation(
            text=f"chance {chance:.2f}",
            x=1,
            xref="x2 domain",
            y=chance,
            yref="y2",
            showarrow=False,
            xanchor="right",
            yanchor="bottom",
            font=dict(size=11, color="#444444"),
        )
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="loss (nats)", row=1, col=1)
    fig.update_yaxes(title_text=metric, row=1, col=2)
    return _layout(fig, "Fine-tuning", 360)


def placeholder(message: str) -> go.Figure:
    """An empty figure that says why it is empty (instead of a blank box)."""
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font=dict(size=14))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, "", 200, top=20)
