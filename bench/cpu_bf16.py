"""Training speed in bfloat16 autocast on the CPU against fp32 (``train --cpu-bf16``), model by model.

Each model is trained with its preset's settings by the model step of bench/train_throughput.py (forward,
class-weighted soft-target loss, backward, clipping, AdamW, EMA) on the same pre-made augmented batches, once in
fp32 and once in bf16 autocast, in alternating rounds so that a background load weighs on both alike. bf16 pays
only on CPUs with native bfloat16 (AVX512-BF16 or AMX); the script says whether this one has it.

    python bench/cpu_bf16.py --threads 2
    python bench/cpu_bf16.py --models resnet18 --steps 30
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

from train_throughput import Trainer, alternate, load_images  # bench/ is the script's own folder on sys.path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from fer_core.config import TrainConfig  # noqa: E402
from fer_core.training import BatchAugment, TargetMixer, native_cpu_bf16  # noqa: E402

PRESET_OF = {"resnet18": "fer2013-resnet18", "efficientnet_b0": "fer2013-effnet-b0", "repvgg_a0": "fer2013-repvgg-a0"}


def premade_batches(cfg: TrainConfig, images, labels, num_classes: int, count: int = 4):
    augment, mixer = BatchAugment(cfg), TargetMixer(cfg, num_classes)
    rng = torch.Generator().manual_seed(0)
    out = []
    for b in range(count):
        idx = torch.arange(b * cfg.batch_size, (b + 1) * cfg.batch_size) % len(labels)
        x, soft, _ = mixer(augment(images[idx], rng), labels[idx])
        out.append((x, soft, labels[idx]))
    return out


def time_model(model: str, data: Path, steps: int, warmup: int, round_size: int) -> tuple[float, float]:
    """(fp32 images/s, bf16 images/s) of one model's training step."""
    cfg = TrainConfig.from_preset(PRESET_OF[model], data=str(data))
    images, labels, num_classes, _ = load_images(data, cfg.img_size)
    counts = torch.bincount(labels, minlength=num_classes).tolist()
    batches = premade_batches(cfg, images, labels, num_classes)
    total = 2 * (warmup + steps)
    trainers = {bf16: Trainer(dataclasses.replace(cfg, cpu_bf16=bf16), num_classes, counts, total)
                for bf16 in (False, True)}
    seconds = {False: 0.0, True: 0.0}

    def step(bf16: bool, i: int, timed: bool) -> None:
        t0 = time.perf_counter()
        trainers[bf16].step(*batches[i % len(batches)])
        seconds[bf16] += (time.perf_counter() - t0) if timed else 0.0

    alternate((False, True), step, steps, warmup, round_size)
    images_timed = steps * cfg.batch_size
    return images_timed / seconds[False], images_timed / seconds[True]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "fer2013",
                   help="FER-2013 (default: ../shared/data/fer2013 from the repo root); random data when absent")
    p.add_argument("--models", default=",".join(PRESET_OF), help="comma-separated (default: all three)")
    p.add_argument("--steps", type=int, default=20, help="timed steps of each precision (default 20)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps of each first (default 2)")
    p.add_argument("--round", type=int, default=5, help="steps a round; the two alternate (default 5)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    native = native_cpu_bf16()
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, native bfloat16: {'yes' if native else 'no'}; "
          f"{torch.get_num_threads()} torch thread(s); {args.steps} timed steps of each, rounds of {args.round}")
    print(f"\n{'model (preset settings)':<28}{'fp32 img/s':>12}{'bf16 img/s':>12}{'bf16/fp32':>11}")
    for model in args.models.split(","):
        fp32, bf16 = time_model(model.strip(), args.data, args.steps, args.warmup, args.round)
        print(f"{model:<28}{fp32:>12.1f}{bf16:>12.1f}{bf16 / fp32:>11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
