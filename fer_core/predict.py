"""Prediction on photos: safe image loading, OpenCV face detection, a crop a face, classification.

Any photo is accepted: any size up to ``MAX_PIXELS``; RGB, RGBA, palette, CMYK, grey or 16-bit;
EXIF orientation honoured. Bad files raise ``ImageError`` with a message fit for a user.
"""
from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .checkpoint import FerClassifier
from .data import IMAGE_SUFFIXES

MAX_PIXELS = 40_000_000        # larger images are refused (decompression bombs)
DETECT_MAX_SIDE = 1024         # faces are detected on a copy no larger than this
FACE_MARGIN = 0.15             # extra context around a detected box, as in FER-2013's crops


class ImageError(ValueError):
    """An upload or file that is not a usable image."""


@dataclass
class FacePrediction:
    box: list[int]                       # x, y, w, h in the oriented image
    label: str
    confidence: float
    probabilities: dict[str, float]


@dataclass
class ImagePrediction:
    path: str
    width: int
    height: int
    faces: list[FacePrediction] = field(default_factory=list)
    detected: bool = True                # False: the whole image was classified as one face
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def load_image(source: str | Path | bytes | io.IOBase, name: str | None = None) -> np.ndarray:
    """An RGB uint8 array (H, W, 3) from a path, bytes or file object, upright per its EXIF."""
    label = name or (str(source) if isinstance(source, (str, Path)) else "upload")
    data = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        with Image.open(data) as im:
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise ImageError(f"{label}: image is too large ({w}x{h} px; at most {MAX_PIXELS / 1e6:.0f} "
                                 "megapixels)")
            im = ImageOps.exif_transpose(im)
            return _to_rgb(im)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{label}: file not found") from None
    except (UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise ImageError(f"{label}: not a readable image ({type(e).__name__})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{label}: the image is damaged or truncated ({e})") from None


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


_detector = None


def _face_detector() -> cv2.CascadeClassifier:
    global _detector
    if _detector is None:
        path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        _detector = cv2.CascadeClassifier(str(path))
        if _detector.empty():
            raise RuntimeError(f"OpenCV face detector not found at {path}")
    return _detector


def detect_faces(rgb: np.ndarray, min_face_fraction: float = 0.06) -> list[list[int]]:
    """Face boxes ``[x, y, w, h]`` (largest first) found by OpenCV's frontal-face Haar cascade."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if rgb.ndim == 3 else rgb
    h, w = gray.shape
    scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
    small = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_AREA) if scale < 1 else gray
    small = cv2.equalizeHist(small)
    min_side = max(20, int(min(small.shape) * min_face_fraction))
    found = _face_detector().detectMultiScale(small, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
    boxes = [[round(v / scale) for v in box] for box in (found.tolist() if len(found) else [])]
    return sorted(boxes, key=lambda b: -b[2] * b[3])


def crop_face(gray: np.ndarray, box: list[int], margin: float = FACE_MARGIN) -> np.ndarray:
    """A square crop centred on ``box``, ``margin`` larger each side; edges replicated outside."""
    x, y, w, h = box
    side = int(round(max(w, h) * (1 + 2 * margin)))
    cx, cy = x + w / 2, y + h / 2
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    pad = max(0, -x0, -y0, x0 + side - gray.shape[1], y0 + side - gray.shape[0])
    if pad:
        gray = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, y0 = x0 + pad, y0 + pad
    return gray[y0:y0 + side, x0:x0 + side]


def whole_image_face(gray: np.ndarray) -> np.ndarray:
    """The centred square of an image that is already an aligned face crop."""
    h, w = gray.shape
    s = min(h, w)
    return gray[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]


def face_crops(rgb: np.ndarray, detect: bool = True) -> tuple[list[list[int]], list[np.ndarray]]:
    """Boxes and grey crops of the faces in ``rgb`` (the whole image when ``detect`` is False)."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if not detect:
        h, w = gray.shape
        s = min(h, w)
        return [[(w - s) // 2, (h - s) // 2, s, s]], [whole_image_face(gray)]
    boxes = detect_faces(rgb)
    return boxes, [crop_face(gray, b) for b in boxes]


def predict_image(classifier: FerClassifier, rgb: np.ndarray, detect: bool = True, path: str = "") -> ImagePrediction:
    """Classify every face found in an RGB image."""
    boxes, crops = face_crops(rgb, detect)
    result = ImagePrediction(path, rgb.shape[1], rgb.shape[0], detected=detect)
    if crops:
        size = classifier.img_size
        batch = np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA if c.shape[0] > size
                                     else cv2.INTER_LINEAR) for c in crops])
        probs = classifier.predict_proba(batch)
        for box, p in zip(boxes, probs):
            k = int(p.argmax())
            result.faces.append(FacePrediction([int(v) for v in box], classifier.class_names[k], float(p[k]),
                                               {c: round(float(v), 5) for c, v in zip(classifier.class_names, p)}))
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


def predict_paths(classifier: FerClassifier, paths: list[str | Path], detect: bool = True,
                  progress: bool = False) -> list[ImagePrediction]:
    """One record an image; an unreadable file gives a record with ``error`` and the rest go on."""
    files = expand_image_paths(paths)
    if progress and len(files) > 1:
        from tqdm import tqdm

        files = tqdm(files, desc="predicting", leave=False)
    results = []
    for f in files:
        try:
            results.append(predict_image(classifier, load_image(f), detect, str(f)))
        except ImageError as e:
            results.append(ImagePrediction(str(f), 0, 0, detected=detect, error=str(e)))
    return results


def predictions_table(results: list[ImagePrediction], class_names) -> list[dict]:
    """Flat rows (one a face; one for an image without faces) for CSV and data frames."""
    rows = []
    for r in results:
        base = {"path": r.path, "error": r.error or ("" if r.faces else "no face found")}
        if not r.faces:
            rows.append({**base, "face": "", "x": "", "y": "", "w": "", "h": "", "label": "", "confidence": "",
                         **{f"p_{c}": "" for c in class_names}})
        for i, f in enumerate(r.faces):
            rows.append({**base, "face": i, "x": f.box[0], "y": f.box[1], "w": f.box[2], "h": f.box[3],
                         "label": f.label, "confidence": round(f.confidence, 5),
                         **{f"p_{c}": f.probabilities[c] for c in class_names}})
    return rows


def write_csv(rows: list[dict], path: str | Path | io.TextIOBase) -> None:
    if not rows:
        return
    f = open(path, "w", newline="") if isinstance(path, (str, Path)) else path
    try:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    finally:
        if isinstance(path, (str, Path)):
            f.close()


def annotate(rgb: np.ndarray, prediction: ImagePrediction) -> np.ndarray:
    """A copy of the image with a box and 'label p' drawn for every face."""
    out = rgb.copy()
    thickness = max(2, round(max(out.shape[:2]) / 400))
    font_scale = max(0.5, max(out.shape[:2]) / 1200)
    for i, f in enumerate(prediction.faces):
        x, y, w, h = f.box
        color = _PALETTE[i % len(_PALETTE)]
        cv2.rectangle(out, (x, y), (x + w, y + h), color, thickness)
        text = f"{f.label} {f.confidence:.0%}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        ty = y - 4 if y - th - base - 4 > 0 else y + h + th + base + 4
        cv2.rectangle(out, (x, ty - th - base), (x + tw + 4, ty + base // 2), color, -1)
        cv2.putText(out, text, (x + 2, ty - base // 2), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255),
                    thickness, cv2.LINE_AA)
    return out


_PALETTE = [(230, 57, 70), (29, 53, 87), (42, 157, 143), (233, 196, 106), (69, 123, 157), (244, 162, 97)]
