"""Error slices: accuracy and per-class recall by properties of the image, in quantile bins with their counts.

Properties of a grey face (``PROPERTIES``): brightness (mean grey level), contrast (standard deviation of the grey
levels, RMS contrast) and sharpness (variance of the Laplacian: low for a blurred face), and, where asked for, head
roll (the eye line's angle from YuNet's landmarks on the face upscaled, as ``scripts/face_template.py`` measures
them; NaN where YuNet finds no face). They depend only on the pixels, so they are computed once per set of images
and cached in the data cache (``~/.cache/fer_studio/properties/``), keyed on the pixels' hash.

A slice report is plain data: for each property its bins (equal-count quantile bins; ties never split, so a bin may
hold more), each with its range, count, number right, accuracy and per-class support and recall. Every image falls
in one bin of each property (a NaN roll in a bin of its own), so each property's counts add up to the split.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path

import numpy as np

from .storage import atomic_write, atomic_write_bytes, json_bytes

log = logging.getLogger(__name__)

SLICES_FORMAT = "fer-studio.slices/1"
PROPERTIES = {"brightness": "mean grey level (0-255)", "contrast": "standard deviation of the grey levels",
              "sharpness": "variance of the Laplacian (low: blurred)", "roll": "head roll in degrees (YuNet's eyes)"}
PIXEL_PROPERTIES = ("brightness", "contrast", "sharpness")
_CACHE_VERSION = 1   # bump when a property's definition changes: old cache files are then never read
ROLL_UPSCALE = 4     # YuNet finds few faces at 48 px; as scripts/face_template.py measures the template


def slices_file(checkpoint: str | Path, split: str) -> Path:
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.stem}.{split}.slices.json")


def pixel_properties(images: np.ndarray) -> dict[str, np.ndarray]:
    """Brightness, contrast and sharpness of uint8 grey faces (N, H, W)."""
    import cv2

    images = np.asarray(images)
    flat = images.reshape(len(images), -1).astype(np.float64)
    sharpness = np.array([cv2.Laplacian(img, cv2.CV_64F).var() for img in images])
    return {"brightness": flat.mean(1), "contrast": flat.std(1), "sharpness": sharpness}


def head_roll(images: np.ndarray, detector) -> np.ndarray:
    """Degrees the eye line turns from level (positive: clockwise in the image), from the best face ``detector``
    (a YuNet ``Detector``) finds on each face upscaled ``ROLL_UPSCALE`` times; NaN where it finds none."""
    import cv2

    roll = np.full(len(images), np.nan)
    for i, img in enumerate(np.asarray(images)):
        side = img.shape[0] * ROLL_UPSCALE
        faces = [f for f in detector.detect(cv2.resize(img, (side, side), interpolation=cv2.INTER_CUBIC))
                 if f.landmarks is not None]
        if faces:
            (rx, ry), (lx, ly) = np.asarray(max(faces, key=lambda f: f.score).landmarks, np.float64)[:2]
            roll[i] = math.degrees(math.atan2(ly - ry, lx - rx))
    return roll


def image_properties(images: np.ndarray, detector=None, cache_dir: str | Path | None = None) -> dict[str, np.ndarray]:
    """Each image's properties (with ``roll`` when a ``detector`` is given), read from the cache when these pixels
    were seen before, else computed and cached. A cache that cannot be written only costs the time."""
    from .data import default_cache_dir

    images = np.ascontiguousarray(np.asarray(images), dtype=np.uint8)
    key = hashlib.sha1(images.tobytes() + repr((_CACHE_VERSION, images.shape)).encode()).hexdigest()[:20]
    path = Path(cache_dir or default_cache_dir()) / "properties" / f"{key}.npz"
    cached = _read_cache(path)
    wanted = [*PIXEL_PROPERTIES, *(["roll"] if detector is not None else [])]
    missing = [p for p in wanted if p not in cached]
    if missing:
        computed = pixel_properties(images) if set(missing) & set(PIXEL_PROPERTIES) else {}
        if "roll" in missing:
            computed["roll"] = head_roll(images, detector)
        cached.update({k: v for k, v in computed.items() if k in missing})
        _write_cache(path, cached)
    return {p: cached[p] for p in wanted}


def _read_cache(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:   # plain float arrays: nothing to unpickle
            return {k: f[k] for k in f.files}
    except (OSError, ValueError):
        return {}


def _write_cache(path: Path, properties: dict[str, np.ndarray]) -> None:
    try:
        with atomic_write(path) as f:
            np.savez(f, **properties)
    except OSError as e:
        log.warning("could not write the image properties cache %s: %s", path, e)


def quantile_bins(values: np.ndarray, n_bins: int) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """(bin index per value, (lowest, highest) value of each bin): ``n_bins`` bins of about equal count cut at the
    quantiles; equal values always share a bin, so fewer bins come back where many values tie. NaN values get the
    index -1 (the caller's bin of their own)."""
    if n_bins < 1:
        raise ValueError(f"slices need at least one bin, not {n_bins}")
    values = np.asarray(values, np.float64)
    known = ~np.isnan(values)
    which = np.full(len(values), -1)
    if not known.any():
        return which, []
    cuts = np.unique(np.quantile(values[known], np.linspace(0, 1, n_bins + 1)[1:-1]))
    which[known] = np.searchsorted(cuts, values[known], side="right")
    used = np.unique(which[known])
    which[known] = np.searchsorted(used, which[known])   # renumber, skipping bins emptied by ties
    ranges = [(float(values[which == b].min()), float(values[which == b].max())) for b in range(len(used))]
    return which, ranges


def slice_table(values: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, class_names, n_bins: int = 4
                ) -> list[dict]:
    """One row a bin of ``values``: range, count, right, accuracy and, per class, support and recall (None for a
    class with no image in the bin)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    which, ranges = quantile_bins(values, n_bins)
    rows = [_bin_row(which == b, y_true, y_pred, class_names, lo, hi) for b, (lo, hi) in enumerate(ranges)]
    if (which == -1).any():
        rows.append(_bin_row(which == -1, y_true, y_pred, class_names, None, None))
    return rows


def _bin_row(mask: np.ndarray, y_true, y_pred, class_names, lower, upper) -> dict:
    right = y_true[mask] == y_pred[mask]
    support = {c: int((y_true[mask] == i).sum()) for i, c in enumerate(class_names)}
    recall = {c: float(right[y_true[mask] == i].mean()) if support[c] else None for i, c in enumerate(class_names)}
    return {"lower": lower, "upper": upper, "count": int(mask.sum()), "correct": int(right.sum()),
            "accuracy": float(right.mean()) if mask.any() else None, "support": support, "recall": recall}


def slice_report(properties: dict[str, np.ndarray], y_true, y_pred, class_names, n_bins: int = 4,
                 split: str = "") -> dict:
    """Every property's slice table, with the split's overall accuracy and recall to compare each bin with."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) != len(y_pred) or any(len(v) != len(y_true) for v in properties.values()):
        raise ValueError("properties, labels and predictions must have one value an image each")
    overall = _bin_row(np.ones(len(y_true), bool), y_true, y_pred, class_names, None, None)
    return {"format": SLICES_FORMAT, "split": split, "num_images": int(len(y_true)), "class_names": list(class_names),
            "n_bins": n_bins, "accuracy": overall["accuracy"], "recall": overall["recall"],
            "descriptions": {p: PROPERTIES.get(p, p) for p in properties},
            "properties": {p: slice_table(v, y_true, y_pred, class_names, n_bins) for p, v in properties.items()}}


def worst_slices(report: dict, min_support: int = 20, limit: int = 5) -> list[dict]:
    """The bins where a class's recall falls most below its recall on the whole split (bins with at least
    ``min_support`` images of the class), worst first: the slices that matter."""
    found = []
    for prop, rows in report["properties"].items():
        for b, row in enumerate(rows):
            for c in report["class_names"]:
                overall = report["recall"][c]
                if row["support"][c] >= min_support and overall is not None and row["recall"][c] is not None:
                    found.append({"property": prop, "bin": b, "lower": row["lower"], "upper": row["upper"],
                                  "class": c, "recall": row["recall"][c], "overall_recall": overall,
                                  "drop": overall - row["recall"][c], "support": row["support"][c]})
    return sorted(found, key=lambda s: -s["drop"])[:limit]


def predictions_for(report: dict, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(true, predicted) class indices of the images ``ids`` from a report's per-image records; a ValueError
    naming how many are missing when the report was made on other images."""
    index = {c: i for i, c in enumerate(report.get("class_names") or [])}
    try:
        by_id = {r["id"]: (index[r["true"]], index[r["predicted"]]) for r in report["predictions"]}
    except (KeyError, TypeError):
        raise ValueError("the report has no usable per-image predictions (id, true, predicted)") from None
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise ValueError(f"the report has no prediction for {len(missing):,} of the split's {len(ids):,} images "
                         f"(e.g. {missing[0]}): it was made on other images")
    pairs = np.array([by_id[i] for i in ids]).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


def save_slices(report: dict, path: str | Path) -> None:
    atomic_write_bytes(path, json_bytes(report))


def load_slices(path: str | Path) -> dict | None:
    """A saved slice report, or None when there is none or it is not one."""
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) and report.get("format") == SLICES_FORMAT else None
