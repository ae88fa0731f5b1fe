"""Video: expressions over time, per person, from a video file.

* ``read_video_info``: what a file holds (upright size, frame rate, frame count, rotation, codec), or a
  ``VideoError`` with one line saying why it is not a usable video;
* ``iter_video``: one ``FrameResult`` a processed frame, streamed (memory stays flat however long the video):
  decode, detect (every ``every``-th frame, on a copy at most ``detect_side`` px a side; the boxes carried in
  between), align and classify each face (:mod:`fer_core.predict`'s crops), follow each person with a track id
  (``IouTracker``), and optionally smooth each track's probabilities exponentially in time;
* ``analyze_video``: the same, writing a CSV (one row a face a frame, a row with an empty track for a frame
  without faces), a JSON summary per track and an annotated video, each atomically: a stopped or failed run
  leaves no output that looks complete;
* ``read_frames_csv`` (a pandas DataFrame) and ``read_frame`` (one upright RGB frame), for notebooks and pages.

OpenCV's bundled FFmpeg decodes (MP4/H.264, MOV, WebM, AVI) and honours rotation metadata. Its headless build
encodes VP8 WebM (browsers play it) but no H.264: an ``.mp4`` output is MPEG-4 Part 2 (``mp4v``), which desktop
players open and browsers do not.
"""
from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .detection import Face, YuNetDetector, as_detector
from .imaging import detected_face_crop, fit_within, resize_squares
from .predict import face_colour
from .storage import atomic_write, atomic_write_bytes, json_bytes

DETECT_SIDE = 640          # faces are detected on a copy at most this many px a side (a 4K frame too)
OPEN_TIMEOUT_MS = 10_000   # FFmpeg gives up on a file it cannot open or read within this: never a hang
VIDEO_WRITERS = {".webm": "VP80", ".mp4": "mp4v"}   # output suffix -> codec (VP9 encodes ~5x slower here)
MATCH_MIN_IOU = 0.2        # a detection continues a track when their boxes overlap at least this much, ...
MATCH_MAX_SHIFT = 0.6      # ... or its centre moved less than this share of the track's box size
TRACK_MAX_GAP_S = 1.0      # a track not seen for longer ends; a face coming back later gets a new id
APPEARANCE_WEIGHT = 2.0    # how much a face's look counts in matching against its overlap (both in 0-1)


class VideoError(ValueError):
    """A file that is not a usable video, or a video run that cannot go on; the message is one line."""


@dataclass
class VideoInfo:
    width: int                 # upright, after the rotation metadata
    height: int
    fps: float
    frame_count: int           # the container's estimate; 0 when unknown
    duration_s: float
    rotation: int              # 0, 90, 180 or 270: what the metadata asked for (already applied to frames)
    codec: str


@dataclass
class TrackedFace:
    track: int
    box: list[int]             # x, y, w, h in the upright frame
    score: float | None
    landmarks: list[list[float]] | None
    label: str
    confidence: float
    probabilities: dict[str, float]
    smoothed: dict[str, float] | None = None   # the track's exponentially smoothed probabilities (smooth=...)


@dataclass
class FrameResult:
    frame: int                 # index in the video
    time_s: float
    faces: list[TrackedFace] = field(default_factory=list)
    detected: bool = True      # False: the boxes were carried from an earlier frame (every > 1)


# --- reading ---------------------------------------------------------------------------------

def _open(path: str | Path) -> tuple[cv2.VideoCapture, VideoInfo, np.ndarray]:
    """The capture, its ``VideoInfo`` and the first frame (BGR), or a ``VideoError``."""
    p = Path(path)
    if not p.is_file():   # a file only: FFmpeg would also open URLs and devices
        raise VideoError(f"{p}: file not found")
    if p.stat().st_size == 0:
        raise VideoError(f"{p}: the file is empty")
    cap = cv2.VideoCapture(str(p), cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS,
                                                    cv2.CAP_PROP_READ_TIMEOUT_MSEC, OPEN_TIMEOUT_MS])
    if not cap.isOpened():
        raise VideoError(f"{p}: not a readable video (damaged, truncated, or not a video file)")
    ok, first = cap.read()
    if not ok or first is None or first.size == 0:
        cap.release()
        raise VideoError(f"{p}: no video frame could be decoded (audio only, zero length, or damaged)")
    fps = cap.get(cv2.CAP_PROP_FPS)
    fps = float(fps) if math.isfinite(fps) and 0 < fps < 1000 else 0.0
    count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    count = int(count) if math.isfinite(count) and 0 < count < 2**31 else 0
    fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)) & 0xFFFFFFFF
    codec = "".join(chr((fourcc >> 8 * i) & 0xFF) for i in range(4))
    rotation = int(cap.get(cv2.CAP_PROP_ORIENTATION_META) or 0) % 360
    info = VideoInfo(first.shape[1], first.shape[0], round(fps, 3), count,
                     round(count / fps, 3) if fps and count else 0.0, rotation if rotation in (90, 180, 270) else 0,
                     codec if codec.isprintable() and codec.strip("\x00") else "")
    return cap, info, first


def read_video_info(path: str | Path) -> VideoInfo:
    """What the video holds (``VideoError`` when it is not a usable video): its first frame is decoded to be sure."""
    cap, info, _ = _open(path)
    cap.release()
    return info


def read_frame(path: str | Path, index: int) -> np.ndarray:
    """Frame ``index`` (0-based) as an upright RGB uint8 array, decoded from the start (exact on any codec and
    variable frame rates; a seek lands on key frames)."""
    cap, info, frame = _open(path)
    try:
        for _ in range(index):
            if not cap.grab():
                raise VideoError(f"{path}: has no frame {index}")
        if index and not (ok_frame := cap.retrieve())[0]:
            raise VideoError(f"{path}: frame {index} could not be decoded")
        return cv2.cvtColor(ok_frame[1] if index else frame, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()


def _frames(cap: cv2.VideoCapture, first: np.ndarray, fps: float) -> Iterator[tuple[int, float, np.ndarray]]:
    """(index, time in s, BGR frame) for every frame; times from the container's timestamps (variable frame
    rates), kept non-decreasing, else index / fps."""
    index, last_t, frame = 0, 0.0, first
    while frame is not None:
        msec = cap.get(cv2.CAP_PROP_POS_MSEC)
        t = msec / 1000 if math.isfinite(msec) and (msec > 0 or index == 0) else index / (fps or 30.0)
        last_t = max(last_t, t)
        yield index, last_t, frame
        ok, frame = cap.read()
        frame = frame if ok else None
        index += 1


# --- tracking ---------------------------------------------------------------------------------

def box_iou(a, b) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _predicted(track: _Track, t: float) -> list[float]:
    """The track's box moved on to time ``t`` at its velocity (constant-velocity motion)."""
    dt = t - track.last_s
    return [track.box[0] + track.velocity[0] * dt, track.box[1] + track.velocity[1] * dt, *track.box[2:]]


def _match_cost(track: _Track, box, appearance: np.ndarray | None, t: float) -> float:
    """Lower is a better match; ``inf``: not the same person. The box must overlap the track's predicted box or
    lie near it (a fast face between two detections overlaps little), at a similar size; then the overlap and
    the look of the aligned face (two faces crossing overlap each other as much as their own tracks) decide."""
    guess = _predicted(track, t)
    iou = box_iou(guess, box)
    size = max(guess[2], guess[3], 1)
    shift = math.hypot(guess[0] + guess[2] / 2 - box[0] - box[2] / 2, guess[1] + guess[3] / 2 - box[1] - box[3] / 2)
    ratio = max(box[2], 1) / max(guess[2], 1)
    if not (iou >= MATCH_MIN_IOU or shift / size < MATCH_MAX_SHIFT) or not 0.5 < ratio < 2:
        return math.inf
    unlike = 0.0 if appearance is None or track.appearance is None else 1 - float(appearance @ track.appearance)
    return (1 - iou) + APPEARANCE_WEIGHT * unlike


@dataclass
class _Track:
    id: int
    box: list[int]
    last_s: float
    velocity: tuple[float, float] = (0.0, 0.0)   # px/s of the box's corner
    appearance: np.ndarray | None = None         # the unit descriptor of its aligned face, averaged over time
    smoothed: np.ndarray | None = None

    def moved_to(self, box: list[int], t: float, appearance: np.ndarray | None) -> None:
        dt = t - self.last_s
        if dt > 0:
            seen = ((box[0] - self.box[0]) / dt, (box[1] - self.box[1]) / dt)
            self.velocity = tuple(0.5 * v + 0.5 * s for v, s in zip(self.velocity, seen))
        if appearance is not None:
            mixed = appearance if self.appearance is None else 0.7 * self.appearance + 0.3 * appearance
            self.appearance = mixed / max(float(np.linalg.norm(mixed)), 1e-9)
        self.box, self.last_s = list(box), t


def appearance_descriptor(crop: np.ndarray) -> np.ndarray:
    """A unit vector describing an aligned grey face (its 16x16 thumbnail, zero mean): two crops of one
    person score near 1 in a dot product, two people lower."""
    small = cv2.resize(crop, (16, 16), interpolation=cv2.INTER_AREA).astype(np.float64).ravel()
    small -= small.mean()
    return small / max(float(np.linalg.norm(small)), 1e-9)


class IouTracker:
    """Track ids for the faces of successive frames: the Hungarian assignment (scipy) of detections to live tracks
    by ``_match_cost``; an unmatched detection starts a new track, a track unseen for ``max_gap_s`` ends."""

    def __init__(self, max_gap_s: float = TRACK_MAX_GAP_S):
        self.max_gap_s, self.tracks, self.next_id = max_gap_s, [], 1

    def update(self, boxes: list[list[int]], t: float, appearances: list[np.ndarray] | None = None) -> list[_Track]:
        """The track of each box (in order), updated to the box, its appearance and time ``t``."""
        from scipy.optimize import linear_sum_assignment

        looks = appearances or [None] * len(boxes)
        self.tracks = [tr for tr in self.tracks if t - tr.last_s <= self.max_gap_s]
        cost = np.array([[_match_cost(tr, b, a, t) for tr in self.tracks] for b, a in zip(boxes, looks)]).reshape(
            len(boxes), len(self.tracks))
        matched: dict[int, _Track] = {}
        if cost.size:
            rows, cols = linear_sum_assignment(np.where(np.isfinite(cost), cost, 1e6))
            matched = {r: self.tracks[c] for r, c in zip(rows, cols) if np.isfinite(cost[r, c])}
        out = []
        for i, (box, look) in enumerate(zip(boxes, looks)):
            tr = matched.get(i)
            if tr is None:
                tr = _Track(self.next_id, list(box), t)
                self.next_id += 1
                self.tracks.append(tr)
            tr.moved_to(box, t, look)
            out.append(tr)
        return out


def _smoothed(track: _Track, probs: np.ndarray, t: float, dt: float, tau: float) -> np.ndarray:
    """The track's probabilities after an exponential filter of time constant ``tau`` s over a step of ``dt`` s."""
    if track.smoothed is None:
        track.smoothed = probs.astype(np.float64)
    else:
        track.smoothed += (1 - math.exp(-max(dt, 0.0) / tau)) * (probs - track.smoothed)
    return track.smoothed


# --- the per-frame loop -----------------------------------------------------------------------

@dataclass
class _Timing:
    decode: float = 0.0
    detect: float = 0.0
    classify: float = 0.0   # alignment, crops and the model
    encode: float = 0.0


def _check_options(every: int, start: float | None, end: float | None, smooth: float | None,
                   max_frames: int | None, detect_side: int) -> None:
    if not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be a whole number of frames >= 1, not {every!r}")
    if start is not None and start < 0:
        raise ValueError(f"start must be >= 0 seconds, not {start}")
    if end is not None and (end <= 0 or (start is not None and end <= start)):
        raise ValueError(f"end ({end} s) must come after start ({start or 0} s)")
    if smooth is not None and not smooth > 0:
        raise ValueError(f"smooth is a time constant in seconds > 0, not {smooth}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, not {max_frames}")
    if detect_side < 32:
        raise ValueError(f"detect_side must be at least 32 px, not {detect_side}")


class _UnrefinedYuNet(YuNetDetector):
    """YuNet with its landmarks as the network gives them. ``YuNetDetector`` measures a tilted face's landmarks
    again on an upright copy and its mirror: two more network runs a face, more than the whole frame's pass on
    a 640x360 video (bench/video.py); a video turns that off unless asked (``refine=True``)."""

    def _refined(self, img: np.ndarray, face: Face) -> Face:
        return face


def _video_detector(detector, refine: bool, **options):
    chosen = as_detector(detector, **options)
    if refine or type(chosen) is not YuNetDetector:
        return chosen
    return _UnrefinedYuNet(chosen.model_path, chosen.min_score, chosen.min_face)


def _detect(detector, gray: np.ndarray, side: int) -> list[Face]:
    """Faces in ``gray`` found on a copy at most ``side`` px a side, in ``gray``'s pixels."""
    small, scale = fit_within(gray, side)
    found = detector.detect(small)
    if scale == 1.0:
        return found
    return [Face([round(v / scale) for v in f.box], f.score,
                 None if f.landmarks is None else [[round(x / scale, 2), round(y / scale, 2)] for x, y in f.landmarks])
            for f in found]


def _processed(classifier, path, every=1, start=None, end=None, smooth=None, detector="yunet", max_frames=None,
               detect_side=DETECT_SIDE, refine=False, timing: _Timing | None = None, context: dict | None = None,
               **detection_options) -> Iterator[tuple[FrameResult, np.ndarray]]:
    """``iter_video``'s results with each frame's BGR pixels (for the annotated video)."""
    _check_options(every, start, end, smooth, max_frames, detect_side)
    chosen = _video_detector(detector, refine, **detection_options)
    timing = timing or _Timing()
    cap, info, first = _open(path)
    if context is not None:   # for analyze_video's summary
        context.update(info=info, detector=chosen.name, detector_note=chosen.note)
    tracker, names = IouTracker(), list(classifier.class_names)
    carried: list[Face] = []
    last_t, done = None, 0
    try:
        clock = time.perf_counter()
        for index, t, bgr in _frames(cap, first, info.fps):
            if start is not None and t < start:
                clock = time.perf_counter()
                continue
            if end is not None and t > end:
                break
            if max_frames is not None and done >= max_frames:
                raise VideoError(f"{path}: more than {max_frames:,} frames to process (the frame limit); "
                                 "raise it or choose a part with start/end")
            timing.decode += time.perf_counter() - clock
            gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
            detected = done % every == 0
            if detected:
                tick = time.perf_counter()
                carried = _detect(chosen, gray, detect_side)
                timing.detect += time.perf_counter() - tick
            tick = time.perf_counter()
            faces, crops = _classified(classifier, names, gray, carried)
            result = FrameResult(index, round(t, 4), faces, detected)
            tracks = tracker.update([f.box for f in faces], t, [appearance_descriptor(c) for c in crops])
            for face, tr in zip(result.faces, tracks):
                face.track = tr.id
                if smooth:
                    s = _smoothed(tr, np.array([face.probabilities[c] for c in names]), t,
                                  0.0 if last_t is None else t - last_t, smooth)
                    face.smoothed = {c: round(float(v), 5) for c, v in zip(names, s)}
            timing.classify += time.perf_counter() - tick
            last_t, done = t, done + 1
            yield result, bgr
            clock = time.perf_counter()
    finally:
        cap.release()


def _classified(classifier, names: list[str], gray: np.ndarray, faces: list[Face]
                ) -> tuple[list[TrackedFace], np.ndarray]:
    """The faces classified (track 0: not yet assigned) and their model-size crops."""
    if not faces:
        return [], np.zeros((0, classifier.img_size, classifier.img_size), np.uint8)
    crops = resize_squares([detected_face_crop(gray, f.box, f.landmarks) for f in faces], classifier.img_size)
    out = []
    for f, p in zip(faces, classifier.predict_proba(crops)):
        k = int(p.argmax())
        out.append(TrackedFace(0, [int(v) for v in f.box], f.score, f.landmarks, names[k], round(float(p[k]), 5),
                               {c: round(float(v), 5) for c, v in zip(names, p)}))
    return out, crops


def iter_video(classifier, path: str | Path, *, every: int = 1, start: float | None = None,
               end: float | None = None, smooth: float | None = None, detector="yunet", max_frames: int | None = None,
               detect_side: int = DETECT_SIDE, refine: bool = False, **detection_options) -> Iterator[FrameResult]:
    """One ``FrameResult`` a processed frame of ``path`` between ``start`` and ``end`` (seconds), streamed.
    Faces are detected every ``every``-th frame (the boxes carried in between, re-cropped and classified), on
    a copy at most ``detect_side`` px a side, with YuNet's landmarks measured again on tilted faces when
    ``refine`` (as photos are; several times slower); ``smooth`` is the time constant (s) of each track's exponential
    smoothing; more than ``max_frames`` frames to process is a ``VideoError``. ``detector`` and
    ``detection_options`` (``face_model``, ``min_face``, ``min_score``) as ``detection.get_detector`` takes them."""
    for result, _ in _processed(classifier, path, every, start, end, smooth, detector, max_frames, detect_side,
                                refine, **detection_options):
        yield result


# --- outputs ---------------------------------------------------------------------------------

def csv_columns(class_names, smooth: bool) -> list[str]:
    cols = ["frame", "time_s", "track", "x", "y", "w", "h", "score", "label", "confidence",
            *(f"p_{c}" for c in class_names)]
    return cols + [*(f"s_{c}" for c in class_names), "smoothed_label"] if smooth else cols


def frame_rows(result: FrameResult, class_names, smooth: bool) -> list[dict]:
    """The CSV rows of one frame: one a face, or one with empty face columns when it has none."""
    base = {"frame": result.frame, "time_s": result.time_s}
    if not result.faces:
        return [base]
    rows = []
    for f in result.faces:
        row = {**base, "track": f.track, "x": f.box[0], "y": f.box[1], "w": f.box[2], "h": f.box[3],
               "score": "" if f.score is None else f.score, "label": f.label, "confidence": f.confidence,
               **{f"p_{c}": f.probabilities[c] for c in class_names}}
        if smooth and f.smoothed:
            row.update({f"s_{c}": f.smoothed[c] for c in class_names},
                       smoothed_label=max(f.smoothed, key=f.smoothed.get))
        rows.append(row)
    return rows


def read_frames_csv(path: str | Path):
    """``analyze_video``'s CSV as a pandas DataFrame (``track`` a nullable integer: empty on frames without faces)."""
    import pandas as pd

    df = pd.read_csv(path)
    for col in ("track", "x", "y", "w", "h"):
        if col in df:
            df[col] = df[col].astype("Int64")
    return df


class _Summary:
    """Per-track totals gathered as frames stream by (memory: a few numbers a track)."""

    def __init__(self, class_names):
        self.names, self.frames, self.with_faces, self.tracks = list(class_names), 0, 0, {}

    def add(self, result: FrameResult) -> None:
        self.frames += 1
        self.with_faces += bool(result.faces)
        for f in result.faces:
            tr = self.tracks.setdefault(f.track, {"frames": 0, "first_s": result.time_s, "labels": {},
                                                  "sums": np.zeros(len(self.names))})
            tr["frames"] += 1
            tr["last_s"] = result.time_s
            tr["labels"][f.label] = tr["labels"].get(f.label, 0) + 1
            tr["sums"] += [f.probabilities[c] for c in self.names]

    def tracks_summary(self) -> list[dict]:
        out = []
        for track, tr in sorted(self.tracks.items()):
            share = {c: round(tr["labels"].get(c, 0) / tr["frames"], 5) for c in self.names}
            out.append({"track": track, "frames": tr["frames"], "first_s": tr["first_s"], "last_s": tr["last_s"],
                        "share": share,
                        "mean_probabilities": {c: round(float(v / tr["frames"]), 5)
                                               for c, v in zip(self.names, tr["sums"])},
                        "dominant": max(share, key=share.get)})
        return out


def annotate_frame(bgr: np.ndarray, result: FrameResult) -> np.ndarray:
    """The frame with each face's box, track id and label drawn in its track's colour (BGR in, BGR out)."""
    out = bgr.copy()
    thickness = max(1, round(max(out.shape[:2]) / 400))
    scale = max(0.4, max(out.shape[:2]) / 1400)
    for f in result.faces:
        x, y, w, h = f.box
        r, g, b = face_colour(f.track - 1)
        cv2.rectangle(out, (x, y), (x + w, y + h), (b, g, r), thickness + 1)
        label = max(f.smoothed, key=f.smoothed.get) if f.smoothed else f.label
        text = f"#{f.track} {label} {(f.smoothed or f.probabilities)[label]:.0%}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        ty = y - base - 2 if y - th - base - 2 >= 0 else y + th + 2
        cv2.rectangle(out, (x, ty - th - 2), (x + tw + 4, ty + base), (b, g, r), -1)
        ink = (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 160 else (255, 255, 255)
        cv2.putText(out, text, (x + 2, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, ink, thickness, cv2.LINE_AA)
    return out


@contextlib.contextmanager
def _video_writer(path: Path, fps: float, size: tuple[int, int]) -> Iterator[cv2.VideoWriter]:
    """A ``cv2.VideoWriter`` on a temporary beside ``path`` (same suffix: it picks the container), renamed over
    ``path`` only when the body finishes; on any error the temporary is removed."""
    _check_writable_suffix(path)
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp" + suffix)
    os.close(fd)
    writer = cv2.VideoWriter(tmp, cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*VIDEO_WRITERS[suffix]), fps, size)
    try:
        if not writer.isOpened():
            raise VideoError(f"{path}: OpenCV cannot write {VIDEO_WRITERS[suffix]} video here")
        yield writer
        writer.release()
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        writer.release()
        Path(tmp).unlink(missing_ok=True)


def analyze_video(classifier, path: str | Path, *, csv: str | Path | None = None, json: str | Path | None = None,
                  video: str | Path | None = None, progress: Callable[[int, int], None] | None = None,
                  **options) -> dict:
    """Run ``iter_video(classifier, path, **options)`` and write its outputs: ``csv`` (``csv_columns``), ``json``
    (the summary, also returned) and ``video`` (annotated: ``.webm`` VP8 or ``.mp4`` mp4v, the input's frame
    rate and upright size). Every output appears only when the whole run succeeded (written to temporaries, then
    renamed). ``progress(done, total)`` is called after each frame (``total`` an estimate; 0 when unknown)."""
    if video is not None:
        _check_writable_suffix(Path(video))
    smooth = bool(options.get("smooth"))
    names = list(classifier.class_names)
    timing, context, summary = _Timing(), {}, _Summary(names)
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        rows = stack.enter_context(atomic_write(csv, "w", newline="", encoding="utf-8")) if csv else io.StringIO()
        writer = _csv_writer(rows, names, smooth)
        frames = _processed(classifier, path, timing=timing, context=context, **options)
        out = None
        for result, bgr in frames:
            info = context["info"]
            if video is not None and out is None:
                out = stack.enter_context(_video_writer(Path(video), info.fps or 30.0, (bgr.shape[1], bgr.shape[0])))
            writer.writerows(frame_rows(result, names, smooth))
            summary.add(result)
            if out is not None:
                tick = time.perf_counter()
                out.write(annotate_frame(bgr, result))
                timing.encode += time.perf_counter() - tick
            if progress:
                progress(summary.frames, _expected_frames(info, options))
        if not summary.frames:
            raise VideoError(f"{path}: no frame between {options.get('start') or 0} s and the end "
                             f"({options.get('end')} s asked for)")
    report = {"video": asdict(context["info"]), "model": _model_info(classifier),
              "options": _options_record(options) | {"detector": context["detector"]},
              "detector_note": context["detector_note"],
              "frames_processed": summary.frames, "frames_with_faces": summary.with_faces,
              "tracks": summary.tracks_summary(),
              "timing_s": {k: round(v, 3) for k, v in asdict(timing).items()}
              | {"total": round(time.perf_counter() - started, 3)}}
    if json:
        atomic_write_bytes(json, json_bytes(report, indent=1))
    return report


def _check_writable_suffix(path: Path) -> None:
    if path.suffix.lower() not in VIDEO_WRITERS:
        raise ValueError(f"{path}: the annotated video is .webm (VP8, plays in browsers) or .mp4 (mp4v, for "
                         "desktop players; browsers do not play it)")


def _csv_writer(f, names, smooth: bool) -> csv.DictWriter:
    writer = csv.DictWriter(f, fieldnames=csv_columns(names, smooth), restval="")
    writer.writeheader()
    return writer


def _expected_frames(info: VideoInfo, options: dict) -> int:
    """Frames the run should process: the frame count cut by start, end and max_frames (0 when unknown)."""
    total = info.frame_count
    if not total or not info.fps:
        return options.get("max_frames") or 0
    first = int((options.get("start") or 0) * info.fps)
    last = min(total, int(options["end"] * info.fps) + 1) if options.get("end") else total
    return max(0, min(last - first, options.get("max_frames") or total))


def _model_info(classifier) -> dict:
    return {"source": str(getattr(classifier, "source", "")), "arch": getattr(classifier, "arch", ""),
            "runtime": getattr(classifier, "runtime", ""), "class_names": list(classifier.class_names)}


def _options_record(options: dict) -> dict:
    record = {"every": 1, "start": None, "end": None, "smooth": None, "detector": "yunet", "max_frames": None,
              "detect_side": DETECT_SIDE, "refine": False}
    record.update({k: v if isinstance(v, (int, float, str, type(None))) else str(v) for k, v in options.items()})
    return record
