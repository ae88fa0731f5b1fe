"""The run store: one folder a training run, plain files any view can read.

``runs/<run_id>/``: ``config.json``, ``metrics.jsonl`` (one line an epoch), ``status.json``
(state, pid, progress, error, best epoch), ``data.json`` (the training data: classes, counts, class
weights), ``train.log``, ``last.safetensors`` and ``best.safetensors``, and ``train.lock``, held by the
one process training the run.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .storage import atomic_write_bytes, json_bytes, temporaries_of

STATES = ("queued", "running", "finished", "failed", "stopped")
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class RunError(ValueError):
    """A run id or run folder that cannot be used."""


def check_run_id(run_id: str) -> str:
    """A run id is one path component of letters, digits, '.', '_' and '-' (no '..')."""
    if not _RUN_ID.fullmatch(run_id) or ".." in run_id:
        raise RunError(f"invalid run id {run_id!r}: use letters, digits, '.', '_' and '-' (at most 100)")
    return run_id


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return True


def best_row(rows: list[dict]) -> dict | None:
    """The metrics row of the epoch whose weights ``best.safetensors`` holds: the last row training flagged
    ``best`` (chosen by the run's ``select_metric``). The one rule for "best": every view reads it here."""
    return next((r for r in reversed(rows) if r.get("best")), None)


@dataclass
class Run:
    path: Path

    @property
    def run_id(self) -> str:
        return self.path.name

    config_path = property(lambda self: self.path / "config.json")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")
    status_path = property(lambda self: self.path / "status.json")
    log_path = property(lambda self: self.path / "train.log")
    last_checkpoint = property(lambda self: self.path / "last.safetensors")
    best_checkpoint = property(lambda self: self.path / "best.safetensors")
    data_path = property(lambda self: self.path / "data.json")
    lock_path = property(lambda self: self.path / "train.lock")
    teacher_targets_path = property(lambda self: self.path / "teacher_targets.safetensors")   # --distill-cached

    def read_config(self) -> dict:
        return json.loads(self.config_path.read_text())

    def write_json(self, path: Path, data: dict) -> None:
        atomic_write_bytes(path, json_bytes(data, indent=2))

    def data_info(self) -> dict | None:
        """What training wrote of its data (``data.json``): class names, training counts and class weights
        (``None`` when the run used none); ``None`` before training has read the data set."""
        try:
            return json.loads(self.data_path.read_text())
        except (OSError, ValueError):
            return None

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Own this run folder for the duration: an OS lock on ``train.lock`` (released when the process
        exits, however it exits, SIGKILL included). A second process gets a ``RunError`` naming the holder."""
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunError(f"run {self.run_id} is already being trained by process "
                               f"{self._lock_pid(fd) or '(unknown)'}; stop it first") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            yield
        finally:
            os.close(fd)   # releases the lock

    def locked_by(self) -> int | None:
        """The process id holding the run's lock (a live training process), or None."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY)
        except OSError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return self._lock_pid(fd) or -1
            return None
        finally:
            os.close(fd)

    @staticmethod
    def _lock_pid(fd: int) -> int | None:
        try:
            return int(os.pread(fd, 32, 0).decode().strip())
        except (OSError, ValueError):
            return None

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete the temporary files a killed training process left beside its outputs (call with the lock
        held: no live writer of these files remains)."""
        outputs = (self.last_checkpoint, self.best_checkpoint, self.metrics_path, self.data_path,
                   self.teacher_targets_path)
        stale = [t for f in outputs for t in temporaries_of(f)]
        for t in stale:
            t.unlink(missing_ok=True)
        return stale

    def status(self) -> dict:
        """The status record; a 'running' run whose process is gone reads as 'stopped'."""
        try:
            status = json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            return {"state": "queued"}
        if status.get("state") in ("running", "queued") and status.get("pid") \
                and status.get("host") == os.uname().nodename and not _pid_alive(status.get("pid")) \
                and self.locked_by() is None:
            status = {**status, "state": "stopped", "error": "the training process ended without "
                      "saying so (killed?); resume it from its last checkpoint" + self._process_log_tail()}
        return status

    def _process_log_tail(self) -> str:
        try:
            lines = [ln for ln in (self.path / "process.log").read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        return f". Last output: {lines[-1][-300:]}" if lines else ""

    def update_status(self, **fields) -> dict:
        try:
            status = json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            status = {}
        status.update(fields, updated=time.time())
        if status.get("state") not in STATES:
            raise RunError(f"unknown run state {status.get('state')!r}")
        self.write_json(self.status_path, status)
        return status

    def best_metrics(self) -> dict | None:
        """The metrics row of the epoch the best checkpoint holds (None before one is saved): :func:`best_row`."""
        return best_row(self.metrics())

    def metrics(self) -> list[dict]:
        if not self.metrics_path.exists():
            return []
        rows = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:  # a line cut short by a kill
                continue
        return rows

    def append_metrics(self, row: dict) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json_bytes(row, indent=None).decode() + "\n")
            f.flush()
            os.fsync(f.fileno())

    def start(self) -> int:
        """Train this run in a detached background process (``python -m fer_core train --resume``),
        so it outlives the caller (a dashboard page, a closed tab). Returns the process id."""
        holder = self.locked_by()
        if holder:
            raise RunError(f"run {self.run_id} is already being trained by process {holder}")
        status = self.status()  # 'queued' with a pid: launched, still starting (a dead one reads 'stopped')
        if status["state"] == "running" or (status["state"] == "queued" and status.get("pid")):
            raise RunError(f"run {self.run_id} is already running")
        package_root = Path(__file__).resolve().parent.parent
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(package_root),
                                                                          os.environ.get("PYTHONPATH")]))}
        with open(self.path / "process.log", "ab") as out:
            command = [sys.executable, "-m", "fer_core", "train", "--out", str(self.path.parent.resolve()),
                       "--resume", self.run_id]
            proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True, env=env)
        self.update_status(state="queued", pid=proc.pid, host=os.uname().nodename, launched=time.time(), error=None)
        return proc.pid

    def stop(self) -> bool:
        """Ask the training process to stop after its current batch (it saves ``last``)."""
        status = self.status()
        pid = status.get("pid")
        if status.get("state") not in ("running", "queued") or not _pid_alive(pid):
            return False
        os.kill(pid, signal.SIGTERM)
        return True

    def truncate_metrics(self, epochs_done: int) -> None:
        """Keep the rows of the first ``epochs_done`` epochs (used when resuming)."""
        rows = [r for r in self.metrics() if r.get("epoch", 0) <= epochs_done]
        atomic_write_bytes(self.metrics_path, b"".join(json_bytes(r, indent=None) + b"\n" for r in rows))


class RunStore:
    """The runs under one root folder."""

    def __init__(self, root: str | Path = "runs"):
        self.root = Path(root)

    def create(self, config: dict, run_id: str | None = None) -> Run:
        if run_id is not None:
            path = self.root / check_run_id(run_id)
            try:
                path.mkdir(parents=True)
            except FileExistsError:
                raise RunError(f"run {run_id} already exists in {self.root}") from None
        else:  # a generated id: runs created in the same second get -2, -3, ...
            base = check_run_id(time.strftime("%Y%m%d-%H%M%S-") + str(config.get("model", "run")))
            for n in range(1, 1000):
                path = self.root / (base if n == 1 else f"{base}-{n}")
                try:
                    path.mkdir(parents=True)
                    break
                except FileExistsError:
                    continue
            else:
                raise RunError(f"could not find a free run id for {base} in {self.root}")
        run = Run(path)
        run.write_json(run.config_path, config)
        run.update_status(state="queued")
        return run

    def get(self, run_id_or_path: str | Path) -> Run:
        p = Path(run_id_or_path)
        if p.is_dir() and (p / "config.json").exists():
            return Run(p)
        path = self.root / check_run_id(str(run_id_or_path))
        if not (path / "config.json").exists():
            raise RunError(f"no run {run_id_or_path} in {self.root}")
        return Run(path)

    def list(self) -> list[Run]:
        if not self.root.is_dir():
            return []
        runs = [Run(p) for p in self.root.iterdir() if (p / "config.json").exists()]
        return sorted(runs, key=lambda r: r.config_path.stat().st_mtime, reverse=True)
