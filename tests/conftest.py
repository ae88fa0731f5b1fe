"""Shared fixtures: FER-2013 location, small data sets made in the test, a tiny trained checkpoint."""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_core.data import FER2013_CLASSES

ROOT = Path(__file__).resolve().parent.parent
FER_ROOT = Path(os.environ.get("FER2013_PATH", ROOT.parent / "shared" / "data" / "fer2013"))
HAVE_FER = (FER_ROOT / "train").is_dir() and (FER_ROOT / "test").is_dir()
needs_fer = pytest.mark.skipif(not HAVE_FER, reason=f"FER-2013 not found at {FER_ROOT} (set FER2013_PATH)")
# A happy face that OpenCV's Haar cascade finds once pasted into a larger photo.
DETECTABLE_FACE = FER_ROOT / "test" / "happy" / "PrivateTest_10077120.jpg"


HEAVY_LIBRARIES = ("pytorch_grad_cam", "sklearn", "timm")   # seconds of import each


def heavy_libraries_loaded_by(code: str, timeout_s: int = 120, libraries: tuple[str, ...] = HEAVY_LIBRARIES
                              ) -> list[str]:
    """Run ``code`` in a fresh interpreter at the repository root (it must succeed); which of ``libraries``
    it left imported."""
    probe = f"\nimport json, sys\nprint(json.dumps([m for m in {libraries!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", code + probe], cwd=ROOT, capture_output=True, text=True,
                         timeout=timeout_s)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test session gets its own data cache, so tests never read a stale one."""
    monkeypatch.setenv("FER_STUDIO_CACHE", str(tmp_path_factory.getbasetemp() / "fer-cache"))


@pytest.fixture(scope="session")
def fer_root() -> Path:
    if not HAVE_FER:
        pytest.skip(f"FER-2013 not found at {FER_ROOT} (set FER2013_PATH)")
    return FER_ROOT


def fer_files(split_dir: str, cls: str, prefix: str, n: int) -> list[Path]:
    """The first ``n`` FER-2013 files of a class whose names start with ``prefix``."""
    files = sorted(p for p in (FER_ROOT / split_dir / cls).iterdir() if p.name.startswith(prefix))
    return files[:n]


def synthetic_face(label: int, rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """A grey image whose class is learnable: a bright band at a class-dependent height, plus noise."""
    img = rng.integers(0, 60, (size, size), dtype=np.uint8)
    row = 3 + label * (size - 6) // len(FER2013_CLASSES)
    img[row:row + 5, :] = 220
    return img


def make_folder_dataset(root: Path, per_class: dict[str, int] | int = 6, test_prefixes: bool = True,
                        seed: int = 0, size: int = 48) -> Path:
    """A FER-style folder set (train/<class>, test/<class>) of synthetic learnable images."""
    rng = np.random.default_rng(seed)
    counts = per_class if isinstance(per_class, dict) else {c: per_class for c in FER2013_CLASSES}
    for k, cls in enumerate(FER2013_CLASSES):
        if cls not in counts:
            continue
        for split in ("train", "test"):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
        for i in range(counts[cls]):
            cv2.imwrite(str(root / "train" / cls / f"Training_{k}{i:04d}.png"), synthetic_face(k, rng, size))
            names = [f"PublicTest_{k}{i:04d}.png", f"PrivateTest_{k}{i:04d}.png"] if test_prefixes \
                else [f"img_{k}{i:04d}.png"]
            for name in names:
                cv2.imwrite(str(root / "test" / cls / name), synthetic_face(k, rng, size))
    return root


@pytest.fixture
def folder_dataset(tmp_path) -> Path:
    return make_folder_dataset(tmp_path / "fer")


def write_fer_csv(path: Path, rows: list[tuple[int, np.ndarray, str]]) -> Path:
    """A ``fer2013.csv`` of the challenge's exact form: emotion,pixels,Usage."""
    with open(path, "w") as f:
        f.write("emotion,pixels,Usage\n")
        for label, img, usage in rows:
            f.write(f"{label},{' '.join(map(str, img.reshape(-1).tolist()))},{usage}\n")
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A real checkpoint from one short training run on synthetic data (works without FER-2013)."""
    from fer_core.config import TrainConfig
    from fer_core.training import train

    base = tmp_path_factory.mktemp("tiny-ckpt")
    data = make_folder_dataset(base / "data", per_class=24)
    cfg = TrainConfig(data=str(data), epochs=4, batch_size=16, img_size=48, mixup_alpha=0.0, ema_decay=0.0,
                      lr=3e-3, warmup_epochs=0, drop_rate=0.0, erase_prob=0.0, class_weight_power=0.0)
    os.environ.setdefault("FER_STUDIO_CACHE", str(base / "cache"))
    run = train(cfg, runs_root=base / "runs", run_id="tiny", progress=False)
    return run.best_checkpoint


@pytest.fixture
def studio_env(tmp_path, tiny_checkpoint, monkeypatch) -> Path:
    """The dashboard's folders for a test: a checkpoints folder holding the tiny model as
    ``tiny.safetensors``, an empty runs folder, and no data set."""
    (tmp_path / "ckpt").mkdir()
    shutil.copy(tiny_checkpoint, tmp_path / "ckpt" / "tiny.safetensors")
    (tmp_path / "runs").mkdir()
    monkeypatch.setenv("FER_STUDIO_CHECKPOINTS", str(tmp_path / "ckpt"))
    monkeypatch.setenv("FER_STUDIO_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("FER2013_PATH", str(tmp_path / "nowhere"))
    return tmp_path


@pytest.fixture
def face_photo(tmp_path) -> Path:
    """A 600x400 RGB 'photo' with one real FER-2013 face in it (needs the data set)."""
    if not DETECTABLE_FACE.exists():
        pytest.skip(f"FER-2013 not found at {FER_ROOT} (set FER2013_PATH)")
    face = cv2.resize(cv2.imread(str(DETECTABLE_FACE), cv2.IMREAD_GRAYSCALE), (160, 160),
                      interpolation=cv2.INTER_CUBIC)
    canvas = np.full((400, 600), 200, np.uint8)
    canvas[100:260, 220:380] = face
    path = tmp_path / "photo.jpg"
    cv2.imwrite(str(path), cv2.cvtColor(canvas, cv2.COLOR_GRAY2BGR))
    return path


def copy_fer_subset(dest: Path, per_class_train: int, per_class_test: int,
                    classes: tuple[str, ...] = FER2013_CLASSES) -> Path:
    """A small FER-2013 in the folder layout: real images copied from ../shared/data/fer2013."""
    for cls in classes:
        (dest / "train" / cls).mkdir(parents=True)
        (dest / "test" / cls).mkdir(parents=True)
        for f in fer_files("train", cls, "Training_", per_class_train):
            shutil.copy(f, dest / "train" / cls / f.name)
        for prefix in ("PublicTest_", "PrivateTest_"):
            for f in fer_files("test", cls, prefix, per_class_test):
                shutil.copy(f, dest / "test" / cls / f.name)
    return dest


def huge_png(path: Path, width: int = 40_000, height: int = 40_000) -> Path:
    """A PNG of a few hundred bytes whose header declares ``width`` x ``height`` 1-bit pixels (by default over
    OpenCV's CV_IO_MAX_IMAGE_PIXELS and Pillow's decompression-bomb limit). Only the first row's data is
    stored: both libraries refuse the image from its header, before any pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = zlib.compress(b"\x00" * (1 + (width + 7) // 8))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", row) + chunk(b"IEND", b""))
    return path


def training_env() -> dict[str, str]:
    """The environment for a ``python -m fer_core`` subprocess: one thread, this checkout first on the path, and
    not inside a torchrun launch."""
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    env.pop("WORLD_SIZE", None)
    return env


def wait_for_value(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    """Poll ``predicate`` until it returns something true (returned); fail on timeout or when ``proc`` exits."""
    end = time.time() + timeout
    while time.time() < end:
        if value := predicate():
            return value
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"process exited ({proc.returncode}) while waiting for {what}:\n{out[-3000:]}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


SHARED_FACE_MODEL = ROOT.parent / "shared" / "models" / "face_detection_yunet_2023mar.onnx"


@pytest.fixture(autouse=True)
def _shared_face_model(monkeypatch):
    """Detection uses the shared YuNet model when it is there, so no test tries to download it; without it the
    library falls back to the Haar cascade (after one failed download when offline)."""
    if SHARED_FACE_MODEL.exists():
        monkeypatch.setenv("FER_STUDIO_FACE_MODEL", str(SHARED_FACE_MODEL))


@pytest.fixture(scope="session")
def face_model() -> Path:
    """The shared YuNet model file (tests that need YuNet itself skip without it)."""
    if not SHARED_FACE_MODEL.exists():
        pytest.skip(f"YuNet model not found at {SHARED_FACE_MODEL} (see ../shared/models/README.md)")
    return SHARED_FACE_MODEL
