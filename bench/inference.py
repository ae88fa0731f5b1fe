"""Inference speed of a checkpoint in every installed runtime, side by side in one run: faces/s at batch 1 and
batch 64, and one photo end to end (decode, face detection, crop, classify).

    python bench/inference.py --checkpoint checkpoints/fer2013_effnet_b0.safetensors

The runtimes are timed in interleaved rounds (torch, onnxruntime, torch, ...) and each figure is the median, so a
neighbour's load on a shared CPU falls on both alike; the ratios are what to compare across machines. The last
lines, read by scripts, are ``speedup R/torch at batch B: X.XX`` for every other runtime R.
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
from fer_core import load_image, predict_image  # noqa: E402
from fer_core.cli import default_checkpoint  # noqa: E402
from fer_core.runtime import installed_runtimes, load_classifier  # noqa: E402

BATCHES = (1, 64)


def timed_once(fn, calls: int) -> float:
    """Seconds a call, over ``calls`` calls."""
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t) / calls


def interleaved(fns: dict, rounds: int, calls: int) -> dict[str, float]:
    """The median seconds a call of each function, timed in turn round after round."""
    for fn in fns.values():
        fn()   # warm-up: first-call allocations and graph set-up
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(timed_once(fn, calls))
    return {name: statistics.median(t) for name, t in times.items()}


def demo_photo(face_file: Path | None) -> bytes:
    """A 1280x960 JPEG with one face: a FER-2013 face if given, else a drawn one."""
    canvas = np.full((960, 1280), 190, np.uint8)
    if face_file and face_file.exists():
        face = cv2.resize(cv2.imread(str(face_file), cv2.IMREAD_GRAYSCALE), (320, 320), interpolation=cv2.INTER_CUBIC)
        canvas[300:620, 480:800] = face
    ok, buf = cv2.imencode(".jpg", canvas)
    return buf.tobytes()


def test_faces(face_dir: Path, n: int) -> np.ndarray:
    """``n`` FER-2013 faces if the folder is there (real faces exercise the model as use does), else random ones."""
    files = sorted(face_dir.glob("*/PrivateTest_*.jpg"))[:: 7][:n] if face_dir.is_dir() else []
    if len(files) < n:
        return np.random.default_rng(0).integers(0, 255, (n, 48, 48), dtype=np.uint8)
    return np.stack([cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=default_checkpoint())
    p.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds (the median is kept)")
    p.add_argument("--threads", type=int, default=0, help="threads for every runtime (0: torch's default)")
    p.add_argument("--faces", type=Path, default=ROOT.parent / "shared/data/fer2013/test",
                   help="FER-2013 test folder whose faces are classified (random faces without it)")
    p.add_argument("--face", type=Path, default=ROOT.parent / "shared/data/fer2013/test/happy/PrivateTest_10077120.jpg",
                   help="a face image pasted into the demo photo")
    args = p.parse_args()
    if args.checkpoint is None:
        sys.exit("no checkpoint: pass --checkpoint")
    if args.threads:
        torch.set_num_threads(args.threads)
    classifiers = {r: load_classifier(args.checkpoint, r, args.threads) for r in installed_runtimes()[::-1]}
    first = next(iter(classifiers.values()))
    print(f"{args.checkpoint.name}: {first.arch}, {first.img_size} px input, {torch.get_num_threads()} threads; "
          f"runtimes: {', '.join(classifiers)}")
    rows, rates = [], {}
    for batch in BATCHES:
        faces = test_faces(args.faces, batch)
        calls = 20 if batch == 1 else 2
        medians = interleaved({r: (lambda c=c, f=faces: c.predict_proba(f)) for r, c in classifiers.items()},
                              args.rounds, calls)
        for r, t in medians.items():
            rates[r, batch] = batch / t
            rows.append((r, f"classify, batch {batch}", t * 1000, batch / t))
    photo = demo_photo(args.face)
    medians = interleaved({r: (lambda c=c: predict_image(c, load_image(io.BytesIO(photo))))
                           for r, c in classifiers.items()}, args.rounds, 3)
    rows += [(r, "one 1280x960 photo: decode + detect + classify", t * 1000, 1 / t) for r, t in medians.items()]
    print(f"{'runtime':<13}{'what':<50}{'ms':>10}{'images/s':>12}")
    for runtime, name, ms, rate in rows:
        print(f"{runtime:<13}{name:<50}{ms:>10.2f}{rate:>12.1f}")
    report_parity(classifiers, test_faces(args.faces, 64))
    for r in classifiers:
        if r != "torch":
            for batch in BATCHES:
                print(f"speedup {r}/torch at batch {batch}: {rates[r, batch] / rates['torch', batch]:.2f}")


def report_parity(classifiers: dict, faces: np.ndarray) -> None:
    expected = classifiers["torch"].predict_proba(faces)
    for r, c in classifiers.items():
        if r != "torch":
            diff = np.abs(c.predict_proba(faces) - expected).max()
            print(f"{r}: largest probability difference from torch on {len(faces)} faces: {diff:.2g}")


if __name__ == "__main__":
    main()
