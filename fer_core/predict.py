"""Prediction on photos: safe image loading, faces found (:mod:`fer_core.detection`), a crop a face (aligned
when the detector gives landmarks), classification, tables and drawing.

Any photo is accepted: any size up to ``MAX_PIXELS``; RGB, RGBA, palette, CMYK, grey or 16-bit;
EXIF orientation honoured. Bad files raise ``ImageError`` with a message fit for a user. The crops and
resizes come from :mod:`fer_core.imaging`.
"""
from __future__ import annotations

import contextlib
import csv
import io
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .checkpoint import FerClassifier
from .config import PHOTO_TTA
from .data import IMAGE_SUFFIXES
from .detection import Detector, Face, as_detector
from .evaluation import check_tta, predict_split
from .imaging import centre_square, centre_square_box, detected_face_crop, resize_squares, to_grey
from .storage import atomic_write

MAX_PIXELS = 40_000_000        # larger images are refused (decompression bombs)


class ImageError(ValueError):
    """An upload or file that is not a usable image. ``str(e)`` is 'name: reason' (for a message on its own);
    ``e.reason`` is the reason alone, for records that already carry the file's name beside it."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}")
        self.name, self.reason = name, reason

    def __reduce__(self):   # the default would call ImageError(message), one argument short
        return type(self), (self.name, self.reason)


@dataclass
class FacePrediction:
    box: list[int]                       # x, y, w, h in the oriented image
    label: str
    confidence: float
    probabilities: dict[str, float]
    score: float | None = None           # the detector's confidence that this is a face (None: it gives none)
    landmarks: list[list[float]] | None = None   # five [x, y] in the oriented image (detection.Face)


@dataclass
class ImagePrediction:
    path: str
    width: int
    height: int
    faces: list[FacePrediction] = field(default_factory=list)
    detected: bool = True                # False: the whole image was classified as one face
    error: str | None = None
    detector: str = "none"               # the detector that found the faces ("none": the whole image)
    detector_note: str | None = None     # why it is not the one asked for (a fallback), else None
    tta: str = "none"                    # the test-time views averaged per face (evaluation.tta_views)

    def to_dict(self) -> dict:
        return asdict(self)


def load_image(source: str | Path | bytes | io.IOBase, name: str | None = None) -> np.ndarray:
    """An RGB uint8 array (H, W, 3) from a path, bytes or file object, upright per its EXIF."""
    label = name or (str(source) if isinstance(source, (str, Path)) else "upload")
    data = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        with Image.open(data) as im:
            if im.size[0] * im.size[1] > MAX_PIXELS:
                raise ImageError(label, _too_large(im.size))
            return _to_rgb(ImageOps.exif_transpose(im))
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(label, "file not found") from None
    except Image.DecompressionBombError:   # Pillow's own, larger limit: it refuses before telling the size
        raise ImageError(label, _too_large(_declared_size(data))) from None
    except UnidentifiedImageError as e:
        raise ImageError(label, f"not a readable image ({type(e).__name__})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(label, f"the image is damaged or truncated ({e})") from None


def _too_large(size: tuple[int, int] | None) -> str:
    limit = f"at most {MAX_PIXELS / 1e6:.0f} megapixels"
    return f"image is too large ({size[0]}x{size[1]} px; {limit})" if size else f"image is too large ({limit})"


def _declared_size(source: str | Path | io.IOBase) -> tuple[int, int] | None:
    """Width and height as the file's header declares them (no pixels decoded); None when unknown."""
    try:
        if isinstance(source, (str, Path)):
            with open(source, "rb") as f:
                return _header_size(f)
        return _header_size(source)
    except (OSError, ValueError, AttributeError):   # unreadable, or a file object that cannot seek
        return None


def _header_size(f: io.IOBase) -> tuple[int, int] | None:
    """The size read by the Pillow plugin of the file's format, as ``Image.open`` does but without its
    decompression-bomb check, which refuses a huge image before saying how large it is."""
    f.seek(0)
    prefix = f.read(16)
    Image.init()
    for fmt in Image.ID:
        factory, accept = Image.OPEN[fmt]
        accepted = accept is None or accept(prefix)
        if accepted and not isinstance(accepted, str):   # a str is Pillow's warning, not a match
            f.seek(0)
            with contextlib.suppress(SyntaxError, IndexError, TypeError, ValueError, OSError, struct.error):
                return tuple(factory(f).size)
    return None


def _to_rgb(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit or float grey: scale to 8 bits
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = np.zeros_like(a) if hi <= lo else (a - lo) / (hi - lo) * 255
        return np.repeat(a.round().astype(np.uint8)[..., None], 3, axis=2)
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def face_crops(rgb: np.ndarray, detect: bool = True, detector: Detector | str | None = None,
               **options) -> tuple[list[Face], list[np.ndarray]]:
    """The faces in ``rgb`` (``detection.Face``, largest first) and their grey crops: aligned onto FER-2013's
    template where the detector gives landmarks, else squares around the boxes. With ``detect`` False the
    image is one aligned face crop and its centred square is the face. ``detector`` and ``options``
    (``face_model``, ``min_face``, ``min_score``) as ``detection.get_detector`` takes them."""
    gray = to_grey(rgb)
    if not detect:
        return [Face(centre_square_box(gray.shape))], [centre_square(gray)]
    found = as_detector(detector, **options).detect(gray)
    return found, [detected_face_crop(gray, f.box, f.landmarks) for f in found]


def model_faces(rgb: np.ndarray, size: int, detect: bool = True, detector: Detector | str | None = None,
                **options) -> tuple[list[Face], np.ndarray]:
    """The faces and the grey crops (N, size, size) a model of input ``size`` reads: what ``predict_image``
    classifies, ``explain`` maps and the pages show."""
    found, crops = face_crops(rgb, detect, detector, **options)
    return found, resize_squares(crops, size)


def predict_image(classifier: FerClassifier, rgb: np.ndarray, detect: bool = True, path: str = "",
                  detector: Detector | str | None = None, tta: str = PHOTO_TTA, **options) -> ImagePrediction:
    """Classify every face found in an RGB image; ``detector`` and ``options`` as ``face_crops`` takes them.
    ``tta`` averages each face's probabilities over evaluation's test-time views of its crop (``none`` for the
    single view, ``flip``, ``flip+crops``; the default, ``PHOTO_TTA``, says why)."""
    check_tta(tta)   # before detection: an unknown mode fails on a photo without faces too
    chosen = as_detector(detector, **options) if detect else None
    found, faces = model_faces(rgb, classifier.img_size, detect, chosen)
    result = ImagePrediction(path, rgb.shape[1], rgb.shape[0], detected=detect,
                             detector=chosen.name if chosen else "none", detector_note=chosen and chosen.note, tta=tta)
    if len(faces):
        probs = predict_split(classifier, torch.from_numpy(faces), tta)
        for face, p in zip(found, probs):
            k = int(p.argmax())
            result.faces.append(FacePrediction(
                [int(v) for v in face.box], classifier.class_names[k], float(p[k]),
                {c: round(float(v), 5) for c, v in zip(classifier.class_names, p)}, face.score, face.landmarks))
    return result


def expand_image_paths(paths: list[str | Path]) -> list[Path]:
    """Files as given, and the image files (sorted) inside any folder given."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            out.append(p)
    return out


def predict_paths(classifier: FerClassifier, paths: list[str | Path], detect: bool = True, progress: bool = False,
                  detector: Detector | str | None = None, tta: str = PHOTO_TTA, **options) -> list[ImagePrediction]:
    """One record an image; an unreadable file gives a record whose ``error`` says why (the record's ``path``
    names the file, so the reason does not repeat it) and the rest go on. ``detector``, ``tta`` and ``options``
    as ``predict_image`` takes them (the detector is built once for all the files)."""
    check_tta(tta)
    chosen = as_detector(detector, **options) if detect else None
    files = expand_image_paths(paths)
    if progress and len(files) > 1:
        from tqdm import tqdm

        files = tqdm(files, desc="predicting", leave=False)
    results = []
    for f in files:
        try:
            results.append(predict_image(classifier, load_image(f), detect, str(f), chosen, tta))
        except ImageError as e:
            results.append(ImagePrediction(str(f), 0, 0, detected=detect, error=e.reason,
                                           detector=chosen.name if chosen else "none", tta=tta))
    return results


def predictions_table(results: list[ImagePrediction], class_names) -> list[dict]:
    """Flat rows (one a face; one for an image without faces) for CSV and data frames."""
    rows = []
    for r in results:
        base = {"path": r.path, "error": r.error or ("" if r.faces else "no face found"), "detector": r.detector}
        if not r.faces:
            rows.append({**base, "face": "", "x": "", "y": "", "w": "", "h": "", "score": "", "label": "",
                         "confidence": "", **{f"p_{c}": "" for c in class_names}})
        for i, f in enumerate(r.faces):
            rows.append({**base, "face": i, "x": f.box[0], "y": f.box[1], "w": f.box[2], "h": f.box[3],
                         "score": "" if f.score is None else f.score, "label": f.label,
                         "confidence": round(f.confidence, 5), **{f"p_{c}": f.probabilities[c] for c in class_names}})
    return rows


def write_csv(rows: list[dict], path: str | Path | io.TextIOBase) -> None:
    """``rows`` (of ``predictions_table``) as CSV to a path, written atomically (an interrupted write leaves the
    old file), or to an open text file such as ``sys.stdout``."""
    if not rows:
        return
    if isinstance(path, (str, Path)):
        with atomic_write(path, "w", newline="", encoding="utf-8") as f:
            _write_rows(rows, f)
    else:
        _write_rows(rows, path)


def _write_rows(rows: list[dict], f: io.TextIOBase) -> None:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)


def face_colour(index: int) -> tuple[int, int, int]:
    """The RGB colour of face ``index`` (0-based) on an annotated image, for showing the face elsewhere."""
    return _PALETTE[index % len(_PALETTE)]


def annotate(rgb: np.ndarray, prediction: ImagePrediction, landmarks: bool = False) -> np.ndarray:
    """A copy of the image with a box and 'N: label p' drawn for every face (N from 1, in ``face_colour(N - 1)``),
    each label placed above, below or inside the top of its box, the first of these that covers no other box
    or label; landmarks as dots when ``landmarks`` is set (faces whose detector gives them)."""
    out = rgb.copy()
    thickness = max(2, round(max(out.shape[:2]) / 400))
    font_scale = max(0.5, max(out.shape[:2]) / 1200)
    boxes = [(x - thickness, y - thickness, w + 2 * thickness, h + 2 * thickness)
             for x, y, w, h in (f.box for f in prediction.faces)]
    taken: list[tuple[int, int, int, int]] = []
    for i, f in enumerate(prediction.faces):
        x, y, w, h = f.box
        color = face_colour(i)
        cv2.rectangle(out, (x, y), (x + w, y + h), color, thickness)
        for px, py in (f.landmarks or []) if landmarks else []:
            cv2.circle(out, (round(px), round(py)), max(2, w // 40), (255, 255, 255), -1, cv2.LINE_AA)
            cv2.circle(out, (round(px), round(py)), max(2, w // 40), color, max(1, thickness // 2), cv2.LINE_AA)
        text = f"{i + 1}: {f.label} {f.confidence:.0%}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        others = boxes[:i] + boxes[i + 1:] + taken
        lx, ly, lw, lh = _label_rect(f.box, (tw + 4, th + base + base // 2), out.shape, others)
        taken.append((lx, ly, lw, lh))
        cv2.rectangle(out, (lx, ly), (lx + lw, ly + lh), color, -1)
        ink = (0, 0, 0) if sum(c * k for c, k in zip(color, (0.299, 0.587, 0.114))) > 160 else (255, 255, 255)
        cv2.putText(out, text, (lx + 2, ly + th), cv2.FONT_HERSHEY_SIMPLEX, font_scale, ink, thickness, cv2.LINE_AA)
    return out


def _label_rect(box, size: tuple[int, int], shape: tuple, others: list) -> tuple[int, int, int, int]:
    """Where a label of ``size`` (w, h) goes for ``box``: just above it, just below it or inside its top, the first
    inside the image that overlaps none of ``others`` (x, y, w, h); inside the top when all of them do."""
    x, y, w, h = box
    lw, lh = size
    lx = max(0, min(x, shape[1] - lw - 1))
    candidates = [y - lh - 2, y + h + 2, y + 2]
    for ly in candidates:
        rect = (lx, ly, lw, lh)
        if ly >= 0 and ly + lh < shape[0] and not any(_overlap(rect, o) for o in others):
            return rect
    return lx, max(0, min(y + 2, shape[0] - lh - 1)), lw, lh


def _overlap(a, b) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


_PALETTE = [(230, 57, 70), (29, 53, 87), (42, 157, 143), (233, 196, 106), (69, 123, 157), (244, 162, 97)]
