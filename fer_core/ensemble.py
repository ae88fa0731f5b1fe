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

Members must share class names (in the same order); they may differ in architecture and input size. Weights
are given, or chosen on a validation split (``choose_weights``: PublicTest for FER-2013, never a test split).
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
                 weights: list[float]):
        super().__init__()
        self.members = torch.nn.ModuleList(members)
        self.sizes, self.means, self.stds = list(sizes), list(means), list(stds)
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = 0
        for k, member in enumerate(self.members):
            size = self.sizes[k]
            # no antialiasing: ONNX has no antialiased resize, and members are within a few pixels of each other
            xk = x if x.shape[-1] == size else F.interpolate(x, size=(size, size), mode="bilinear",
                                                              align_corners=False)
            xk = ((xk - self.means[k]) / self.stds[k]).contiguous(memory_format=torch.channels_last)
            out = out + self.weights[k] * torch.log_softmax(member(xk).float(), 1)
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
    for m, c in zip(members, classifiers):
        if list(c.class_names) != list(meta["class_names"]):
            raise CheckpointError(f"{path}: member {m.file} has classes {', '.join(c.class_names)}, not the "
                                  f"ensemble's {', '.join(meta['class_names'])}")
    total = sum(m.weight for m in members)
    return EnsembleNet([c.model for c in classifiers], [c.img_size for c in classifiers],
                       [c.mean for c in classifiers], [c.std for c in classifiers],
                       [m.weight / total for m in members]).to(device).eval()


def save_ensemble(out: str | Path, member_files: list[str | Path], weights: list[float] | None = None,
                  choice: dict | None = None) -> list[Member]:
    """Write an ensemble file at ``out`` naming ``member_files`` (equal weights unless given); ``choice``
    records how the weights were chosen. Members are referred to relative to ``out``'s folder."""
    out = Path(out)
    if not member_files or len(member_files) > MAX_MEMBERS:
        raise ValueError(f"an ensemble needs 1 to {MAX_MEMBERS} members, not {len(member_files)}")
    weights = list(weights) if weights is not None else [1.0] * len(member_files)
    if len(weights) != len(member_files) or not usable_weights(weights):
        raise ValueError("give one weight of 0 or more per member, not all 0")
    metas = [read_metadata(f) for f in member_files]
    names = metas[0]["class_names"]
    for f, meta in zip(member_files, metas):
        if meta["arch"] == ENSEMBLE_ARCH:
            raise ValueError(f"{f} is an ensemble itself: list its members instead")
        if list(meta["class_names"]) != list(names):
            raise ValueError(f"{f} has classes {', '.join(meta['class_names'])}, not {', '.join(names)} as "
                             f"{member_files[0]}: members must share class names, in the same order")
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


def choose_weights(log_probs: np.ndarray, labels: np.ndarray, step: float = WEIGHT_STEP) -> dict:
    """The grid weighting (``weight_grid``) with the best accuracy on a validation split, ties broken by the lower
    log-loss; with each member's own accuracy and the equal weighting's, for the record."""
    labels = np.asarray(labels)

    def scored(w) -> tuple[float, float]:
        mixed = np.tensordot(np.asarray(w), log_probs, axes=1)
        mixed = mixed - np.logaddexp.reduce(mixed, axis=1, keepdims=True)
        return float((mixed.argmax(1) == labels).mean()), float(-mixed[np.arange(len(labels)), labels].mean())

    grid = weight_grid(len(log_probs), step) if len(log_probs) > 1 else [(1.0,)]
    scores = {w: scored(w) for w in grid}
    best = max(grid, key=lambda w: (scores[w][0], -scores[w][1]))
    equal = scored([1 / len(log_probs)] * len(log_probs))
    return {"weights": list(best), "accuracy": scores[best][0], "nll": scores[best][1],
            "equal_weights_accuracy": equal[0],
            "member_accuracy": [float((lp.argmax(1) == labels).mean()) for lp in log_probs]}
