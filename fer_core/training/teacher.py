"""Knowledge distillation: a trained checkpoint whose probabilities join the student's targets."""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from ..checkpoint import FerClassifier, to_model_input
from ..config import GREY_MEAN, GREY_STD
from ..storage import CheckpointError, atomic_write_bytes, file_sha256

log = logging.getLogger("fer_core.training")

TABLE_CHUNK = 4096     # images a step of the teacher-target pass: a log line and a stop check each


class Teacher:
    """A trained checkpoint whose probabilities over the student's classes, averaged over each image
    and its mirror, become part of the student's targets (knowledge distillation). By default it sees the
    student's augmented, mixed batch, so both are taught on the same view; with ``cache_targets`` it reads
    each training image once, un-augmented, and the batches mix those probabilities like their labels."""

    def __init__(self, path: str | Path, class_names, device: torch.device | str = "cpu"):
        self.path, self.device, self.class_names = Path(path), device, list(class_names)
        try:
            self.classifier = FerClassifier.from_checkpoint(path, device).restricted_to(class_names)
        except CheckpointError as e:
            raise CheckpointError(f"teacher {path}: {e}") from None
        # restricted_to keeps the teacher's class order; the targets need the student's
        self.index = torch.tensor([self.classifier.class_names.index(c) for c in class_names], device=device)
        self.table: torch.Tensor | None = None      # (training images, classes), once cache_targets has run

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, mean: float = GREY_MEAN, std: float = GREY_STD) -> torch.Tensor:
        """Probabilities (N, student classes) for a batch normalised with ``mean`` and ``std``."""
        clf = self.classifier
        x = x.float() * std + mean
        if x.shape[-1] != clf.img_size:
            x = F.interpolate(x, size=(clf.img_size, clf.img_size), mode="bilinear", align_corners=False)
        x = ((x - clf.mean) / clf.std).contiguous(memory_format=torch.channels_last)
        # through the classifier's own check: a broken teacher must not feed NaN targets into training
        logits = clf.logits(torch.cat([x, x.flip(3)])).index_select(1, self.index)
        probs = torch.softmax(logits, 1)
        return (probs[:len(x)] + probs[len(x):]) / 2

    def probabilities_of(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """The probabilities (N, student classes, on the CPU) of un-augmented uint8 images (N, H, W)."""
        batches = (to_model_input(images[i:i + batch_size], images.shape[-1], GREY_MEAN, GREY_STD)
                   for i in range(0, len(images), batch_size))
        return torch.cat([self(x.to(self.device)).cpu() for x in batches])

    def cache_targets(self, images: torch.Tensor, path: Path,
                      stop_requested: Callable[[], bool] = lambda: False) -> bool:
        """Give every batch the probabilities of its images as the teacher sees them un-augmented, computed
        once (one teacher pass over the training images instead of one a batch: with an ensemble teacher the
        epochs run several times faster), kept at ``path`` for a resumed run, and read back only while the
        teacher file and the images are the ones they were computed from. False when ``stop_requested``
        turned true before the table was whole (the pass takes minutes): nothing is kept then."""
        key = {"teacher_sha256": file_sha256(self.path), "images_sha256": _tensor_sha256(images),
               "classes": ",".join(self.class_names)}
        self.table = _read_table(path, key, (len(images), len(self.index)))
        if self.table is not None:
            log.info("teacher targets read from %s", path)
            return True
        log.info("teacher targets: one pass over %d training images", len(images))
        chunks = []
        for start in range(0, len(images), TABLE_CHUNK):    # a long pass shows it is moving, and stops
            if stop_requested():
                return False
            chunks.append(self.probabilities_of(images[start:start + TABLE_CHUNK]))
            log.info("teacher targets: %d of %d images", start + len(chunks[-1]), len(images))
        self.table = torch.cat(chunks)
        atomic_write_bytes(path, save({"probabilities": self.table}, metadata=key))
        return True

    def cached(self, idx: torch.Tensor) -> torch.Tensor | None:
        """The cached probabilities of training images ``idx``, or None when the teacher reads every batch."""
        return None if self.table is None else self.table[idx].to(self.device)

    def soft_targets(self, x: torch.Tensor, soft: torch.Tensor, class_weights: torch.Tensor | None,
                     distill_weight: float, taught: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The batch's targets with the teacher's share (``taught``, its cached probabilities mixed like the
        labels, or else its reading of ``x``) mixed in, and per-sample weights that carry the class weights:
        weighting the teacher's probabilities class by class would pull every face towards the rare classes,
        so the weights follow the labels instead."""
        sample_weights = (soft * class_weights).sum(1) if class_weights is not None else None
        taught = self(x) if taught is None else taught
        return (1 - distill_weight) * soft + distill_weight * taught, sample_weights


def _tensor_sha256(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


def _read_table(path: Path, key: dict[str, str], shape: tuple[int, int]) -> torch.Tensor | None:
    """The cached probabilities at ``path`` if they were computed for ``key`` and are whole; else None."""
    if not path.exists():
        return None
    try:
        with safe_open(str(path), "pt") as f:
            if f.metadata() != key:
                log.info("teacher targets at %s are for another teacher or data; computing them again", path)
                return None
            table = f.get_tensor("probabilities").float()
    except (SafetensorError, OSError, KeyError, ValueError):
        log.warning("teacher targets at %s are unreadable; computing them again", path)
        return None
    whole = tuple(table.shape) == shape and bool(torch.isfinite(table).all()) and bool(
        torch.allclose(table.sum(1), torch.ones(len(table)), atol=1e-3))
    if not whole:
        log.warning("teacher targets at %s are not probabilities for these images; computing them again", path)
    return table if whole else None
