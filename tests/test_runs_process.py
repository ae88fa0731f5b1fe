"""Run.start (a detached ``python -m fer_core train --resume`` process) and Run.stop (SIGTERM: stop
after the current batch and save), on tiny runs over synthetic images. Stopping a training run and
resuming it is tested through the Train page (test_page_train.py)."""
from __future__ import annotations

import os
import signal
import time

import pytest

from conftest import make_folder_dataset
from fer_core import RunError, RunStore, TrainConfig
from fer_core.runs import Run, check_run_id

WAIT_S = 90


@pytest.fixture(scope="module")
def synthetic_data(tmp_path_factory):
    return make_folder_dataset(tmp_path_factory.mktemp("runs-process") / "fer", per_class=12)


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the training processes inherit it
    store = RunStore(tmp_path / "runs")
    yield store
    for run in store.list():  # kill what a failed test left running (only this test's processes)
        pid = run.status().get("pid")
        if run.status()["state"] in ("queued", "running") and pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def wait_for(run: Run, states: tuple[str, ...], timeout: float = WAIT_S) -> dict:
    deadline = time.time() + timeout
    while (status := run.status())["state"] not in states:
        if time.time() > deadline:
            output = (run.path / "process.log").read_text(errors="replace")[-2000:]
            raise AssertionError(f"still {status['state']!r} after {timeout:.0f} s: {status}\n{output}")
        time.sleep(0.2)
    return status


def tiny(data, **over) -> dict:
    return TrainConfig(**{"data": str(data), "epochs": 1, "batch_size": 16, "max_train_images": 32,
                          "img_size": 48, **over}).to_dict()


def test_start_runs_a_detached_process_that_finishes(store, synthetic_data):
    run = store.create(tiny(synthetic_data), "bg")
    pid = run.start()
    assert os.getsid(pid) == pid  # its own session: a closed terminal or stopped server does not take it down
    status = run.status()
    assert status["pid"] == pid and status["state"] in ("queued", "running") and status["host"]
    with pytest.raises(RunError, match="already running"):  # a second process would write over the first
        run.start()
    assert wait_for(run, ("finished", "failed", "stopped"))["state"] == "finished"
    assert run.best_checkpoint.exists() and run.last_checkpoint.exists() and len(run.metrics()) == 1
    assert (run.path / "process.log").read_text()  # the process's own output is kept
    assert run.stop() is False  # nothing to stop


def test_stop_before_start_does_nothing(store):
    run = store.create({"model": "resnet18"}, "idle")
    assert run.stop() is False
    assert run.status()["state"] == "queued"


def test_generated_run_ids_do_not_collide(tmp_path, monkeypatch):
    store = RunStore(tmp_path / "runs")
    stamp = time.strftime("%Y%m%d-%H%M%S-")
    monkeypatch.setattr("fer_core.runs.time.strftime", lambda fmt: stamp)   # all three within the same second
    ids = [store.create({"model": "resnet18"}).run_id for _ in range(3)]
    assert len(set(ids)) == 3
    assert all(check_run_id(i) and i.startswith(ids[0]) for i in ids)
    with pytest.raises(RunError, match="already exists"):  # a name given is never changed
        store.create({"model": "resnet18"}, ids[0])
