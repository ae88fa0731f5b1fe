"""The Video page (pages/5_Video.py) and its views (dashboard/video_views.py): timelines, the per-person table and a
frame's faces on hand-made results in the shape ``fer_core.video`` writes, then the page through Streamlit's
AppTest on a small video the test makes."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest
from test_page_predict import downloads  # noqa: F401  (the download buttons' data, by file name)

from conftest import DETECTABLE_FACE, ROOT, needs_fer
from dashboard import exploration
from dashboard import video_views as views
from dashboard.charts import CLASS_COLOURS
from fer_core.detection import as_detector
from fer_core.imaging import to_grey
from fer_core.predict import face_colour
from fer_core.runtime import load_classifier
from fer_core.video import analyze_video, read_frames_csv
from fer_core.video_jobs import StatusReporter, VideoJob, VideoJobStore

CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def hand_made_frames(smooth: bool = True) -> pd.DataFrame:
    """Ten frames at 10 frames/s: person 1 happy throughout but frame 5, person 2 sad in frames 0-3 and 7-9 (away
    in 4-6), frame 5 with nobody (one row, empty track)."""
    rows = []
    for frame in range(10):
        people = [(1, "happy")] + ([(2, "sad")] if frame < 4 or frame > 6 else [])
        if frame == 5:
            people = []
        if not people:
            rows.append({"frame": frame, "time_s": frame / 10, "track": None})
        for track, label in people:
            p = {c: 0.04 for c in CLASSES}
            p[label] = 1 - 0.04 * 6
            row = {"frame": frame, "time_s": frame / 10, "track": track, "x": 100 * track - 90, "y": 20, "w": 60,
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
            "tracks": [{"track": 1, "frames": 9, "first_s": 0.0, "last_s": 0.9, "share": {**share, "happy": 1.0},
                        "mean_probabilities": {**share, "happy": 0.76, "sad": 0.04}, "dominant": "happy"},
                       {"track": 2, "frames": 7, "first_s": 0.0, "last_s": 0.9, "share": {**share, "sad": 1.0},
                        "mean_probabilities": {**share, "sad": 0.76}, "dominant": "sad"}]}


# --- the views, on hand-made results ----------------------------------------------------------

def test_person_series_has_a_row_per_processed_frame_and_gaps_where_the_person_is_away():
    frames = hand_made_frames()
    series = views.person_series(frames, 2)
    assert list(series["frame"]) == list(range(10))
    away = series["track"].isna()
    assert list(series["frame"][away]) == [4, 5, 6]
    assert series["time_s"].tolist() == pytest.approx([f / 10 for f in range(10)])
    assert views.tracks(frames) == [1, 2]
    assert views.class_names(frames) == list(CLASSES)


def test_probability_timeline_draws_raw_and_smoothed_lines_per_class_with_gaps():
    frames = hand_made_frames()
    fig = views.timeline_figure(frames, 2, "probabilities", at_s=0.3)
    assert len(fig.data) == 2 * len(CLASSES)                    # a raw and a smoothed line a class
    sad_raw, sad_smooth = [t for t in fig.data if t.legendgroup == "sad"]
    assert sad_raw.opacity < 1 and sad_smooth.line.width > sad_raw.line.width
    # every page colours an expression alike: the embedding map's "sad" is this one too
    one_face = pd.DataFrame({"id": ["1"], "x": [0.0], "y": [0.0], "true": ["sad"], "predicted": ["sad"],
                             "confidence": [0.9], "outcome": ["right"]})
    scatter = exploration.embedding_scatter(one_face, "true class", list(CLASSES))
    assert sad_smooth.line.color == scatter.data[CLASSES.index("sad")].marker.color == CLASS_COLOURS["sad"]
    assert np.isnan(np.asarray(sad_smooth.y, float)[4:7]).all()  # away in frames 4-6: a gap, not a line
    assert np.asarray(sad_smooth.y, float)[0] == pytest.approx(0.76)
    assert fig.layout.shapes and fig.layout.shapes[0].x0 == 0.3  # the frame shown below

    unsmoothed = views.timeline_figure(hand_made_frames(smooth=False), 2, "probabilities")
    assert len(unsmoothed.data) == len(CLASSES) and all(t.opacity == 1 for t in unsmoothed.data)


def test_label_timeline_shows_labels_and_the_smoothed_label():
    fig = views.timeline_figure(hand_made_frames(), 1, "label")
    dots, line = fig.data
    assert list(dots.y)[:5] == ["happy"] * 5 and pd.isna(dots.y[5])   # frame 5 has nobody
    assert line.line.shape == "hv"
    assert list(fig.layout.yaxis.categoryarray) == list(CLASSES)
    with pytest.raises(ValueError, match="mode must be one of"):
        views.timeline_figure(hand_made_frames(), 1, "bars")


def test_summary_table_reads_as_the_other_tables():
    table = views.summary_table(hand_made_summary())
    assert list(table.columns[:5]) == ["Person", "Frames", "First seen", "Last seen", "Dominant"]
    assert table["Person"].tolist() == ["1", "2"] and table["Dominant"].tolist() == ["happy", "sad"]
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
    assert faces["track"].tolist() == [1, 2] and faces["label"].tolist() == ["happy", "sad"]
    probs = views.face_probabilities(faces.iloc[1], list(CLASSES), smoothed=True)
    assert max(probs, key=probs.get) == "sad" and sum(probs.values()) == pytest.approx(1)
    assert views.nearest_frame([0, 3, 6, 9], 5) == 6 and views.nearest_frame([0, 3, 6, 9], 1) == 0



# --- a frame's faces, on a real face --------------------------------------------------------

def face_scene(x: int, size: tuple[int, int] = (320, 240), face_side: int = 100) -> np.ndarray:
    """An RGB frame: FER-2013's detectable happy face, ``face_side`` px, its left edge at ``x``, on grey."""
    face = cv2.resize(cv2.imread(str(DETECTABLE_FACE), cv2.IMREAD_GRAYSCALE), (face_side, face_side),
                      interpolation=cv2.INTER_CUBIC)
    canvas = np.full((size[1], size[0]), 190, np.uint8)
    top = (size[1] - face_side) // 2
    canvas[top:top + face_side, x:x + face_side] = face
    return cv2.cvtColor(canvas, cv2.COLOR_GRAY2RGB)


def scene_rows(boxes: list[list[int]]) -> pd.DataFrame:
    p = {c: 1 / len(CLASSES) for c in CLASSES}
    return pd.DataFrame([{"frame": 3, "time_s": 0.3, "track": track, "x": b[0], "y": b[1], "w": b[2], "h": b[3],
                          "score": 0.9, "label": "happy", "confidence": p["happy"], **{f"p_{c}": p[c] for c in CLASSES}}
                         for track, b in enumerate(boxes, start=1)]).astype({"track": "Int64"})


@needs_fer
def test_frame_view_aligns_the_detected_face_and_crops_a_carried_box(face_model):
    rgb = face_scene(110)
    found = as_detector("yunet", face_model=face_model).detect(to_grey(rgb))
    assert len(found) == 1
    carried = [10, 10, 60, 60]                       # a box carried over from an earlier detection: no face there
    view = views.frame_view(48, rgb, scene_rows([found[0].box, carried]), 3, 0.3,
                            {"detector": "yunet", "face_model": str(face_model)})
    assert view.crops.shape == (2, 48, 48) and view.aligned == [True, False]
    assert view.annotated.shape == rgb.shape
    x, y, w, _ = found[0].box
    assert tuple(view.annotated[y, x + w // 2]) == face_colour(0)    # person 1's box, in the video's colour
    assert tuple(view.annotated[10, 40]) == face_colour(1)
    assert views.frame_view(48, rgb, scene_rows([carried]).iloc[:0], 3, 0.3, {}).crops.shape == (0, 48, 48)


# --- the page, on a small video the test makes ------------------------------------------------

PAGE = str(ROOT / "pages" / "5_Video.py")
FPS, FRAMES = 8, 16


def moving_face_video(path: Path, frames: int = FRAMES) -> Path:
    """A 2 s, 320x240 MPEG-4 video at 8 frames/s: the detectable face moving from left to right."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (320, 240))
    for i in range(frames):
        writer.write(cv2.cvtColor(face_scene(20 + 10 * i), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.fixture
def video_env(studio_env, monkeypatch) -> Path:
    """The dashboard's folders (the tiny model, no runs) and an empty videos folder."""
    monkeypatch.setenv("FER_STUDIO_VIDEOS", str(studio_env / "videos"))
    return studio_env / "videos"


@pytest.fixture
def clip(tmp_path) -> Path:
    if not DETECTABLE_FACE.exists():
        pytest.skip("FER-2013 not found (set FER2013_PATH)")
    return moving_face_video(tmp_path / "clip.mp4")


def processed_job(videos: Path, clip: Path, checkpoint: Path) -> VideoJob:
    """A done job made in this process, as the job's own process makes it: the status through StatusReporter
    (which holds the job's lock), the outputs by analyze_video."""
    job = VideoJobStore(videos).create(clip, "clip.mp4", {"smooth": 0.5})
    outputs = job.output_paths()
    with StatusReporter(job.status_path).running():
        analyze_video(load_classifier(checkpoint, "torch"), job.input_path, csv=outputs["csv"],
                      json=outputs["json"], video=outputs["video"], smooth=0.5)
    return job


def page() -> AppTest:
    return AppTest.from_file(PAGE, default_timeout=120).run()


def test_no_checkpoint_is_explained(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_STUDIO_CHECKPOINTS", str(tmp_path / "empty"))
    monkeypatch.setenv("FER_STUDIO_RUNS", str(tmp_path / "runs"))
    at = page()
    assert not at.exception
    assert any("No model to classify with" in i.value for i in at.info)
    assert not at.file_uploader


def test_not_a_video_is_refused_with_a_one_line_reason_and_no_job(video_env):
    at = page()
    assert not at.exception
    assert any("No videos processed yet" in i.value for i in at.info)
    assert "200 MB" in at.file_uploader(key="video_upload").label
    for name, data, reason in (("notes.mp4", b"just some text, renamed", "not a readable video"),
                               ("empty.webm", b"", "the file is empty")):
        at.file_uploader(key="video_upload").set_value((name, data, "video/mp4")).run()
        at.button(key="video_submit").click().run()
        assert not at.exception
        errors = [e.value for e in at.error]
        assert len(errors) == 1 and errors[0].startswith(f"{name} cannot be processed:") and reason in errors[0]
        assert "just some text" not in errors[0] and "upload" not in errors[0].split(":", 1)[1]
    assert VideoJobStore(video_env).list() == []


def test_a_running_job_shows_its_progress(video_env, clip):
    job = VideoJobStore(video_env).create(clip, "clip.mp4", {})
    reporter = StatusReporter(job.status_path)
    with reporter.running():
        reporter.progress(6, FRAMES)
        at = page()
        assert not at.exception
        bars = at.get("progress")
        assert len(bars) == 1 and f"Frame 6 of {FRAMES}" in bars[0].proto.text and "frames/s" in bars[0].proto.text
        assert at.button(key="video_stop")
        assert not at.get("video")                      # no results before it is done


def test_a_done_job_shows_the_video_summary_timelines_a_frame_and_downloads(video_env, clip, downloads):  # noqa: F811
    job = processed_job(video_env, clip, video_env.parent / "ckpt" / "tiny.safetensors")
    at = page()
    assert not at.exception and not at.error
    assert at.selectbox(key="video_job").value == job.id
    assert len(at.get("video")) == 1
    frames = read_frames_csv(job.outputs()["csv"])
    people = views.tracks(frames)
    assert people == [1]                                 # one face, followed across the video as one person
    summary_rows = next(d.value for d in at.dataframe if "Person" in d.value.columns)   # AppTest has no key lookup
    assert summary_rows["Person"].tolist() == ["1"] and summary_rows["Frames"].tolist() == [str(FRAMES)]
    charts = at.get("plotly_chart")
    assert len(charts) == 2                              # person 1's timeline, and the frame's face's bars
    assert any(c.startswith("Frame 0 at 0.00 s") for c in image_captions(at))
    assert downloads["clip_frames.csv"] == job.outputs()["csv"].read_bytes()
    assert json.loads(downloads["clip_summary.json"])["frames_processed"] == FRAMES
    assert downloads["clip_annotated.webm"][:4] == b"\x1a\x45\xdf\xa3"   # a Matroska/WebM file

    at.slider(key="video_frame").set_value(9).run()
    at.radio(key="video_timeline_mode").set_value("label").run()
    assert not at.exception
    assert any(c.startswith("Frame 9 at 1.12 s") for c in image_captions(at))
    assert any("Person 1:" in m.value for m in at.markdown)


def image_captions(at) -> list[str]:
    """The captions of the page's images (AppTest has no image accessor; newer Streamlit names them "image")."""
    out = []
    for kind in ("image", "imgs"):
        for element in at.get(kind):
            proto = element.proto
            out += [i.caption for i in proto.imgs] if hasattr(proto, "imgs") else [getattr(proto, "caption", "")]
    return out
