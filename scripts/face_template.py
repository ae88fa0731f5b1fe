"""Measure FER-2013's mean landmark template: where YuNet finds the eyes, nose tip and mouth corners of
FER-2013's own training faces, as fractions of the 48 px crop. Its output is
``fer_core.imaging.FER_TEMPLATE``, the target of every face alignment.

How: every ``--every``-th training image (all classes, sorted paths) is upscaled ``--upscale`` times
with bicubic interpolation (YuNet finds few faces at 48 px), YuNet runs on it with ``--min-score``, and
the five landmarks of the best face are mapped back to the 48 px frame and divided by 48. The mean is
then made left-right symmetric (the mean with its mirror image), since training flips faces and a
mean of tilted heads is upright only up to sampling noise.

    python scripts/face_template.py --data ../shared/data/fer2013 \
        --face-model ../shared/models/face_detection_yunet_2023mar.onnx
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fer_core.data import IMAGE_SUFFIXES  # noqa: E402
from fer_core.detection import YuNetDetector, find_face_model  # noqa: E402
from fer_core.storage import atomic_write_bytes, json_bytes  # noqa: E402

MIRROR = [1, 0, 2, 4, 3]   # a landmark's partner in the mirror image (eyes and mouth corners swap)


def measure(files: list[Path], detector: YuNetDetector, upscale: int) -> np.ndarray:
    """(N, 5, 2) landmarks in [0, 1] of the faces YuNet found, one a file at most."""
    found = []
    for f in files:
        grey = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        if grey is None:
            continue
        side = grey.shape[0] * upscale
        faces = detector.detect(cv2.resize(grey, (side, side), interpolation=cv2.INTER_CUBIC))
        if faces:
            best = max(faces, key=lambda face: face.score)
            found.append(np.asarray(best.landmarks, np.float64) / side)
    return np.asarray(found).reshape(-1, 5, 2)


def symmetric(mean: np.ndarray) -> np.ndarray:
    """The mean of ``mean`` and its left-right mirror image."""
    mirrored = mean[MIRROR].copy()
    mirrored[:, 0] = 1 - mirrored[:, 0]
    return (mean + mirrored) / 2


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parent.parent.parent / "shared/data/fer2013"),
                   help="FER-2013 in class folders (train/<class>/*.jpg)")
    p.add_argument("--face-model", help="the YuNet model file (default: as predict finds it)")
    p.add_argument("--every", type=int, default=8, help="take every N-th training image (default 8)")
    p.add_argument("--upscale", type=int, default=4, help="enlarge the 48 px faces this many times (default 4)")
    p.add_argument("--min-score", type=float, default=0.8, help="YuNet score threshold (default 0.8)")
    p.add_argument("--json", metavar="OUT", help="also write the figures as JSON")
    args = p.parse_args(argv)
    files = sorted(f for f in (Path(args.data) / "train").rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
    files = files[::args.every]
    detector = YuNetDetector(find_face_model(args.face_model, download=False), args.min_score)
    points = measure(files, detector, args.upscale)
    mean, spread = points.mean(0), points.std(0)
    template = symmetric(mean)
    print(f"{len(points)} of {len(files)} training faces found (every {args.every}th, x{args.upscale}, "
          f"score >= {args.min_score})")
    for name, m, s, t in zip(("right eye", "left eye", "nose tip", "right mouth", "left mouth"), mean, spread,
                             template):
        print(f"{name:<12} mean ({m[0]:.4f}, {m[1]:.4f})  sd ({s[0]:.4f}, {s[1]:.4f})  symmetric ({t[0]:.4f}, "
              f"{t[1]:.4f})")
    print("FER_TEMPLATE = (" + ", ".join(f"({x:.4f}, {y:.4f})" for x, y in template) + ")")
    if args.json:
        atomic_write_bytes(args.json, json_bytes({"faces": len(points), "of": len(files), "upscale": args.upscale,
                                                  "min_score": args.min_score, "mean": mean.tolist(),
                                                  "sd": spread.tolist(), "template": template.tolist()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
