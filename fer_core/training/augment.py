"""Batched augmentation on the CPU: one ``grid_sample`` a batch for flips, rotations, scaling and shifts,
then brightness/contrast and random erasing; no loader workers needed (a few percent of a training step)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.data.random_erasing import RandomErasing

from ..config import GREY_MEAN, GREY_STD, TrainConfig


class BatchAugment:
    """Random flip, rotation, scale, shift, brightness/contrast and erasing on a uint8 batch."""

    def __init__(self, cfg: TrainConfig, mean: float = GREY_MEAN, std: float = GREY_STD):
        self.cfg, self.mean, self.std = cfg, mean, std
        self.erase = RandomErasing(cfg.erase_prob, mode="pixel", device="cpu") if cfg.erase_prob > 0 else None

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 (N, H, W) -> normalised float (N, 1, S, S), channels-last."""
        x = images.unsqueeze(1).float().div_(255.0)
        x = self._warp(x, generator)
        if self.cfg.brightness_contrast > 0:
            x = self._brightness_contrast(x, generator)
        x = (x - self.mean) / self.std
        if self.erase is not None:
            x = self.erase(x)
        return x.contiguous(memory_format=torch.channels_last)

    def _warp(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Flip, rotate, scale and shift every image with its own random affine map, in one resampling."""
        cfg, n, size = self.cfg, x.shape[0], self.cfg.img_size
        rand = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
        angle = (rand(n) * 2 - 1) * math.radians(cfg.rotate_deg)
        scale = 1 + (rand(n) * 2 - 1) * cfg.scale_jitter
        flip = torch.where(rand(n) < cfg.flip_prob, -1.0, 1.0)
        shift = (rand(n, 2) * 2 - 1) * (2 * cfg.translate)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], 1),
                             torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1)
        grid = F.affine_grid(theta, [n, 1, size, size], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    def _brightness_contrast(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        n, b = x.shape[0], self.cfg.brightness_contrast
        contrast = 1 + (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * b
        brightness = (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * b * 0.5
        mean = x.mean(dim=(2, 3), keepdim=True)
        return ((x - mean) * contrast + mean + brightness).clamp_(0, 1)
