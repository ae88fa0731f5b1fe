"""fer_core.video_jobs: a video processed by a detached `python -m fer_core video` process, read back through its
status file; stopping it, a killed process, options and ids checked."""
from __future__ import annotations

import json
import os
import signal

import cv2
import numpy as np
import pytest

from conftest import training_env, wait_for_value
from fer_core.storage import BUNDLED_CHECKPOINT
from fer_core.video_jobs import VideoJobError, VideoJobStore

BUNDLED = BUNDLED_CHECKPOINT


def clip(path, frames: int = 8, size=(160, 120)):
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, size)
    rng = np.random.default_rng(0)
    for _ in range(frames):
        out.write(cv2.GaussianBlur(rng.integers(0, 255, (size[1], size[0], 3), np.uint8), (0, 0), 3))
    out.release()
    return path


@pytest.fixture
def job_env(monkeypatch):
    for key, value in training_env().items():
        monkeypatch.setenv(key, value)


def test_create_copies_the_input_and_checks_the_options(tmp_path):
    store = VideoJobStore(tmp_path / "videos")
    video = clip(tmp_path / "in.mp4")
    first = store.create(video.read_bytes(), "holiday.MOV", {"every": "2", "smooth": 0.5, "refine": True})
    second = store.create(video, "b.webm")
    assert first.input_path.name == "input.mov" and first.input_path.read_bytes() == video.read_bytes()
    assert first.options() == {"every": 2, "smooth": 0.5, "refine": True}
    assert first.status()["state"] == "queued" and first.outputs() == {}
    assert [j.id for j in store.list()] == sorted([first.id, second.id], reverse=True)
    assert store.get(first.id).folder == first.folder
    for bad, message in [({"every": "often"}, "every must be int"), ({"shell": "rm -rf"}, "unknown video option"),
                         ({"refine": "yes"}, "true or false")]:
        with pytest.raises(VideoJobError, match=message):
            store.create(b"x", "a.mp4", bad)
    with pytest.raises(VideoJobError, match="not a video file name"):
        store.create(b"x", "a.exe")
    for job_id in ("../etc", "nope", first.id + "/.."):
        with pytest.raises(VideoJobError, match="no video job"):
            store.get(job_id)


def test_a_job_runs_in_the_background_to_done(tmp_path, job_env):
    if not BUNDLED.exists():
        pytest.skip("the bundled checkpoint is not in checkpoints/")
    job = VideoJobStore(tmp_path / "videos").create(clip(tmp_path / "in.mp4"), "in.mp4", {"detector": "haar"})
    job.start(BUNDLED, runtime="torch")
    status = wait_for_value(lambda: (s := job.status())["state"] in ("done", "failed") and s, 120, "the job's end")
    assert status["state"] == "done", status.get("error")
    assert status["frames_done"] == status["frames_total"] == 8 and status["finished"] >= status["started"]
    outputs = job.outputs()
    assert set(outputs) == {"csv", "json", "video"}
    summary = json.loads(outputs["json"].read_text())
    assert summary["frames_processed"] == 8 and summary["options"]["detector"] == "haar"
    # its process writes "done" and then exits: the lock goes with the process, a moment later on a busy machine
    wait_for_value(lambda: job.locked_by() is None, 30, "the finished job's process to let go of its lock")
    assert not job.stop()   # a finished job has nothing to stop


def test_a_stopped_job_leaves_no_outputs_and_a_killed_one_reads_failed(tmp_path, job_env):
    if not BUNDLED.exists():
        pytest.skip("the bundled checkpoint is not in checkpoints/")
    store = VideoJobStore(tmp_path / "videos")
    long_clip = clip(tmp_path / "long.mp4", frames=600, size=(320, 240))
    job = store.create(long_clip, "long.mp4", {"detector": "haar"})
    job.start(BUNDLED, runtime="torch")
    wait_for_value(lambda: job.status()["frames_done"] > 0, 120, "the first frames")
    with pytest.raises(VideoJobError, match="already running"):
        job.start(BUNDLED)
    assert job.stop()
    status = wait_for_value(lambda: (s := job.status())["state"] not in ("queued", "running") and s, 60, "the stop")
    assert status["state"] == "stopped" and "no outputs" in status["error"]
    assert job.outputs() == {} and not any(p.exists() for p in job.output_paths().values())
    assert not [p for p in job.folder.iterdir() if ".tmp" in p.name]   # its temporaries removed

    killed = store.create(long_clip, "long.mp4", {"detector": "haar"})
    pid = killed.start(BUNDLED, runtime="torch")
    wait_for_value(lambda: killed.status()["frames_done"] > 0, 120, "the first frames")
    os.kill(pid, signal.SIGKILL)
    status = wait_for_value(lambda: (s := killed.status())["state"] == "failed" and s, 30, "the killed job")
    assert "ended without saying why" in status["error"] and killed.outputs() == {}
