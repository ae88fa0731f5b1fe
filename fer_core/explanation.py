"""Class-activation maps through the ``grad-cam`` package (pytorch-grad-cam).

The maps are computed on the last convolutional stage (``models.cam_target_layer``): 3x3 at 48 px
and 4x4 at 64 px input with output stride 16, so they show regions (eyes, mouth, brow), not edges.
An ensemble (:mod:`fer_core.ensemble`) gets one map per member, each on that member's last stage and explaining
the ensemble's output, and their mean (as grad-cam combines several layers).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from .checkpoint import FerClassifier, LogitSubset
from .ensemble import EnsembleNet
from .evaluation import check_tta, predict_split
from .imaging import display_square
from .models import cam_target_layer

CAM_METHODS = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "eigencam": EigenCAM,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
    "hirescam": HiResCAM,
}


@dataclass
class Explanation:
    heatmap: np.ndarray          # (S, S) float in [0, 1], at the face crop's display size
    overlay: np.ndarray          # (S, S, 3) uint8 RGB: the face with the heat map blended in
    target: str                  # the class the map explains
    predicted: str
    probabilities: dict[str, float]
    method: str
    member_heatmaps: list[np.ndarray] | None = None   # an ensemble's: one a member, in its order (heatmap: their mean)


def cam_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The layer(s) maps are computed on: the model's last stage, or each ensemble member's."""
    inner = model.model if isinstance(model, LogitSubset) else model
    if isinstance(inner, EnsembleNet):
        return [cam_target_layer(m) for m in inner.members]
    return [cam_target_layer(inner)]


def explain(classifier: FerClassifier, faces: np.ndarray | torch.Tensor, method: str = "gradcam",
            target: str | int | Sequence[str | int] | None = None, display_size: int = 192,
            tta: str = "none") -> list[Explanation]:
    """Maps for grey uint8 faces (N, H, W) or one face (H, W); ``target`` (a class name or index, or a list of
    them, one a face) None explains each face's predicted class. ``tta`` is the test-time views the prediction
    and probabilities average over (``predict_image``'s default is ``PHOTO_TTA``): with the same mode, the class
    explained is the one a photo's prediction gave. The map itself is of the face's single view."""
    if method not in CAM_METHODS:
        raise ValueError(f"unknown CAM method {method!r}; choose one of {', '.join(CAM_METHODS)}")
    check_tta(tta)
    faces = np.asarray(faces)
    if faces.ndim == 2:
        faces = faces[None]
    names = classifier.class_names
    probs = predict_split(classifier, torch.from_numpy(faces), tta)
    predicted = probs.argmax(1)
    if target is None:
        targets = [int(p) for p in predicted]
    elif isinstance(target, (str, int, np.integer)):
        targets = [_class_index(names, target)] * len(faces)
    elif len(target) == len(faces):
        targets = [_class_index(names, t) for t in target]
    else:
        raise ValueError(f"{len(target)} targets for {len(faces)} faces")
    per_layer = class_maps(classifier, faces, targets, method)
    maps = per_layer[0] if len(per_layer) == 1 else mean_map(per_layer)
    out = []
    for k, (face, m, t, p, pr) in enumerate(zip(faces, maps, targets, predicted, probs)):
        heat = np.clip(display_square(m.astype(np.float32), display_size), 0, 1)
        rgb = cv2.cvtColor(display_square(face, display_size), cv2.COLOR_GRAY2RGB).astype(np.float32) / 255
        overlay = show_cam_on_image(rgb, heat, use_rgb=True, image_weight=0.55)
        members = [np.clip(display_square(layer[k].astype(np.float32), display_size), 0, 1)
                   for layer in per_layer] if len(per_layer) > 1 else None
        out.append(Explanation(heat, overlay, names[t], names[p], dict(zip(names, map(float, pr))), method, members))
    return out


def _class_index(names, target: str | int) -> int:
    if isinstance(target, str):
        if target not in names:
            raise ValueError(f"target class {target!r} is not one of this model's classes ({', '.join(names)})")
        return names.index(target)
    if not 0 <= int(target) < len(names):
        raise ValueError(f"target index {target} out of range for {len(names)} classes")
    return int(target)


def class_maps(classifier: FerClassifier, faces: np.ndarray, targets: list[int], method: str) -> list[np.ndarray]:
    """(N, S, S) maps in [0, 1] of each layer of ``cam_layers``, each explaining the model's own output."""
    x = classifier.preprocess(faces).contiguous()
    out = []
    for layer in cam_layers(classifier.model):
        with CAM_METHODS[method](model=classifier.model, target_layers=[layer]) as cam:
            out.append(cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets]))
    return out


def mean_map(per_layer: list[np.ndarray]) -> np.ndarray:
    """The layers' maps averaged and stretched to [0, 1] again, face by face (grad-cam's multi-layer rule)."""
    mean = np.mean(per_layer, axis=0)
    lo = mean.min(axis=(1, 2), keepdims=True)
    span = mean.max(axis=(1, 2), keepdims=True) - lo
    return np.where(span > 1e-7, (mean - lo) / np.maximum(span, 1e-7), 0.0)


def explanation_figure(face: np.ndarray, explanation: Explanation) -> np.ndarray:
    """A side-by-side RGB image: the face, the overlay, and the probability bars."""
    size = explanation.overlay.shape[0]
    face_rgb = cv2.cvtColor(display_square(face, size), cv2.COLOR_GRAY2RGB)
    bars = np.full((size, 230, 3), 255, np.uint8)
    items = sorted(explanation.probabilities.items(), key=lambda kv: -kv[1])
    row = size // (len(items) + 1)
    cv2.putText(bars, f"{explanation.method} -> {explanation.target}", (6, row - 6), cv2.FONT_HERSHEY_SIMPLEX,
                0.42, (0, 0, 0), 1, cv2.LINE_AA)
    for i, (name, p) in enumerate(items, start=1):
        y = row * i + 4
        cv2.rectangle(bars, (80, y), (80 + int(140 * p), y + row - 8), (66, 133, 244), -1)
        cv2.putText(bars, f"{name}", (6, y + row - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(bars, f"{p:.2f}", (84, y + row - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([face_rgb, explanation.overlay, bars], axis=1)
