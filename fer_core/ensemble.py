"""Ensembles as models: several trained checkpoints answering as one.

An ensemble file is a ``.safetensors`` checkpoint with no weights of its own: its metadata (``arch`` is
``"ensemble"``) names each member checkpoint by its path relative to the ensemble file, with the member's
SHA-256, and gives each member's weight. Members stay the files they are (each under the repository's size
limit, none stored twice); a member that was moved, changed or removed is a clear error, never a silently
different model.

Loaded (``FerClassifier.from_checkpoint``, so everywhere a checkpoint is accepted), the ensemble is one
``nn.Module``, :class:`EnsembleNet`: its input is the grey face scaled to [0, 1] at the largest member's input
size; each member resizes and normalises it as it was trained to, and the output is the members' weighted mean
log-probability. Softmax of that is the weighted geometric mean of the members' probabilities: one model for
TTA, calibration, Grad-CAM (one map per member, and their mean), distillation and ONNX export.

Members share class names (in the same order), or the ensemble is built over some of their classes (``classes``,
e.g. a 4-class model and a 7-class one on angry, disgust, fear and happy): each member then chooses among those
classes only, its other logits dropped before its softmax. Members may differ in architecture and input size.
Weights are given, or chosen on a validation split (``choose_weights``: PublicTest for FER-2013, never a test split).
"""
from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .config import ENSEMBLE_ARCH
from .metrics import SCORES
from .storage import CheckpointError, atomic_write_bytes, file_sha256, model_metadata, read_metadata

MAX_MEMBERS = 16
WEIGHT_STEP = 0.1   # choose_weights' grid: weights in tenths that sum to one


@dataclass(frozen=True)
class Member:
    """One member as the ensemble file records it."""

    file: str            # relative to the ensemble file's folder
    sha256: str
    arch: str
    img_size: int
    weight: float

    def to_dict(self) -> dict:
        return {"file": self.file, "sha256": self.sha256, "arch": self.arch, "img_size": self.img_size,
                "weight": self.weight}


class EnsembleNet(torch.nn.Module):
    """Members' weighted mean log-probability, from a grey face in [0, 1] at ``img_size`` (N, 1, S, S)."""

    def __init__(self, members: list[torch.nn.Module], sizes: list[int], means: list[float], stds: list[float],
                 weights: list[float], class_index: list[list[int] | None] | None = None):
        super().__init__()
        self.members = torch.nn.ModuleList(members)
        self.sizes, self.means, self.stds = list(sizes), list(means), list(stds)
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32), persistent=False)
        # each member's logits to keep (None: all), so the members stay bare networks for Grad-CAM's layers
        self.class_index = [None if ix is None else torch.tensor(ix, dtype=torch.long)
                            for ix in (class_index or [None] * len(members))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = 0
        for k, member in enumerate(self.members):
            size = self.sizes[k]
            # no antialiasing: ONNX has no antialiased resize, and members are within a few pixels of each other
            xk = x if x.shape[-1] == size else F.interpolate(x, size=(size, size), mode="bilinear",
                                                              align_corners=False)
            xk = ((xk - self.means[k]) / self.stds[k]).contiguous(memory_format=torch.channels_last)
            logits = member(xk).float()
            if self.class_index[k] is not None:
                logits = logits.index_select(1, self.class_index[k].to(logits.device))
            out = out + self.weights[k] * torch.log_softmax(logits, 1)
        return out


def ensemble_members(path: str | Path, meta: dict | None = None) -> list[Member]:
    """The members an ensemble file names (read, checked and typed)."""
    path = Path(path)
    meta = meta or read_metadata(path)
    if meta.get("arch") != ENSEMBLE_ARCH:
        raise CheckpointError(f"{path} is not an ensemble (its arch is {meta.get('arch')!r})")
    try:
        records = json.loads(meta["members"])
        members = [Member(str(r["file"]), str(r["sha256"]), str(r["arch"]), int(r["img_size"]), float(r["weight"]))
                   for r in records]
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{path}: the ensemble's 'members' metadata is missing or malformed") from None
    if not 1 <= len(members) <= MAX_MEMBERS or not usable_weights([m.weight for m in members]):
        raise CheckpointError(f"{path}: an ensemble needs 1 to {MAX_MEMBERS} members with finite weights of 0 or "
                              "more, not all 0")
    return members


def usable_weights(weights: list[float]) -> bool:
    """Finite and 0 or more, not all 0: what a file may hold and what ``save_ensemble`` accepts."""
    return all(np.isfinite(w) and w >= 0 for w in weights) and sum(weights) > 0


def member_paths(path: str | Path, members: list[Member]) -> list[Path]:
    """Each member's file, checked: there, and unchanged since the ensemble was built."""
    path = Path(path)
    out = []
    for m in members:
        file = (path.parent / m.file).resolve()
        if not file.is_file():
            raise CheckpointError(f"{path}: member {m.file} not found (members are looked for beside the "
                                  "ensemble file; keep them together)")
        if file_sha256(file) != m.sha256:
            raise CheckpointError(f"{path}: member {m.file} has changed since the ensemble was built (its "
                                  "SHA-256 differs); rebuild it with `python -m fer_core ensemble`")
        out.append(file)
    return out


def build_ensemble_net(path: str | Path, meta: dict, device: str | torch.device = "cpu") -> EnsembleNet:
    """The :class:`EnsembleNet` of an ensemble file (``FerClassifier.from_checkpoint`` calls it)."""
    from .checkpoint import FerClassifier

    members = ensemble_members(path, meta)
    classifiers = [FerClassifier.from_checkpoint(p, device, calibrated=False) for p in member_paths(path, members)]
    index = []
    for m, c in zip(members, classifiers):
        kept = member_class_index(c.class_names, meta["class_names"])
        if kept is None:
            raise CheckpointError(f"{path}: member {m.file} has classes {', '.join(c.class_names)}, which do not "
                                  f"hold the ensemble's {', '.join(meta['class_names'])} in that order")
        index.append(None if kept == list(range(len(c.class_names))) else kept)
    total = sum(m.weight for m in members)
    return EnsembleNet([c.model for c in classifiers], [c.img_size for c in classifiers],
                       [c.mean for c in classifiers], [c.std for c in classifiers],
                       [m.weight / total for m in members], index).to(device).eval()


def member_class_index(member_classes, ensemble_classes) -> list[int] | None:
    """Where the ensemble's classes sit among a member's (its logits to keep), or None when the member lacks one
    or orders them differently (a reordered member would be a silent mix-up of labels)."""
    member_classes, ensemble_classes = list(member_classes), list(ensemble_classes)
    if not set(ensemble_classes) <= set(member_classes):
        return None
    index = [member_classes.index(c) for c in ensemble_classes]
    return index if index == sorted(index) else None


def save_ensemble(out: str | Path, member_files: list[str | Path], weights: list[float] | None = None,
                  choice: dict | None = None, classes=None) -> list[Member]:
    """Write an ensemble file at ``out`` naming ``member_files`` (equal weights unless given); ``choice``
    records how the weights were chosen. Members are referred to relative to ``out``'s folder. ``classes``
    builds it over those of the members' classes (in the members' order); by default members share theirs."""
    out = Path(out)
    if not member_files or len(member_files) > MAX_MEMBERS:
        raise ValueError(f"an ensemble needs 1 to {MAX_MEMBERS} members, not {len(member_files)}")
    weights = list(weights) if weights is not None else [1.0] * len(member_files)
    if len(weights) != len(member_files) or not usable_weights(weights):
        raise ValueError("give one weight of 0 or more per member, not all 0")
    metas = [read_metadata(f) for f in member_files]
    names = ensemble_class_names(member_files, metas, classes)
    total = sum(weights)
    members = [Member(os.path.relpath(Path(f).resolve(), out.resolve().parent), file_sha256(f), meta["arch"],
                      meta["img_size"], round(w / total, 6)) for f, meta, w in zip(member_files, metas, weights)]
    biggest = max(metas, key=lambda m: m["img_size"])
    meta = model_metadata(ENSEMBLE_ARCH, names, biggest["img_size"], 0.0, 1.0, biggest["output_stride"])
    meta["members"] = json.dumps([m.to_dict() for m in members])
    if choice is not None:
        meta["metrics"] = json.dumps({"weights_chosen": choice})
    from safetensors.torch import save

    atomic_write_bytes(out, save({}, metadata=meta))
    return members


def ensemble_class_names(member_files, metas: list[dict], classes=None) -> list[str]:
    """The ensemble's classes: the members' shared ones, or ``classes`` in the members' order, which every member
    must hold in that order (``member_class_index``)."""
    for f, meta in zip(member_files, metas):
        if meta["arch"] == ENSEMBLE_ARCH:
            raise ValueError(f"{f} is an ensemble itself: list its members instead")
    first = list(metas[0]["class_names"])
    if classes is None:
        for f, meta in zip(member_files, metas):
            if list(meta["class_names"]) != first:
                raise ValueError(f"{f} has classes {', '.join(meta['class_names'])}, not {', '.join(first)} as "
                                 f"{member_files[0]}: members must share class names, in the same order (or "
                                 "give the classes they all know)")
        return first
    if len(set(classes)) < 2:
        raise ValueError("an ensemble over some classes needs two or more of them")
    names = [c for c in first if c in set(classes)]
    for f, meta in zip(member_files, metas):
        own = list(meta["class_names"])
        missing = sorted(set(classes) - set(own))
        if missing:
            raise ValueError(f"{f} lacks {', '.join(missing)}: every member must know the ensemble's classes")
        if member_class_index(own, names) is None:
            raise ValueError(f"{f} orders {', '.join(names)} differently from {member_files[0]}: members must "
                             "hold the ensemble's classes in the same order")
    return names


def member_log_probs(classifiers, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """(members, N, classes) log-probabilities of each member on ``images``, uncalibrated."""
    from .evaluation import predict_split

    return np.stack([np.log(np.clip(predict_split(c, images, batch_size=batch_size, calibrated=False), 1e-12, 1))
                     for c in classifiers])


def weight_grid(members: int, step: float = WEIGHT_STEP) -> list[tuple[float, ...]]:
    """Every weighting in multiples of ``step`` that sums to one (66 for three members at 0.1)."""
    n = round(1 / step)
    return [tuple(k / n for k in (*c, n - sum(c))) for c in itertools.product(range(n + 1), repeat=members - 1)
            if sum(c) <= n]


def choose_weights(log_probs: np.ndarray, labels: np.ndarray, step: float = WEIGHT_STEP,
                   metric: str = "accuracy") -> dict:
    """The weighting with the best ``metric`` (accuracy or macro_f1) on a validation split, ties broken by the lower
    log-loss, among the grid (``weight_grid``) and the equal weighting; with each member's own score and the equal
    weighting's, for the record."""
    if metric not in SCORES:
        raise ValueError(f"metric must be one of {', '.join(SCORES)}, not {metric!r}")
    labels = np.asarray(labels)
    score = SCORES[metric]

    def scored(w) -> tuple[float, float]:
        mixed = np.tensordot(np.asarray(w), log_probs, axes=1)
        mixed = mixed - np.logaddexp.reduce(mixed, axis=1, keepdims=True)
        return score(labels, mixed.argmax(1)), float(-mixed[np.arange(len(labels)), labels].mean())

    # The equal weighting is a candidate too: unless there are 2, 5 or 10 members it is off a grid in tenths,
    # and the chooser must never pick a weighting that scores below the baseline it reports.
    equal_weights = (1 / len(log_probs),) * len(log_probs)
    candidates = [*weight_grid(len(log_probs), step), equal_weights]
    scores = {w: scored(w) for w in candidates}
    best = max(candidates, key=lambda w: (scores[w][0], -scores[w][1]))
    equal = scores[equal_weights]
    return {"weights": list(best), "metric": metric, metric: scores[best][0], "nll": scores[best][1],
            f"equal_weights_{metric}": equal[0],
            f"member_{metric}": [score(labels, lp.argmax(1)) for lp in log_probs]}
