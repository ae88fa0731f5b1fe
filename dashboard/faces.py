"""Face views shared by the Predict and Grad-CAM pages: reading uploads, face crops at the model's
input size, probability bars, Grad-CAM display images, and choosing faces of a split.

Plain functions (no Streamlit), so they are tested directly; the pages add caching and layout.
"""
from __future__ import annotations

import io
import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from PIL import Image

from fer_core.checkpoint import FerClassifier
from fer_core.explanation import Explanation, explain
from fer_core.imaging import centre_square, detected_face_crop, display_square, fit_within, resize_squares, to_grey
from fer_core.predict import (ImageError, ImagePrediction, annotate, face_colour, load_image, model_faces,
                              predict_image, predictions_table, write_csv)

UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp"]
PRIMARY = "#2a6fdb"      # .streamlit/config.toml's primaryColor
MUTED = "#b8c2d3"
OUTCOMES = ("all", "right", "wrong")
ORDERS = ("data set order", "most confident first", "least confident first")
PREVIEW_SIDE = 1280      # annotated images are shown at most this large (the download is full size)

# CAM methods hook into the (shared, cached) model: one map computation at a time.
_CAM_LOCK = threading.Lock()


# --- uploads and faces --------------------------------------------------------------------

def decode_image(data: bytes, name: str = "upload") -> np.ndarray:
    """An RGB uint8 image from a file's bytes; ``ImageError`` (naming the file) for an empty, non-image,
    damaged or too large file (``fer_core.predict.MAX_PIXELS``)."""
    if not data:
        raise ImageError(name, "the file is empty")
    return load_image(bytes(data), name=name)


def read_upload(upload) -> np.ndarray:
    """``decode_image`` for a Streamlit upload (anything with ``name`` and ``getvalue()``)."""
    return decode_image(upload.getvalue(), getattr(upload, "name", None) or "upload")


def prediction_faces(rgb: np.ndarray, prediction: ImagePrediction, size: int) -> np.ndarray:
    """The grey crops (N, size, size) the faces of ``prediction`` were classified from, in its order: from its
    landmarks (aligned) or boxes, without detecting again."""
    gray = to_grey(rgb)
    crops = [detected_face_crop(gray, f.box, f.landmarks) if prediction.detected else centre_square(gray)
             for f in prediction.faces]
    return resize_squares(crops, size)


def main_face(rgb: np.ndarray, size: int, **detection) -> tuple[np.ndarray, bool]:
    """The largest detected face of an image at ``size`` px (aligned when the detector gives landmarks), or its
    centred square when none is found (then the second value is False). ``detection``: ``detector``,
    ``face_model``, ``min_face``, ``min_score`` as ``fer_core.predict.face_crops`` takes them."""
    _, found = model_faces(rgb, size, detect=True, **detection)
    if len(found):
        return found[0], True
    return model_faces(rgb, size, detect=False)[1][0], False


@dataclass
class ImageAnalysis:
    """What the Predict page shows for one image."""

    prediction: ImagePrediction
    annotated_png: bytes     # full size, for the download
    preview: np.ndarray      # the annotated image, at most PREVIEW_SIDE px a side
    faces: np.ndarray        # (N, S, S) grey crops at the model's input size, in the prediction's order


def analyse_image(classifier: FerClassifier, rgb: np.ndarray, detect: bool = True, name: str = "",
                  landmarks: bool = False, **detection) -> ImageAnalysis:
    """Detect (or, with ``detect`` False, take the whole image as one face), classify, annotate (with the
    landmarks drawn when ``landmarks`` is set). ``detection`` as ``main_face`` takes it."""
    prediction = predict_image(classifier, rgb, detect=detect, path=name, **detection)
    annotated = annotate(rgb, prediction, landmarks=landmarks)
    preview, _ = fit_within(annotated, PREVIEW_SIDE)
    return ImageAnalysis(prediction, png_bytes(annotated), preview,
                         prediction_faces(rgb, prediction, classifier.img_size))


def detector_caption(prediction: ImagePrediction) -> str:
    """Which detector found the faces, in words, for the caption under a photo."""
    if not prediction.detected:
        return "No face detection: the centred square of the image is the face."
    if prediction.detector == "yunet":
        return "Faces found by YuNet, each turned upright and framed as FER-2013's faces from its landmarks."
    return "Faces found by OpenCV's Haar cascade (frontal faces; cropped around the box, not aligned)."


def fallback_message(prediction: ImagePrediction) -> str:
    """The warning when YuNet was asked for and the Haar cascade ran: why, and the one line that fixes it."""
    why, _, fix = prediction.detector_note.partition("; using the Haar cascade; ")
    return (f"{why}, so the Haar cascade ran (it misses tilted and turned faces). {fix[:1].upper()}{fix[1:]} "
            "(then reload the page).")


def no_face_hint(prediction: ImagePrediction) -> str:
    """What a photo without faces needs, for the detector that ran."""
    if prediction.detector == "yunet":
        return "Try a lower detection confidence; faces need to show both eyes and be at least about 10 px."
    return "Faces need to be roughly frontal and at least about 6% of the image's shorter side."


def display_face(face: np.ndarray, size: int = 192) -> np.ndarray:
    """A model-size grey face enlarged for showing beside its Grad-CAM (the maps' display size)."""
    return display_square(face, size)


def explain_faces(classifier: FerClassifier, faces: np.ndarray, method: str,
                  target: str | list[str] | None = None) -> list[Explanation]:
    """``fer_core.explanation.explain`` (``target``: one class, or one a face), one call at a time (its hooks
    sit on the shared model)."""
    if len(faces) == 0:
        return []
    with _CAM_LOCK:
        return explain(classifier, faces, method=method, target=target)


def face_label(face, index: int | None = None) -> str:
    """'Face 2: happy (87%)' for a ``FacePrediction``."""
    prefix = f"Face {index + 1}: " if index is not None else ""
    return f"{prefix}{face.label} ({face.confidence:.0%})"


# --- downloads ----------------------------------------------------------------------------

def png_bytes(rgb: np.ndarray) -> bytes:
    """An RGB (or grey) uint8 array as PNG file contents."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, "PNG")
    return buf.getvalue()


def predictions_csv(results: list[ImagePrediction], class_names) -> str:
    """One CSV row a face (and one for an image without faces or with an error), as the CLI writes it."""
    rows = predictions_table(results, class_names)
    if not rows:
        return ""
    buf = io.StringIO()
    write_csv(rows, buf)
    return buf.getvalue()


def predictions_frame(results: list[ImagePrediction], class_names) -> pd.DataFrame:
    """The CSV's rows as a table for the page: faces numbered from 1 as on the image and the face cards,
    plain headers ('photo', 'face', 'label', 'confidence', one column a class), shares as fractions
    (the page shows them as percentages) and numbers blank where an image has no face."""
    frame = pd.DataFrame(predictions_table(results, class_names))
    if frame.empty:
        return frame
    for column in frame.columns:
        if column not in ("path", "error", "label", "detector"):
            frame[column] = pd.to_numeric(frame[column].replace("", None), errors="coerce")
    frame["face"] = (frame["face"] + 1).astype("Int64")
    frame[["x", "y", "w", "h"]] = frame[["x", "y", "w", "h"]].astype("Int64")
    frame = frame.rename(columns={"path": "photo", **{f"p_{c}": c for c in class_names}})
    order = ["photo", "face", "label", "confidence", *class_names, "score", "x", "y", "w", "h", "detector", "error"]
    return frame[order]


def colour_hex(index: int) -> str:
    """Face ``index``'s (0-based) colour on the annotated image, as '#rrggbb'."""
    return "#{:02x}{:02x}{:02x}".format(*face_colour(index))


def face_heading(face, index: int) -> str:
    """A face card's heading (markdown with HTML): a square in the face's colour, then 'Face N: label (p%)'."""
    return (f'<span style="color:{colour_hex(index)}; font-size:1.3em">&#9632;</span> '
            f"**{face_label(face, index)}**")


# --- example photos -----------------------------------------------------------------------

# Scenes composed at run time from FER-2013 test faces (nothing derived from the data set is stored):
# name -> the faces (class folder, file) pasted in a row or a grid on a plain background.
EXAMPLES = {
    "One face": [("happy", "PrivateTest_10077120.jpg")],
    "Two faces side by side": [("happy", "PrivateTest_10470092.jpg"), ("surprise", "PrivateTest_10089743.jpg")],
    "A group of four": [("neutral", "PrivateTest_10086748.jpg"), ("sad", "PrivateTest_10455506.jpg"),
                        ("angry", "PrivateTest_1054527.jpg"), ("fear", "PrivateTest_10254684.jpg")],
}
EXAMPLE_FACE = 160       # px a side each face is pasted at


@dataclass
class ExamplePhoto:
    """An example photo, with what the page reads of an upload: ``name``, ``file_id`` and ``getvalue()``."""

    name: str
    data: bytes

    @property
    def file_id(self) -> str:
        return "example-" + hashlib.sha1(self.data).hexdigest()[:12]

    def getvalue(self) -> bytes:
        return self.data


def example_names(root: str | Path | None) -> list[str]:
    """The examples that can be made from the FER-2013 folder ``root`` (its ``test/<class>/`` images)."""
    if root is None or not Path(root).is_dir():
        return []
    test = Path(root) / "test"
    return [name for name, files in EXAMPLES.items() if all((test / c / f).is_file() for c, f in files)]


def example_photo(root: str | Path, name: str) -> ExamplePhoto:
    """Example ``name`` as a PNG: its faces, enlarged to ``EXAMPLE_FACE`` px, in a row (up to 3) or a grid,
    with a margin around each, on a light grey background."""
    files = EXAMPLES[name]
    side, gap = EXAMPLE_FACE, EXAMPLE_FACE // 2
    cols = len(files) if len(files) <= 3 else 2
    rows = -(-len(files) // cols)
    canvas = np.full((rows * (side + gap) + gap, cols * (side + gap) + 2 * gap), 205, np.uint8)
    for k, (cls, file) in enumerate(files):
        face = cv2.imread(str(Path(root) / "test" / cls / file), cv2.IMREAD_GRAYSCALE)
        y, x = gap + (k // cols) * (side + gap), 3 * gap // 2 + (k % cols) * (side + gap)
        canvas[y:y + side, x:x + side] = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
    slug = name.lower().replace(" ", "_")
    return ExamplePhoto(f"example_{slug}.png", png_bytes(canvas))


# --- charts and Grad-CAM images -----------------------------------------------------------

def probability_figure(probabilities: dict[str, float], highlight: str | None = None,
                       title: str | None = None) -> go.Figure:
    """Horizontal bars, one a class in the model's order (top to bottom); ``highlight`` (the predicted
    class, by default the most probable) in the primary colour."""
    names = list(probabilities)
    values = [float(probabilities[c]) for c in names]
    if highlight is None and names:
        highlight = names[int(np.argmax(values))]
    fig = go.Figure(go.Bar(
        x=values, y=names, orientation="h",
        marker_color=[PRIMARY if c == highlight else MUTED for c in names],
        text=[f"{v:.0%}" for v in values], textposition="outside", cliponaxis=False,
        hovertemplate="%{y}: %{x:.1%}<extra></extra>"))
    fig.update_layout(
        title=title, height=60 + 24 * len(names) + (24 if title else 0),
        margin=dict(l=10, r=40, t=30 if title else 10, b=10), showlegend=False,
        xaxis=dict(range=[0, 1.0], tickformat=".0%", title=None, fixedrange=True),
        yaxis=dict(autorange="reversed", title=None, fixedrange=True))
    return fig


def heatmap_rgb(heatmap: np.ndarray) -> np.ndarray:
    """A heat map in [0, 1] as an RGB uint8 image in the jet colours the overlays use."""
    heat = np.uint8(np.clip(heatmap, 0, 1) * 255)
    return cv2.cvtColor(cv2.applyColorMap(heat, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def explanation_images(face: np.ndarray, explanation: Explanation) -> dict[str, np.ndarray]:
    """RGB images at the explanation's display size: ``face`` (the grey crop), ``overlay`` and ``heatmap``."""
    grey = display_square(face, explanation.overlay.shape[0])
    return {"face": cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB), "overlay": explanation.overlay,
            "heatmap": heatmap_rgb(explanation.heatmap)}


def explanation_caption(explanation: Explanation) -> str:
    """What a map shows: 'gradcam for happy (predicted happy, 87%)'."""
    p = explanation.probabilities[explanation.predicted]
    return f"{explanation.method} for {explanation.target} (predicted {explanation.predicted}, {p:.0%})"


# --- faces of a split ---------------------------------------------------------------------

def select_faces(labels: np.ndarray, probs: np.ndarray, true_class: int | None = None,
                 predicted_class: int | None = None, outcome: str = "all", order: str = ORDERS[0],
                 limit: int | None = 24) -> tuple[np.ndarray, int]:
    """Indices of the faces that pass the filters, ordered and cut to ``limit``, and how many passed.

    ``true_class``/``predicted_class`` None mean any; ``outcome`` is 'all', 'right' or 'wrong';
    ``order`` is one of ``ORDERS`` (confidence is the probability of the predicted class)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}, not {outcome!r}")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, not {order!r}")
    labels = np.asarray(labels)
    probs = np.asarray(probs)
    predicted = probs.argmax(1) if len(probs) else np.zeros(0, int)
    keep = np.ones(len(labels), bool)
    if true_class is not None:
        keep &= labels == true_class
    if predicted_class is not None:
        keep &= predicted == predicted_class
    if outcome == "right":
        keep &= predicted == labels
    elif outcome == "wrong":
        keep &= predicted != labels
    idx = np.flatnonzero(keep)
    if order != ORDERS[0] and len(idx):
        conf = probs[idx].max(1)
        idx = idx[np.argsort(-conf if order == ORDERS[1] else conf, kind="stable")]
    return (idx if limit is None else idx[:limit]), int(keep.sum())
