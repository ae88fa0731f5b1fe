"""The Video page's views of a processed video: a person's timeline (Plotly), the per-person summary table, and
one frame's faces. They read what ``fer_core.video`` writes: the per-frame CSV (``read_frames_csv``: one row a
face a processed frame, a row with an empty track for a frame without faces) and the JSON summary.

Plain functions (no Streamlit in the figures), so they are tested on hand-made frames; the page adds the layout.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboard import tables
from dashboard.charts import class_colour
from dashboard.faces import PREVIEW_SIDE, colour_hex
from fer_core.detection import as_detector
from fer_core.imaging import detected_face_crop, fit_within, resize_squares, to_grey
from fer_core.video import FrameResult, TrackedFace, annotate_frame, box_iou

MODES = ("probabilities", "label")
SUMMARY_VALUES = {"share": "share of the person's frames with each label",
                  "mean_probabilities": "mean probability of each class"}


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



DETECTION_KEYS = ("detector", "face_model", "min_face", "min_score")
MATCH_IOU = 0.5          # a face found again in the frame is the CSV's face when their boxes overlap this much


@dataclass
class FrameView:
    """What the page shows of one processed frame."""

    annotated: np.ndarray    # RGB: the frame with its people boxed as in the annotated video, at most PREVIEW_SIDE
    crops: np.ndarray        # (N, S, S) grey crops at the model's input size, in the order of the frame's rows
    aligned: list[bool]      # each crop aligned from landmarks (else the square around its box)


def detection_options(summary: dict) -> dict:
    """The detection settings the video was processed with (from its JSON summary's options)."""
    options = summary.get("options") or {}
    return {k: options[k] for k in DETECTION_KEYS if options.get(k) is not None}


def row_box(row: pd.Series) -> list[int]:
    return [int(row[k]) for k in "xywh"]


def frame_result(rows: pd.DataFrame, index: int, time_s: float) -> FrameResult:
    """A frame's CSV rows as the library's ``FrameResult`` (no landmarks: the CSV keeps boxes)."""
    names = class_names(rows)
    smoothed = has_smoothing(rows)
    faces = [TrackedFace(int(r["track"]), row_box(r), None if pd.isna(r["score"]) else float(r["score"]), None,
                         r["label"], float(r["confidence"]), face_probabilities(r, names),
                         face_probabilities(r, names, smoothed=True) if smoothed else None)
             for _, r in rows.iterrows()]
    return FrameResult(index, time_s, faces)


def frame_view(size: int, rgb: np.ndarray, rows: pd.DataFrame, index: int, time_s: float,
               detection: dict) -> FrameView:
    """Frame ``index`` drawn as the annotated video draws it, and its faces' crops at the model's ``size``: the CSV
    keeps boxes, not landmarks, so the faces are detected again (the same detector and settings) and each row takes
    the landmarks of the face found on its box to align its crop; a row without one (a box carried between
    detections) is cropped around its box."""
    gray = to_grey(rgb)
    found = as_detector(**detection).detect(gray) if len(rows) else []
    crops, aligned = [], []
    for _, row in rows.iterrows():
        box = row_box(row)
        match = max(found, key=lambda f: box_iou(box, f.box), default=None)
        landmarks = match.landmarks if match is not None and box_iou(box, match.box) >= MATCH_IOU else None
        crops.append(detected_face_crop(gray, box, landmarks))
        aligned.append(landmarks is not None)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)   # annotate_frame draws in BGR, as the video is written
    drawn = cv2.cvtColor(annotate_frame(bgr, frame_result(rows, index, time_s)), cv2.COLOR_BGR2RGB)
    preview, _ = fit_within(drawn, PREVIEW_SIDE)
    return FrameView(preview, resize_squares(crops, size) if crops else np.zeros((0, size, size), np.uint8), aligned)


def frame_time(frames: pd.DataFrame, index: int) -> float:
    return float(frames.loc[frames["frame"] == index, "time_s"].iloc[0])


def job_checkpoint(summary: dict) -> Path | None:
    """The checkpoint the video was processed with (its summary's model source), if it is still there."""
    source = (summary.get("model") or {}).get("source")
    return Path(source) if source and Path(source).is_file() else None


def person_heading(row: pd.Series) -> str:
    """A face card's heading (markdown with HTML): a square in the person's box colour, 'Person N: label (p%)'."""
    return (f'<span style="color:{colour_hex(int(row["track"]) - 1)}; font-size:1.3em">&#9632;</span> '
            f"**Person {int(row['track'])}: {row['label']} ({row['confidence']:.0%})**")
