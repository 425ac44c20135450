"""Plotly figures of the app: probabilities, confusion matrices, curves, embeddings."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

FONT = {"size": 14}
MARGIN = {"l": 10, "r": 10, "t": 40, "b": 10}
CORRECT_COLOURS = {"correct": "#2b8a3e", "wrong": "#c92a2a", "label unknown": "#868e96"}


def probability_bars(probabilities: Mapping[str, float], title: str, highlight: str | None = None) -> go.Figure:
    """Horizontal bars of class probabilities, most probable on top."""
    items = sorted(probabilities.items(), key=lambda item: item[1])
    names = [name for name, _ in items]
    values = [float(value) for _, value in items]
    colours = ["#1c7ed6" if name != highlight else "#e8590c" for name in names]
    figure = go.Figure(
        go.Bar(
            x=values,
            y=names,
            orientation="h",
            marker_color=colours,
            text=[f"{value:.3f}" for value in values],
            textposition="outside",
            hovertemplate="%{y}: %{x:.3f}<extra></extra>",
        )
    )
    figure.update_layout(
        title=title,
        xaxis={"range": [0, 1.15], "title": "probability"},
        height=60 + 34 * len(names),
        margin=MARGIN,
        font=FONT,
        showlegend=False,
    )
    return figure


def confusion_matrix(matrix: Sequence[Sequence[int]], classes: Sequence[str], title: str) -> go.Figure:
    """Counts with true classes as rows and predictions as columns.

    A transparent marker sits on each cell, so that clicking a cell selects it
    (Streamlit reports point selections of scatter traces).
    """
    counts = np.asarray(matrix, dtype=int)
    classes = list(classes)
    figure = go.Figure(
        go.Heatmap(
            z=counts,
            x=classes,
            y=classes,
            colorscale="Blues",
            showscale=False,
            hoverinfo="skip",
        )
    )
    xs, ys, texts, custom = [], [], [], []
    top = counts.max() if counts.size else 0
    for row, true_class in enumerate(classes):
        for column, predicted in enumerate(classes):
            xs.append(predicted)
            ys.append(true_class)
            texts.append(str(counts[row, column]))
            custom.append([true_class, predicted])
    figure.add_trace(
        go.Scatter(
            x=xs,
            y=ys,
            mode="markers+text",
            text=texts,
            textfont={
                "size": 15,
                "color": ["white" if top and int(t) > top / 2 else "#212529" for t in texts],
            },
            marker={"size": 44, "symbol": "square", "opacity": 0.01, "color": "#000"},
            customdata=custom,
            hovertemplate="true %{customdata[0]}, predicted %{customdata[1]}: %{text} tiles<extra></extra>",
            showlegend=False,
        )
    )
    figure.update_layout(
        title=title,
        xaxis={"title": "predicted class", "side": "bottom", "type": "category"},
        yaxis={"title": "true class", "autorange": "reversed", "type": "category"},
        height=140 + 48 * len(classes),
        margin=MARGIN,
        font=FONT,
        clickmode="event+select",
        dragmode=False,
    )
    return figure


def roc_curve(fpr: Sequence[float], tpr: Sequence[float], auroc: float | None, positive: str) -> go.Figure:
    figure = go.Figure()
    figure.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dash", "color": "#adb5bd"}, name="chance"))
    label = f"model (AUROC {auroc:.3f})" if auroc is not None else "model"
    figure.add_trace(go.Scatter(x=list(fpr), y=list(tpr), mode="lines", line={"color": "#1c7ed6", "width": 3}, name=label))
    figure.update_layout(
        title=f"ROC curve, {positive} as positive (test split)",
        xaxis={"title": "false positive rate", "range": [0, 1]},
        yaxis={"title": "true positive rate", "range": [0, 1.02]},
        height=380,
        margin=MARGIN,
        font=FONT,
        legend={"x": 0.45, "y": 0.08},
    )
    return figure


def reliability_diagram(bins: Mapping[str, Sequence]) -> go.Figure:
    """Accuracy against mean confidence per confidence bin, with bin counts on hover."""
    edges = list(bins.get("edges") or [])
    confidence = list(bins.get("confidence") or [])
    accuracy = list(bins.get("accuracy") or [])
    counts = list(bins.get("count") or [])

    centres = [(edges[i] + edges[i + 1]) / 2 for i in range(len(edges) - 1)] if edges else confidence
    widths = [edges[i + 1] - edges[i] for i in range(len(edges) - 1)] if edges else None
    keep = [i for i, value in enumerate(accuracy) if value is not None]

    figure = go.Figure()
    figure.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dash", "color": "#adb5bd"}, name="perfect calibration"))
    figure.add_trace(
        go.Bar(
            x=[centres[i] for i in keep],
            y=[accuracy[i] for i in keep],
            width=[widths[i] * 0.9 for i in keep] if widths else None,
            marker_color="#1c7ed6",
            customdata=[[counts[i] if i < len(counts) else 0, confidence[i]] for i in keep],
            hovertemplate="accuracy %{y:.2f}, mean confidence %{customdata[1]:.2f}, %{customdata[0]} tiles<extra></extra>",
            name="accuracy per bin",
        )
    )
    figure.update_layout(
        title="Reliability diagram (test split)",
        xaxis={"title": "confidence of the predicted class", "range": [0, 1]},
        yaxis={"title": "accuracy", "range": [0, 1.02]},
        height=380,
        margin=MARGIN,
        font=FONT,
        legend={"x": 0.02, "y": 0.98},
    )
    return figure


def embedding(
    coordinates: np.ndarray,
    colour_by: Sequence[str],
    symbol_by: Sequence[str],
    hover: Sequence[str],
    indices: Sequence[int],
    title: str,
    axis_titles: tuple[str, str],
) -> go.Figure:
    """Scatter of 2-D feature projections; ``customdata`` carries each tile's index."""
    figure = go.Figure()
    symbols = {"correct": "circle", "wrong": "x", "label unknown": "diamond"}
    groups: dict[tuple[str, str], list[int]] = {}
    for position, (colour, symbol) in enumerate(zip(colour_by, symbol_by)):
        groups.setdefault((colour, symbol), []).append(position)
    palette = ["#1c7ed6", "#e8590c", "#2b8a3e", "#ae3ec9", "#f08c00", "#0c8599", "#c2255c", "#5c940d", "#495057"]
    colours = {name: palette[i % len(palette)] for i, name in enumerate(sorted(set(colour_by)))}
    for (colour, symbol), positions in sorted(groups.items()):
        figure.add_trace(
            go.Scatter(
                x=coordinates[positions, 0],
                y=coordinates[positions, 1],
                mode="markers",
                name=f"{colour}, {symbol}",
                marker={"color": colours[colour], "symbol": symbols.get(symbol, "circle"), "size": 10, "line": {"width": 1, "color": "white"}},
                customdata=[[int(indices[p])] for p in positions],
                text=[hover[p] for p in positions],
                hovertemplate="%{text}<extra></extra>",
            )
        )
    figure.update_layout(
        title=title,
        xaxis={"title": axis_titles[0], "zeroline": False},
        yaxis={"title": axis_titles[1], "zeroline": False},
        height=460,
        margin=MARGIN,
        font=FONT,
        legend={"title": "true class, prediction"},
        clickmode="event+select",
    )
    return figure


def histogram(values: Sequence[float], title: str, x_title: str, band: tuple[float, float] | None = None) -> go.Figure:
    figure = go.Figure(go.Histogram(x=list(values), xbins={"start": 0, "end": 1.0001, "size": 0.05}, marker_color="#1c7ed6"))
    if band is not None:
        figure.add_vrect(x0=band[0], x1=band[1], fillcolor="#fab005", opacity=0.2, line_width=0, annotation_text="uncertain")
    figure.update_layout(title=title, xaxis={"title": x_title, "range": [0, 1]}, yaxis={"title": "tiles"}, height=320, margin=MARGIN, font=FONT)
    return figure


def counts_bar(counts: Mapping[str, int], title: str) -> go.Figure:
    names = list(counts)
    figure = go.Figure(go.Bar(x=names, y=[counts[name] for name in names], marker_color="#1c7ed6", text=[counts[name] for name in names], textposition="outside"))
    figure.update_layout(title=title, yaxis={"title": "tiles"}, height=320, margin=MARGIN, font=FONT)
    return figure
