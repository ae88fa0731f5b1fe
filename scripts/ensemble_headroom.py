"""How far could a family of models get by combining them? A bound from their evaluation reports.

Each report (``python -m fer_core evaluate ... --json R.json``) keeps every image's probabilities.
This script scores the logit ensemble (mean log-probability) of every subset of the models, which
bounds what averaging their weights or distilling them into one model can be expected to reach;
how alike each pair's mistakes are (an ensemble gains from members that err on different faces);
and, with ``--bias-class``, a per-class logit bias tuned by repeated 2-fold cross-validation on the
same split: the honest gain of moving one class's decision threshold.

All reports must hold the same images, classes and TTA mode. Name a report ``NAME=PATH``, or the
file name (up to its first dot) names it.

    python scripts/ensemble_headroom.py a=A.PublicTest.json b=B.PublicTest.json c=C.PublicTest.json \
        --bias-class disgust

The best subset is chosen on the split it is scored on, so its figure is optimistic.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

MAX_MODELS = 12        # 4,095 subsets


def load_reports(specs: list[str]) -> tuple[list[str], np.ndarray, dict[str, np.ndarray], dict]:
    """Names, true labels, each model's log-probabilities (N, C), and the shared report fields."""
    names, logps, first = [], {}, None
    for spec in specs:
        name, _, path = spec.rpartition("=")
        name = name or Path(path).name.split(".")[0]
        if name in logps:
            raise ValueError(f"two reports are named {name!r}; name them NAME=PATH")
        report = json.loads(Path(path).read_text())
        records = report.get("predictions") or []
        if not records:
            raise ValueError(f"{path} holds no per-image predictions")
        shared = {"classes": report["class_names"], "tta": report.get("tta", "none"),
                  "split": report.get("split", ""), "ids": [r["id"] for r in records],
                  "true": [r["true"] for r in records]}
        if first is None:
            first = shared
        for key in ("classes", "tta", "split", "ids", "true"):
            if shared[key] != first[key]:
                raise ValueError(f"{path} differs from {specs[0]} in its {key}")
        probs = np.array([r["probabilities"] for r in records], dtype=np.float64)
        names.append(name)
        logps[name] = np.log(np.clip(probs, 1e-7, 1.0))   # reports round probabilities to 5 decimals
    y = np.array([first["classes"].index(t) for t in first["true"]])
    return names, y, logps, first


def scores(y: np.ndarray, pred: np.ndarray, num_classes: int) -> tuple[float, float]:
    """Accuracy and macro-F1 over all ``num_classes`` (a class never predicted nor present counts 0)."""
    f1 = f1_score(y, pred, labels=list(range(num_classes)), average="macro", zero_division=0)
    return float(np.mean(pred == y)), float(f1)


def subset_scores(names: list[str], y: np.ndarray,
                  logps: dict[str, np.ndarray]) -> list[tuple[tuple[str, ...], float, float]]:
    """(subset, accuracy, macro-F1) of the logit ensemble of every non-empty subset of ``names``."""
    k = next(iter(logps.values())).shape[1]
    out = []
    for size in range(1, len(names) + 1):
        for combo in itertools.combinations(names, size):
            mean = np.mean([logps[n] for n in combo], axis=0)
            out.append((combo, *scores(y, mean.argmax(1), k)))
    return out


def error_overlap(names: list[str], y: np.ndarray,
                  logps: dict[str, np.ndarray]) -> list[tuple[str, str, float, float, float]]:
    """(a, b, share of images both get wrong, share they answer differently, correlation of their errors) for
    every pair: the correlation is 1 for models wrong on the same faces, 0 for independent mistakes."""
    pred = {n: logps[n].argmax(1) for n in names}
    out = []
    for a, b in itertools.combinations(names, 2):
        wrong_a, wrong_b = pred[a] != y, pred[b] != y
        alike = np.corrcoef(wrong_a, wrong_b)[0, 1] if wrong_a.std() and wrong_b.std() else float("nan")
        out.append((a, b, float(np.mean(wrong_a & wrong_b)), float(np.mean(pred[a] != pred[b])), float(alike)))
    return out


def bias_cv(logp: np.ndarray, y: np.ndarray, cls: int, grid: np.ndarray, repeats: int = 50,
            seed: int = 0) -> dict:
    """Add a bias to class ``cls``'s logit, chosen from ``grid`` by macro-F1 on one half of the images
    and scored on the other (both ways, ``repeats`` random halvings). Returns the mean and spread of
    the held-out gain, the median bias chosen, and the best bias and macro-F1 on all images (in-sample)."""
    k = logp.shape[1]

    def f1_with(idx: np.ndarray, b: float) -> float:
        shifted = logp[idx].copy()
        shifted[:, cls] += b
        return scores(y[idx], shifted.argmax(1), k)[1]

    rng = np.random.default_rng(seed)
    gains, chosen = [], []
    for _ in range(repeats):
        perm = rng.permutation(len(y))
        half = len(y) // 2
        for fit, held in ((perm[:half], perm[half:]), (perm[half:], perm[:half])):
            b = grid[int(np.argmax([f1_with(fit, b) for b in grid]))]
            chosen.append(b)
            gains.append(f1_with(held, b) - f1_with(held, 0.0))
    everything = np.arange(len(y))
    in_sample = [f1_with(everything, b) for b in grid]
    return {"gain": float(np.mean(gains)), "gain_sd": float(np.std(gains)), "median_bias": float(np.median(chosen)),
            "best_bias_in_sample": float(grid[int(np.argmax(in_sample))]), "best_f1_in_sample": float(max(in_sample)),
            "f1": f1_with(everything, 0.0)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reports", nargs="+", help="evaluation reports (JSON), NAME=PATH or PATH")
    p.add_argument("--top", type=int, default=5, help="best subsets to list (default 5)")
    p.add_argument("--bias-class", help="also cross-validate a logit bias for this class")
    p.add_argument("--repeats", type=int, default=50, help="random halvings for --bias-class (default 50)")
    args = p.parse_args(argv)
    if len(args.reports) > MAX_MODELS:
        p.error(f"at most {MAX_MODELS} reports")
    try:
        names, y, logps, shared = load_reports(args.reports)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    classes = shared["classes"]
    print(f"{shared['split']}, {len(y)} images, classes {', '.join(classes)}, TTA {shared['tta']}\n")
    results = subset_scores(names, y, logps)
    print("| models | accuracy | macro-F1 |\n|---|---:|---:|")
    singles = [r for r in results if len(r[0]) == 1]
    best_single = max(r[2] for r in singles)
    for combo, acc, f1 in singles:
        print(f"| {combo[0]} | {acc:.2%} | {f1:.4f} |")
    for size in range(2, len(names) + 1):
        combo, acc, f1 = max((r for r in results if len(r[0]) == size), key=lambda r: r[2])
        print(f"| best of {size}: {' + '.join(combo)} | {acc:.2%} | {f1:.4f} |")
    print(f"\nbest {args.top} subsets by macro-F1 (chosen on this split: optimistic):")
    for combo, acc, f1 in sorted(results, key=lambda r: -r[2])[:args.top]:
        print(f"  {' + '.join(combo)}: {acc:.2%} / {f1:.4f}")
    best = max(results, key=lambda r: r[2])
    print(f"headroom over the best single model: {best[2] - best_single:+.4f} macro-F1")
    if len(names) > 1:
        print("\n| pair | both wrong | answers differ | error correlation |\n|---|---:|---:|---:|")
        for a, b, both, differ, alike in error_overlap(names, y, logps):
            print(f"| {a} / {b} | {both:.2%} | {differ:.2%} | {alike:.3f} |")
    if args.bias_class:
        if args.bias_class not in classes:
            print(f"error: {args.bias_class!r} is not one of {', '.join(classes)}", file=sys.stderr)
            return 2
        cls = classes.index(args.bias_class)
        grid = np.round(np.arange(-1.5, 1.51, 0.1), 2)
        print(f"\nlogit bias on {args.bias_class} (grid -1.5..1.5, 2-fold CV x {args.repeats}):")
        print("| model | macro-F1 | best in-sample (bias) | held-out gain (sd) | median bias chosen |")
        print("|---|---:|---:|---:|---:|")
        for name in names:
            r = bias_cv(logps[name], y, cls, grid, args.repeats)
            print(f"| {name} | {r['f1']:.4f} | {r['best_f1_in_sample']:.4f} ({r['best_bias_in_sample']:+.1f}) "
                  f"| {r['gain']:+.4f} ({r['gain_sd']:.4f}) | {r['median_bias']:+.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
