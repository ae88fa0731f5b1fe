"""fer_core.video on videos made here from FER-2013 test faces: moving and turning across a background, leaving
and coming back, two crossing; the CSV, the summary, the tracks, the annotated video and bad input."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import FER_ROOT, needs_fer
from fer_core import cli
from fer_core.storage import BUNDLED_CHECKPOINT, BUNDLED_DIR
from fer_core.video import (IouTracker, VideoError, analyze_video, appearance_descriptor, iter_video,
                            read_frame, read_frames_csv, read_video_info)

BUNDLED = BUNDLED_CHECKPOINT
REPORT = BUNDLED_DIR / "fer2013_effnet_b0.PrivateTest.json"
W, H, FPS = 320, 240, 12.0
SIDE = 88   # px of a pasted face


def confident_faces(cls: str, n: int = 6) -> list[Path]:
    """The bundled model's most confident right answers on PrivateTest (its saved report): "labels match the
    source faces' classes" then tests the video path, not the model."""
    report = json.loads(REPORT.read_text())
    right = [p for p in report["predictions"] if p["true"] == cls and p["predicted"] == cls]
    right.sort(key=lambda p: -max(p["probabilities"]))
    return [FER_ROOT / p["id"] for p in right[:n]]


def upscaled(path: Path, side: int = SIDE) -> np.ndarray:
    return cv2.resize(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), (side, side), interpolation=cv2.INTER_CUBIC)


def background(seed: int = 0, size: tuple[int, int] = (H, W)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(40, 220, size, np.uint8), (0, 0), 5)


def paste(canvas: np.ndarray, face: np.ndarray, cx: float, cy: float, angle: float = 0.0) -> None:
    """``face`` centred at (cx, cy), turned ``angle`` degrees in the image plane (clipped at the edges)."""
    side = face.shape[0]
    m = cv2.getRotationMatrix2D((side / 2, side / 2), angle, 1.0)
    patch = cv2.warpAffine(face, m, (side, side), borderMode=cv2.BORDER_REPLICATE)
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    xa, ya, xb, yb = max(0, x0), max(0, y0), min(canvas.shape[1], x0 + side), min(canvas.shape[0], y0 + side)
    if xb > xa and yb > ya:
        canvas[ya:yb, xa:xb] = patch[ya - y0:yb - y0, xa - x0:xb - x0]


def write_video(path: Path, frames, fps: float = FPS, fourcc: str = "mp4v") -> Path:
    frames = list(frames)
    h, w = frames[0].shape[:2]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert out.isOpened()
    for f in frames:
        out.write(cv2.cvtColor(f, cv2.COLOR_GRAY2BGR) if f.ndim == 2 else f)
    out.release()
    return path


def detectable(paths: list[Path], face_model: Path) -> np.ndarray:
    """The first face of ``paths`` that YuNet finds in one pass, as video detects, pasted still on the background
    (the fixture videos need it)."""
    from fer_core.detection import get_detector

    detector = get_detector("yunet", face_model=face_model, turns=())
    for p in paths:
        canvas = background()
        paste(canvas, upscaled(p), W / 2, H / 2)
        if detector.name == "yunet" and len(detector.detect(canvas)) == 1:
            return upscaled(p)
    pytest.skip("no confidently classified face that YuNet finds")


@pytest.fixture(scope="module")
def classifier():
    """The bundled model in PyTorch on one thread: on a busy machine two threads of small batches spend 20x longer
    waiting for each other (and ONNX Runtime would first export the graph, ~25 s)."""
    import torch

    from fer_core.runtime import load_classifier

    if not BUNDLED.exists():
        pytest.skip("the bundled checkpoint is not in checkpoints/")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_classifier(BUNDLED, "torch")
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def faces(face_model) -> dict[str, np.ndarray]:
    if not (FER_ROOT / "test").is_dir():
        pytest.skip(f"FER-2013 not found at {FER_ROOT}")
    return {c: detectable(confident_faces(c), face_model) for c in ("happy", "surprise")}


CROSS_FRAMES = 30


def crossing_positions(k: int) -> dict[str, tuple[float, float]]:
    """Happy goes left to right high up, surprise right to left lower down; they cross at frame 15."""
    x = 50 + k * (W - 100) / (CROSS_FRAMES - 1)
    return {"happy": (x, 78.0), "surprise": (W - x, 160.0)}


@pytest.fixture(scope="module")
def crossing(tmp_path_factory, faces) -> Path:
    frames = []
    for k in range(CROSS_FRAMES):
        canvas = background()
        for cls, (cx, cy) in crossing_positions(k).items():
            paste(canvas, faces[cls], cx, cy)
        frames.append(canvas)
    return write_video(tmp_path_factory.mktemp("video") / "crossing.mp4", frames)


AWAY = range(12, 20)     # frames where the face has left the picture
RETURN_FRAMES = 30


@pytest.fixture(scope="module")
def leave_return(tmp_path_factory, faces) -> Path:
    """One happy face moving and turning (-12 to 12 degrees), gone for frames 12-19, then back."""
    frames = []
    for k in range(RETURN_FRAMES):
        canvas = background(1)
        if k not in AWAY:
            paste(canvas, faces["happy"], 90 + 4 * k, 120, angle=12 * math.sin(k / 4))
        frames.append(canvas)
    return write_video(tmp_path_factory.mktemp("video") / "leave_return.mp4", frames)


@pytest.fixture(scope="module")
def crossing_run(tmp_path_factory, classifier, crossing, face_model) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("crossing-out")   # module scope: before the per-test $FER_STUDIO_FACE_MODEL
    summary = analyze_video(classifier, crossing, csv=out / "frames.csv", json=out / "summary.json",
                            video=out / "annotated.webm", smooth=0.5, face_model=face_model)
    return out, summary


# --- the CSV, the tracks, the labels ----------------------------------------------------------

def source_of(row, positions) -> str:
    cx, cy = row["x"] + row["w"] / 2, row["y"] + row["h"] / 2
    return min(positions, key=lambda c: math.hypot(cx - positions[c][0], cy - positions[c][1]))


@needs_fer
def test_crossing_faces_keep_their_track_ids_and_labels(crossing_run):
    out, summary = crossing_run
    df = read_frames_csv(out / "frames.csv")
    assert sorted(df["frame"].unique()) == list(range(CROSS_FRAMES))   # every frame has its rows
    assert len(df) == sum(max(1, n) for n in df.groupby("frame")["track"].count())
    tracks_of = {"happy": [], "surprise": []}
    for _, row in df[df["track"].notna()].iterrows():
        positions = crossing_positions(int(row["frame"]))
        src = source_of(row, positions)
        tracks_of[src].append((int(row["frame"]), int(row["track"]), row["label"]))
    for cls, seen in tracks_of.items():
        assert len(seen) >= 0.8 * CROSS_FRAMES, f"{cls} found in {len(seen)} of {CROSS_FRAMES} frames"
        ids = [t for _, t, _ in seen]
        main = max(set(ids), key=ids.count)
        assert ids.count(main) >= len(ids) - 1, f"{cls}'s track changed: {seen}"   # one id while visible
        labels = [label for _, _, label in seen]
        assert labels.count(cls) >= 0.7 * len(labels), f"{cls} labelled {labels}"
    assert {t["dominant"] for t in summary["tracks"] if t["frames"] > 5} == {"happy", "surprise"}


@needs_fer
def test_the_summary_counts_what_the_csv_holds(crossing_run):
    out, summary = crossing_run
    df = read_frames_csv(out / "frames.csv")
    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["frames_processed"] == CROSS_FRAMES
    assert summary["frames_with_faces"] == df[df["track"].notna()]["frame"].nunique()
    assert summary["video"]["frame_count"] == CROSS_FRAMES and summary["video"]["fps"] == FPS
    for t in summary["tracks"]:
        rows = df[df["track"] == t["track"]]
        assert t["frames"] == len(rows)
        assert (t["first_s"], t["last_s"]) == pytest.approx((rows["time_s"].min(), rows["time_s"].max()))
        assert t["share"][t["dominant"]] == pytest.approx((rows["label"] == t["dominant"]).mean(), abs=1e-4)
        assert t["mean_probabilities"]["happy"] == pytest.approx(rows["p_happy"].mean(), abs=1e-4)
        assert sum(t["share"].values()) == pytest.approx(1, abs=1e-3)


@needs_fer
def test_smoothing_follows_the_track_and_varies_less(crossing_run):
    df = read_frames_csv(crossing_run[0] / "frames.csv")
    names = [c[2:] for c in df.columns if c.startswith("s_")]
    assert names and "smoothed_label" in df
    for _, rows in df[df["track"].notna()].groupby("track"):
        if len(rows) < 6:
            continue
        first = rows.iloc[0]
        assert all(first[f"s_{c}"] == pytest.approx(first[f"p_{c}"], abs=1e-5) for c in names)
        raw, smooth = rows[[f"p_{c}" for c in names]].to_numpy(), rows[[f"s_{c}" for c in names]].to_numpy()
        assert np.abs(np.diff(smooth, axis=0)).sum() < np.abs(np.diff(raw, axis=0)).sum()


@needs_fer
def test_the_annotated_video_has_every_frame_and_plays_as_webm(crossing_run, crossing):
    info = read_video_info(crossing_run[0] / "annotated.webm")
    assert (info.width, info.height, info.codec) == (W, H, "VP80")
    cap = cv2.VideoCapture(str(crossing_run[0] / "annotated.webm"))
    count = 0
    while cap.read()[0]:
        count += 1
    assert count == CROSS_FRAMES == read_video_info(crossing).frame_count
    drawn, source = read_frame(crossing_run[0] / "annotated.webm", 5), read_frame(crossing, 5)
    assert np.abs(drawn.astype(int) - source.astype(int)).max() > 100   # boxes and labels drawn in colour


@needs_fer
def test_a_face_that_leaves_leaves_rows_without_a_track_and_comes_back(classifier, leave_return, tmp_path):
    results = list(iter_video(classifier, leave_return))
    assert [r.frame for r in results] == list(range(RETURN_FRAMES))
    assert all(not r.faces for r in results if r.frame in AWAY)
    before = {f.track for r in results[:AWAY.start] for f in r.faces}
    after = {f.track for r in results[AWAY.stop:] for f in r.faces}
    assert len(before) == 1 and len(after) == 1   # one id while visible, before and after
    seen = sum(bool(r.faces) for r in results if r.frame not in AWAY)
    assert seen >= 0.85 * (RETURN_FRAMES - len(AWAY))
    labels = [f.label for r in results for f in r.faces]
    assert labels.count("happy") >= 0.7 * len(labels)
    analyze_video(classifier, leave_return, csv=tmp_path / "f.csv")
    df = read_frames_csv(tmp_path / "f.csv")
    gaps = df[df["frame"].isin(AWAY)]
    assert len(gaps) == len(AWAY) and gaps["track"].isna().all() and gaps["label"].isna().all()


@needs_fer
def test_every_n_detects_on_every_nth_frame_and_carries_the_boxes(classifier, crossing):
    results = list(iter_video(classifier, crossing, every=3, end=1.0))
    assert [r.detected for r in results] == [i % 3 == 0 for i in range(len(results))]
    assert results[-1].time_s <= 1.0 and len(results) == 13   # frames at 0, 1/12, ..., 12/12 s
    for i, r in enumerate(results):
        if not r.detected:
            assert [f.box for f in r.faces] == [f.box for f in results[i - i % 3].faces]


@needs_fer
def test_start_and_end_choose_the_frames(classifier, crossing):
    results = list(iter_video(classifier, crossing, start=1.0, end=1.5))
    assert [r.frame for r in results] == list(range(12, 19))
    assert all(1.0 <= r.time_s <= 1.5 for r in results)


def test_the_tracker_keeps_crossing_faces_apart_by_motion_and_look():
    rng = np.random.default_rng(0)
    looks = [appearance_descriptor(rng.integers(0, 255, (48, 48), np.uint8)) for _ in range(2)]
    tracker, ids = IouTracker(), []
    for k in range(20):   # two boxes passing through each other
        boxes = [[10 + 10 * k, 50, 40, 40], [200 - 10 * k, 60, 40, 40]]
        ids.append([t.id for t in tracker.update(boxes, k / 10, looks)])
    assert ids == [[1, 2]] * 20
    assert [t.id for t in tracker.update([[10, 50, 40, 40]], 5.0, looks[:1])] == [3]   # long gone: a new track


# --- bad input ------------------------------------------------------------------------------

def test_bad_files_are_one_line_errors(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    renamed = tmp_path / "notes.mp4"
    renamed.write_text("these are not frames\n" * 50)
    good = write_video(tmp_path / "good.mp4", [background(k) for k in range(6)])
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    cases = {tmp_path / "missing.mp4": "file not found", empty: "empty", renamed: "not a readable video",
             truncated: "not a readable video"}
    for path, reason in cases.items():
        with pytest.raises(VideoError) as e:
            read_video_info(path)
        assert reason in str(e.value) and "\n" not in str(e.value) and "these are" not in str(e.value)


def ffmpeg() -> str:
    ffmpeg_pkg = pytest.importorskip("imageio_ffmpeg", reason="imageio-ffmpeg (requirements-dev.txt) makes the "
                                     "audio-only and rotated videos")
    return ffmpeg_pkg.get_ffmpeg_exe()


def test_an_audio_only_file_is_refused(tmp_path):
    audio = tmp_path / "voice.mp4"
    subprocess.run([ffmpeg(), "-loglevel", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=1",
                    "-c:a", "aac", str(audio)], check=True, timeout=60)
    with pytest.raises(VideoError, match="not a readable video|no video frame"):
        read_video_info(audio)


@needs_fer
def test_rotation_metadata_is_honoured(tmp_path, faces, classifier):
    """A phone video: frames stored sideways with 'display rotation' metadata; read upright, the face found."""
    upright = background(2, (W, H))      # a portrait frame, 240 wide and 320 high
    paste(upright, faces["happy"], H / 2, W / 2)
    stored = np.ascontiguousarray(np.rot90(upright, 1))   # as the camera wrote it: turned a quarter
    plain = write_video(tmp_path / "plain.mp4", [stored] * 4)
    phone = tmp_path / "phone.mp4"
    subprocess.run([ffmpeg(), "-loglevel", "error", "-display_rotation", "-90", "-i", str(plain), "-c", "copy",
                    str(phone)], check=True, timeout=60)
    info = read_video_info(phone)
    assert info.rotation in (90, 270) and (info.width, info.height) == (H, W)
    frame = read_frame(phone, 2)
    assert frame.shape == (W, H, 3)
    assert np.abs(frame[..., 0].astype(int) - upright.astype(int)).mean() < 12   # upright, as it was pasted
    results = list(iter_video(classifier, phone))
    assert all(len(r.faces) == 1 and r.faces[0].label == "happy" for r in results)


def test_a_variable_frame_rate_video_keeps_its_real_times(tmp_path, classifier):
    """Ten frames 0.1 s apart, then ten that come slower (as a phone writes when light falls): the times are the
    container's, not the frame index over a nominal rate."""
    vfr = tmp_path / "vfr.mkv"
    subprocess.run([ffmpeg(), "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10",
                    "-frames:v", "20", "-vf", "setpts='if(lt(N,10),N/10/TB,(1+(N-10)/5)/TB)'", "-fps_mode", "vfr",
                    "-c:v", "mpeg4", str(vfr)], check=True, timeout=60)
    times = [r.time_s for r in iter_video(classifier, vfr, detector="haar")]
    assert len(times) == 20
    assert times[:11] == pytest.approx([k / 10 for k in range(11)], abs=0.011)
    assert times[-1] == pytest.approx(2.7, abs=0.011)          # a constant 10 frames/s would say 1.9
    assert all(b > a for a, b in zip(times, times[1:]))


@needs_fer
def test_a_4k_video_is_detected_on_a_downscaled_copy(tmp_path, faces, classifier):
    big = background(3, (2160, 3840))
    paste(big, cv2.resize(faces["happy"], (600, 600), interpolation=cv2.INTER_CUBIC), 2000, 1000)
    video = write_video(tmp_path / "uhd.mp4", [big] * 2)
    results = list(iter_video(classifier, video))
    box = results[0].faces[0].box
    assert len(results) == 2 and len(results[0].faces) == 1
    assert abs(box[0] + box[2] / 2 - 2000) < 120 and abs(box[1] + box[3] / 2 - 1000) < 160 and box[2] > 350


def test_a_video_without_faces_gives_a_row_a_frame(tmp_path, classifier):
    video = write_video(tmp_path / "empty_room.mp4", [background(k % 2) for k in range(5)])
    summary = analyze_video(classifier, video, csv=tmp_path / "f.csv", json=tmp_path / "s.json", detector="haar")
    df = read_frames_csv(tmp_path / "f.csv")
    assert list(df["frame"]) == list(range(5)) and df["track"].isna().all()
    assert summary["tracks"] == [] and summary["frames_with_faces"] == 0 and summary["frames_processed"] == 5


def test_a_truncated_webm_is_processed_up_to_where_its_frames_end(tmp_path, crossing_run, classifier):
    whole = (crossing_run[0] / "annotated.webm").read_bytes()
    cut = tmp_path / "cut.webm"
    cut.write_bytes(whole[:len(whole) * 6 // 10])     # a download or copy that stopped part-way
    summary = analyze_video(classifier, cut, csv=tmp_path / "f.csv", json=tmp_path / "s.json", detector="haar")
    assert 0 < summary["frames_processed"] < summary["video"]["frame_count"] == CROSS_FRAMES
    assert list(read_frames_csv(tmp_path / "f.csv")["frame"].unique()) == list(range(summary["frames_processed"]))


def outputs_of(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("out"))


def test_a_failed_run_leaves_no_output_and_keeps_the_old_ones(tmp_path, classifier):
    video = write_video(tmp_path / "clip.mp4", [background(k) for k in range(8)])
    (tmp_path / "out.csv").write_text("the previous, complete result\n")

    class Failing:
        class_names, img_size = classifier.class_names, classifier.img_size
        calls = 0

        def detect(self, img):
            Failing.calls += 1
            if Failing.calls == 5:
                raise RuntimeError("disk full")
            return []
        name, note = "failing", None

    with pytest.raises(RuntimeError, match="disk full"):
        analyze_video(classifier, video, csv=tmp_path / "out.csv", json=tmp_path / "out.json",
                      video=tmp_path / "out.webm", detector=Failing())
    assert outputs_of(tmp_path) == ["out.csv"]        # no temporaries, no new outputs
    assert (tmp_path / "out.csv").read_text() == "the previous, complete result\n"


def test_the_frame_limit_stops_with_a_clear_message_and_no_outputs(tmp_path, classifier):
    video = write_video(tmp_path / "long.mp4", [background(k % 3) for k in range(10)])
    with pytest.raises(VideoError, match="more than 4 frames .*frame limit"):
        analyze_video(classifier, video, csv=tmp_path / "out.csv", video=tmp_path / "out.webm", max_frames=4,
                      detector="haar")
    assert outputs_of(tmp_path) == []
    assert len(list(iter_video(classifier, video, max_frames=10, detector="haar"))) == 10


def test_bad_options_are_refused_before_any_work(tmp_path, classifier):
    video = write_video(tmp_path / "clip.mp4", [background(0)] * 3)
    for options, message in [({"every": 0}, "every"), ({"start": 2, "end": 1}, "after start"),
                             ({"smooth": -1}, "smooth"), ({"max_frames": 0}, "max_frames")]:
        with pytest.raises(ValueError, match=message):
            next(iter_video(classifier, video, **options))
    with pytest.raises(ValueError, match=r"\.webm .*\.mp4"):
        analyze_video(classifier, video, video=tmp_path / "out.gif")
    with pytest.raises(VideoError, match="no frame between"):
        analyze_video(classifier, video, start=30, csv=tmp_path / "out.csv")
    assert outputs_of(tmp_path) == []


# --- the CLI --------------------------------------------------------------------------------

@needs_fer
def test_cli_video_writes_the_outputs_and_reports_per_person(tmp_path, leave_return, capsys, classifier):
    # the command's default is one classifier thread, whatever the process had before
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        rc = cli.main(["video", str(leave_return), "--runtime", "torch", "--csv", str(tmp_path / "f.csv"),
                       "--json", str(tmp_path / "s.json"), "--out", str(tmp_path / "a.webm"), "--every", "2",
                       "--smooth", "0.3"])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert rc == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["options"]["every"] == 2 and summary["options"]["smooth"] == 0.3
    assert f"{RETURN_FRAMES} frames" in out and "person 1" in out and "happy" in out
    assert read_video_info(tmp_path / "a.webm").frame_count == RETURN_FRAMES
    assert "s_happy" in read_frames_csv(tmp_path / "f.csv")


def test_cli_video_bad_input_is_one_line_with_status_2(tmp_path, capsys):
    bad = tmp_path / "movie.mp4"
    bad.write_bytes(b"\x00\x01 not a movie" * 100)
    assert cli.main(["video", str(bad), "--runtime", "torch", "--csv", str(tmp_path / "f.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "not a readable video" in err and "\n" not in err
    assert not (tmp_path / "f.csv").exists()


# --- in a browser -----------------------------------------------------------------------------

@needs_fer
@pytest.mark.browser
def test_the_annotated_webm_plays_in_chromium(crossing_run, tmp_path):
    from dashboard.live_server import CHROMIUM_ARGS, chromium_path

    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
    chromium = chromium_path()
    if chromium is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    shutil.copy(crossing_run[0] / "annotated.webm", tmp_path / "a.webm")
    (tmp_path / "index.html").write_text('<video id="v" src="a.webm" muted></video>')
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto((tmp_path / "index.html").as_uri())
            page.wait_for_function("document.getElementById('v').readyState >= 2", timeout=30_000)
            size = page.evaluate("[v.videoWidth, v.videoHeight, v.duration]")
        finally:
            browser.close()
    assert size[:2] == [W, H] and size[2] == pytest.approx(CROSS_FRAMES / FPS, abs=0.2)
