"""Files without PyTorch: atomic writes, a checkpoint's metadata (its safetensors header) and
evaluation reports (JSON).

Kept apart from :mod:`fer_core.checkpoint` and :mod:`fer_core.evaluation` so that listing checkpoints
and runs and showing saved reports (the dashboard's Home and Metrics pages) do not pay for importing
PyTorch.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from safetensors import safe_open

FORMAT = "fer-studio/1"
STATE_PREFIX = "train_state."


class CheckpointError(ValueError):
    """A file that is not a usable FER Studio checkpoint."""


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` so that ``path`` holds either the old or the new content, never a torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


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
    atomic_write_bytes(path, json.dumps(report, indent=1).encode())


def load_report(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
