"""Evaluation reports: plain JSON-able data, as scikit-learn's ``output_dict`` reports are.

A report holds accuracy; macro and weighted precision/recall/F1; per-class precision, recall, F1,
support, mean confidence of right and wrong answers, and calibration; the confusion matrix; and
one record an image (id, true, predicted, probabilities). A calibrated model's report (:mod:`fer_core.calibration`)
holds its calibrated probabilities and measures, the map applied (``calibration``) and the raw answers' measures
(``uncalibrated``: ECE, NLL, accuracy, mean confidence, reliability bins).

A class with no image in the evaluated split has no recall or F1 (``None``, support 0): it is named in
``absent_classes`` and left out of the macro average, which a 0 in its place would pull down. A report
holds no NaN (undefined figures are ``None``), so it is standard JSON.
"""
from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F

from .calibration import reliability as calibration   # ECE and reliability bins: owned by fer_core.calibration
from .calibration import nll, summary
from .checkpoint import FerClassifier
from .config import TTA_MODES
from .data import FerSplit
from .metrics import averaged


def check_tta(mode: str) -> None:
    """Refuse an unknown test-time augmentation mode with the list of known ones."""
    if mode not in TTA_MODES:
        raise ValueError(f"unknown TTA mode {mode!r}; choose one of {', '.join(TTA_MODES)}")


def tta_views(x: torch.Tensor, mode: str, shift: int = 2) -> list[torch.Tensor]:
    """Views of a normalised batch (N, 1, S, S): itself, its mirror, and (``flip+crops``) the four
    ``shift``-pixel shifted crops of each, with borders filled by reflection."""
    check_tta(mode)
    views = [x] if mode == "none" else [x, x.flip(-1)]
    if mode == "flip+crops":
        size = x.shape[-1]
        padded = F.pad(x, (shift, shift, shift, shift), mode="reflect")
        for dy, dx in ((0, 0), (0, 2 * shift), (2 * shift, 0), (2 * shift, 2 * shift)):
            crop = padded[..., dy:dy + size, dx:dx + size]
            views += [crop, crop.flip(-1)]
    return [v.contiguous(memory_format=torch.channels_last) for v in views]


@torch.no_grad()
def predict_split(classifier: FerClassifier, images: torch.Tensor, tta: str = "none", batch_size: int = 256,
                  progress: bool = False, calibrated: bool = True) -> np.ndarray:
    """Class probabilities (N, C) for uint8 faces (N, H, W), averaged over the TTA views, then through the
    classifier's calibration for that TTA mode (unless ``calibrated`` is False)."""
    out = []
    starts = range(0, len(images), batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="evaluating", leave=False)
    for i in starts:
        x = classifier.preprocess(images[i:i + batch_size])
        probs = [torch.softmax(classifier.logits(v), 1) for v in tta_views(x, tta)]
        out.append(torch.stack(probs).mean(0).cpu())
    probs = torch.cat(out).numpy() if out else np.zeros((0, len(classifier.class_names)), np.float32)
    return classifier.calibrated(probs, tta) if calibrated else probs


def build_report(y_true: np.ndarray, probs: np.ndarray, class_names, ids: list[str] | None = None,
                 n_bins: int = 15) -> dict:
    """A report from true labels (class indices) and predicted probabilities (images, classes)."""
    from sklearn.metrics import confusion_matrix  # a second of import: only here

    y_true, probs = _checked_inputs(y_true, probs, len(class_names))
    y_pred = probs.argmax(1)
    conf = probs.max(1)
    correct = y_pred == y_true
    labels = list(range(len(class_names)))
    per_class = _per_class(y_true, y_pred, conf, correct, class_names, n_bins)
    present = [c for c in labels if per_class[class_names[c]]["support"]]
    cal = calibration(conf, correct, n_bins)
    return {
        "num_images": int(len(y_true)),
        "class_names": list(class_names),
        "accuracy": float(correct.mean()),
        "macro": averaged(y_true, y_pred, present, "macro"),
        "weighted": averaged(y_true, y_pred, present, "weighted"),
        "absent_classes": [class_names[c] for c in labels if c not in present],
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "ece": cal["ece"],
        "reliability": cal["bins"],
        "mean_confidence": _mean(conf),
        "nll": nll(probs, y_true),
        "predictions": [
            {"id": ids[i] if ids else str(i), "true": class_names[y_true[i]], "predicted": class_names[y_pred[i]],
             "probabilities": [round(float(p), 5) for p in probs[i]]}
            for i in range(len(y_true))
        ],
    }


def _checked_inputs(y_true, probs, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities as arrays, refusing what would put NaN or nonsense in a report."""
    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    if not len(y_true):
        raise ValueError("a report needs at least one image")
    if probs.shape != (len(y_true), num_classes):
        raise ValueError(f"probabilities must be one row of {num_classes} a label ({len(y_true)} labels), "
                         f"not of shape {probs.shape}")
    finite = np.isfinite(probs).all(1)
    if not finite.all():
        raise ValueError(f"{int((~finite).sum())} of {len(probs)} images have NaN or infinite probabilities")
    if y_true.dtype.kind not in "iu" or y_true.min() < 0 or y_true.max() >= num_classes:
        raise ValueError(f"true labels must be class indices from 0 to {num_classes - 1}")
    return y_true, probs


def _per_class(y_true, y_pred, conf, correct, class_names, n_bins: int) -> dict[str, dict]:
    from sklearn.metrics import precision_recall_fscore_support

    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=list(range(len(class_names))), zero_division=0)
    per_class = {}
    for c, name in enumerate(class_names):
        true_c, pred_c = y_true == c, y_pred == c
        absent = not support[c]   # no image of the class: its recall and F1 are undefined, not 0
        per_class[name] = {
            "precision": None if absent and not pred_c.any() else float(precision[c]),
            "recall": None if absent else float(recall[c]), "f1": None if absent else float(f1[c]),
            "support": int(support[c]), "predicted": int(pred_c.sum()),
            "mean_confidence_correct": _mean(conf[true_c & correct]),
            "mean_confidence_wrong": _mean(conf[true_c & ~correct]),
            # calibration of the answers the model gave for this class
            **{f"calibration_{k}": v for k, v in calibration(conf[pred_c], correct[pred_c], n_bins).items()},
        }
    return per_class


def _mean(a: np.ndarray) -> float | None:
    return float(a.mean()) if len(a) else None


def evaluate(classifier: FerClassifier, split: FerSplit, split_name: str = "", tta: str = "none",
             batch_size: int = 256, progress: bool = False, source: str = "") -> dict:
    """Evaluate ``classifier`` on a split whose labels index ``classifier.class_names``."""
    if not len(split):
        raise ValueError(f"split {split_name!r} has no images to evaluate")
    raw = predict_split(classifier, split.images, tta=tta, batch_size=batch_size, progress=progress,
                        calibrated=False)
    report = build_report(split.labels.numpy(), classifier.calibrated(raw, tta), classifier.class_names, split.ids)
    report.update(split=split_name, tta=tta, checkpoint_arch=classifier.arch, data=source,
                  img_size=classifier.img_size)
    if classifier.calibration is not None:   # both, so the reliability diagram shows what calibration changed
        report.update(calibration=classifier.calibration.describe(tta),
                      uncalibrated=summary(raw, split.labels.numpy()))
    return report


def report_probabilities(report: dict, ids: list[str], class_names) -> np.ndarray | None:
    """The probabilities a report holds for the images ``ids``, in that order; ``None`` unless the
    report was made without TTA, with these classes, on exactly these images."""
    if report.get("tta", "none") != "none" or list(report.get("class_names", [])) != list(class_names):
        return None
    records = report.get("predictions") or []
    if [r.get("id") for r in records] != list(ids):
        return None
    return np.array([r["probabilities"] for r in records], dtype=np.float32).reshape(len(ids), len(class_names))


def summary_line(report: dict) -> str:
    return (f"{report.get('split', '')} ({report['num_images']} images, TTA {report.get('tta', 'none')}): "
            f"accuracy {report['accuracy']:.4f}, macro-F1 {report['macro']['f1']:.4f}, ECE {report['ece']:.4f}")
