"""Plotly figures for the Train page, made from a run's metrics rows (``Run.metrics()``: one dict an
epoch); the small readers it needs (a run's summary row, a log's tail) live in ``dashboard.tables``, which the
home page imports without Plotly."""
from __future__ import annotations

import plotly.graph_objects as go

from fer_core.runs import best_row

# calm: training a light blue (dashed), validation the dark ink, the best checkpoint an amber star
TRAIN_COLOUR, VAL_COLOUR, BEST_COLOUR = "#6f9fe6", "#1d3557", "#e9b44c"
_LAYOUT = dict(height=320, margin=dict(l=10, r=10, t=40, b=10), hovermode="x unified",
               legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0))


def _epochs(rows: list[dict]) -> list[int]:
    return [r["epoch"] for r in rows]


def _train_val_figure(rows: list[dict], train_key: str, val_key: str, title: str, percent: bool) -> go.Figure:
    """Training (dashed) and validation (solid) on the same axes, so the gap between them shows."""
    x = _epochs(rows)
    fig = go.Figure()
    fig.add_scatter(x=x, y=[r.get(train_key) for r in rows], name="training", mode="lines+markers",
                    line=dict(color=TRAIN_COLOUR, dash="dash"))
    fig.add_scatter(x=x, y=[r.get(val_key) for r in rows], name="validation", mode="lines+markers",
                    line=dict(color=VAL_COLOUR))
    best = best_row(rows)
    if best:  # the epoch whose weights are in best.safetensors (chosen by the run's select_metric)
        fig.add_scatter(x=[best["epoch"]], y=[best.get(val_key)], name="best checkpoint", mode="markers",
                        marker=dict(symbol="star", size=14, color=BEST_COLOUR, line=dict(color=VAL_COLOUR, width=1)))
    fig.update_layout(title=title, xaxis_title="epoch", **_LAYOUT)
    _epoch_axis(fig, x)
    if percent:
        fig.update_yaxes(tickformat=".0%", rangemode="tozero")
    return fig


def _epoch_axis(fig: go.Figure, epochs: list[int]) -> None:
    """Whole epochs as ticks; with a few epochs, an axis from 0 to one past the last, so that one epoch is a
    point (or a narrow bar) near the left rather than the whole width."""
    fig.update_xaxes(dtick=1 if len(epochs) <= 20 else None)
    if epochs and len(epochs) < 5:
        fig.update_xaxes(range=[0, max(epochs) + 1])


def loss_figure(rows: list[dict]) -> go.Figure:
    return _train_val_figure(rows, "train_loss", "val_loss", "Loss", percent=False)


def accuracy_figure(rows: list[dict]) -> go.Figure:
    return _train_val_figure(rows, "train_acc", "val_acc", "Accuracy", percent=True)


def learning_rate_figure(rows: list[dict]) -> go.Figure:
    """The learning rate of each stage (parameter group) at the end of each epoch, log scale."""
    stages: list[str] = []
    for r in rows:
        stages += [s for s in (r.get("lr") or {}) if s not in stages]
    fig = go.Figure()
    for stage in stages:
        fig.add_scatter(x=_epochs(rows), y=[(r.get("lr") or {}).get(stage) for r in rows], name=stage,
                        mode="lines+markers")
    fig.update_layout(title="Learning rate per stage (end of epoch)", xaxis_title="epoch", **_LAYOUT)
    _epoch_axis(fig, _epochs(rows))
    fig.update_layout(legend=dict(orientation="v", y=1.0, yanchor="top", x=1.02, xanchor="left"))
    fig.update_yaxes(type="log", exponentformat="power")
    return fig


def unfrozen_figure(rows: list[dict]) -> go.Figure:
    """How many stages were trainable in each epoch (gradual unfreezing); the names on hover."""
    total_stages = max((len(r.get("lr") or {}) for r in rows), default=0)
    fig = go.Figure()
    fig.add_bar(x=_epochs(rows), y=[r.get("unfrozen_stages") for r in rows], marker_color=TRAIN_COLOUR,
                name="trainable stages",
                customdata=[", ".join(r.get("unfrozen") or []) for r in rows],
                hovertemplate="epoch %{x}: %{y} stages<br>%{customdata}<extra></extra>", width=0.5)
    fig.update_layout(title="Trainable (unfrozen) stages", xaxis_title="epoch", **_LAYOUT)
    _epoch_axis(fig, _epochs(rows))
    if total_stages:
        fig.update_yaxes(range=[0, total_stages + 0.5])
    return fig


def class_weights_figure(weights: dict[str, float]) -> go.Figure:
    fig = go.Figure()
    fig.add_bar(x=list(weights), y=list(weights.values()), marker_color=TRAIN_COLOUR,
                text=[f"{w:.2f}" for w in weights.values()], textposition="outside")
    fig.add_hline(y=1.0, line_dash="dot", line_color="grey")
    fig.update_layout(title="Effective class weights in the loss", **_LAYOUT)
    return fig
