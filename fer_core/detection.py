"""Face detection: detectors behind one interface, and where the YuNet model file comes from.

* ``YuNetDetector``: OpenCV Zoo's YuNet run by ``cv2.FaceDetectorYN`` (box, score, five landmarks);
  the default.
* ``HaarDetector``: OpenCV's frontal-face Haar cascade (box only); the fallback.
* ``get_detector(name, face_model, min_face, min_score)``: the one entry point. When the YuNet model
  cannot be had (no copy, offline, a corrupt file) it logs one line saying why and how to provide the
  file, and returns the Haar cascade with that line as its ``note``.
* ``find_face_model``: ``face_model`` given, else ``$FER_STUDIO_FACE_MODEL``, else the user cache, else one
  download from OpenCV Zoo (short timeout, size and sha256 checked, written atomically).

Every detector detects on a copy at most ``DETECT_MAX_SIDE`` px a side and maps boxes and landmarks
back to the image's own pixels. Only numpy and OpenCV.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import threading
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from .config import DEFAULT_MIN_SCORE, DETECTOR_NAMES, FACE_MODEL_ENV
from .data import default_cache_dir
from .imaging import fit_within, similarity_to_template, to_grey, transform_angle
from .storage import atomic_write_bytes

log = logging.getLogger(__name__)

DETECT_MAX_SIDE = 1024         # faces are detected on a copy no larger than this
YUNET_FILE = "face_detection_yunet_2023mar.onnx"
YUNET_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
YUNET_BYTES = 232_589
# OpenCV Zoo keeps the file in Git LFS: the media URL serves the bytes, the raw URL redirects there.
YUNET_URLS = (
    "https://media.githubusercontent.com/media/opencv/opencv_zoo/main/models/face_detection_yunet/" + YUNET_FILE,
    "https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/" + YUNET_FILE,
)
DOWNLOAD_TIMEOUT_S = 10.0      # for the whole download, DNS included: offline must not mean a hang
REFINE_MIN_TILT = 3.0         # degrees: a face tilted more has its landmarks measured again, upright
MIRROR_PARTNER = [1, 0, 2, 4, 3]   # each landmark's counterpart in the mirror image
REFINE_SIDE = 320             # px of the upright copy they are measured on
MIN_IMAGE_SIDE = 16           # YuNet finds nothing real in a thinner image, only noise
HAAR_MIN_FRACTION = 0.06       # the cascade's default smallest face: this share of the shorter side
# Photos are also detected turned by these degrees: of FER faces tilted by 30 degrees one upright pass found 86.5-90.1%,
# with these passes 98.3-98.7%; in composed scenes recall went 44% -> 67%, false positives 1 -> 2 in 120 scenes
# (bench/real_photos.py, docs/REAL_PHOTOS.md). Video keeps one pass: a photo takes 2.8x as long end to end.
TILT_TURNS = (-30.0, 30.0)


@dataclass
class Face:
    """A detected face in the image's pixels: ``box`` x, y, w, h; ``score`` in [0, 1] (None: the detector
    gives none); ``landmarks`` right eye, left eye, nose tip, right and left mouth corner as [x, y] (the
    subject's right is the image's left), or None."""

    box: list[int]
    score: float | None = None
    landmarks: list[list[float]] | None = None


class Detector(Protocol):
    name: str
    note: str | None          # why this detector runs instead of the one asked for (a fallback), else None

    def detect(self, img: np.ndarray) -> list[Face]: ...


class FaceModelError(RuntimeError):
    """The YuNet model file is missing, unreadable or not the published one."""


def _by_size(faces: list[Face]) -> list[Face]:
    return sorted(faces, key=lambda f: -f.box[2] * f.box[3])


_CASCADE_LOCK = threading.Lock()   # one cascade object, called from the dashboard's threads


@functools.cache
def _cascade() -> cv2.CascadeClassifier:
    path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise RuntimeError(f"OpenCV face detector not found at {path}")
    return cascade


class HaarDetector:
    """OpenCV's frontal-face Haar cascade on the equalised grey image. It gives no score and no landmarks."""

    name = "haar"

    def __init__(self, min_face: int | None = None, note: str | None = None):
        self.min_face, self.note = min_face, note

    def detect(self, img: np.ndarray) -> list[Face]:
        small, scale = fit_within(to_grey(img), DETECT_MAX_SIDE)
        small = cv2.equalizeHist(small)
        wanted = self.min_face * scale if self.min_face else min(small.shape) * HAAR_MIN_FRACTION
        side = max(20, int(wanted))   # the cascade's own window is 24 px; below 20 it finds noise
        with _CASCADE_LOCK:
            found = _cascade().detectMultiScale(small, scaleFactor=1.1, minNeighbors=5, minSize=(side, side))
        return _by_size([Face([round(v / scale) for v in box]) for box in (found.tolist() if len(found) else [])])


class YuNetDetector:
    """YuNet (``cv2.FaceDetectorYN``): faces from about 10 px up, any in-plane tilt it was trained on, with a
    score and five landmarks. ``min_face`` (px of the image) drops smaller faces."""

    name = "yunet"

    def __init__(self, model_path: str | Path, min_score: float = DEFAULT_MIN_SCORE, min_face: int | None = None,
                 top_k: int = 500, turns: tuple[float, ...] = ()):
        self.model_path, self.min_score, self.min_face, self.note = Path(model_path), min_score, min_face, None
        self.turns = tuple(turns)   # extra passes on the image turned by these degrees (tilted heads)
        try:
            self._net = cv2.FaceDetectorYN.create(str(model_path), "", (320, 320), min_score, 0.3, top_k)
        except cv2.error:
            raise FaceModelError(f"{model_path}: OpenCV cannot read it as the YuNet face model") from None
        self._lock = threading.Lock()   # setInputSize then detect: one image at a time

    def detect(self, img: np.ndarray) -> list[Face]:
        small, scale = fit_within(img, DETECT_MAX_SIDE)
        if min(small.shape[:2]) < MIN_IMAGE_SIDE:
            return []
        bgr = cv2.cvtColor(small, cv2.COLOR_GRAY2BGR if small.ndim == 2 else cv2.COLOR_RGB2BGR)
        faces = [_yunet_face(row, scale) for row in self._rows(bgr)]
        for degrees in self.turns:
            faces += [f for f in self._turned_pass(bgr, degrees, scale) if not _inside_any(f, faces)]
        if self.min_face:
            faces = [f for f in faces if max(f.box[2], f.box[3]) >= self.min_face]
        return _by_size([self._refined(img, f) for f in faces])

    def _rows(self, bgr: np.ndarray) -> list[np.ndarray]:
        """YuNet's output rows for ``bgr`` whose box is sane and centred inside it: on degenerate inputs the
        network's decoded boxes can run anywhere."""
        with self._lock:
            self._net.setInputSize((bgr.shape[1], bgr.shape[0]))
            _, rows = self._net.detect(bgr)
        h, w = bgr.shape[:2]
        return [r for r in ([] if rows is None else rows) if np.isfinite(r).all() and r[2] >= 2 and r[3] >= 2
                and 0 <= r[0] + r[2] / 2 < w and 0 <= r[1] + r[3] / 2 < h]

    def _turned_pass(self, bgr: np.ndarray, degrees: float, scale: float) -> list[Face]:
        """Faces found on the image turned by ``degrees`` about its centre (the canvas grown to keep every corner),
        mapped back: a head tilted by about that much is upright there, where YuNet finds it far more often. The
        box keeps its size about its mapped centre; the landmarks map exactly."""
        h, w = bgr.shape[:2]
        turn = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
        cos, sin = abs(turn[0, 0]), abs(turn[0, 1])
        size = (int(np.ceil(w * cos + h * sin)), int(np.ceil(w * sin + h * cos)))
        turn[:, 2] += (size[0] - w) / 2, (size[1] - h) / 2
        turned = cv2.warpAffine(bgr, turn, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        back = cv2.invertAffineTransform(turn)
        out = []
        for row in self._rows(turned):
            row = row.copy()
            points = np.c_[row[4:14].reshape(5, 2), np.ones(5)] @ back.T
            cx, cy = np.array([row[0] + row[2] / 2, row[1] + row[3] / 2, 1.0]) @ back.T
            if not (0 <= cx < w and 0 <= cy < h):
                continue
            row[0], row[1], row[4:14] = cx - row[2] / 2, cy - row[3] / 2, points.reshape(-1)
            out.append(_yunet_face(row, scale))
        return out

    def _refined(self, img: np.ndarray, face: Face) -> Face:
        """``face`` with landmarks measured again on a copy of it turned upright. YuNet's landmarks lag behind
        a tilt (a face turned 15-30 degrees reads as 10-25); on the upright copy the residual tilt is small
        and measured well, so the two together turn the face upright to a degree or two."""
        unit = similarity_to_template(face.landmarks)
        if abs(transform_angle(unit)) < REFINE_MIN_TILT:
            return face
        # the template's face at REFINE_SIDE / 2 px, centred in a REFINE_SIDE square: YuNet's comfortable size
        view = unit * (REFINE_SIDE / 2)
        view[:, 2] += REFINE_SIDE / 4
        upright = cv2.warpAffine(img, view, (REFINE_SIDE, REFINE_SIDE), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE)
        points = [self._central_landmarks(upright), self._central_landmarks(upright[:, ::-1])]
        if points[0] is None or points[1] is None:
            return face
        # the mirror image's landmarks, mirrored back (eyes and mouth corners swap): the mean of the two cancels
        # the network's left-right bias
        mirrored = points[1][MIRROR_PARTNER]
        mirrored[:, 0] = REFINE_SIDE - mirrored[:, 0]
        mean = (points[0] + mirrored) / 2
        back = np.c_[mean, np.ones(5)] @ cv2.invertAffineTransform(view).T
        return Face(face.box, face.score, [[round(float(x), 2), round(float(y), 2)] for x, y in back])

    def _central_landmarks(self, upright: np.ndarray) -> np.ndarray | None:
        """The landmarks (5, 2) of the best face near the centre of a ``REFINE_SIDE`` square, or None."""
        bgr = cv2.cvtColor(np.ascontiguousarray(upright), cv2.COLOR_GRAY2BGR if upright.ndim == 2
                           else cv2.COLOR_RGB2BGR)
        with self._lock:
            self._net.setInputSize((REFINE_SIDE, REFINE_SIDE))
            _, rows = self._net.detect(bgr)
        c, r = REFINE_SIDE / 2, REFINE_SIDE / 4
        near = [row for row in ([] if rows is None else rows) if np.isfinite(row).all()
                and abs(row[0] + row[2] / 2 - c) < r and abs(row[1] + row[3] / 2 - c) < r]
        return max(near, key=lambda row: row[14])[4:14].reshape(5, 2).astype(np.float64) if near else None


def _inside_any(face: Face, others: list[Face]) -> bool:
    """Whether ``face``'s centre lies in one of ``others``' boxes (the same face, found by another pass)."""
    cx, cy = face.box[0] + face.box[2] / 2, face.box[1] + face.box[3] / 2
    return any(o.box[0] <= cx < o.box[0] + o.box[2] and o.box[1] <= cy < o.box[1] + o.box[3] for o in others)


def _yunet_face(row: np.ndarray, scale: float) -> Face:
    """One row of YuNet's output (box, five landmarks, score) in the full image's pixels. Landmarks are
    rounded to 0.01 px here, once, so that every later crop from the record is the one classified."""
    x, y, w, h = (float(v) / scale for v in row[:4])
    box = [round(x), round(y), max(1, round(w)), max(1, round(h))]
    points = [[round(float(px) / scale, 2), round(float(py) / scale, 2)] for px, py in row[4:14].reshape(5, 2)]
    return Face(box, round(float(row[14]), 4), points)


# --- the model file --------------------------------------------------------------------------

def model_cache_path() -> Path:
    """Where a downloaded YuNet model is kept: the user cache (``$FER_STUDIO_CACHE`` or ~/.cache/fer_studio)."""
    return default_cache_dir() / YUNET_FILE


def check_face_model(path: Path) -> Path:
    """``path`` if it holds the published YuNet model (size and sha256), else ``FaceModelError`` naming it."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise FaceModelError(f"{path}: cannot be read ({e.strerror or type(e).__name__})") from None
    if len(data) != YUNET_BYTES or hashlib.sha256(data).hexdigest() != YUNET_SHA256:
        raise FaceModelError(f"{path}: not the YuNet model ({len(data):,} bytes, its sha256 does not match)")
    return path


def download_face_model(dest: Path, urls: tuple[str, ...] = YUNET_URLS,
                        timeout_s: float = DOWNLOAD_TIMEOUT_S, opener=urllib.request.urlopen) -> Path:
    """Fetch the model into ``dest``: the first URL that answers within ``timeout_s`` (the whole attempt,
    name lookup included) with the published bytes. A wrong size or hash is refused and nothing is
    written; the file appears whole or not at all (``atomic_write_bytes``)."""
    result: dict = {}

    def fetch():
        for url in urls:
            try:
                with opener(url, timeout=timeout_s) as response:
                    data = response.read(YUNET_BYTES + 1)
            except (OSError, ValueError) as e:   # URLError, timeouts, refused connections are OSErrors
                result["error"] = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
                continue
            if len(data) == YUNET_BYTES and hashlib.sha256(data).hexdigest() == YUNET_SHA256:
                result["data"] = data
                return
            result["error"] = f"{url} sent {len(data):,} bytes whose sha256 is not the published one; refused"

    worker = threading.Thread(target=fetch, daemon=True)   # a name lookup can outlast any socket timeout
    worker.start()
    worker.join(timeout_s)
    if "data" not in result:
        raise FaceModelError(result.get("error", f"no answer within {timeout_s:.0f} s"))
    atomic_write_bytes(dest, result["data"])
    return dest


_download_failed: dict[Path, str] = {}   # one attempt a process: a page or a folder of photos must not wait each time


def find_face_model(face_model: str | Path | None = None, download: bool = True) -> Path:
    """The YuNet model file: ``face_model``, else ``$FER_STUDIO_FACE_MODEL``, else the user cache, else
    downloaded there once. ``FaceModelError`` says what failed."""
    given = face_model or os.environ.get(FACE_MODEL_ENV)
    if given:
        return check_face_model(Path(given).expanduser())
    cached = model_cache_path()
    if cached.exists():
        return check_face_model(cached)
    if not download:
        raise FaceModelError(f"no copy at {cached}")
    if cached in _download_failed:
        raise FaceModelError(_download_failed[cached])
    try:
        return download_face_model(cached)
    except (FaceModelError, OSError) as e:
        _download_failed[cached] = f"no copy at {cached} and the download from OpenCV Zoo failed ({e})"
        raise FaceModelError(_download_failed[cached]) from None


# --- the entry point ---------------------------------------------------------------------------

def how_to_get_yunet() -> str:
    """The one line that tells a user how to provide the YuNet model file."""
    return (f"to use YuNet, download {YUNET_FILE} from OpenCV Zoo (opencv/opencv_zoo, models/face_detection_yunet/) "
            f"and pass --face-model PATH, set {FACE_MODEL_ENV}=PATH, or copy it into {model_cache_path().parent}/")


_detectors: dict[tuple, Detector] = {}
_noted: set[str] = set()
_detectors_lock = threading.Lock()


def get_detector(name: str = "yunet", face_model: str | Path | None = None, min_face: int | None = None,
                 min_score: float | None = None, download: bool = True,
                 turns: tuple[float, ...] = TILT_TURNS) -> Detector:
    """The detector ``name`` (one of ``config.DETECTOR_NAMES``), built once a process for its settings. YuNet
    without its model file gives the Haar cascade, whose ``note`` (logged once) says why and how to fix it; the
    fallback is not kept, so a model file provided later is used on the next call. YuNet also detects on the
    image turned by each of ``turns`` degrees (tilted heads), ``()`` for one upright pass."""
    if name not in DETECTOR_NAMES:
        raise ValueError(f"unknown detector {name!r}; choose one of {', '.join(DETECTOR_NAMES)}")
    if min_score is not None and not 0 <= min_score <= 1:
        raise ValueError(f"min_score must lie between 0 and 1, not {min_score}")
    if min_face is not None and min_face < 0:
        raise ValueError(f"min_face must be a number of pixels >= 0, not {min_face}")
    if name == "haar":
        return HaarDetector(min_face)
    key = (str(face_model or os.environ.get(FACE_MODEL_ENV) or model_cache_path()), min_face, min_score, tuple(turns))
    with _detectors_lock:
        if key not in _detectors:
            try:
                path = find_face_model(face_model, download)
                _detectors[key] = YuNetDetector(path, DEFAULT_MIN_SCORE if min_score is None else min_score,
                                                min_face, turns=tuple(turns))
            except FaceModelError as e:
                return _fallback(str(e), min_face)
        return _detectors[key]


def _fallback(reason: str, min_face: int | None) -> HaarDetector:
    note = f"YuNet face detector unavailable ({reason}); using the Haar cascade; {how_to_get_yunet()}"
    if note not in _noted:
        _noted.add(note)
        log.warning(note)
    return HaarDetector(min_face, note=note)


def detect_faces(img: np.ndarray, detector: Detector | str = "yunet", **options) -> list[Face]:
    """Faces (largest first) in an RGB or grey image; ``detector`` a name (with ``get_detector``'s options:
    ``face_model``, ``min_face``, ``min_score``) or a detector."""
    return as_detector(detector, **options).detect(img)


def as_detector(detector: Detector | str | None = None, **options) -> Detector:
    """A detector object from a name (None: the default, YuNet), or the object itself."""
    if detector is None or isinstance(detector, str):
        return get_detector(detector or "yunet", **options)
    return detector
