"""Scores of a model's answers against true labels: plain NumPy and scikit-learn, no PyTorch, so that reports,
audits and ensemble weights can be scored where no model is loaded.

Averages run over the classes with images in the labels: a class a split lacks has no recall or F1, and a 0 in
its place would pull the average down (see :mod:`fer_core.evaluation`).
"""
from __future__ import annotations

import numpy as np


def accuracy(y_true, y_pred) -> float:
    """The share of answers that match the labels."""
    return float((np.asarray(y_pred) == np.asarray(y_true)).mean())


def averaged(y_true, y_pred, present: list[int], average: str) -> dict:
    """Precision, recall and F1 averaged ("macro" or "weighted") over the ``present`` classes."""
    from sklearn.metrics import precision_recall_fscore_support  # a second of import: only when scoring

    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=present, average=average, zero_division=0)
    return {"precision": float(p), "recall": float(r), "f1": float(f)}


def macro_f1(y_true, y_pred) -> float:
    """Macro-F1 over the classes with images in ``y_true``, as a report's ``macro`` averages it: the one definition
    that validation, ensemble weights and audits share."""
    y_true = np.asarray(y_true)
    return averaged(y_true, np.asarray(y_pred), np.unique(y_true).tolist(), "macro")["f1"]


SCORES = {"accuracy": accuracy, "macro_f1": macro_f1}   # what ensemble weights may be chosen by (name -> score)
