"""Evaluation reports: plain JSON-able data, as scikit-learn's ``output_dict`` reports are.

A report holds accuracy; macro and weighted precision/recall/F1; per-class precision, recall, F1,
support, mean confidence of right and wrong answers, and calibration; the confusion matrix; and
one record an image (id, true, predicted, probabilities).
"""
from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import FerClassifier
from .config import TTA_MODES
from .data import FerSplit


def tta_views(x: torch.Tensor, mode: str, shift: int = 2) -> list[torch.Tensor]:
    """Views of a normalised batch (N, 1, S, S): itself, its mirror, and (``flip+crops``) the four
    ``shift``-pixel shifted crops of each, with borders filled by reflection."""
    if mode not in TTA_MODES:
        raise ValueError(f"unknown TTA mode {mode!r}; choose one of {', '.join(TTA_MODES)}")
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
                  progress: bool = False) -> np.ndarray:
    """Class probabilities (N, C) for uint8 faces (N, H, W), averaged over the TTA views."""
    out = []
    starts = range(0, len(images), batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="evaluating", leave=False)
    for i in starts:
        x = classifier.preprocess(images[i:i + batch_size])
        probs = [torch.softmax(classifier.logits(v), 1) for v in tta_views(x, tta)]
        out.append(torch.stack(probs).mean(0).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, len(classifier.class_names)), np.float32)


def calibration(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> dict:
    """Expected calibration error and the reliability-diagram bins (equal-width on confidence)."""
    edges = np.linspace(0, 1, n_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        mask = which == b
        n = int(mask.sum())
        conf = float(confidence[mask].mean()) if n else None
        acc = float(correct[mask].mean()) if n else None
        if n:
            ece += n / len(confidence) * abs(acc - conf)
        bins.append({"lower": float(edges[b]), "upper": float(edges[b + 1]), "count": n,
                     "confidence": conf, "accuracy": acc})
    return {"ece": float(ece) if len(confidence) else None, "bins": bins}


def build_report(y_true: np.ndarray, probs: np.ndarray, class_names, ids: list[str] | None = None,
                 n_bins: int = 15) -> dict:
    """A report from true labels and predicted probabilities."""
    from sklearn.metrics import classification_report, confusion_matrix  # a second of import: only here

    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    k = len(class_names)
    y_pred = probs.argmax(1)
    conf = probs.max(1)
    correct = y_pred == y_true
    sk = classification_report(y_true, y_pred, labels=list(range(k)), target_names=list(class_names),
                               output_dict=True, zero_division=0)
    per_class = {}
    for c, name in enumerate(class_names):
        true_c, pred_c = y_true == c, y_pred == c
        per_class[name] = {
            "precision": sk[name]["precision"], "recall": sk[name]["recall"], "f1": sk[name]["f1-score"],
            "support": int(sk[name]["support"]), "predicted": int(pred_c.sum()),
            "mean_confidence_correct": _mean(conf[true_c & correct]),
            "mean_confidence_wrong": _mean(conf[true_c & ~correct]),
            # calibration of the answers the model gave for this class
            **{f"calibration_{k2}": v for k2, v in calibration(conf[pred_c], correct[pred_c], n_bins).items()},
        }
    cal = calibration(conf, correct, n_bins)
    return {
        "num_images": int(len(y_true)),
        "class_names": list(class_names),
        "accuracy": float(correct.mean()) if len(y_true) else 0.0,
        "macro": {k2: sk["macro avg"][k1] for k1, k2 in _AVG_KEYS},
        "weighted": {k2: sk["weighted avg"][k1] for k1, k2 in _AVG_KEYS},
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=list(range(k))).tolist(),
        "ece": cal["ece"],
        "reliability": cal["bins"],
        "mean_confidence": _mean(conf),
        "predictions": [
            {"id": ids[i] if ids else str(i), "true": class_names[y_true[i]], "predicted": class_names[y_pred[i]],
             "probabilities": [round(float(p), 5) for p in probs[i]]}
            for i in range(len(y_true))
        ],
    }


_AVG_KEYS = (("precision", "precision"), ("recall", "recall"), ("f1-score", "f1"))


def _mean(a: np.ndarray) -> float | None:
    return float(a.mean()) if len(a) else None


def evaluate(classifier: FerClassifier, split: FerSplit, split_name: str = "", tta: str = "none",
             batch_size: int = 256, progress: bool = False, source: str = "") -> dict:
    """Evaluate ``classifier`` on a split whose labels index ``classifier.class_names``."""
    if not len(split):
        raise ValueError(f"split {split_name!r} has no images to evaluate")
    probs = predict_split(classifier, split.images, tta=tta, batch_size=batch_size, progress=progress)
    report = build_report(split.labels.numpy(), probs, classifier.class_names, split.ids)
    report.update(split=split_name, tta=tta, checkpoint_arch=classifier.arch, data=source,
                  img_size=classifier.img_size)
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
