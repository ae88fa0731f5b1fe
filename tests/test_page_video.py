"""The Video page (pages/5_Video.py) and its views (dashboard/video_views.py): timelines, the per-person table and a
frame's faces on hand-made results in the shape ``fer_core.video`` writes, then the page through Streamlit's
AppTest on a small video the test makes."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dashboard import video_views as views

CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def hand_made_frames(smooth: bool = True) -> pd.DataFrame:
    """Ten frames at 10 frames/s: person 0 happy throughout, person 1 sad in frames 0-3 and 7-9 (away in 4-6),
    frame 5 with nobody (one row, empty track)."""
    rows = []
    for frame in range(10):
        people = [(0, "happy")] + ([(1, "sad")] if frame < 4 or frame > 6 else [])
        if frame == 5:
            people = []
        if not people:
            rows.append({"frame": frame, "time_s": frame / 10, "track": None})
        for track, label in people:
            p = {c: 0.04 for c in CLASSES}
            p[label] = 1 - 0.04 * 6
            row = {"frame": frame, "time_s": frame / 10, "track": track, "x": 10 + 100 * track, "y": 20, "w": 60,
                   "h": 60, "score": 0.9, "label": label, "confidence": p[label], **{f"p_{c}": p[c] for c in CLASSES}}
            if smooth:
                row.update({f"s_{c}": p[c] for c in CLASSES}, smoothed_label=label)
            rows.append(row)
    frames = pd.DataFrame(rows)
    frames["track"] = frames["track"].astype("Int64")
    return frames


def hand_made_summary() -> dict:
    share = {c: 0.0 for c in CLASSES}
    return {"video": {"width": 320, "height": 240, "fps": 10.0, "frame_count": 10, "duration_s": 1.0,
                      "rotation": 0, "codec": "VP80"},
            "model": {}, "options": {}, "frames_processed": 10, "frames_with_faces": 9,
            "tracks": [{"track": 0, "frames": 9, "first_s": 0.0, "last_s": 0.9, "share": {**share, "happy": 1.0},
                        "mean_probabilities": {**share, "happy": 0.76, "sad": 0.04}, "dominant": "happy"},
                       {"track": 1, "frames": 7, "first_s": 0.0, "last_s": 0.9, "share": {**share, "sad": 1.0},
                        "mean_probabilities": {**share, "sad": 0.76}, "dominant": "sad"}]}


# --- the views, on hand-made results ----------------------------------------------------------

def test_person_series_has_a_row_per_processed_frame_and_gaps_where_the_person_is_away():
    frames = hand_made_frames()
    series = views.person_series(frames, 1)
    assert list(series["frame"]) == list(range(10))
    away = series["track"].isna()
    assert list(series["frame"][away]) == [4, 5, 6]
    assert series["time_s"].tolist() == pytest.approx([f / 10 for f in range(10)])
    assert views.tracks(frames) == [0, 1]
    assert views.class_names(frames) == list(CLASSES)


def test_probability_timeline_draws_raw_and_smoothed_lines_per_class_with_gaps():
    frames = hand_made_frames()
    fig = views.timeline_figure(frames, 1, "probabilities", at_s=0.3)
    assert len(fig.data) == 2 * len(CLASSES)                    # a raw and a smoothed line a class
    sad_raw, sad_smooth = [t for t in fig.data if t.legendgroup == "sad"]
    assert sad_raw.opacity < 1 and sad_smooth.line.width > sad_raw.line.width
    assert np.isnan(np.asarray(sad_smooth.y, float)[4:7]).all()  # away in frames 4-6: a gap, not a line
    assert np.asarray(sad_smooth.y, float)[0] == pytest.approx(0.76)
    assert fig.layout.shapes and fig.layout.shapes[0].x0 == 0.3  # the frame shown below

    unsmoothed = views.timeline_figure(hand_made_frames(smooth=False), 1, "probabilities")
    assert len(unsmoothed.data) == len(CLASSES) and all(t.opacity == 1 for t in unsmoothed.data)


def test_label_timeline_shows_labels_and_the_smoothed_label():
    fig = views.timeline_figure(hand_made_frames(), 0, "label")
    dots, line = fig.data
    assert list(dots.y)[:5] == ["happy"] * 5 and pd.isna(dots.y[5])   # frame 5 has nobody
    assert line.line.shape == "hv"
    assert list(fig.layout.yaxis.categoryarray) == list(CLASSES)
    with pytest.raises(ValueError, match="mode must be one of"):
        views.timeline_figure(hand_made_frames(), 0, "bars")


def test_summary_table_reads_as_the_other_tables():
    table = views.summary_table(hand_made_summary())
    assert list(table.columns[:5]) == ["Person", "Frames", "First seen", "Last seen", "Dominant"]
    assert table["Person"].tolist() == ["0", "1"] and table["Dominant"].tolist() == ["happy", "sad"]
    assert table.loc[0, "happy"] == "100.0%" and table.loc[1, "happy"] == "0.0%"
    assert table.loc[1, "Last seen"] == "0.9 s"
    means = views.summary_table(hand_made_summary(), "mean_probabilities")
    assert means.loc[0, "happy"] == "76.0%"
    empty = views.summary_table({"tracks": []})
    assert empty.empty and list(empty.columns)[:2] == ["Person", "Frames"]
    assert "10 frames processed, 9 with a face; 2 people" in views.video_caption(hand_made_summary())


def test_a_frames_faces_and_the_nearest_processed_frame():
    frames = hand_made_frames()
    assert views.frame_faces(frames, 5).empty
    faces = views.frame_faces(frames, 8)
    assert faces["track"].tolist() == [0, 1] and faces["label"].tolist() == ["happy", "sad"]
    probs = views.face_probabilities(faces.iloc[1], list(CLASSES), smoothed=True)
    assert max(probs, key=probs.get) == "sad" and sum(probs.values()) == pytest.approx(1)
    assert views.nearest_frame([0, 3, 6, 9], 5) == 6 and views.nearest_frame([0, 3, 6, 9], 1) == 0

