"""Files without PyTorch: atomic writes, a checkpoint's metadata (its safetensors header) and
evaluation reports (JSON).

Kept apart from :mod:`fer_core.checkpoint` and :mod:`fer_core.evaluation` so that listing checkpoints
and runs and showing saved reports (the dashboard's Home and Metrics pages) do not pay for importing
PyTorch.
"""
from __future__ import annotations

import glob
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from safetensors import safe_open

from .config import ENSEMBLE_ARCH, MODEL_NAMES  # plain data: no heavy imports

FORMAT = "fer-studio/1"
STATE_PREFIX = "train_state."
TEMP_SUFFIX = ".tmp"   # atomic_write's temporary files: <name>.<random>.tmp beside the target
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "checkpoints"   # the models shipped with the repository
BUNDLED_CHECKPOINT = BUNDLED_DIR / "fer2013_effnet_b0.safetensors"    # the default model: CLI, API and dashboard


class CheckpointError(ValueError):
    """A file that is not a usable FER Studio checkpoint."""


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb", **open_kwargs) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on a clean exit it is flushed, fsynced and renamed
    over ``path``. On any error (a full disk, a kill signal turned exception) the temporary file is removed
    and ``path`` keeps its old content: a reader sees the old file or the new one, never a torn one.

    Every file written for a user goes through here (reports, CSVs, images, checkpoints)."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_write opens files for writing, not with mode {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` so that ``path`` holds either the old or the new content, never a torn file."""
    with atomic_write(path) as f:
        f.write(data)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (the new name survives a power cut)."""
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def file_sha256(path: str | Path) -> str:
    """A file's SHA-256 (hex): what a cached graph, calibration or embedding is keyed to, so a rewritten
    checkpoint is never paired with a stale one."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def temporaries_of(path: str | Path) -> list[Path]:
    """The temporary files :func:`atomic_write` left beside ``path`` (a writer killed mid-write)."""
    path = Path(path)
    return sorted(path.parent.glob(f"{glob.escape(path.name)}.*{TEMP_SUFFIX}"))


def json_bytes(data, indent: int | None = 1) -> bytes:
    """Standard JSON (RFC 8259): non-finite floats become ``null`` instead of the ``NaN`` that
    ``json.dumps`` writes and most JSON readers refuse."""
    return json.dumps(_finite(data), indent=indent, allow_nan=False).encode()


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def model_metadata(arch: str, class_names, img_size: int, mean: float, std: float, output_stride: int,
                   drop_rate: float = 0.0, config: dict | None = None, epoch: int | None = None,
                   metrics: dict | None = None) -> dict[str, str]:
    meta = {"format": FORMAT, "arch": arch, "class_names": json.dumps(list(class_names)),
            "img_size": str(img_size), "in_chans": "1", "mean": json.dumps([mean]), "std": json.dumps([std]),
            "output_stride": str(output_stride), "drop_rate": str(drop_rate)}
    if config is not None:
        meta["config"] = json.dumps(config)
    if epoch is not None:
        meta["epoch"] = str(epoch)
    if metrics is not None:
        meta["metrics"] = json.dumps(metrics)
    return meta


def read_metadata(path: str | Path) -> dict:
    """The checkpoint's metadata, with its fields decoded and checked (``_metadata_fields``): a field that is
    missing, malformed or out of range is one CheckpointError naming the file, the field and what it must be.
    Other keys (a last checkpoint's ``optimizer_groups`` and ``progress``) stay strings."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = dict(f.metadata() or {})
    except Exception as e:
        raise CheckpointError(f"{path} is not a safetensors checkpoint: {_shown(str(e), 100)}") from None
    if meta.get("format") != FORMAT:
        shown = _shown(meta["format"]) if "format" in meta else "none"
        raise CheckpointError(f"{path} has no FER Studio metadata (format {shown}, not {FORMAT!r})")
    return {**meta, **checked_metadata(path, meta)}


def architecture_label(meta: dict) -> str:
    """The model's architecture in a few words: its ``arch``, or an ensemble's members' (``fer_core.ensemble``)."""
    if meta.get("arch") != ENSEMBLE_ARCH:
        return str(meta.get("arch"))
    try:
        archs = [str(m["arch"]) for m in json.loads(meta["members"])]
    except (KeyError, TypeError, ValueError):
        return "ensemble (members unreadable)"
    counts = {a: archs.count(a) for a in archs}   # first-seen order; "2× efficientnet_b0" keeps a table narrow
    return "ensemble: " + ", ".join(f"{n}× {a}" if n > 1 else a for a, n in counts.items())


# Bounds of a usable checkpoint: beyond them a file is corrupt, or would have the loader allocate gigabytes
# (img_size) or name labels that mean nothing (a thousand classes, or the same name twice).
MAX_CLASSES = 100
MAX_CLASS_NAME = 100
IMG_SIZE_RANGE = (16, 512)
OUTPUT_STRIDES = (8, 16, 32)
_REQUIRED = object()


def checked_metadata(path: Path, meta: dict[str, str]) -> dict:
    """The typed value of each known field of ``meta`` (its default where absent and allowed to be): the checks
    of :func:`read_metadata`, also applied to an exported ONNX graph's metadata."""
    out = {}
    for key, (parse, expected, default) in _metadata_fields().items():
        if key not in meta:
            if default is _REQUIRED:
                raise CheckpointError(f"{path}: the metadata has no {key!r} (it must be {expected})")
            if default is not None:
                out[key] = default
            continue
        try:
            out[key] = parse(meta[key])
        except (ValueError, TypeError, RecursionError):  # JSONDecodeError is a ValueError
            raise CheckpointError(f"{path}: metadata {key!r} must be {expected}, not {_shown(meta[key])}") from None
    return out


def _metadata_fields() -> dict[str, tuple]:
    """key -> (parse: text -> value, raising ValueError or TypeError; what it must be; default or _REQUIRED)."""
    lo, hi = IMG_SIZE_RANGE
    return {
        "arch": (_one_of((*MODEL_NAMES, ENSEMBLE_ARCH)), f"one of {', '.join((*MODEL_NAMES, ENSEMBLE_ARCH))}",
                 _REQUIRED),
        "class_names": (_class_names, f"a JSON list of 2 to {MAX_CLASSES} different names, each 1 to "
                        f"{MAX_CLASS_NAME} characters", _REQUIRED),
        "img_size": (_whole(lo, hi), f"a whole number of pixels from {lo} to {hi}", _REQUIRED),
        "in_chans": (_one_of((1,), int), "1 (grey input)", None),
        "mean": (_one_number(positive=False), "a JSON list of one finite number", _REQUIRED),
        "std": (_one_number(positive=True), "a JSON list of one finite number above 0", _REQUIRED),
        "output_stride": (_one_of(OUTPUT_STRIDES, int), "8, 16 or 32", _REQUIRED),
        "drop_rate": (_fraction, "a number from 0 to below 1", 0.0),
        "epoch": (_whole(0), "a whole number from 0", None),
        "config": (_json_object, "a JSON object", None),
        "metrics": (_json_object, "a JSON object", None),
    }


def _shown(text: str, limit: int = 40) -> str:
    """A value as an error message quotes it: its start only, so a corrupt header's megabytes stay out."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text):,} characters)"


def _whole(lo: int, hi: int | None = None):
    def parse(text: str) -> int:
        value = int(text)  # "64"; "64.0", "" and "big" raise ValueError
        if value < lo or (hi is not None and value > hi):
            raise ValueError(text)
        return value
    return parse


def _one_of(options: tuple, convert=str):
    def parse(text: str):
        value = convert(text)
        if value not in options:
            raise ValueError(text)
        return value
    return parse


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:  # NaN fails this too
        raise ValueError(text)
    return value


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _one_number(positive: bool):
    def parse(text: str) -> list[float]:
        values = json.loads(text)
        if not (isinstance(values, list) and len(values) == 1 and _is_number(values[0])
                and (values[0] > 0 or not positive)):
            raise ValueError(text)
        return [float(values[0])]
    return parse


def _class_names(text: str) -> list[str]:
    names = json.loads(text)
    if not (isinstance(names, list) and 2 <= len(names) <= MAX_CLASSES
            and all(isinstance(n, str) and 1 <= len(n) <= MAX_CLASS_NAME for n in names)
            and len(set(names)) == len(names)):
        raise ValueError(text)
    return names


def _json_object(text: str) -> dict:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(text)
    return value


def save_report(report: dict, path: str | Path) -> None:
    """Write an evaluation report (see :mod:`fer_core.evaluation`) as JSON, atomically."""
    atomic_write_bytes(path, json_bytes(report))


def load_report(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
