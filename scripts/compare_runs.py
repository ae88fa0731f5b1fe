"""Training runs side by side, as a Markdown table: best validation scores and speed.

    python scripts/compare_runs.py runs/RUN [runs/OTHER ...] [--at-epochs 10,20,30]

For each run: model, input size, epochs done, the epoch its best checkpoint holds, validation
accuracy, macro-F1 and loss there, the lowest validation loss, and the median seconds an epoch
with the median training images/s (medians, so an epoch slowed by other work or cut short by a
resume does not skew them). ``--at-epochs`` adds a table of validation accuracy and macro-F1 at those
epochs: a run still in progress against a finished one, point for point of the learning curve.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fer_core import RunStore  # noqa: E402

COLUMNS = ("run", "model", "input", "epochs", "best epoch", "val acc", "val macro-F1", "val loss at best",
           "lowest val loss", "s/epoch", "train img/s")


def summarise(path: str) -> dict:
    run = RunStore().get(path)
    rows = run.metrics()
    if not rows:
        raise SystemExit(f"{path}: no finished epoch yet")
    config = run.read_config()
    best = run.best_metrics() or rows[-1]
    full = [r for r in rows if r.get("images_per_s")]
    return {"run": run.run_id, "model": config["model"], "input": f"{config['img_size']} px",
            "epochs": f"{len(rows)}/{config['epochs']}", "best epoch": best["epoch"],
            "val acc": f"{best['val_acc']:.4f}", "val macro-F1": f"{best['val_macro_f1']:.4f}",
            "val loss at best": f"{best['val_loss']:.4f}",
            "lowest val loss": f"{min(r['val_loss'] for r in rows):.4f}",
            "s/epoch": f"{statistics.median(r['seconds'] for r in rows):.0f}",
            "train img/s": f"{statistics.median(r['images_per_s'] for r in full):.0f}" if full else "-"}


def markdown_table(summaries: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(s[c]) for c in COLUMNS) + " |" for s in summaries]
    return "\n".join(lines)


def at_epochs_table(paths: list[str], epochs: list[int]) -> str:
    """Validation accuracy / macro-F1 of each run at each epoch ("-" where a run has not got there)."""
    lines = ["| epoch | " + " | ".join(RunStore().get(p).run_id for p in paths) + " |", "|" + "---|" * (len(paths) + 1)]
    by_epoch = [{r["epoch"]: r for r in RunStore().get(p).metrics()} for p in paths]
    for epoch in epochs:
        cells = [f"{rows[epoch]['val_acc']:.4f} / {rows[epoch]['val_macro_f1']:.4f}" if epoch in rows else "-"
                 for rows in by_epoch]
        lines.append(f"| {epoch} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders")
    p.add_argument("--at-epochs", type=lambda s: [int(e) for e in s.split(",")], default=None,
                   help="comma-separated epochs: validation accuracy / macro-F1 of each run there")
    args = p.parse_args()
    print(markdown_table([summarise(r) for r in args.runs]))
    if args.at_epochs:
        print()
        print(at_epochs_table(args.runs, args.at_epochs))


if __name__ == "__main__":
    main()
