"""Image geometry: how a photo or a data-set image becomes the square grey face a model reads.

This module owns every crop and resize on that path, so that a face looks the same to the model
whether it came from a data set, ``predict``, ``explain`` or a dashboard page:

* ``to_grey``: RGB to one channel (grey images pass through);
* ``centre_square_box`` / ``centre_square``: the centred square of an image (an aligned face crop);
* ``crop_face``: a detected box made square, ``FACE_MARGIN`` larger each side, edges replicated;
* ``resize_square`` / ``resize_squares``: faces at the model's ``size`` x ``size``;
* ``fit_within``: a copy no larger than a side, for detection and previews;
* ``display_square``: a small face enlarged smoothly for showing;
* ``similarity_to_template`` / ``align_face``: a face with landmarks turned upright and framed as
  FER-2013's faces are (``FER_TEMPLATE``), edges replicated where it leaves the image;
* ``detected_face_crop``: the one rule for a detected face: aligned when it has landmarks, else
  ``crop_face``.

Only numpy and OpenCV: no PyTorch, so data loading and the dashboard pay nothing for it.
"""
from __future__ import annotations

import cv2
import numpy as np

FACE_MARGIN = 0.15   # extra context around a detected box, as in FER-2013's crops
# Where FER-2013's faces have their right eye, left eye, nose tip, right and left mouth corner, as fractions
# of the crop (x right, y down): YuNet's landmarks on 3,240 training faces (every 8th, upscaled 4x, score
# >= 0.8), averaged and made left-right symmetric. Regenerate with scripts/face_template.py; how it was made
# and the spread: docs/REAL_PHOTOS.md.
MEASURED_TEMPLATE = ((0.3182, 0.3745), (0.6818, 0.3745), (0.5000, 0.5808), (0.3558, 0.7468), (0.6442, 0.7468))
# The aligned crops are framed on the measured template spread by this factor about its centre (the face fills
# more of the crop): chosen on PublicTest with `python bench/real_photos.py rotation --split PublicTest
# --template-scale S`; docs/REAL_PHOTOS.md has the figures.
TEMPLATE_SCALE = 1.0


def scaled_template(template, scale: float) -> tuple[tuple[float, float], ...]:
    """``template``'s points moved away from (``scale`` > 1) or towards their centre by ``scale``."""
    points = np.asarray(template, np.float64)
    centre = points.mean(0)
    return tuple((round(float(x), 4), round(float(y), 4)) for x, y in centre + (points - centre) * scale)


FER_TEMPLATE = scaled_template(MEASURED_TEMPLATE, TEMPLATE_SCALE)
ALIGNED_SIDE_LIMITS = (16, 1024)   # an aligned crop keeps the face's own resolution, within these bounds


def to_grey(img: np.ndarray) -> np.ndarray:
    """One channel: an RGB (H, W, 3) image converted, a grey (H, W) one as it is."""
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img


def centre_square_box(shape: tuple[int, ...]) -> list[int]:
    """``[x, y, side, side]`` of the centred square of an image of ``shape`` (H, W, ...)."""
    h, w = shape[:2]
    s = min(h, w)
    return [(w - s) // 2, (h - s) // 2, s, s]


def centre_square(img: np.ndarray) -> np.ndarray:
    """The centred square of ``img`` (a view): what an aligned face crop of another aspect keeps."""
    x, y, s, _ = centre_square_box(img.shape)
    return img[y:y + s, x:x + s]


def crop_face(gray: np.ndarray, box: list[int], margin: float = FACE_MARGIN) -> np.ndarray:
    """A square crop centred on ``box`` (x, y, w, h), ``margin`` larger each side; edges replicated outside
    the image, so a face at the border keeps its place in the crop."""
    x, y, w, h = box
    side = int(round(max(w, h) * (1 + 2 * margin)))
    cx, cy = x + w / 2, y + h / 2
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    pad = max(0, -x0, -y0, x0 + side - gray.shape[1], y0 + side - gray.shape[0])
    if pad:
        gray = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, y0 = x0 + pad, y0 + pad
    return gray[y0:y0 + side, x0:x0 + side]


def resize_square(img: np.ndarray, size: int) -> np.ndarray:
    """``img``'s centred square at ``size`` x ``size`` (faces keep their aspect). INTER_AREA when shrinking
    (it averages, no aliasing), INTER_LINEAR when enlarging (INTER_AREA would then be blocky)."""
    img = centre_square(img)
    if img.shape[0] == size:
        return img
    interpolation = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(img, (size, size), interpolation=interpolation)


def resize_squares(crops: list[np.ndarray], size: int) -> np.ndarray:
    """``resize_square`` of each crop, stacked: (N, size, size), also for no crops."""
    if not crops:
        return np.zeros((0, size, size), np.uint8)
    return np.stack([resize_square(c, size) for c in crops])


def fit_within(img: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """``img`` shrunk (aspect kept, at least 1 px a side) so that neither side exceeds ``max_side``, and the
    scale applied (1.0: ``img`` itself, never enlarged)."""
    h, w = img.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale == 1.0:
        return img, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA), scale


def display_square(img: np.ndarray, size: int) -> np.ndarray:
    """A (small) square face at ``size`` px for showing: INTER_CUBIC, smooth rather than blocky. Not for the
    model's input (see ``resize_square``)."""
    if img.shape[:2] == (size, size):
        return img
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_CUBIC)


def similarity_to_template(points, template=FER_TEMPLATE) -> np.ndarray:
    """The 2x3 similarity (rotation, uniform scale, shift) that maps ``points`` (N, 2) onto ``template``
    (N, 2) with the least squared error (Umeyama's closed form, without reflection)."""
    src, dst = np.asarray(points, np.float64), np.asarray(template, np.float64)
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    a, b = src - src_mean, dst - dst_mean
    # as complex numbers a similarity is one multiplication: dst = z * src; least squares gives z directly
    za, zb = a[:, 0] + 1j * a[:, 1], b[:, 0] + 1j * b[:, 1]
    z = np.vdot(za, zb) / max(np.vdot(za, za).real, 1e-12)
    rot = np.array([[z.real, -z.imag], [z.imag, z.real]])
    return np.hstack([rot, (dst_mean - rot @ src_mean)[:, None]])


def transform_angle(matrix: np.ndarray) -> float:
    """The rotation of a 2x3 similarity in degrees (image coordinates, y down: positive turns clockwise on
    screen): how far a face was turned to come out upright."""
    return float(np.degrees(np.arctan2(matrix[1, 0], matrix[0, 0])))


def align_face(gray: np.ndarray, landmarks, template=None) -> np.ndarray:
    """The face whose five ``landmarks`` (image px) are given, upright and framed as FER-2013's faces: a square
    whose side is the face's own size in the image (the model's resize then shrinks it with INTER_AREA);
    edges replicated where the square leaves the image, as ``crop_face`` does."""
    unit = similarity_to_template(landmarks, FER_TEMPLATE if template is None else template)
    scale = float(np.hypot(unit[0, 0], unit[1, 0]))     # crop widths per image pixel
    lo, hi = ALIGNED_SIDE_LIMITS
    side = int(np.clip(round(1 / max(scale, 1e-9)), lo, hi))
    return cv2.warpAffine(gray, unit * side, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def detected_face_crop(gray: np.ndarray, box: list[int], landmarks=None) -> np.ndarray:
    """The crop of a detected face: aligned onto ``FER_TEMPLATE`` when it has landmarks, else the square
    around its box (``crop_face``)."""
    return align_face(gray, landmarks) if landmarks is not None else crop_face(gray, box)
