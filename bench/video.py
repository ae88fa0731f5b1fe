"""Video speed end to end (decode, detect, align and classify, track, write the CSV and an annotated WebM) on
videos this script makes: FER-2013 test faces moving across a background, at 640x360 and 1280x720, with one and
with five faces, per runtime. Prints frames/s and where the time goes (``analyze_video``'s ``timing_s``).

    python bench/video.py                          # 640x360 and 1280x720, 1 and 5 faces, torch and onnxruntime
    python bench/video.py --frames 90 --runtimes onnxruntime --sizes 640x360 --faces 1 --threads 1
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fer_core.video import analyze_video  # noqa: E402

FER_TEST = ROOT.parent / "shared" / "data" / "fer2013" / "test"
CHECKPOINT = ROOT / "checkpoints" / "fer2013_effnet_b0.safetensors"
SHARED_FACE_MODEL = ROOT.parent / "shared" / "models" / "face_detection_yunet_2023mar.onnx"


def faces(n: int) -> list[np.ndarray]:
    """``n`` grey FER-2013 test faces (one a class, in turn), or learnable stand-ins without the data set."""
    classes = sorted(p for p in FER_TEST.iterdir() if p.is_dir()) if FER_TEST.is_dir() else []
    if not classes:
        rng = np.random.default_rng(0)
        return [rng.integers(0, 255, (48, 48), np.uint8) for _ in range(n)]
    return [cv2.imread(str(sorted(classes[i % len(classes)].glob("PrivateTest_*"))[i // len(classes)]),
                       cv2.IMREAD_GRAYSCALE) for i in range(n)]


def make_video(path: Path, width: int, height: int, n_faces: int, frames: int, fps: float = 30.0) -> Path:
    """``n_faces`` faces of a fifth of the height, in a row, drifting right and back (a slow pan)."""
    side = height // 5 * 2 if n_faces == 1 else height // 5
    rng = np.random.default_rng(1)
    background = cv2.GaussianBlur(rng.integers(30, 220, (height, width, 3), np.uint8), (0, 0), 8)
    tiles = [cv2.cvtColor(cv2.resize(f, (side, side), interpolation=cv2.INTER_CUBIC), cv2.COLOR_GRAY2BGR)
             for f in faces(n_faces)]
    gap = width // (n_faces + 1)
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for k in range(frames):
        frame = background.copy()
        shift = int(gap * 0.3 * np.sin(2 * np.pi * k / frames))
        for i, tile in enumerate(tiles):
            x = min(max(0, gap * (i + 1) - side // 2 + shift), width - side)
            y = (height - side) // 2
            frame[y:y + side, x:x + side] = tile
        out.write(frame)
    out.release()
    return path


def run_one(classifier, video: Path, out: Path, write_video: bool = True, **options) -> dict:
    started, cpu = time.perf_counter(), time.process_time()
    summary = analyze_video(classifier, video, csv=out / "f.csv", video=out / "a.webm" if write_video else None,
                            **options)
    if options["detector"] != summary["options"]["detector"]:
        raise SystemExit(f"asked for {options['detector']}, got {summary['detector_note']}")
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    frames = summary["frames_processed"]
    timing = summary["timing_s"]
    # CPU time: what the run cost this process, whatever else the machine was running (one thread: one core's worth)
    return {"frames": frames, "fps": round(frames / wall, 1), "cpu_fps": round(frames / cpu, 1), "faces_per_frame":
            round(sum(t["frames"] for t in summary["tracks"]) / frames, 2),
            "ms_per_frame": {k: round(1000 * v / frames, 1) for k, v in timing.items()}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=60, help="frames a video (default 60: 2 s at 30 fps)")
    p.add_argument("--sizes", default="640x360,1280x720")
    p.add_argument("--faces", default="1,5")
    p.add_argument("--runtimes", default="torch,onnxruntime")
    p.add_argument("--threads", type=int, default=0, help="PyTorch/ONNX Runtime threads (0: their default)")
    p.add_argument("--every", type=int, default=1)
    p.add_argument("--refine", action="store_true", help="YuNet's landmark refinement on tilted faces (photos')")
    p.add_argument("--no-video", action="store_true", help="CSV only, no annotated video (no encoding)")
    p.add_argument("--detector", default="yunet", choices=("yunet", "haar"))
    p.add_argument("--face-model", default=str(SHARED_FACE_MODEL) if SHARED_FACE_MODEL.exists() else None,
                   help="the YuNet model file (default: the shared copy, else the library's search)")
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    args = p.parse_args(argv)

    import torch

    from fer_core.runtime import load_classifier

    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        videos = {}
        for size in args.sizes.split(","):
            w, h = map(int, size.split("x"))
            for n in map(int, args.faces.split(",")):
                videos[(size, n)] = make_video(tmp / f"{size}_{n}.mp4", w, h, n, args.frames)
        for runtime in args.runtimes.split(","):
            classifier = load_classifier(CHECKPOINT, runtime, threads=args.threads)
            detection = {"detector": args.detector, "face_model": args.face_model}
            run_one(classifier, videos[next(iter(videos))], tmp, end=0.2, **detection)   # warm-up: first calls
            for (size, n), video in videos.items():
                r = run_one(classifier, video, tmp, not args.no_video, every=args.every, refine=args.refine,
                            **detection)
                r.update(runtime=classifier.runtime, size=size, faces=n)
                results.append(r)
                ms = r["ms_per_frame"]
                print(f"{size:>9} {n} face(s) {classifier.runtime:>11}: {r['fps']:6.1f} frames/s "
                      f"({r['cpu_fps']:.1f} a CPU-second) "
                      f"(found {r['faces_per_frame']:.2f} a frame) | ms a frame: decode {ms['decode']:.1f}, "
                      f"detect {ms['detect']:.1f}, classify {ms['classify']:.1f}, encode {ms['encode']:.1f}, "
                      f"total {ms['total']:.1f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
