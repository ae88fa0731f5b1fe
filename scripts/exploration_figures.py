"""The docs' figures of a checkpoint's embedding map and error slices, from the sidecars ``python -m fer_core embed``
and ``python -m fer_core slices`` saved beside it (no model, no data set):

    python scripts/exploration_figures.py --checkpoint checkpoints/fer2013_effnet_b0.safetensors --split PrivateTest

writes docs/img/embedding_map.png (coloured by true class, and right/wrong) and docs/img/error_slices.png (each
class's recall by bin of each property, against its recall on the split).
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dashboard.charts import RIGHT_WRONG_COLOURS, class_colour  # noqa: E402
from dashboard.exploration import bin_labels  # noqa: E402
from fer_core.embedding import load_embedding  # noqa: E402
from fer_core.slices import load_slices, slices_file  # noqa: E402
from fer_core.storage import atomic_write_bytes  # noqa: E402


def png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def embedding_figure(emb: dict):
    x, y = np.array(emb["x"]), np.array(emb["y"])
    true, pred = np.array(emb["true"]), np.array(emb["predicted"])
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 6))
    for k, name in enumerate(emb["class_names"]):
        m = true == k
        a.scatter(x[m], y[m], s=4, color=class_colour(name, k), label=f"{name} ({m.sum()})", alpha=0.7)
    a.legend(markerscale=3, fontsize=8)
    a.set_title(f"True class ({emb['num_images']:,} {emb['split']} faces, t-SNE)")
    for outcome, m in (("right", true == pred), ("wrong", true != pred)):
        b.scatter(x[m], y[m], s=4, color=RIGHT_WRONG_COLOURS[outcome], label=f"{outcome} ({m.sum()})", alpha=0.7)
    b.legend(markerscale=3, fontsize=8)
    b.set_title("Right or wrong")
    for ax in (a, b):
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def slices_figure(slices: dict):
    props = list(slices["properties"])
    fig, axes = plt.subplots(1, len(props), figsize=(5 * len(props), 4.2))
    for ax, prop in zip(np.atleast_1d(axes), props):
        rows, names = slices["properties"][prop], slices["class_names"]
        z = np.array([[np.nan if r["recall"][c] is None else 100 * (r["recall"][c] - slices["recall"][c])
                       for r in rows] for c in names])
        ax.imshow(z, cmap="RdBu", vmin=-30, vmax=30, aspect="auto")
        for i, c in enumerate(names):
            for j, r in enumerate(rows):
                recall = r["recall"][c]
                ax.text(j, i, f"{'-' if recall is None else f'{recall:.0%}'}\nn={r['support'][c]}", ha="center",
                        va="center", fontsize=7)
        ax.set_xticks(range(len(rows)), bin_labels(rows), fontsize=8)
        ax.set_yticks(range(len(names)), names)
        ax.set_title(f"Recall by {prop}")
    fig.suptitle(f"{slices['split']}: each class's recall in quantile bins (colour: points from its recall on the "
                 "split, red lower)")
    return fig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "fer2013_effnet_b0.safetensors"))
    p.add_argument("--split", default="PrivateTest")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = p.parse_args(argv)
    emb = load_embedding(args.checkpoint, args.split)
    slices = load_slices(slices_file(args.checkpoint, args.split))
    if emb is None or slices is None:
        sys.exit(f"error: run python -m fer_core embed and slices for {args.checkpoint} on {args.split} first")
    atomic_write_bytes(args.out / "embedding_map.png", png(embedding_figure(emb)))
    atomic_write_bytes(args.out / "error_slices.png", png(slices_figure(slices)))
    print(f"{args.out / 'embedding_map.png'}, {args.out / 'error_slices.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
