"""The Train page (pages/1_Train.py) driven through Streamlit's AppTest: it starts real background
training runs (tiny configs on synthetic images), watches them, stops and resumes them."""
from __future__ import annotations

import json
import re
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from conftest import ROOT, make_folder_dataset
from fer_core import read_metadata
from fer_core.runs import Run
from fer_core.config import PRESETS

PAGE = str(ROOT / "pages" / "1_Train.py")
WAIT_S = 90  # a tiny run takes ~10 s alone (mostly importing torch); this machine may be busy


@pytest.fixture(scope="module")
def synthetic_data(tmp_path_factory) -> Path:
    # 12 images a class: 84 training images, 5 batches of 16
    return make_folder_dataset(tmp_path_factory.mktemp("train-page") / "fer", per_class=12)


@pytest.fixture
def runs_dir(tmp_path, tmp_path_factory, monkeypatch) -> Path:
    """An empty runs folder for the page (dashboard.common reads $FER_STUDIO_RUNS), the tests' temporary folders
    as the allowed data folders, and one thread for the training processes it starts (they inherit the
    environment). Kills what is left at the end."""
    root = tmp_path / "runs"
    monkeypatch.setenv("FER_STUDIO_RUNS", str(root))
    monkeypatch.setenv("FER_STUDIO_DATA_ROOTS", str(tmp_path_factory.getbasetemp()))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("FER2013_PATH", str(tmp_path / "no-fer2013"))
    yield root
    for status_file in root.glob("*/status.json"):  # only the processes this test started
        pid = json.loads(status_file.read_text()).get("pid")
        if pid and Run(status_file.parent).status()["state"] in ("queued", "running"):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def page() -> AppTest:
    return AppTest.from_file(PAGE, default_timeout=60).run()


def submit(at: AppTest, data: Path | str, name: str = "", classes: list[str] | None = None, **numbers) -> AppTest:
    """Fill the new-run form (a tiny config unless told otherwise) and press Start training."""
    fields = {"epochs": 1, "batch_size": 16, "img_size": 48, "max_train_images": 32, **numbers}
    at.text_input(key="train_data").input(str(data))
    at.text_input(key="train_run_name").input(name)
    for field, value in fields.items():
        at.number_input(key=f"train_{field}").set_value(value)
    if classes is not None:
        at.multiselect(key="train_classes").set_value(classes)
    at.button(key="train_submit").click()
    return at.run()


def wait_for(run_dir: Path, states: tuple[str, ...], timeout: float = WAIT_S) -> dict:
    """Poll the run's status until its state is one of ``states``."""
    run, deadline = Run(run_dir), time.time() + timeout
    while True:
        status = run.status()
        if status.get("state") in states:
            return status
        if time.time() > deadline:
            log_file = run_dir / "process.log"
            log = log_file.read_text(errors="replace")[-2000:] if log_file.exists() else ""
            raise AssertionError(f"{run_dir.name} still {status.get('state')!r} after {timeout:.0f} s "
                                 f"(waiting for {states}); status {status}; output:\n{log}")
        time.sleep(0.2)


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def chart_traces(at: AppTest) -> dict[str, list[str]]:
    """Plotly chart key -> the names of its traces."""
    charts = {}
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        charts[chart.key] = [t.get("name") for t in spec["data"]]
    return charts


def table(at: AppTest):
    return at.dataframe[-1].value


def test_without_runs_the_page_says_how_to_start_one(runs_dir):
    at = page()
    assert not at.exception
    assert "No training runs" in texts(at.info)
    assert at.text_input(key="train_data").value == ""  # no FER-2013 found: nothing to pre-fill
    assert at.button(key="train_submit")
    assert not at.get("plotly_chart")


def test_a_preset_fills_the_form(runs_dir):
    at = page()
    at.selectbox(key="train_preset").set_value("fer2013-effnet-b0-pretrained").run()
    assert at.number_input(key="train_img_size").value == 96
    assert at.number_input(key="train_unfreeze_head_epochs").value == 1
    assert at.number_input(key="train_backbone_lr").value == pytest.approx(5e-4)
    assert at.number_input(key="train_layer_decay").value == pytest.approx(0.8)
    assert not at.warning and not at.exception
    at.selectbox(key="train_preset").set_value("fer2013-effnet-b0").run()
    assert at.number_input(key="train_epochs").value == PRESETS["fer2013-effnet-b0"]["epochs"]
    assert at.number_input(key="train_clean_epochs").value == PRESETS["fer2013-effnet-b0"]["clean_epochs"] > 0


def test_quick_is_labelled_a_smoke_test_and_a_duration_is_estimated_before_start(runs_dir, synthetic_data):
    at = page()
    at.selectbox(key="train_preset").set_value("quick").run()
    assert not at.exception
    at.text_input(key="train_data").input(str(synthetic_data))
    at.button(key="train_estimate").click().run()   # sends the form's values without starting a run
    assert not at.exception and not list(runs_dir.glob("*"))
    assert "smoke test" in texts(at.warning) and "smoke test" in texts(at.caption)
    estimate = next(c.value for c in at.caption if c.value.startswith("Estimated duration"))
    # 2 epochs of the 84 training images (max_train_images 2000), the speed from the measured table
    assert "2 epochs of 84 training images" in estimate and "measured on a 2-core development machine" in estimate


def test_estimates_from_measured_speeds():
    from dashboard import estimates

    guess = estimates.run_estimate("efficientnet_b0", 64, 2, 1000, 100, [])
    speed = estimates.MEASURED_SPEED["efficientnet_b0"][1]
    assert guess.seconds == pytest.approx(2 * (1000 + estimates.VALIDATION_COST * 100) / speed)
    earlier = [({"model": "resnet18", "img_size": 64}, [{"images_per_s": 10.0}]),
               ({"model": "efficientnet_b0", "img_size": 48, "_run_id": "old"}, [{"images_per_s": 90.0}])]
    speed, source = estimates.measured_speed("efficientnet_b0", 96, earlier)   # this machine's, area-scaled
    assert speed == pytest.approx(90.0 * (48 / 96) ** 2) and "run old" in source
    assert estimates.duration(45) == "about 45 s" and estimates.duration(600) == "about 10 min"
    assert estimates.duration(5 * 3600) == "about 5.0 h"
    progress = {"epoch": 1, "epochs": 2, "batch": 30, "batches": 100}
    assert estimates.first_epoch_eta((0.0, 10), 0.0, progress) is None
    left = estimates.first_epoch_eta((0.0, 10), 20.0, progress, val_share=0.0)   # 1 s a batch
    assert left == pytest.approx(70 + 100)


def test_more_clean_epochs_than_epochs_is_refused_with_a_message(runs_dir, synthetic_data):
    at = submit(page(), synthetic_data, name="too-clean", epochs=2, clean_epochs=3)
    assert "clean_epochs" in texts(at.error)
    assert not (runs_dir / "too-clean").exists()


def test_form_starts_a_background_run_that_finishes_and_shows_its_curves(runs_dir, synthetic_data):
    at = submit(page(), synthetic_data, name="tiny", mixup_alpha=0.4)
    assert not at.exception and not at.error
    assert "Started run **tiny**" in texts(at.success)
    run_dir = runs_dir / "tiny"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["data"] == str(synthetic_data.resolve())
    assert (config["epochs"], config["batch_size"], config["max_train_images"]) == (1, 16, 32)
    assert config["mixup_alpha"] == pytest.approx(0.4) and config["preset"] is None
    # the run is shown while it starts and trains; the page does not wait for it
    assert at.selectbox(key="train_selected").value == "tiny"
    assert at.button(key="train_stop")

    status = wait_for(run_dir, ("finished", "failed", "stopped"))
    assert status["state"] == "finished", status
    assert (run_dir / "best.safetensors").exists()

    at.run()
    assert not at.exception and not at.error
    assert "Finished: best validation accuracy" in texts(at.success)
    traces = chart_traces(at)
    assert traces["train_chart_loss"][:2] == ["training", "validation"]  # both on the same axes
    assert traces["train_chart_accuracy"][:2] == ["training", "validation"]
    assert "classifier" in traces["train_chart_lr"]
    assert traces["train_chart_unfrozen"] == ["trainable stages"]
    assert len(traces["train_chart_weights"]) == 1  # the class weights, read from data.json
    assert any(m.label == "Epochs done" and m.value == "1 / 1" for m in at.metric)
    assert not at.get("progress")
    assert not any(b.key == "train_stop" for b in at.button)
    rows = table(at)
    row = rows[rows["Run"] == "tiny"].iloc[0]
    assert row["State"] == "finished" and row["Epochs"] == "1 of 1" and row["Best epoch"] == "1"
    assert re.fullmatch(r"\d{1,3}\.\d%", row["Best validation accuracy"])
    assert not rows.isin(["None", "nan"]).any().any()
    assert ":material/check_circle:" in texts(at.markdown) and "✅" not in texts(at.markdown)
    assert all(code.proto.wrap_lines for code in at.code)   # long log lines wrap
    accuracy = next(json.loads(c.proto.spec) for c in at.get("plotly_chart") if c.key == "train_chart_accuracy")
    low, high = accuracy["layout"]["xaxis"]["range"]
    assert high - low <= 2   # one epoch: a narrow axis around it, not 0.6-1.4 bars


def test_bad_form_values_show_an_error_and_create_nothing(runs_dir, synthetic_data, tmp_path):
    at = page()
    at = submit(at, synthetic_data, name="../evil")
    assert "invalid run id" in texts(at.error)
    at = submit(at, synthetic_data, name="/tmp/evil")
    assert "invalid run id" in texts(at.error)
    at = submit(at, tmp_path / "no-such-folder", name="ok")
    assert "does not exist" in texts(at.error)
    at = submit(at, synthetic_data, name="odd", batch_size=15)  # mixup needs an even batch
    assert "even batch size" in texts(at.error)
    at = submit(at, synthetic_data, name="one", classes=["happy"])
    assert "at least two classes" in texts(at.error)
    assert not at.exception and not at.success
    assert not runs_dir.exists() or not any(runs_dir.iterdir())
    assert not (tmp_path / "evil").exists() and not Path("/tmp/evil").exists()
    assert "No training runs" in texts(at.info)


def test_a_data_path_outside_the_data_folders_or_not_a_data_set_starts_nothing(runs_dir, tmp_path):
    secret = "root:$6$c2VjcmV0:19000:0:99999:7:::"
    (tmp_path / "shadow").write_text(secret + "\n")
    (tmp_path / "headerless.csv").write_text(secret + "\n")
    (tmp_path / "empty-folder").mkdir()
    at = page()
    for path, message in (("/etc/shadow", "FER_STUDIO_DATA_ROOTS"), (tmp_path / "shadow", "is not a data set"),
                          (tmp_path / "headerless.csv", "not a FER-2013 CSV"),
                          (tmp_path / "empty-folder", "no class folders")):
        at = submit(at, path, name="leak")
        assert message in texts(at.error), (path, texts(at.error))
        assert "root:" not in texts(at.error) and "c2VjcmV0" not in texts(at.error)
    assert not at.exception and not at.success
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


def test_stop_then_resume(runs_dir, synthetic_data):
    # 6 epochs of 5 batches: long enough to be stopped while it trains
    at = submit(page(), synthetic_data, name="long", epochs=6, max_train_images=0, mixup_alpha=0.0)
    run_dir = runs_dir / "long"
    wait_for(run_dir, ("running",))
    at.run()
    at.button(key="train_stop").click().run()
    assert not at.exception
    status = wait_for(run_dir, ("stopped", "finished", "failed"))
    assert status["state"] == "stopped" and not status.get("error"), status
    assert (run_dir / "last.safetensors").exists()
    epochs_before = len(Run(run_dir).metrics())
    assert epochs_before < 6

    at.run()
    assert "Stopped" in texts(at.info) and "Resume continues from its last checkpoint" in texts(at.info)
    at.button(key="train_resume").click().run()
    assert not at.exception and not at.error
    status = wait_for(run_dir, ("finished", "failed", "stopped"))
    assert status["state"] == "finished", status
    assert [r["epoch"] for r in Run(run_dir).metrics()] == [1, 2, 3, 4, 5, 6]
    assert "resumed from" in (run_dir / "train.log").read_text()
    at.run()
    assert any(m.label == "Epochs done" and m.value == "6 / 6" for m in at.metric)


def test_a_failed_run_shows_its_error(runs_dir, synthetic_data):
    # 8 training images cannot make a batch of 16: the background process fails at once
    at = submit(page(), synthetic_data, name="broken", max_train_images=8)
    status = wait_for(runs_dir / "broken", ("failed", "finished", "stopped"))
    assert status["state"] == "failed" and "fewer than one batch" in status["error"]
    at.run()
    assert "Training failed" in texts(at.error) and "fewer than one batch of 16" in texts(at.error)
    assert at.button(key="train_resume")
    assert table(at).set_index("Run").loc["broken", "State"] == "failed"


def test_a_run_whose_data_went_away_fails_with_the_reason(runs_dir, synthetic_data, tmp_path):
    # e.g. resumed after its data set was moved: the page shows the loader's error
    from fer_core import RunStore, TrainConfig

    config = TrainConfig(data=str(tmp_path / "moved-away"), epochs=1, batch_size=16, max_train_images=32)
    RunStore(runs_dir).create(config.to_dict(), "moved").start()
    status = wait_for(runs_dir / "moved", ("failed", "finished", "stopped"))
    assert status["state"] == "failed", status
    at = page()
    assert "Training failed" in texts(at.error) and "moved-away" in texts(at.error)


def test_two_runs_started_back_to_back_both_finish(runs_dir, synthetic_data):
    at = submit(page(), synthetic_data)  # no names: the ids are made from the time and the model
    at = submit(at, synthetic_data, classes=["angry", "happy", "surprise"], epochs=2)
    assert not at.error and not at.exception
    dirs = sorted(p for p in runs_dir.iterdir() if p.is_dir())
    assert len(dirs) == 2, dirs
    statuses = {d.name: wait_for(d, ("finished", "failed", "stopped")) for d in dirs}
    assert all(s["state"] == "finished" for s in statuses.values()), statuses
    a, b = statuses.values()
    assert a["pid"] != b["pid"]   # two processes (whether they overlap in time depends on the machine's load)
    by_epochs = {len(Run(d).metrics()): d for d in dirs}
    assert set(by_epochs) == {1, 2}  # each wrote its own metrics
    assert json.loads((by_epochs[2] / "config.json").read_text())["classes"] == ["angry", "happy", "surprise"]
    assert json.loads((by_epochs[1] / "config.json").read_text())["classes"] is None
    assert read_metadata(by_epochs[2] / "best.safetensors")["class_names"] == ["angry", "happy", "surprise"]
    assert len(read_metadata(by_epochs[1] / "best.safetensors")["class_names"]) == 7
    at.run()
    rows = table(at)
    assert sorted(rows["State"]) == ["finished", "finished"]
    assert sorted(rows["Epochs"]) == ["1 of 1", "2 of 2"]


def test_a_run_killed_without_notice_reads_as_stopped_and_can_be_resumed(runs_dir, synthetic_data):
    from fer_core import RunStore

    run = RunStore(runs_dir).create({"model": "efficientnet_b0", "epochs": 3}, "killed")
    proc = subprocess.Popen(["sleep", "60"])  # stands in for a training process that is then killed
    try:
        run.update_status(state="running", pid=proc.pid, host=os.uname().nodename)
        at = page()
        assert any(b.key == "train_stop" for b in at.button) and at.get("progress")
    finally:
        proc.kill()
        proc.wait()
    at.run()
    assert "ended without saying so" in texts(at.warning)
    assert any(b.key == "train_resume" for b in at.button)
    assert table(at).set_index("Run").loc["killed", "State"] == "stopped"
