"""How long a training run will take, before it starts and during its first epoch; plain functions (no Streamlit,
no PyTorch), so the Train page can show them at once and the tests can check them.

Before a run, the speed is taken from what this machine has measured: the ``images_per_s`` of the newest finished
epoch of an earlier run with the same model, scaled by the input area. Without one it comes from
``MEASURED_SPEED``, the training images/s of the recorded runs on the development machine (2 cores, no GPU;
docs/RESULTS.md, the median epoch of EfficientNet-B0 and ResNet-18 at 64 px, batch 64), which other machines may
beat or trail several times (docs/BENCHMARKS.md: one 2-core machine ran 5x slower). A model without a figure
takes EfficientNet-B0's. Validation is counted at ``VALIDATION_COST`` of a training image each.
"""
from __future__ import annotations

from dataclasses import dataclass

# model -> (input px, training images/s) of the median epoch of runs on the development machine (docs/RESULTS.md)
MEASURED_SPEED = {"efficientnet_b0": (64, 260.0), "resnet18": (64, 237.0)}
VALIDATION_COST = 0.3   # a validation image (forward only, no augmentation) against a training image


@dataclass(frozen=True)
class Estimate:
    seconds: float
    source: str     # how the speed was obtained, for the page to say


def area_scaled(images_per_s: float, measured_px: int, img_size: int) -> float:
    """Convolution cost grows with the input's area: the speed at ``img_size`` from one at ``measured_px``."""
    return images_per_s * (measured_px / img_size) ** 2


def measured_speed(model: str, img_size: int, earlier_runs: list[tuple[dict, list[dict]]]) -> tuple[float, str]:
    """Training images/s for ``model`` at ``img_size``: from the newest earlier run of that model that finished an
    epoch (``(config, metrics rows)`` pairs, newest first), else from ``MEASURED_SPEED``."""
    for config, rows in earlier_runs:
        speeds = [r["images_per_s"] for r in rows if r.get("images_per_s")]
        if config.get("model") == model and speeds and config.get("img_size"):
            return (area_scaled(speeds[-1], config["img_size"], img_size),
                    f"the speed this machine measured in run {config.get('_run_id', 'an earlier run')} "
                    f"({speeds[-1]:.0f} images/s at {config['img_size']} px)")
    px, speed = MEASURED_SPEED.get(model, MEASURED_SPEED["efficientnet_b0"])
    return (area_scaled(speed, px, img_size),
            f"a table of speeds measured on a 2-core development machine ({speed:.0f} images/s at {px} px; "
            "yours may be several times faster or slower); the first epoch shows the real pace")


def run_estimate(model: str, img_size: int, epochs: int, train_images: int, val_images: int,
                 earlier_runs: list[tuple[dict, list[dict]]]) -> Estimate:
    speed, source = measured_speed(model, img_size, earlier_runs)
    per_epoch = (train_images + VALIDATION_COST * val_images) / max(speed, 1e-9)
    return Estimate(epochs * per_epoch, source)


def duration(seconds: float) -> str:
    """'about 40 s', 'about 12 min', 'about 3.5 h'."""
    if seconds < 90:
        return f"about {seconds:.0f} s"
    if seconds < 90 * 60:
        return f"about {seconds / 60:.0f} min"
    return f"about {seconds / 3600:.1f} h"


def first_epoch_eta(first_seen: tuple[float, int], now: float, progress: dict, val_share: float = 0.1) -> float | None:
    """Seconds left in the whole run from the pace of the batches since ``first_seen`` (time, batch) of the
    current epoch; None until a batch has passed. ``val_share``: validation's time against an epoch's training."""
    t0, b0 = first_seen
    done = progress["batch"] - b0
    if done <= 0 or now <= t0:
        return None
    per_batch = (now - t0) / done
    left_this_epoch = (progress["batches"] - progress["batch"]) * per_batch
    per_epoch = progress["batches"] * per_batch * (1 + val_share)
    validation = per_batch * progress["batches"] * val_share
    return left_this_epoch + validation + (progress["epochs"] - progress["epoch"]) * per_epoch
