"""Training-step speed of the design choices in the README, on random in-memory tensors.

Compares, for EfficientNet-B0 at a given input size: memory format (channels-last vs contiguous)
and how the output stride of 16 is obtained (fer_core's stride removal vs timm's dilation), against
the plain output stride of 32. Prints images/s and ratios.

    python bench/model_variants.py --img-size 64 --steps 8
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fer_core.models import create_model  # noqa: E402


def step_rate(model: torch.nn.Module, img_size: int, batch: int, steps: int, channels_last: bool) -> float:
    x = torch.randn(batch, 1, img_size, img_size)
    y = torch.randint(0, 7, (batch,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for i in range(steps + 2):
        if i == 2:
            start = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = {
        "output stride 32, channels-last": (lambda: create_model("efficientnet_b0", img_size=args.img_size,
                                                                  output_stride=32), True),
        "output stride 16 (stride removed), channels-last": (lambda: create_model(
            "efficientnet_b0", img_size=args.img_size, output_stride=16), True),
        "output stride 16 (stride removed), contiguous": (lambda: create_model(
            "efficientnet_b0", img_size=args.img_size, output_stride=16), False),
        "output stride 16 (timm dilation), channels-last": (lambda: timm.create_model(
            "efficientnet_b0", num_classes=7, in_chans=1, drop_rate=0.2, output_stride=16), True),
    }
    print(f"EfficientNet-B0, {args.img_size} px, batch {args.batch_size}, {torch.get_num_threads()} threads, "
          f"{args.steps} training steps each")
    rates = {}
    for name, (build, channels_last) in variants.items():
        torch.manual_seed(0)
        rates[name] = step_rate(build(), args.img_size, args.batch_size, args.steps, channels_last)
    ref = rates["output stride 16 (stride removed), channels-last"]
    print(f"{'variant':<52}{'images/s':>10}{'vs fer_core':>13}")
    for name, r in rates.items():
        print(f"{name:<52}{r:>10.0f}{r / ref:>12.2f}x")


if __name__ == "__main__":
    main()
