"""Training curves of one or more runs as a PNG: loss and accuracy, train and validation.

    python scripts/plot_training.py runs/RUN [runs/OTHER ...] --out docs/curves.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fer_core import RunStore  # noqa: E402
from fer_core.runs import best_row  # noqa: E402
from fer_core.storage import atomic_write  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders")
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--title", default="")
    args = p.parse_args()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, path in enumerate(args.runs):
        run = RunStore().get(path)
        rows = run.metrics()
        if not rows:
            sys.exit(f"{path}: no metrics yet")
        epochs = [r["epoch"] for r in rows]
        color = f"C{i}"
        name = run.run_id
        ax_loss.plot(epochs, [r["train_loss"] for r in rows], "--", color=color, label=f"{name} train")
        ax_loss.plot(epochs, [r["val_loss"] for r in rows], "-", color=color, label=f"{name} validation")
        ax_acc.plot(epochs, [r["train_acc"] for r in rows], "--", color=color, label=f"{name} train")
        ax_acc.plot(epochs, [r["val_acc"] for r in rows], "-", color=color, label=f"{name} validation")
        best = best_row(rows)   # the epoch in best.safetensors, chosen by the run's select_metric
        if best:
            ax_acc.annotate(f"{best['val_acc']:.3f}", (best["epoch"], best["val_acc"]), textcoords="offset points",
                            xytext=(0, 6), ha="center", color=color, fontsize=8)
        clean = [r["epoch"] for r in rows if r.get("clean")]
        if clean and i == 0:  # the epochs without mixup and erasing, where the train curves jump
            for ax in (ax_loss, ax_acc):
                ax.axvspan(min(clean) - 0.5, max(clean) + 0.5, color="0.9", zorder=0,
                           label="clean epochs (no mixup, no erasing)")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss (train: with mixup, smoothing, class weights)")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy (validation: PublicTest)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    with atomic_write(args.out) as f:   # a failed write leaves the old figure
        fig.savefig(f, format=Path(args.out).suffix.lstrip(".") or "png", dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
