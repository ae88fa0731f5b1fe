"""Files without PyTorch: atomic writes, a checkpoint's metadata (its safetensors header) and
evaluation reports (JSON).

Kept apart from :mod:`fer_core.checkpoint` and :mod:`fer_core.evaluation` so that listing checkpoints
and runs and showing saved reports (the dashboard's Home and Metrics pages) do not pay for importing
PyTorch.
"""
from __future__ import annotations

import glob
import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from safetensors import safe_open

FORMAT = "fer-studio/1"
STATE_PREFIX = "train_state."
TEMP_SUFFIX = ".tmp"   # atomic_write's temporary files: <name>.<random>.tmp beside the target


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
    """The checkpoint's metadata, with JSON fields decoded."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = dict(f.metadata() or {})
    except Exception as e:
        raise CheckpointError(f"{path} is not a safetensors checkpoint: {e}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} has no FER Studio metadata (format {meta.get('format')!r})")
    out: dict = dict(meta)
    for key in ("class_names", "mean", "std", "config", "metrics"):
        if key in meta:
            out[key] = json.loads(meta[key])
    for key in ("img_size", "in_chans", "output_stride", "epoch"):
        if key in meta:
            out[key] = int(meta[key])
    out["drop_rate"] = float(meta.get("drop_rate", 0.0))
    return out


def save_report(report: dict, path: str | Path) -> None:
    """Write an evaluation report (see :mod:`fer_core.evaluation`) as JSON, atomically."""
    atomic_write_bytes(path, json_bytes(report))


def load_report(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
