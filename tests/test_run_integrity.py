"""A run folder stays true under faults: one training process at a time (an OS lock, released on any exit),
a kill between an epoch's metrics row and its checkpoint, a killed atomic write, and one rule for "best"."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

import fer_core.training.loop as loop_mod
from conftest import make_folder_dataset, training_env, wait_for_value
from dashboard import tables, training_charts
from fer_core.config import TrainConfig
from fer_core.data import load_dataset
from fer_core.runs import Run, RunError, RunStore, best_row, check_run_id
from fer_core.checkpoint import read_tensors, save_checkpoint
from fer_core.storage import CheckpointError, read_metadata, temporaries_of
from fer_core.training import class_weights, train


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """84 training images (12 a class): 5 batches of 16 an epoch."""
    base = tmp_path_factory.mktemp("integrity")
    data = make_folder_dataset(base / "data", per_class=12)
    return data, load_dataset(data, cache_dir=base / "cache")


def _cfg(data, **over) -> TrainConfig:
    return TrainConfig(**{"data": str(data), "epochs": 2, "batch_size": 16, "img_size": 48, "ema_decay": 0.0,
                          "mixup_alpha": 0.0, "warmup_epochs": 0, **over})


# --- one process a run ------------------------------------------------------------------------------

def test_a_second_process_is_refused_a_run_in_training_and_the_lock_dies_with_its_holder(tmp_path, synthetic):
    data, _ = synthetic
    out = tmp_path / "runs"
    first = subprocess.Popen([sys.executable, "-m", "fer_core", "train", "--data", str(data), "--out", str(out),
                              "--run-id", "owned", "--epochs", "50", "--batch-size", "16", "--ema-decay", "0"],
                             cwd=tmp_path, env=training_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    run = Run(out / "owned")
    try:
        wait_for_value(lambda: (run.status().get("progress") or {}).get("batch"), 180, "the first process to train",
                       first)
        assert run.locked_by() == first.pid

        second = subprocess.run([sys.executable, "-m", "fer_core", "train", "--out", str(out), "--resume", "owned"],
                                cwd=tmp_path, env=training_env(), capture_output=True, text=True, timeout=180)
        assert second.returncode == 2, second.stderr[-2000:]
        assert f"run owned is already being trained by process {first.pid}" in second.stderr
        status = json.loads(run.status_path.read_text())   # the refused process wrote nothing
        assert status["state"] == "running" and status["pid"] == first.pid
        with pytest.raises(RunError, match=f"already being trained by process {first.pid}"):
            run.start()                                     # the dashboard's Resume button
        with pytest.raises(RunError, match="already being trained"):
            with run.lock():
                pass
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    assert run.locked_by() is None                          # SIGKILL released it
    assert run.status()["state"] == "stopped"
    with run.lock():
        assert run.locked_by() == os.getpid()


def test_resume_drops_rows_beyond_last_and_a_killed_writers_temporaries(tmp_path, synthetic, monkeypatch):
    """Killed after epoch 1's metrics row, before its first ``last`` checkpoint, mid-way through writing it."""
    data, ds = synthetic
    real_save_last = loop_mod.save_last

    def killed_while_saving(path, *args, **kwargs):
        path.with_name(path.name + ".a1b2c3.tmp").write_bytes(b"\0" * 4096)   # what a killed atomic write leaves
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(loop_mod, "save_last", killed_while_saving)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(data), runs_root=tmp_path, run_id="killed", dataset=ds, progress=False)
    run = Run(tmp_path / "killed")
    assert [r["epoch"] for r in run.metrics()] == [1] and not run.last_checkpoint.exists()
    assert temporaries_of(run.last_checkpoint)

    monkeypatch.setattr(loop_mod, "save_last", real_save_last)
    train(runs_root=tmp_path, resume="killed", dataset=ds, progress=False)
    assert [r["epoch"] for r in run.metrics()] == [1, 2]
    assert temporaries_of(run.last_checkpoint) == []
    assert run.status()["state"] == "finished"
    assert "resumed from the start (no last checkpoint)" in run.log_path.read_text()


def test_a_run_id_with_a_trailing_newline_is_refused(tmp_path):
    with pytest.raises(RunError, match="invalid run id"):
        check_run_id("ok\n")
    with pytest.raises(RunError):
        RunStore(tmp_path).create({"model": "resnet18"}, "ok\n")
    assert not any(tmp_path.iterdir())


# --- one rule for "best", and the data the run trained on -----------------------------------------------

def test_best_is_the_epoch_chosen_by_the_select_metric_for_every_reader(tmp_path, synthetic, monkeypatch):
    data, ds = synthetic
    scores = iter([(0.10, 0.50), (0.90, 0.40), (0.95, 0.45)])   # best accuracy at epoch 3, best macro-F1 at 1
    monkeypatch.setattr(loop_mod, "validate", lambda *a, **k: dict(zip(("val_acc", "val_macro_f1"), next(scores)),
                                                                   val_loss=1.0))
    run = train(_cfg(data, epochs=3, select_metric="macro_f1"), runs_root=tmp_path, run_id="f1", dataset=ds,
                progress=False)
    assert read_metadata(run.best_checkpoint)["epoch"] == 1
    assert best_row(run.metrics())["epoch"] == run.best_metrics()["epoch"] == 1
    status = run.status()
    assert (status["best_epoch"], status["best_score"], status["select_metric"]) == (1, 0.50, "macro_f1")
    summary = tables.run_summary(run)
    assert summary["best epoch"] == 1 and summary["selected by"] == "macro-F1"
    assert summary["best val acc"] == 0.10 and summary["best val macro-F1"] == 0.50
    figure = training_charts.accuracy_figure(run.metrics())
    star = next(t for t in figure.data if t.name == "best checkpoint")
    assert list(star.x) == [1]


def test_the_class_weights_and_counts_are_written_as_data(tmp_path, synthetic):
    data, ds = synthetic
    run = train(_cfg(data, epochs=1, class_weight_power=1.0, class_weight_cap=2.0, max_train_images=40),
                runs_root=tmp_path, run_id="weights", dataset=ds, progress=False)
    info = run.data_info()
    counts = info["training_counts"]
    assert list(counts) == info["class_names"] == list(ds.class_names)
    assert sum(counts.values()) == info["training_images"] == 40 and len(set(counts.values())) > 1
    expected = class_weights(list(counts.values()), 1.0, 2.0).tolist()
    assert list(info["class_weights"].values()) == pytest.approx(expected)
    assert len(set(expected)) > 1 and info["validation_split"] == "PublicTest"
    plain = train(_cfg(data, epochs=1, class_weight_power=0.0), runs_root=tmp_path, run_id="plain", dataset=ds,
                  progress=False)
    assert plain.data_info()["class_weights"] is None
    assert Run(tmp_path / "nothing-yet").data_info() is None


def test_a_last_checkpoint_with_an_unreadable_training_state_fails_resume_with_its_name(tmp_path, synthetic):
    data, ds = synthetic
    run = train(_cfg(data, epochs=1), runs_root=tmp_path, run_id="garbled", dataset=ds, progress=False)
    model_state, train_state = read_tensors(run.last_checkpoint)
    meta = {k: v if isinstance(v, str) else json.dumps(v) if isinstance(v, (dict, list)) else str(v)
            for k, v in read_metadata(run.last_checkpoint).items()}
    save_checkpoint(run.last_checkpoint, model_state, {**meta, "progress": "{not json"}, train_state)
    with pytest.raises(CheckpointError, match="last.safetensors: its training state cannot be resumed"):
        train(runs_root=tmp_path, resume="garbled", dataset=ds, progress=False, epochs=2)
    status = run.status()
    assert status["state"] == "failed" and "cannot be resumed" in status["error"]
    assert [r["epoch"] for r in run.metrics()] == [1]   # nothing lost
