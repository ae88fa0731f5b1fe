"""FER-2013 as the real-photo pipeline sees it: every face upscaled, turned by a random angle, detected with
YuNet and aligned onto the template, written as a class-folder data set beside the original images.

    python scripts/aligned_dataset.py ../shared/data/fer2013 ~/fer-runs/data/fer2013-aligned \
        --face-model ../shared/models/face_detection_yunet_2023mar.onnx

The output's ``train/`` holds each original training image (a symbolic link) and, where YuNet found the face,
its aligned version (``Training_<id>_aligned.png``), so a model fine-tuned on it keeps reading FER-2013's own
crops while it learns the aligned ones. ``test/`` holds the aligned PublicTest and PrivateTest faces only
(the original crop where no face was found, counted in the summary), to select on what predict will see.
Each face is turned by an angle drawn uniformly from [-MAX, MAX] degrees, seeded by its file name, so runs
agree. The rotation benchmark's canvas is used: the face at 192 px with a 64 px border of its mean grey.
"""
from __future__ import annotations

import argparse
import json
import sys
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fer_core.detection import YuNetDetector  # noqa: E402
from fer_core.predict import face_crops  # noqa: E402

_detector: YuNetDetector | None = None


def canvas(face: np.ndarray, degrees: float) -> np.ndarray:
    big = cv2.copyMakeBorder(cv2.resize(face, (192, 192), interpolation=cv2.INTER_CUBIC), 64, 64, 64, 64,
                             cv2.BORDER_CONSTANT, value=int(face.mean()))
    m = cv2.getRotationMatrix2D((big.shape[1] / 2, big.shape[0] / 2), degrees, 1.0)
    return cv2.warpAffine(big, m, big.shape[::-1], flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


def aligned(face: np.ndarray, degrees: float) -> np.ndarray | None:
    """The face through detect and align at 48 px, or None when YuNet finds no face near the centre."""
    img = canvas(face, degrees)
    found, crops = face_crops(img, detector=_detector)
    c = img.shape[0] / 2
    near = [k for k, f in enumerate(found)
            if abs(f.box[0] + f.box[2] / 2 - c) < 64 and abs(f.box[1] + f.box[3] / 2 - c) < 64]
    if not near:
        return None
    best = max(near, key=lambda k: found[k].box[2] * found[k].box[3])
    return cv2.resize(crops[best], (48, 48), interpolation=cv2.INTER_AREA)


def _init(face_model: str) -> None:
    global _detector
    cv2.setNumThreads(1)
    _detector = YuNetDetector(face_model)


def _one(job: tuple[str, str, str, float, bool]) -> bool:
    """Write one image's aligned version; True when YuNet found the face."""
    src, dst, fallback, max_angle, _ = job
    face = cv2.imread(src, cv2.IMREAD_GRAYSCALE)
    rng = np.random.default_rng(zlib.crc32(Path(src).name.encode()))
    crop = aligned(face, float(rng.uniform(-max_angle, max_angle)))
    if crop is not None:
        cv2.imwrite(dst, crop)
    elif fallback:
        cv2.imwrite(fallback, face)
    return crop is not None


def jobs(src: Path, out: Path, max_angle: float) -> list[tuple]:
    todo = []
    for f in sorted(src.glob("*/*/*.jpg")):
        part, cls = f.parent.parent.name, f.parent.name
        (out / part / cls).mkdir(parents=True, exist_ok=True)
        if part == "train":
            link = out / part / cls / f.name
            if not link.exists():
                link.symlink_to(f.resolve())
            todo.append((str(f), str(out / part / cls / (f.stem + "_aligned.png")), "", max_angle, True))
        else:
            dst = out / part / cls / (f.stem + ".png")
            todo.append((str(f), str(dst), str(dst), max_angle, False))
    return todo


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", type=Path, help="FER-2013 in class folders (train/, test/)")
    p.add_argument("out", type=Path, help="the aligned data set to write (outside the repository)")
    p.add_argument("--face-model", required=True, help="the YuNet model file")
    p.add_argument("--max-angle", type=float, default=30.0, help="faces are turned by up to this many degrees")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    todo = jobs(args.data, args.out, args.max_angle)
    found = {"train": 0, "test": 0}
    with ProcessPoolExecutor(args.workers, initializer=_init, initargs=(args.face_model,)) as pool:
        for k, (job, ok) in enumerate(zip(todo, pool.map(_one, todo, chunksize=64))):
            found["train" if job[4] else "test"] += ok
            if k % 2000 == 0:
                print(f"{k}/{len(todo)}", flush=True)
    totals = {"train": sum(j[4] for j in todo), "test": sum(not j[4] for j in todo)}
    summary = {"max_angle": args.max_angle, "found": found, "images": totals}
    (args.out / "aligned.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
