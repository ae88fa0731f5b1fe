"""The Video page's views of a processed video: a person's timeline (Plotly), the per-person summary table, and
one frame's faces. They read what ``fer_core.video`` writes: the per-frame CSV (``read_frames_csv``: one row a
face a processed frame, a row with an empty track for a frame without faces) and the JSON summary.

Plain functions (no Streamlit in the figures), so they are tested on hand-made frames; the page adds the layout.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboard import tables

# one colour an expression, the same in every person's timeline (muted, distinct; neutral grey)
CLASS_COLOURS = {"angry": "#c0392b", "disgust": "#6a994e", "fear": "#7b52ab", "happy": "#e9a23b",
                 "sad": "#2a6fdb", "surprise": "#2a9d8f", "neutral": "#8d99ae"}
OTHER_COLOURS = ("#1d3557", "#d08c60", "#6fc2b6", "#9aa5b8")   # classes of a model trained on other names
MODES = ("probabilities", "label")
SUMMARY_VALUES = {"share": "share of the person's frames with each label",
                  "mean_probabilities": "mean probability of each class"}


def class_colour(name: str, index: int) -> str:
    return CLASS_COLOURS.get(name, OTHER_COLOURS[index % len(OTHER_COLOURS)])


def class_names(frames: pd.DataFrame) -> list[str]:
    """The model's classes, in its order, from the CSV's ``p_<class>`` columns."""
    return [c[2:] for c in frames.columns if c.startswith("p_")]


def has_smoothing(frames: pd.DataFrame) -> bool:
    return any(c.startswith("s_") for c in frames.columns)


def tracks(frames: pd.DataFrame) -> list[int]:
    """The people (track ids) in the video, in order of their number."""
    return sorted(int(t) for t in frames["track"].dropna().unique())


def person_series(frames: pd.DataFrame, track: int) -> pd.DataFrame:
    """One row a processed frame (in time order): the person's row where they are seen, NaN where not, so that
    a line drawn from it breaks while the person is out of the picture."""
    times = frames[["frame", "time_s"]].drop_duplicates("frame").sort_values("frame")
    seen = frames[frames["track"] == track].drop_duplicates("frame").drop(columns="time_s")
    return times.merge(seen, on="frame", how="left")


def timeline_figure(frames: pd.DataFrame, track: int, mode: str = "probabilities",
                    at_s: float | None = None) -> go.Figure:
    """A person's expressions over time: each class's probability (``mode`` 'probabilities') or the label
    (``mode`` 'label'), the smoothed line over the raw one when the video was smoothed; gaps where the person is
    not seen; a dotted line at ``at_s`` (the frame shown below the chart)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    series = person_series(frames, track)
    names = class_names(frames)
    smoothed = has_smoothing(frames)
    fig = go.Figure()
    if mode == "probabilities":
        _probability_lines(fig, series, names, smoothed)
        fig.update_yaxes(range=[0, 1.02], tickformat=".0%", title="probability", fixedrange=True)
    else:
        _label_lines(fig, series, names, smoothed)
        fig.update_yaxes(categoryorder="array", categoryarray=names, type="category", range=[-0.5, len(names) - 0.5],
                         title=None, fixedrange=True)
    if at_s is not None:
        fig.add_vline(x=at_s, line=dict(color="#1d2433", width=1, dash="dot"))
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=10, b=10), hovermode="x unified",
                      legend=dict(orientation="h", y=-0.25), xaxis=dict(title="time (s)"))
    return fig


def _probability_lines(fig: go.Figure, series: pd.DataFrame, names: list[str], smoothed: bool) -> None:
    """Raw probabilities thin and faint under the smoothed ones (when smoothed), one colour a class."""
    for i, name in enumerate(names):
        colour = class_colour(name, i)
        fig.add_scatter(x=series["time_s"], y=series[f"p_{name}"], mode="lines", name=name, legendgroup=name,
                        line=dict(color=colour, width=1 if smoothed else 2), opacity=0.35 if smoothed else 1.0,
                        showlegend=not smoothed, connectgaps=False,
                        hovertemplate=f"{name}: %{{y:.0%}}<extra></extra>")
        if smoothed:
            fig.add_scatter(x=series["time_s"], y=series[f"s_{name}"], mode="lines", name=name, legendgroup=name,
                            line=dict(color=colour, width=2.5), connectgaps=False,
                            hovertemplate=f"{name} (smoothed): %{{y:.0%}}<extra></extra>")


def _label_lines(fig: go.Figure, series: pd.DataFrame, names: list[str], smoothed: bool) -> None:
    """The label a frame as a dot in its class's colour, and the smoothed label as a stepped line."""
    colours = [class_colour(n, names.index(n)) if isinstance(n, str) and n in names else "#9aa5b8"
               for n in series["label"]]
    fig.add_scatter(x=series["time_s"], y=series["label"], mode="markers", name="label a frame",
                    marker=dict(color=colours, size=5), hovertemplate="%{y}<extra></extra>")
    if smoothed and "smoothed_label" in series:
        fig.add_scatter(x=series["time_s"], y=series["smoothed_label"], mode="lines", name="smoothed label",
                        line=dict(color="#1d2433", width=2, shape="hv"), connectgaps=False,
                        hovertemplate="%{y} (smoothed)<extra></extra>")


def seconds(value) -> str:
    return tables.MISSING if value is None or pd.isna(value) else f"{value:,.1f} s"


def summary_table(summary: dict, values: str = "share") -> pd.DataFrame:
    """One row a person of the JSON summary, as the tables read: person, frames seen, first and last seen,
    dominant expression, then one column a class (``values``: 'share' of their frames with that label, or
    'mean_probabilities')."""
    if values not in SUMMARY_VALUES:
        raise ValueError(f"values must be one of {tuple(SUMMARY_VALUES)}, not {values!r}")
    people = summary.get("tracks") or []
    names = list(dict.fromkeys(c for p in people for c in (p.get("mean_probabilities") or {})))
    rows = [{"Person": str(p["track"]), "Frames": tables.count(p.get("frames")),
             "First seen": seconds(p.get("first_s")), "Last seen": seconds(p.get("last_s")),
             "Dominant": p.get("dominant") or tables.MISSING,
             **{n: tables.percent((p.get(values) or {}).get(n)) for n in names}} for p in people]
    return pd.DataFrame(rows, columns=["Person", "Frames", "First seen", "Last seen", "Dominant", *names])


def video_caption(summary: dict) -> str:
    """The video in a line: size, frame rate, duration, frames processed and how many had a face."""
    v = summary.get("video") or {}
    done, with_faces = summary.get("frames_processed", 0), summary.get("frames_with_faces", 0)
    people = len(summary.get("tracks") or [])
    return (f"{v.get('width')}x{v.get('height')} px, {v.get('fps', 0):.3g} frames/s, {seconds(v.get('duration_s'))}"
            f" ({v.get('codec') or 'unknown codec'}); {done:,} frames processed, {with_faces:,} with a face; "
            f"{people} {'person' if people == 1 else 'people'} followed.")


# --- one frame ------------------------------------------------------------------------------

def processed_frames(frames: pd.DataFrame) -> list[int]:
    """The frame indices the CSV has rows for (every Nth frame with ``every``), in order."""
    return sorted(int(f) for f in frames["frame"].unique())


def frame_faces(frames: pd.DataFrame, index: int) -> pd.DataFrame:
    """The faces (rows with a track) of frame ``index``, by track."""
    rows = frames[(frames["frame"] == index) & frames["track"].notna()]
    return rows.sort_values("track").reset_index(drop=True)


def face_probabilities(row: pd.Series, names: list[str], smoothed: bool = False) -> dict[str, float]:
    prefix = "s_" if smoothed else "p_"
    return {n: float(row[f"{prefix}{n}"]) for n in names}


def nearest_frame(processed: list[int], index: int) -> int:
    """The processed frame closest to ``index`` (a slider may land between them)."""
    arr = np.asarray(processed)
    return int(arr[np.abs(arr - index).argmin()])
