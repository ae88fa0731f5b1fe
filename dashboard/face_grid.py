"""The Grad-CAM page's grid without Streamlit: which faces it shows in what order, the overlay at a chosen opacity,
and the coloured border that says right or wrong."""
from __future__ import annotations

import cv2
import numpy as np

from dashboard.faces import heatmap_rgb
from fer_core.imaging import display_square

# the default first: the mistakes a model is surest of are what a reader learns most from
ORDERS = ("most confident mistakes first", "shuffled across classes", "most confident first", "least confident first",
          "data set order")
BORDER = {True: (42, 157, 143), False: (208, 140, 96)}   # right: teal, wrong: muted amber (charts' colours)
BORDER_PX = 4


def order_faces(idx: np.ndarray, labels: np.ndarray, probs: np.ndarray, order: str, seed: int = 0) -> np.ndarray:
    """``idx`` (faces that pass the filters) in ``order``: mistakes by confidence then the right answers by
    confidence; a seeded shuffle that takes one face of each true class in turn; by confidence; or as is."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, not {order!r}")
    idx = np.asarray(idx)
    if not len(idx) or order == "data set order":
        return idx
    conf = probs[idx].max(1)
    if order == "most confident mistakes first":
        wrong = probs[idx].argmax(1) != labels[idx]
        return idx[np.lexsort((-conf, ~wrong))]   # wrong before right, each most confident first
    if order == "shuffled across classes":
        rng = np.random.default_rng(seed)
        by_class = [rng.permutation(idx[labels[idx] == c]) for c in np.unique(labels[idx])]
        turns = [(k, c) for c, faces in enumerate(by_class) for k in range(len(faces))]   # k-th face of class c
        return np.array([by_class[c][k] for k, c in sorted(turns)])
    return idx[np.argsort(-conf if order == "most confident first" else conf, kind="stable")]


def overlay(face: np.ndarray, heatmap: np.ndarray, opacity: float, size: int) -> np.ndarray:
    """The heat map over the face at ``opacity`` (0: the face, 1: the map), RGB at ``size`` px."""
    grey = cv2.cvtColor(display_square(face, size), cv2.COLOR_GRAY2RGB)
    heat = cv2.resize(heatmap_rgb(heatmap), (size, size), interpolation=cv2.INTER_LINEAR)
    return cv2.addWeighted(heat, float(opacity), grey, 1.0 - float(opacity), 0)


def bordered(rgb: np.ndarray, right: bool) -> np.ndarray:
    """The tile with a border in the colour of a right or a wrong answer."""
    return cv2.copyMakeBorder(rgb, BORDER_PX, BORDER_PX, BORDER_PX, BORDER_PX, cv2.BORDER_CONSTANT,
                              value=BORDER[bool(right)])
