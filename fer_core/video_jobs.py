"""Video jobs: a video processed in the background, surviving a page reload (as training runs do, :mod:`fer_core.runs`).

``<root>/<job_id>/``: ``input<suffix>`` (the upload, copied in), ``options.json`` (``iter_video``'s options),
``status.json`` (state, progress, error; written atomically by the job's process), ``frames.csv``,
``summary.json`` and ``annotated.webm`` (written only when the whole video is done), ``process.log`` and
``job.lock``, held by the one process working on the job. The process is ``python -m fer_core video INPUT ...
--status status.json``; its status is reported by :class:`StatusReporter`.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .runs import _pid_alive
from .storage import atomic_write_bytes, json_bytes

STATES = ("queued", "running", "done", "failed", "stopped")
VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".avi", ".mkv", ".m4v")
# option -> (type, CLI flag): what a job may pass to `python -m fer_core video`
OPTIONS = {"every": (int, "--every"), "start": (float, "--start"), "end": (float, "--end"),
           "smooth": (float, "--smooth"), "detector": (str, "--detector"), "min_face": (int, "--min-face"),
           "min_score": (float, "--min-score"), "max_frames": (int, "--max-frames"),
           "detect_side": (int, "--detect-side"), "refine": (bool, "--refine-landmarks")}
OUTPUT_NAMES = {"csv": "frames.csv", "json": "summary.json", "video": "annotated.webm"}
STATUS_EVERY_S = 0.5   # the running process rewrites its status at most this often
_JOB_ID = re.compile(r"[0-9]{8}-[0-9]{6}-[0-9a-f]{6}")


class VideoJobError(ValueError):
    """A job id, an input or options that cannot be used, or a job that cannot be started or stopped."""


def check_options(options: dict) -> dict:
    """``options`` with each value of its known type (``OPTIONS``); an unknown key or a bad value is an error."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise VideoJobError(f"unknown video option(s) {', '.join(unknown)}; known: {', '.join(OPTIONS)}")
    out = {}
    for key, value in options.items():
        kind = OPTIONS[key][0]
        if value is None:
            continue
        if kind is bool:
            if not isinstance(value, bool):
                raise VideoJobError(f"option {key} must be true or false, not {value!r}")
            out[key] = value
            continue
        try:
            out[key] = kind(value)
        except (TypeError, ValueError):
            raise VideoJobError(f"option {key} must be {kind.__name__}, not {value!r}") from None
    return out


@dataclass
class VideoJob:
    folder: Path

    @property
    def id(self) -> str:
        return self.folder.name

    status_path = property(lambda self: self.folder / "status.json")
    options_path = property(lambda self: self.folder / "options.json")
    lock_path = property(lambda self: self.folder / "job.lock")
    log_path = property(lambda self: self.folder / "process.log")

    @property
    def input_path(self) -> Path:
        return next(self.folder.glob("input.*"))

    def options(self) -> dict:
        return json.loads(self.options_path.read_text())

    def output_paths(self) -> dict[str, Path]:
        return {k: self.folder / name for k, name in OUTPUT_NAMES.items()}

    def outputs(self) -> dict[str, Path]:
        """The finished outputs (``csv``, ``json``, ``video``); empty unless the job is done."""
        if self.status()["state"] != "done":
            return {}
        return {k: p for k, p in self.output_paths().items() if p.is_file()}

    def locked_by(self) -> int | None:
        """The pid holding the job's lock (its live process), or None."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return None
        except BlockingIOError:
            try:
                return int(os.pread(fd, 32, 0).decode().strip() or -1)
            except ValueError:
                return -1
        finally:
            os.close(fd)

    def status(self) -> dict:
        """The status record; a 'running' or launched job whose process is gone without saying so reads 'failed'."""
        try:
            status = json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            status = {"state": "queued"}
        base = {"state": "queued", "frames_done": 0, "frames_total": 0, "fps": None, "eta_s": None, "error": None,
                "started": None, "finished": None}
        status = {**base, **status}
        if status["state"] in ("queued", "running") and status.get("pid") and not _pid_alive(status["pid"]) \
                and self.locked_by() is None:
            status.update(state="failed", error="the video process ended without saying why (killed?)"
                          + self._log_tail())
        return status

    def _log_tail(self) -> str:
        try:
            lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        return f"; last output: {lines[-1][-300:]}" if lines else ""

    def start(self, checkpoint: str | Path, runtime: str = "auto") -> int:
        """Process the video in a detached background process (it outlives a page or a closed tab); its pid."""
        status = self.status()
        if self.locked_by() or status["state"] == "running" or (status["state"] == "queued" and status.get("pid")):
            raise VideoJobError(f"video job {self.id} is already running")
        outputs = self.output_paths()
        command = [sys.executable, "-m", "fer_core", "video", str(self.input_path.resolve()),
                   "--checkpoint", str(Path(checkpoint).resolve()), "--runtime", runtime,
                   "--csv", str(outputs["csv"]), "--json", str(outputs["json"]), "--out", str(outputs["video"]),
                   "--status", str(self.status_path), "--quiet"]
        for key, value in self.options().items():
            flag = OPTIONS[key][1]
            command += [flag] if value is True else [] if value is False else [flag, str(value)]
        package_root = Path(__file__).resolve().parent.parent
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(package_root),
                                                                          os.environ.get("PYTHONPATH")]))}
        _write_status(self.status_path, {"state": "queued", "error": None, "finished": None})
        with open(self.log_path, "ab") as log:
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env=env, cwd=self.folder)
        _write_status(self.status_path, {"state": "queued", "pid": proc.pid, "launched": time.time()})
        return proc.pid

    def stop(self) -> bool:
        """Ask the job's process to stop (SIGTERM: it removes its partial outputs and says 'stopped')."""
        status = self.status()
        pid = status.get("pid")
        if status["state"] not in ("queued", "running") or not _pid_alive(pid):
            return False
        os.kill(pid, signal.SIGTERM)
        return True


class VideoJobStore:
    """The video jobs under one root folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def create(self, video: bytes | str | Path, filename: str, options: dict | None = None) -> VideoJob:
        """A new queued job holding a copy of ``video`` (bytes, or a file's path) under ``filename``'s suffix."""
        suffix = Path(filename).suffix.lower()
        if suffix not in VIDEO_SUFFIXES:
            raise VideoJobError(f"{Path(filename).name}: not a video file name (use {', '.join(VIDEO_SUFFIXES)})")
        checked = check_options(options or {})
        folder = self._new_folder()
        if isinstance(video, (bytes, bytearray)):
            atomic_write_bytes(folder / f"input{suffix}", bytes(video))
        else:
            shutil.copyfile(video, folder / f"input{suffix}")
        atomic_write_bytes(folder / "options.json", json_bytes(checked))
        atomic_write_bytes(folder / "source.json", json_bytes({"filename": Path(filename).name,
                                                               "created": time.time()}))
        _write_status(folder / "status.json", {"state": "queued"})
        return VideoJob(folder)

    def _new_folder(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        while True:
            folder = self.root / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
            try:
                folder.mkdir()
                return folder
            except FileExistsError:
                continue

    def list(self) -> list[VideoJob]:
        """Every job, newest first."""
        if not self.root.is_dir():
            return []
        jobs = [VideoJob(p) for p in self.root.iterdir() if _JOB_ID.fullmatch(p.name) and (p / "options.json").exists()]
        return sorted(jobs, key=lambda j: j.id, reverse=True)

    def get(self, job_id: str) -> VideoJob:
        if not _JOB_ID.fullmatch(str(job_id)) or not (self.root / job_id / "options.json").exists():
            raise VideoJobError(f"no video job {job_id!r} in {self.root}")
        return VideoJob(self.root / job_id)


def _write_status(path: Path, fields: dict) -> dict:
    try:
        status = json.loads(path.read_text())
    except (OSError, ValueError):
        status = {}
    status.update(fields, updated=time.time())
    if status.get("state") not in STATES:
        raise VideoJobError(f"unknown video job state {status.get('state')!r}")
    atomic_write_bytes(path, json_bytes(status, indent=1))
    return status


class StatusReporter:
    """The job process's side: holds the job's lock, and writes ``status.json`` as frames go by (at most every
    ``STATUS_EVERY_S``), then its end: 'done', 'failed' with the one-line error, or 'stopped'."""

    def __init__(self, status_path: str | Path):
        self.path = Path(status_path)
        self.started = time.time()
        self._last, self.done, self.total = 0.0, 0, 0

    @contextmanager
    def running(self):
        fd = os.open(self.path.with_name("job.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise VideoJobError(f"{self.path.parent}: another process is working on this video job") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            _write_status(self.path, {"state": "running", "pid": os.getpid(), "started": self.started,
                                      "finished": None, "error": None, "frames_done": 0})
            try:
                yield self
            except KeyboardInterrupt:
                _write_status(self.path, {"state": "stopped", "finished": time.time(),
                                          "error": "stopped before the end; no outputs were written"})
                raise
            except BaseException as e:
                _write_status(self.path, {"state": "failed", "finished": time.time(), "error": _one_line(e)})
                raise
            _write_status(self.path, {"state": "done", "finished": time.time(), "eta_s": 0, "frames_done": self.done,
                                      "frames_total": self.done})
        finally:
            os.close(fd)

    def progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        now = time.time()
        if now - self._last < STATUS_EVERY_S:
            return
        self._last = now
        fps = done / max(now - self.started, 1e-9)
        eta = (total - done) / fps if total and fps and total >= done else None
        _write_status(self.path, {"state": "running", "frames_done": done, "frames_total": total,
                                  "fps": round(fps, 2), "eta_s": None if eta is None else round(eta, 1)})


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:500]
