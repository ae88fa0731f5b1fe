"""Inference speed of a checkpoint on this machine: images/s at batch 1 and batch 64, and the
end-to-end time for one photo (decode, face detection, crop, classify).

    python bench/inference.py --checkpoint checkpoints/fer2013_effnet_b0.safetensors
"""
from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from fer_core import FerClassifier, load_image, predict_image  # noqa: E402
from fer_core.cli import default_checkpoint  # noqa: E402


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def demo_photo(face_file: Path | None) -> bytes:
    """A 1280x960 JPEG with one face: a FER-2013 face if given, else a drawn one."""
    canvas = np.full((960, 1280), 190, np.uint8)
    if face_file and face_file.exists():
        face = cv2.resize(cv2.imread(str(face_file), cv2.IMREAD_GRAYSCALE), (320, 320), interpolation=cv2.INTER_CUBIC)
        canvas[300:620, 480:800] = face
    ok, buf = cv2.imencode(".jpg", canvas)
    return buf.tobytes()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=default_checkpoint())
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument("--face", type=Path, default=ROOT.parent / "shared/data/fer2013/test/happy/PrivateTest_10077120.jpg",
                   help="a face image pasted into the demo photo")
    args = p.parse_args()
    if args.checkpoint is None:
        sys.exit("no checkpoint: pass --checkpoint")
    if args.threads:
        torch.set_num_threads(args.threads)
    clf = FerClassifier.from_checkpoint(args.checkpoint)
    size = clf.img_size
    print(f"{args.checkpoint.name}: {clf.arch}, {size} px input, {torch.get_num_threads()} threads")
    rows = []
    for batch in (1, 64):
        faces = np.random.default_rng(0).integers(0, 255, (batch, 48, 48), dtype=np.uint8)
        t = statistics.median(timed(lambda faces=faces: clf.predict_proba(faces), args.repeats if batch == 1 else 5))
        rows.append((f"classify, batch {batch}", t * 1000, batch / t))
    photo = demo_photo(args.face)
    result = {}

    def end_to_end():
        result["r"] = predict_image(clf, load_image(io.BytesIO(photo)))

    t = statistics.median(timed(end_to_end, args.repeats))
    rows.append(("one 1280x960 photo: decode + detect + classify", t * 1000, 1 / t))
    print(f"{'what':<50}{'ms':>10}{'images/s':>12}")
    for name, ms, rate in rows:
        print(f"{name:<50}{ms:>10.1f}{rate:>12.1f}")
    faces = len(result["r"].faces)
    print(f"faces found in the photo: {faces}; target for one photo: < 300 ms -> "
          f"{'PASS' if rows[-1][1] < 300 else 'FAIL'}")


if __name__ == "__main__":
    main()
