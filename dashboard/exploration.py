"""Figures and tables of the embedding map and the error slices (``fer_core.embedding``, ``fer_core.slices``) for
the Metrics page; no Streamlit, so each is tested on hand-made data."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from dashboard.charts import RIGHT_WRONG_COLOURS, class_colour

COLOUR_BY = {"true class": "true", "predicted class": "predicted", "right/wrong": "outcome"}


# --- the embedding map -------------------------------------------------------------------------------

def embedding_frame(embedding: dict, report: dict | None = None) -> pd.DataFrame:
    """One row a face: id, x, y, true and predicted class names, confidence, right/wrong. The predictions are the
    report's where it has every face of the map (so the map agrees with the page's other views), else the map's."""
    names = embedding["class_names"]
    frame = pd.DataFrame({"id": embedding["ids"], "x": embedding["x"], "y": embedding["y"],
                          "true": [names[t] for t in embedding["true"]],
                          "predicted": [names[p] for p in embedding["predicted"]],
                          "confidence": embedding["confidence"]})
    records = {r["id"]: r for r in (report or {}).get("predictions", [])}
    if records and all(i in records for i in frame["id"]):
        frame["predicted"] = [records[i]["predicted"] for i in frame["id"]]
        frame["confidence"] = [max(records[i]["probabilities"]) for i in frame["id"]]
    frame["outcome"] = (frame["true"] == frame["predicted"]).map({True: "right", False: "wrong"})
    return frame


def embedding_scatter(frame: pd.DataFrame, colour_by: str, class_names) -> go.Figure:
    """The map, one trace a colour (so the legend hides or shows a class); each point's ``customdata`` is its
    image id, which a selection gives back (:func:`selected_ids`)."""
    column = COLOUR_BY[colour_by]
    groups = ["right", "wrong"] if column == "outcome" else list(class_names)
    colours = (RIGHT_WRONG_COLOURS if column == "outcome"
               else {name: class_colour(name, k) for k, name in enumerate(class_names)})
    fig = go.Figure()
    for group in groups:
        part = frame[frame[column] == group]
        fig.add_trace(go.Scattergl(
            x=part["x"].tolist(), y=part["y"].tolist(), mode="markers", name=f"{group} ({len(part):,})",
            marker=dict(size=5, color=colours[group], opacity=0.75), customdata=part["id"].tolist(),
            text=[f"{t} → {p} ({c:.0%})" for t, p, c in zip(part["true"], part["predicted"], part["confidence"])],
            hovertemplate="%{text}<br>%{customdata}<extra></extra>"))
    fig.update_layout(height=560, margin=dict(t=30, b=10, l=10, r=10), dragmode="lasso",
                      legend=dict(title=colour_by, itemsizing="constant"),
                      xaxis=dict(showticklabels=False, title=None, zeroline=False),
                      yaxis=dict(showticklabels=False, title=None, zeroline=False, scaleanchor="x"))
    return fig


def selected_ids(fig: go.Figure, points: list[dict]) -> list[str]:
    """The image ids of the points a chart selection holds (Streamlit's ``selection.points``: each with its trace,
    ``curve_number``, and its place in it, ``point_index``)."""
    ids = []
    for point in points:
        trace, index = point.get("curve_number"), point.get("point_index")
        if trace is not None and index is not None and trace < len(fig.data):
            ids.append(str(fig.data[trace].customdata[index]))
    return list(dict.fromkeys(ids))


def embedding_caption(embedding: dict) -> str:
    seconds = embedding.get("seconds") or {}
    method = {"tsne": "t-SNE", "umap": "UMAP"}.get(embedding["method"], embedding["method"])
    took = (f" (features {seconds['features']:.0f} s, projection {seconds['projection']:.0f} s when computed)"
            if {"features", "projection"} <= set(seconds) else "")
    return (f"{embedding['num_images']:,} faces of {embedding['split']}: the {embedding['feature_dim']:,} values the "
            f"classifier head reads, projected to 2-D with {method}{took}. Nearby faces look alike to the model; "
            "a cluster of one class inside another's region is where the model and the labels disagree.")


# --- error slices ------------------------------------------------------------------------------------

def bin_labels(rows: list[dict]) -> list[str]:
    """Each bin's range as an axis label; the bin of faces without the value (no face found for roll) as such."""
    def number(v: float) -> str:
        return f"{v:.0f}" if abs(v) >= 10 else f"{v:.2g}"

    return [f"{number(r['lower'])}–{number(r['upper'])}" if r["lower"] is not None else "not measured"
            for r in rows]


def slice_bars(slices: dict, prop: str, cls: str | None = None) -> go.Figure:
    """Accuracy (or one class's recall) in each bin of ``prop``, the bin's count of images (of the class) on the
    bar, and the split's figure as a dashed line."""
    rows = slices["properties"][prop]
    values = [r["accuracy"] if cls is None else r["recall"][cls] for r in rows]
    counts = [r["count"] if cls is None else r["support"][cls] for r in rows]
    overall = slices["accuracy"] if cls is None else slices["recall"][cls]
    what = "accuracy" if cls is None else f"recall of {cls}"
    fig = go.Figure(go.Bar(x=bin_labels(rows), y=values, marker_color="#2a6fdb",
                           text=[f"{'-' if v is None else f'{v:.0%}'}<br>n={n:,}" for v, n in zip(values, counts)],
                           textposition="outside", hovertemplate="%{x}: %{y:.1%}<extra></extra>"))
    if overall is not None:
        fig.add_hline(y=overall, line_dash="dash", line_color="#9aa5b8",
                      annotation_text=f"whole split {overall:.0%}", annotation_position="top left")
    fig.update_layout(title=f"{what.capitalize()} by {prop} ({slices['descriptions'].get(prop, prop)})",
                      yaxis=dict(title=what, tickformat=".0%", range=[0, 1.12]), xaxis_title=f"{prop} (bin range)",
                      height=380, margin=dict(t=50, b=10), showlegend=False)
    return fig


def slice_recall_heatmap(slices: dict, prop: str) -> go.Figure:
    """Each class's recall in each bin of ``prop`` minus its recall on the whole split (points): where a class is
    missed more than usual, in red; the recall and the class's images in the bin in each cell."""
    rows, names = slices["properties"][prop], slices["class_names"]
    overall = slices["recall"]
    z = [[None if r["recall"][c] is None or overall[c] is None else 100 * (r["recall"][c] - overall[c])
          for r in rows] for c in names]
    text = [[("-" if r["recall"][c] is None else f"{r['recall'][c]:.0%}") + f"<br>n={r['support'][c]}" for r in rows]
            for c in names]
    fig = go.Figure(go.Heatmap(z=z, x=bin_labels(rows), y=names, text=text, texttemplate="%{text}",
                               colorscale="RdBu", zmid=0, zmin=-30, zmax=30,
                               colorbar=dict(title="points from<br>the split's"),
                               hovertemplate="%{y}, %{x}: %{z:+.1f} points<extra></extra>"))
    fig.update_layout(title=f"Recall by {prop}, against each class's recall on the whole split",
                      xaxis_title=f"{prop} (bin range)", yaxis=dict(autorange="reversed"), height=420,
                      margin=dict(t=50, b=10))
    return fig


def worst_slices_table(worst: list[dict]) -> pd.DataFrame:
    """``fer_core.slices.worst_slices`` for reading (every cell a string, as ``dashboard.tables``' tables):
    class, property, range, images, recall there and on the whole split, and the points between."""
    return pd.DataFrame([{"Class": w["class"], "Property": w["property"], "Range": bin_labels([w])[0],
                          "Images of the class": f"{w['support']:,}", "Recall there": f"{w['recall']:.1%}",
                          "Recall on the split": f"{w['overall_recall']:.1%}",
                          "Points below": f"{100 * w['drop']:.1f}"} for w in worst],
                        columns=["Class", "Property", "Range", "Images of the class", "Recall there",
                                 "Recall on the split", "Points below"])
