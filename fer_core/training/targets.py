"""What the loss compares the logits with: mixed or label-smoothed soft targets, inverse-frequency class
weights (capped), and the soft-target cross-entropy."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.data.mixup import mixup_target

from ..config import TrainConfig


class TargetMixer:
    """Mixup/CutMix (timm's) or, with both off, label-smoothed one-hot targets."""

    def __init__(self, cfg: TrainConfig, num_classes: int):
        self.num_classes, self.smoothing = num_classes, cfg.label_smoothing
        self.mixup = None
        if cfg.mixup_alpha > 0 or cfg.cutmix_alpha > 0:
            self.mixup = Mixup(mixup_alpha=cfg.mixup_alpha, cutmix_alpha=cfg.cutmix_alpha, prob=cfg.mixup_prob,
                               label_smoothing=cfg.label_smoothing, num_classes=num_classes)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, probabilities: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The mixed batch, its label targets and ``probabilities`` (N, classes; a teacher's, say) mixed with the
        same pairs and shares as the labels."""
        if self.mixup is None:
            return x, mixup_target(y, self.num_classes, smoothing=self.smoothing), probabilities
        lam = self._mix_inputs(x)
        soft = mixup_target(y, self.num_classes, lam, self.mixup.label_smoothing)
        if probabilities is not None:   # timm pairs each image with its mirror in the batch, x.flip(0)
            probabilities = lam * probabilities + (1 - lam) * probabilities.flip(0)
        return x, soft, probabilities

    def _mix_inputs(self, x: torch.Tensor) -> float | torch.Tensor:
        """Mix ``x`` in place as timm's ``Mixup.__call__`` does, returning the shares it drew (timm keeps them to
        itself; tests/test_train.py checks that the labels come out as timm's own call mixes them)."""
        mixup = self.mixup
        if mixup.mode == "elem":
            return mixup._mix_elem(x)
        if mixup.mode == "pair":
            return mixup._mix_pair(x)
        return mixup._mix_batch(x)


def class_weights(counts: list[int], power: float, cap: float) -> torch.Tensor:
    """Inverse-frequency weights to ``power``, normalised to a sample-weighted mean of 1, clipped to
    ``[1/cap, cap]`` so a rare class cannot blow the loss up."""
    n = torch.tensor(counts, dtype=torch.float64).clamp(min=1)
    w = (n.sum() / (len(n) * n)) ** power
    w = w / ((w * n).sum() / n.sum())
    return w.clamp(1 / cap, cap).float()


def soft_target_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None,
                     sample_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy against soft targets, each class's term scaled by its weight; normalised by the
    total weight of the targets (as ``F.cross_entropy`` does with ``weight``). Or, with
    ``sample_weights`` instead, each sample's term scaled by its own weight."""
    logp = F.log_softmax(logits.float(), dim=1)
    if sample_weights is not None:
        if weights is not None:
            raise ValueError("give class weights or sample weights, not both")
        return -(sample_weights * (targets * logp).sum(1)).sum() / sample_weights.sum()
    if weights is None:
        return -(targets * logp).sum(1).mean()
    wt = targets * weights
    return -(wt * logp).sum() / wt.sum()
