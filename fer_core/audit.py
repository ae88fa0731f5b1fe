"""Suspect labels: the images whose given label the model contradicts most confidently.

FER-2013's labels are noisy (the FER+ relabelling by ten annotators disagreed with many). cleanlab's confident
learning (``cleanlab.filter.find_label_issues``) flags an image when the model's probabilities put it, by
per-class thresholds, in another class than its label; ``cleanlab.rank.get_label_quality_scores`` ranks them.

Both need out-of-sample probabilities: on the images a model was trained on it has fitted their labels, noisy
ones too, and would flag almost nothing. So a test split's report is audited as it is, and a training split
only when its probabilities are marked cross-validated (each image scored by a model that did not train on
it); this module never trains folds itself.

An audit is plain data (JSON-able), as a report is; flagged images are listed and counted, never dropped
silently: the figures without them stand beside the full ones. No PyTorch: auditing a saved report costs
none.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from .metrics import accuracy, macro_f1
from .storage import atomic_write

# cleanlab's label-quality score: the given label's probability minus the best other class's, mapped to 0-1
# (low: another class is clearly more likely). Unlike self-confidence it is not the given probability again,
# which the CSV shows beside it.
QUALITY_METHOD = "normalized_margin"
# cleanlab's confident-learning filters, its default first; "both" and "confident_learning" flag fewer images
FILTER_METHODS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning")
TRAINING_SPLITS = ("training", "train", "pool")   # splits a model learns from (data.py's names, lower-cased)
CSV_COLUMNS = ("rank", "id", "given_label", "model_label", "confidence", "label_quality", "given_probability")
PROBABILITY_TOLERANCE = 1e-3   # a report rounds probabilities to 5 decimals: rows sum to 1 within this


class AuditError(ValueError):
    """Probabilities that cannot be audited: in-sample ones, or a report without usable predictions."""


def is_training_split(split: str | None) -> bool:
    return (split or "").lower() in TRAINING_SPLITS


def check_out_of_sample(split: str | None, cross_validated: bool = False) -> None:
    """Refuse a training split's probabilities unless they are cross-validated."""
    if is_training_split(split) and not cross_validated:
        raise AuditError(f"suspect labels on the {split} split are not available: the model trained on these "
                         "images, so its probabilities are not out-of-sample; audit a test split (PublicTest, "
                         "PrivateTest), or give a report of cross-validated probabilities (--cross-validated)")


def find_suspects(labels, probs, class_names, ids: list[str] | None = None,
                  filter_by: str = FILTER_METHODS[0]) -> dict:
    """The audit of out-of-sample probabilities ``probs`` (images, classes) against given ``labels`` (class
    indices): the flagged images ranked most suspect first, counts per given class, and accuracy and macro-F1
    with and without the flagged images."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    if filter_by not in FILTER_METHODS:
        raise AuditError(f"unknown filter {filter_by!r}; choose one of {', '.join(FILTER_METHODS)}")
    labels, probs = _checked(labels, probs, len(class_names))
    ids = list(ids) if ids is not None else [str(i) for i in range(len(labels))]
    if len(ids) != len(labels):
        raise AuditError(f"{len(ids)} ids for {len(labels)} images")
    quality = get_label_quality_scores(labels, probs, method=QUALITY_METHOD)
    # n_jobs=1: cleanlab's worker processes would fork a dashboard or a test; on 7 classes one core is enough
    flagged = find_label_issues(labels, probs, filter_by=filter_by, return_indices_ranked_by=QUALITY_METHOD,
                                n_jobs=1)
    predicted = probs.argmax(1)
    keep = np.ones(len(labels), bool)
    keep[flagged] = False
    return {
        "class_names": list(class_names),
        "num_images": int(len(labels)),
        "num_flagged": int(len(flagged)),
        "method": {"filter": filter_by, "quality": QUALITY_METHOD},
        "per_class": _per_class(labels, keep, class_names),
        "all_images": scores(labels, predicted),
        "without_flagged": scores(labels[keep], predicted[keep]),
        "suspects": [{"rank": r + 1, "id": ids[i], "given": class_names[labels[i]],
                      "predicted": class_names[predicted[i]], "confidence": float(probs[i].max()),
                      "quality": float(quality[i]), "given_probability": float(probs[i, labels[i]])}
                     for r, i in enumerate(flagged.tolist())],
    }


def audit_report(report: dict, cross_validated: bool = False, filter_by: str = FILTER_METHODS[0]) -> dict:
    """:func:`find_suspects` on a saved report's per-image probabilities (``evaluation.build_report``'s
    ``predictions``); AuditError for a training split that is not cross-validated, or a report without usable
    predictions. ``cross_validated`` (or the report's own ``cross_validated: true``) says its probabilities
    are out-of-fold."""
    if not isinstance(report, dict):
        raise AuditError("the report is not a JSON object")
    check_out_of_sample(report.get("split"), cross_validated or report.get("cross_validated") is True)
    labels, probs, ids, class_names = report_arrays(report)
    audit = find_suspects(labels, probs, class_names, ids, filter_by)
    audit.update(split=report.get("split"), tta=report.get("tta", "none"), checkpoint=report.get("checkpoint"))
    return audit


def read_report(path: str | Path) -> dict:
    """A saved report (``evaluate --json``), or AuditError naming the file (never quoting it)."""
    path = Path(path)
    if not path.is_file():
        raise AuditError(f"report {path} not found")
    try:
        report = json.loads(path.read_bytes())
    except (ValueError, RecursionError):   # bad JSON or bad UTF-8 are ValueErrors
        raise AuditError(f"{path} is not a JSON report (make one with evaluate --json)") from None
    if not isinstance(report, dict):
        raise AuditError(f"{path} is not a JSON report (make one with evaluate --json)")
    return report


def report_arrays(report: dict) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Given labels, probabilities, ids and class names from a report's ``predictions``, each record checked;
    errors name the record by its position, never by its content."""
    class_names = report.get("class_names")
    if not isinstance(class_names, list) or len(class_names) < 2 or not all(isinstance(c, str) for c in class_names):
        raise AuditError("the report has no list of class names (it must be an evaluate --json report)")
    records = report.get("predictions")
    if not isinstance(records, list) or not records:
        raise AuditError("the report holds no per-image predictions (make one with evaluate --json)")
    index = {c: k for k, c in enumerate(class_names)}
    labels, probs, ids = [], [], []
    for n, rec in enumerate(records):
        if not isinstance(rec, dict) or not isinstance(rec.get("id"), str) or rec.get("true") not in index:
            raise AuditError(f"prediction {n} of the report has no id or no true label among its classes")
        row = rec.get("probabilities")
        if not _is_probability_row(row, len(class_names)):
            raise AuditError(f"prediction {n} of the report has no row of {len(class_names)} probabilities "
                             "summing to 1")
        labels.append(index[rec["true"]])
        probs.append(row)
        ids.append(rec["id"])
    return np.array(labels), np.array(probs, dtype=np.float64), ids, list(class_names)


def _is_probability_row(row, width: int) -> bool:
    return (isinstance(row, list) and len(row) == width
            and all(isinstance(p, (int, float)) and not isinstance(p, bool) and math.isfinite(p) and 0 <= p <= 1
                    for p in row)
            and abs(sum(row) - 1) <= PROBABILITY_TOLERANCE)


def _checked(labels, probs, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape != (len(labels), num_classes) or not len(labels):
        raise AuditError(f"probabilities must be one row of {num_classes} an image ({len(labels)} labels), "
                         f"not of shape {probs.shape}")
    if labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= num_classes:
        raise AuditError(f"given labels must be class indices from 0 to {num_classes - 1}")
    if not np.isfinite(probs).all() or (probs < 0).any() or (probs > 1).any():
        raise AuditError("probabilities must be finite and between 0 and 1")
    return labels.astype(np.int64), probs


def _per_class(labels: np.ndarray, keep: np.ndarray, class_names) -> dict[str, dict]:
    images = np.bincount(labels, minlength=len(class_names))
    flagged = np.bincount(labels[~keep], minlength=len(class_names))
    return {c: {"images": int(images[k]), "flagged": int(flagged[k]),
                "share": float(flagged[k] / images[k]) if images[k] else None}
            for k, c in enumerate(class_names)}


def scores(labels: np.ndarray, predicted: np.ndarray) -> dict:
    """Accuracy and macro-F1 over the classes with images, as ``evaluation.build_report`` averages them (a class
    absent from the images is left out, not counted as 0)."""
    if not len(labels):
        return {"images": 0, "accuracy": None, "macro_f1": None}
    return {"images": int(len(labels)), "accuracy": accuracy(labels, predicted),
            "macro_f1": macro_f1(labels, predicted)}


def pair_counts(audit: dict) -> list[tuple[tuple[str, str], int]]:
    """(given, model's label) -> flagged images, commonest first (ties in label order)."""
    order = {c: k for k, c in enumerate(audit["class_names"])}
    counts: dict[tuple[str, str], int] = {}
    for s in audit["suspects"]:
        counts[(s["given"], s["predicted"])] = counts.get((s["given"], s["predicted"]), 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], order[kv[0][0]], order[kv[0][1]]))


def suspects_of_pair(audit: dict, given: str | None = None, predicted: str | None = None) -> list[dict]:
    """The flagged images with this given and/or model's label (None: any), most suspect first."""
    return [s for s in audit["suspects"]
            if (given is None or s["given"] == given) and (predicted is None or s["predicted"] == predicted)]


def suspects_csv(audit: dict) -> str:
    """The flagged images as CSV text (``CSV_COLUMNS``), most suspect first."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for s in audit["suspects"]:
        writer.writerow([s["rank"], s["id"], s["given"], s["predicted"], f"{s['confidence']:.5f}",
                         f"{s['quality']:.5f}", f"{s['given_probability']:.5f}"])
    return out.getvalue()


def write_suspects_csv(audit: dict, path: str | Path) -> None:
    with atomic_write(path, "w", newline="", encoding="utf-8") as f:
        f.write(suspects_csv(audit))


def summary_lines(audit: dict) -> list[str]:
    """The audit as a reader reads it: per-class counts, then the figures with and without the flagged."""
    width = max(len(c) for c in audit["class_names"] + ["class"])
    lines = [f"{audit.get('split') or 'images'}: {audit['num_flagged']:,} of {audit['num_images']:,} images "
             f"flagged as suspect labels (cleanlab {audit['method']['filter']})",
             f"{'class':<{width}} {'images':>7} {'flagged':>8} {'share':>7}"]
    for c, row in audit["per_class"].items():
        share = "-" if row["share"] is None else f"{row['share']:.1%}"
        lines.append(f"{c:<{width}} {row['images']:>7,} {row['flagged']:>8,} {share:>7}")
    full, kept = audit["all_images"], audit["without_flagged"]
    lines.append(f"all {full['images']:,} images: accuracy {_fmt(full['accuracy'])}, macro-F1 {_fmt(full['macro_f1'])}")
    lines.append(f"without the {audit['num_flagged']:,} flagged ({kept['images']:,} images): accuracy "
                 f"{_fmt(kept['accuracy'])}, macro-F1 {_fmt(kept['macro_f1'])}")
    return lines


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
