"""Knowledge distillation: a trained checkpoint whose probabilities join the student's targets."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..checkpoint import FerClassifier
from ..config import GREY_MEAN, GREY_STD
from ..storage import CheckpointError


class Teacher:
    """A trained checkpoint whose probabilities over the student's classes, averaged over each image
    and its mirror, become part of the student's targets (knowledge distillation). It sees the
    student's augmented, mixed batch, so both are taught on the same view."""

    def __init__(self, path: str | Path, class_names, device: torch.device | str = "cpu"):
        try:
            self.classifier = FerClassifier.from_checkpoint(path, device).restricted_to(class_names)
        except CheckpointError as e:
            raise CheckpointError(f"teacher {path}: {e}") from None
        # restricted_to keeps the teacher's class order; the targets need the student's
        self.index = torch.tensor([self.classifier.class_names.index(c) for c in class_names], device=device)

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

    def soft_targets(self, x: torch.Tensor, soft: torch.Tensor, class_weights: torch.Tensor | None,
                     distill_weight: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The batch's targets with the teacher's share mixed in, and per-sample weights that carry the class
        weights: weighting the teacher's probabilities class by class would pull every face towards the rare
        classes, so the weights follow the labels instead."""
        sample_weights = (soft * class_weights).sum(1) if class_weights is not None else None
        return (1 - distill_weight) * soft + distill_weight * self(x), sample_weights
