"""The guard against non-finite losses and gradients."""
from __future__ import annotations

import logging

log = logging.getLogger("fer_core.training")


class TrainingDiverged(RuntimeError):
    """Too many non-finite losses in a row."""


class NonFiniteLossGuard:
    """Skip steps whose loss or gradients are not finite, cut the learning rate each time, and stop
    with a clear error after ``max_in_a_row`` of them in a row."""

    def __init__(self, max_in_a_row: int = 5, lr_cut: float = 0.5):
        self.max_in_a_row, self.lr_cut = max_in_a_row, lr_cut
        self.in_a_row, self.total, self.lr_scale = 0, 0, 1.0

    def ok(self, finite: bool, where: str = "") -> bool:
        if finite:
            self.in_a_row = 0
            return True
        self.in_a_row += 1
        self.total += 1
        self.lr_scale *= self.lr_cut
        log.warning("non-finite loss %s: step skipped, learning rate scaled to %.3g of schedule (%d in a row)",
                    where, self.lr_scale, self.in_a_row)
        if self.in_a_row >= self.max_in_a_row:
            raise TrainingDiverged(
                f"training diverged: {self.in_a_row} non-finite losses in a row {where}. Lower the learning "
                "rate or the class-weight cap, or turn AMP off.")
        return False

    def state(self) -> dict:
        return {"in_a_row": self.in_a_row, "total": self.total, "lr_scale": self.lr_scale}

    def load(self, state: dict) -> None:
        self.in_a_row, self.total, self.lr_scale = state["in_a_row"], state["total"], state["lr_scale"]
