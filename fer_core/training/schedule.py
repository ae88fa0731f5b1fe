"""What trains when, and how fast: gradual unfreezing by stage, per-stage parameter groups (layer decay),
and the warm-up + cosine learning-rate schedule."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..config import TrainConfig
from ..models import stage_modules


def unfrozen_stage_count(cfg: TrainConfig, epoch: int, num_stages: int) -> int:
    """How many stages, counted from the head, train in ``epoch`` (0-based)."""
    if cfg.unfreeze_head_epochs <= 0 or epoch >= cfg.unfreeze_head_epochs and cfg.unfreeze_every <= 0:
        return num_stages
    if epoch < cfg.unfreeze_head_epochs:
        return 1
    return min(num_stages, 2 + (epoch - cfg.unfreeze_head_epochs) // cfg.unfreeze_every)


def apply_unfreezing(model: torch.nn.Module, count: int) -> list[str]:
    """Make the top ``count`` stages trainable and freeze the rest (their BatchNorm in eval mode)."""
    stages = stage_modules(model)
    for i, (_, module) in enumerate(stages):
        trainable = i >= len(stages) - count
        for p in module.parameters():
            p.requires_grad_(trainable)
    return [name for name, _ in stages[len(stages) - count:]]


def set_frozen_bn_eval(model: torch.nn.Module, count: int) -> None:
    stages = stage_modules(model)
    for _, module in stages[:len(stages) - count]:
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()


def param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict]:
    """Two groups a stage (with and without weight decay); the head gets ``lr``, the backbone's top
    stage ``backbone_lr``, and each stage below ``layer_decay`` times the one above."""
    stages = stage_modules(model)
    backbone_lr = cfg.backbone_lr if cfg.backbone_lr is not None else cfg.lr
    groups = []
    for i, (name, module) in enumerate(stages):
        depth_from_top = len(stages) - 2 - i
        lr = cfg.lr if i == len(stages) - 1 else backbone_lr * cfg.layer_decay ** depth_from_top
        decay = [p for p in module.parameters() if p.ndim > 1]
        no_decay = [p for p in module.parameters() if p.ndim <= 1]
        groups.append({"params": decay, "lr": lr, "base_lr": lr, "weight_decay": cfg.weight_decay, "stage": name})
        groups.append({"params": no_decay, "lr": lr, "base_lr": lr, "weight_decay": 0.0, "stage": name})
    return groups


def lr_factor(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """Linear warm-up, then cosine decay to ``min_ratio``."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class StepSchedule:
    """The run's step counts: batches an epoch (per process), all steps, warm-up steps."""

    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    min_lr_ratio: float

    @classmethod
    def of(cls, cfg: TrainConfig, train_images: int, world: int) -> StepSchedule:
        steps = train_images // world // cfg.batch_size
        if steps < 1:
            raise ValueError(f"{train_images} training images are fewer than one batch of {cfg.batch_size}")
        return cls(steps, cfg.epochs * steps, int(cfg.warmup_epochs * steps), cfg.min_lr_ratio)

    def set_lr(self, optimizer: torch.optim.Optimizer, step: int, scale: float = 1.0) -> None:
        """Every group's learning rate at ``step``: its base rate times the schedule (times ``scale``)."""
        factor = lr_factor(step, self.total_steps, self.warmup_steps, self.min_lr_ratio) * scale
        for g in optimizer.param_groups:
            g["lr"] = g["base_lr"] * factor
