"""Training images/s of the real input pipeline against the model step alone.

The pipeline is fer_core.training's, step for step: index a batch of the in-memory uint8 FER-2013
training tensor, BatchAugment it (flip/rotate/scale/shift/brightness/erasing in one grid_sample),
mix it with TargetMixer (mixup or smoothed one-hot), then the model step (forward, class-weighted
soft-target loss, finiteness check, backward, gradient clipping, AdamW, weight EMA) with the
preset's settings. The reference is the same model step on pre-made float tensors and targets.
The pipeline passes if it costs no more than 10% over the model step alone.

Pipeline and reference steps are timed in alternating rounds, so a background load that comes and
goes weighs on both alike.

    python bench/train_throughput.py --steps 20
    python bench/train_throughput.py --model resnet18 --batch-size 32 --steps 10
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from fer_core.data import load_dataset  # noqa: E402
from fer_core.config import MODEL_NAMES, PRESETS, TrainConfig  # noqa: E402
from fer_core.models import create_model  # noqa: E402
from fer_core.training import (BatchAugment, NonFiniteLossGuard, TargetMixer, class_weights, lr_factor,  # noqa: E402
                               param_groups, soft_target_loss)

LIMIT = 0.10  # the pipeline may cost at most 10% over the model step


def load_images(data: Path, img_size: int, num_classes_default: int = 7):
    """(uint8 images, labels, class count, description): FER-2013 Training, or random data."""
    if data.exists():
        t0 = time.perf_counter()
        ds = load_dataset(data, img_size=img_size)
        split = ds.splits["Training"]
        return (split.images, split.labels, ds.num_classes,
                f"{data} Training split, {len(split):,} images (loaded in {time.perf_counter() - t0:.1f}s)")
    g = torch.Generator().manual_seed(0)
    n = 4096
    images = torch.randint(0, 256, (n, img_size, img_size), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, num_classes_default, (n,), generator=g)
    return images, labels, num_classes_default, (f"NOTE: {data} not found; random uint8 data ({n:,} images of "
                                                 f"{img_size}x{img_size}) stands in for FER-2013")


class Trainer:
    """fer_core.training's model step on the CPU (the disabled GradScaler is kept as there)."""

    def __init__(self, cfg: TrainConfig, num_classes: int, counts: list[int], total_steps: int):
        """With ``cfg.cpu_bf16`` the forward pass runs in bfloat16 autocast, as in fer_core.training."""
        from timm.utils import ModelEmaV3

        torch.manual_seed(cfg.seed)
        self.cfg, self.total_steps = cfg, total_steps
        self.model = create_model(cfg.model, num_classes=num_classes, pretrained=False, weights_path=None,
                                  drop_rate=cfg.drop_rate, img_size=cfg.img_size, output_stride=cfg.output_stride,
                                  drop_path_rate=cfg.drop_path_rate)
        self.model.to(memory_format=torch.channels_last).train()
        self.optimizer = torch.optim.AdamW(param_groups(self.model, cfg), lr=cfg.lr)
        self.ema = ModelEmaV3(self.model, decay=cfg.ema_decay, use_warmup=True) if cfg.ema_decay else None
        self.guard = NonFiniteLossGuard(cfg.max_nonfinite, cfg.nonfinite_lr_cut)
        self.scaler = torch.amp.GradScaler("cuda", enabled=False)
        self.weights = class_weights(counts, cfg.class_weight_power, cfg.class_weight_cap) \
            if cfg.class_weight_power else None
        self.step_no = 0

    def step(self, x: torch.Tensor, soft: torch.Tensor, y: torch.Tensor) -> None:
        cfg, step = self.cfg, self.step_no
        factor = lr_factor(step, self.total_steps, 0, cfg.min_lr_ratio) * self.guard.lr_scale
        for g in self.optimizer.param_groups:
            g["lr"] = g["base_lr"] * factor
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.cpu_bf16):
            logits = self.model(x)
        logits = logits.float()
        loss = soft_target_loss(logits, soft, self.weights)
        self.optimizer.zero_grad(set_to_none=True)
        if self.guard.ok(bool(torch.isfinite(loss).item())):
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            trainable = [p for p in self.model.parameters() if p.grad is not None]
            norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
            if self.guard.ok(bool(torch.isfinite(norm))):
                self.scaler.step(self.optimizer)
                self.scaler.update()
                if self.ema is not None:
                    self.ema.update(self.model, step=step)
            loss.item()
            (logits.argmax(1) == y).sum().item()
        self.step_no += 1


def alternate(kinds, step, steps: int, warmup: int, round_size: int) -> None:
    """Call ``step(kind, i, timed)`` for every kind: ``warmup`` untimed steps each, then ``steps`` timed ones each
    in alternating rounds of ``round_size``, so that a background load that comes and goes weighs on every kind
    alike. ``i`` counts on from the warm-up."""
    for i in range(warmup):
        for kind in kinds:
            step(kind, i, False)
    for start in range(warmup, warmup + steps, round_size):
        for kind in kinds:
            for i in range(start, min(start + round_size, warmup + steps)):
                step(kind, i, True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "fer2013",
                   help="FER-2013 folder or fer2013.csv (default: ../shared/data/fer2013 from the repo root); "
                        "random data when absent")
    p.add_argument("--preset", default="fer2013-effnet-b0", choices=sorted(PRESETS),
                   help="training settings (default: fer2013-effnet-b0)")
    p.add_argument("--model", choices=MODEL_NAMES, help="override the preset's model")
    p.add_argument("--batch-size", type=int, help="override the preset's batch size")
    p.add_argument("--img-size", type=int, help="override the preset's input size")
    p.add_argument("--steps", type=int, default=20, help="timed steps of each kind (default 20)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps of each kind first (default 2)")
    p.add_argument("--round", type=int, default=5, help="steps a round; the two kinds alternate (default 5)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default, OMP_NUM_THREADS)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {k: v for k, v in (("model", args.model), ("batch_size", args.batch_size),
                                   ("img_size", args.img_size)) if v is not None}
    cfg = TrainConfig.from_preset(args.preset, data=str(args.data), **overrides)
    cfg.validate()
    bs = cfg.batch_size

    images, labels, num_classes, source = load_images(args.data, max(48, cfg.img_size))
    counts = torch.bincount(labels, minlength=num_classes).tolist()
    total = args.warmup + args.steps
    augment, mixer = BatchAugment(cfg), TargetMixer(cfg, num_classes)
    rng = torch.Generator().manual_seed(cfg.seed * 1000)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(cfg.seed))
    batches = len(labels) // bs
    if batches < 1:
        raise SystemExit(f"{len(labels)} images are fewer than one batch of {bs}")

    def pipeline_batch(b: int):
        idx = order[(b % batches) * bs:((b % batches) + 1) * bs]
        x = augment(images[idx], rng)
        y = labels[idx]
        x, soft, _ = mixer(x, y)
        return x, soft, y

    # the reference: the same step on float tensors made beforehand (a few, cycled)
    premade = [pipeline_batch(b) for b in range(4)]
    piped, alone = Trainer(cfg, num_classes, counts, 2 * total), Trainer(cfg, num_classes, counts, 2 * total)

    print(f"{args.preset}: {cfg.model}, {cfg.img_size} px, batch {bs}, mixup {cfg.mixup_alpha} (p {cfg.mixup_prob}), "
          f"erase {cfg.erase_prob}, EMA {cfg.ema_decay}; {torch.get_num_threads()} torch thread(s), "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"data: {source}")
    seconds = {"pipeline": 0.0, "data": 0.0, "alone": 0.0}

    def step(kind: str, i: int, timed: bool) -> None:
        t0 = time.perf_counter()
        if kind == "pipeline":
            batch = pipeline_batch(i)
            t1 = time.perf_counter()
            piped.step(*batch)
            seconds["data"] += (t1 - t0) if timed else 0.0
        else:
            alone.step(*premade[i % len(premade)])
        seconds[kind] += (time.perf_counter() - t0) if timed else 0.0

    alternate(("pipeline", "alone"), step, args.steps, args.warmup, args.round)
    t_pipe, t_data, t_alone = seconds["pipeline"], seconds["data"], seconds["alone"]

    imgs = args.steps * bs
    rows = [("model step alone (pre-made float tensors)", t_alone),
            ("real pipeline (uint8 -> augment -> mix -> step)", t_pipe),
            ("  of which index + BatchAugment + TargetMixer", t_data)]
    print(f"\n{'':<50}{'images/s':>10}{'ms/batch':>10}")
    for name, t in rows:
        print(f"{name:<50}{imgs / t:>10.1f}{1000 * t / args.steps:>10.1f}")
    overhead = t_pipe / t_alone - 1
    verdict = "PASS" if overhead <= LIMIT else "FAIL"
    print(f"\npipeline / model-alone throughput: {t_alone / t_pipe:.3f} "
          f"(pipeline cost {100 * overhead:+.1f}%, data path {100 * t_data / t_alone:.1f}% of a model step; "
          f"limit {100 * LIMIT:.0f}%): {verdict}")
    print(f"{args.steps} timed steps of each kind in rounds of {args.round}, after {args.warmup} warm-up steps")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
