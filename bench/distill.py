"""Distillation's cost a training step: the teacher reading every batch (``train --teacher``) against cached
teacher targets (``--distill-cached``), and what the cache costs once.

Both kinds run the preset's model step of bench/train_throughput.py (forward, soft-target loss, backward,
clipping, AdamW, EMA) on the same pre-made augmented, mixed batches. The live kind first runs the teacher on the
batch and its mirror, as ``fer_core.training.Teacher`` does; the cached kind looks the rows up in a table and
mixes them like the labels (``TargetMixer``). The kinds alternate in rounds, so a background load weighs on both
alike. The cache's one-off cost is the teacher's time for one pass over the training images (its images/s here,
times their number), printed with how many epochs it takes to pay for itself.

    python bench/distill.py --teacher checkpoints/fer2013_ensemble.safetensors --threads 2
    python bench/distill.py --teacher checkpoints/fer2013_effnet_b0.safetensors --steps 10
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from cpu_bf16 import premade_batches  # bench/ is the script's own folder on sys.path
from train_throughput import Trainer, alternate, load_images

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from fer_core.config import TrainConfig  # noqa: E402
from fer_core.data import FER2013_CLASSES  # noqa: E402
from fer_core.training import TargetMixer, Teacher  # noqa: E402


def time_kinds(cfg: TrainConfig, teacher: Teacher, batches, counts, num_classes: int, steps: int, warmup: int,
               round_size: int) -> dict[str, float]:
    """Seconds a step of each kind (``live``, ``cached``) and of the teacher within the live one (``teacher``)."""
    mixer = TargetMixer(cfg, num_classes)
    table = torch.softmax(torch.randn(len(batches) * cfg.batch_size, num_classes), 1)
    trainers = {kind: Trainer(cfg, num_classes, counts, 2 * (warmup + steps)) for kind in ("live", "cached")}
    seconds = {"live": 0.0, "cached": 0.0, "teacher": 0.0}

    def step(kind: str, i: int, timed: bool) -> None:
        x, soft, y = batches[i % len(batches)]
        t0 = time.perf_counter()
        if kind == "live":
            taught = teacher(x)
        else:
            rows = torch.arange(len(y)) + (i % len(batches)) * cfg.batch_size
            taught = mixer(x.clone(), y, table[rows])[2]
        t1 = time.perf_counter()
        trainers[kind].step(x, (1 - cfg.distill_weight) * soft + cfg.distill_weight * taught, y)
        if timed:
            seconds[kind] += time.perf_counter() - t0
            seconds["teacher"] += (t1 - t0) if kind == "live" else 0.0

    alternate(tuple(trainers), step, steps, warmup, round_size)
    return {k: v / steps for k, v in seconds.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", type=Path, required=True, help="the teacher checkpoint (or ensemble file)")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "fer2013",
                   help="FER-2013 (default: ../shared/data/fer2013 from the repo root); random data when absent")
    p.add_argument("--preset", default="fer2013-effnet-b0", help="the student's settings (default fer2013-effnet-b0)")
    p.add_argument("--steps", type=int, default=20, help="timed steps of each kind (default 20)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps of each kind first (default 2)")
    p.add_argument("--round", type=int, default=5, help="steps a round; the two kinds alternate (default 5)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = TrainConfig.from_preset(args.preset, data=str(args.data), teacher=str(args.teacher))
    images, labels, num_classes, source = load_images(args.data, max(48, cfg.img_size))
    if num_classes != len(FER2013_CLASSES):
        raise SystemExit(f"the data has {num_classes} classes; this bench distils FER-2013's seven")
    teacher = Teacher(args.teacher, list(FER2013_CLASSES))
    counts = torch.bincount(labels, minlength=num_classes).tolist()
    batches = premade_batches(cfg, images, labels, num_classes)
    print(f"{source}; student {cfg.model} at {cfg.img_size} px, batch {cfg.batch_size}; teacher {args.teacher.name}; "
          f"{torch.get_num_threads()} torch thread(s); {args.steps} timed steps of each kind")
    t = time_kinds(cfg, teacher, batches, counts, num_classes, args.steps, args.warmup, args.round)
    per_epoch = len(labels) // cfg.batch_size
    table_s = t["teacher"] / cfg.batch_size * len(labels)      # the teacher reads the batch and its mirror either way
    saved = (t["live"] - t["cached"]) * per_epoch
    print(f"\n{'':<36}{'s a step':>10}{'min an epoch':>14}")
    print(f"{'teacher on every batch (live)':<36}{t['live']:>10.3f}{t['live'] * per_epoch / 60:>14.1f}")
    print(f"{'  of which the teacher':<36}{t['teacher']:>10.3f}")
    print(f"{'cached teacher targets':<36}{t['cached']:>10.3f}{t['cached'] * per_epoch / 60:>14.1f}")
    print(f"\nlive / cached: {t['live'] / t['cached']:.2f}x a step; the cache's one pass over {len(labels):,} "
          f"images: {table_s / 60:.1f} min, paid back after {table_s / saved:.2f} epochs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
