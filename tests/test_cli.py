"""The command line, run as users run it: ``python -m fer_core ...`` in a separate interpreter.

Starting an interpreter costs the package's import time (5-15 s on a small, busy CPU), so most
commands run in one batch: a second interpreter runs each command as ``-m`` does (``runpy``,
``__main__``, ``sys.exit``), with the process's stdout and stderr file descriptors captured for
each command, and reports exit code, stdout and stderr per command. One test runs a plain
``python -m fer_core`` subprocess.
"""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from conftest import ROOT, heavy_libraries_loaded_by, make_folder_dataset, synthetic_face
from fer_core.checkpoint import FerClassifier
from fer_core.data import FER2013_CLASSES, load_dataset
from fer_core.evaluation import evaluate

SUBCOMMANDS = ("info", "train", "evaluate", "predict", "explain", "export")
FACE_BOX = (220, 100, 160, 160)  # where the face_photo fixture pastes its face (x, y, w, h)


def cli_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def run_cli(*args, timeout: int = 180) -> subprocess.CompletedProcess:
    """``python -m fer_core ARGS`` in a subprocess."""
    return subprocess.run([sys.executable, "-m", "fer_core", *map(str, args)], cwd=ROOT, env=cli_env(),
                          capture_output=True, text=True, timeout=timeout)


_BATCH_DRIVER = r"""
import json, os, runpy, sys, tempfile

todo, done = sys.argv[1:3]
commands = json.loads(open(todo).read())
results = {}
for name, argv in commands.items():
    sys.stdout.flush(); sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        os.dup2(out.fileno(), 1); os.dup2(err.fileno(), 2)
        try:
            sys.argv = ["fer_core", *argv]
            try:
                runpy.run_module("fer_core", run_name="__main__", alter_sys=True)
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            sys.stdout.flush(); sys.stderr.flush()
            os.dup2(saved_out, 1); os.dup2(saved_err, 2)
            os.close(saved_out); os.close(saved_err)
        out.seek(0); err.seek(0)
        results[name] = {"returncode": code, "stdout": out.read().decode(), "stderr": err.read().decode()}
with open(done, "w") as f:
    json.dump(results, f)
"""


def run_cli_batch(commands: dict[str, list], work: Path) -> dict[str, SimpleNamespace]:
    """Each ``name: argv`` as ``python -m fer_core *argv`` would run it, all in one interpreter."""
    todo, done = work / "commands.json", work / "results.json"
    todo.write_text(json.dumps({k: [str(a) for a in v] for k, v in commands.items()}))
    proc = subprocess.run([sys.executable, "-c", _BATCH_DRIVER, str(todo), str(done)], cwd=ROOT, env=cli_env(),
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {k: SimpleNamespace(**v) for k, v in json.loads(done.read_text()).items()}


def assert_one_line_error(result, *fragments: str) -> str:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _subset_checkpoint(base: Path) -> Path:
    """A tiny checkpoint trained on two classes only (a few seconds)."""
    from fer_core.config import TrainConfig
    from fer_core.training import train

    data = make_folder_dataset(base / "data", per_class={"happy": 16, "sad": 16, "angry": 4})
    cfg = TrainConfig(data=str(data), classes=["happy", "sad"], epochs=1, batch_size=16, img_size=48,
                      mixup_alpha=0.0, ema_decay=0.0, lr=2e-3, warmup_epochs=0)
    run = train(cfg, runs_root=base / "runs", run_id="subset", progress=False)
    return run.best_checkpoint


@pytest.fixture(scope="module")
def cli(tmp_path_factory, tiny_checkpoint):
    """Inputs for every command of this module, and their results from one batch run."""
    base = tmp_path_factory.mktemp("cli")
    ns = SimpleNamespace(base=base, tiny=tiny_checkpoint, subset=_subset_checkpoint(base / "subset"))
    ns.data = make_folder_dataset(base / "fer")
    (ns.data / "test" / "fear" / "PrivateTest_bad.jpg").write_bytes(b"not an image")
    ns.small = make_folder_dataset(base / "small", per_class=5)

    ns.faces = base / "faces"
    ns.faces.mkdir()
    rng = np.random.default_rng(7)
    cv2.imwrite(str(ns.faces / "a.png"), synthetic_face(3, rng))
    (ns.faces / "b.jpg").write_bytes(b"definitely not a jpeg")
    cv2.imwrite(str(ns.faces / "c.jpg"), cv2.resize(synthetic_face(4, rng), (64, 80)))

    ns.missing = base / "no-such-data"
    ns.bad_ckpt = base / "broken.safetensors"
    ns.bad_ckpt.write_bytes(b"\x00" * 64 + b"not safetensors")
    ns.not_image = base / "face.jpg"
    ns.not_image.write_text("hello, I am text\n")
    ns.report, ns.subset_report = base / "report.json", base / "subset.json"
    ns.restricted_report = base / "restricted.json"
    ns.cam, ns.cam_never = base / "out" / "cam.png", base / "never.png"

    commands = {f"help {c}": [c, "--help"] for c in SUBCOMMANDS}
    commands["help"] = ["--help"]
    commands.update({
        "info": ["info", "--data", ns.data, "--json"],
        "evaluate": ["evaluate", "--checkpoint", ns.tiny, "--data", ns.data, "--split", "test",
                     "--json", ns.report],
        "evaluate subset": ["evaluate", "--checkpoint", ns.subset, "--data", ns.small, "--split", "PrivateTest",
                            "--tta", "flip", "--json", ns.subset_report],
        "evaluate restricted": ["evaluate", "--checkpoint", ns.tiny, "--data", ns.small, "--split", "test",
                                "--classes", "sad,happy", "--json", ns.restricted_report],
        "error restricted to a class the model lacks": ["evaluate", "--checkpoint", ns.subset, "--data", ns.small,
                                                        "--classes", "happy,fear"],
        "predict folder": ["predict", ns.faces, "--checkpoint", ns.tiny, "--no-detect"],
        "explain": ["explain", ns.faces / "a.png", "--checkpoint", ns.tiny, "--out", ns.cam,
                    "--method", "gradcam++", "--target", "happy", "--no-detect"],
        "error missing data": ["info", "--data", ns.missing],
        "error corrupt checkpoint": ["evaluate", "--checkpoint", ns.bad_ckpt, "--data", ns.data],
        "error not an image": ["explain", ns.not_image, "--checkpoint", ns.tiny, "--out", ns.cam_never],
        "error unknown split": ["evaluate", "--checkpoint", ns.tiny, "--data", ns.small, "--split", "Holdout"],
        "error unknown class": ["info", "--data", ns.data, "--classes", "happy,bored"],
        "predict missing": ["predict", base / "gone.jpg", "--checkpoint", ns.tiny, "--json"],
        "train by macro-F1": ["train", "--data", ns.small, "--epochs", 3, "--batch-size", 8, "--img-size", 48,
                              "--select-metric", "macro_f1", "--mixup-alpha", 0, "--ema-decay", 0,
                              "--out", base / "runs", "--run-id", "by-f1", "--json"],
    })
    ns.results = run_cli_batch(commands, base)
    return ns


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_subcommand_help(cli, command):
    r = cli.results[f"help {command}"]
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: python -m fer_core {command}"), r.stdout[:300]
    expected_flag = {"info": "--data", "train": "--batch-size", "evaluate": "--tta", "predict": "--no-detect",
                     "explain": "gradcam++", "export": "--half"}[command]
    assert expected_flag in r.stdout


def test_top_level_help(cli):
    r = cli.results["help"]
    assert r.returncode == 0 and all(c in r.stdout for c in SUBCOMMANDS)


def test_info_json(cli):
    r = cli.results["info"]
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["class_names"] == list(FER2013_CLASSES)
    assert info["counts"] == {s: dict.fromkeys(FER2013_CLASSES, 6) for s in ("Training", "PublicTest",
                                                                            "PrivateTest")}
    assert info["totals"] == {"Training": 42, "PublicTest": 42, "PrivateTest": 42}
    assert info["validation_split"] == "PublicTest" and info["test_splits"] == ["PublicTest", "PrivateTest"]
    assert len(info["skipped"]) == 1 and info["skipped"][0]["path"].endswith("PrivateTest_bad.jpg")
    assert info["skipped"][0]["reason"]


def test_evaluate_writes_report(cli):
    r = cli.results["evaluate"]
    assert r.returncode == 0, r.stderr
    report = json.loads(cli.report.read_text())
    for key in ("accuracy", "macro", "weighted", "per_class", "confusion_matrix", "ece", "reliability",
                "predictions", "num_images", "class_names", "split", "tta", "checkpoint"):
        assert key in report, key
    assert report["num_images"] == 84 and report["split"] == "test" and report["tta"] == "none"
    assert report["class_names"] == list(FER2013_CLASSES) and report["checkpoint"] == str(cli.tiny)
    assert np.array(report["confusion_matrix"]).shape == (7, 7)
    assert "test (84 images" in r.stdout and f"{report['accuracy']:.4f}" in r.stdout
    # the same numbers as the library gives in this process
    here = evaluate(FerClassifier.from_checkpoint(cli.tiny), load_dataset(cli.data).split("test"), "test")
    assert report["accuracy"] == pytest.approx(here["accuracy"])
    assert report["confusion_matrix"] == here["confusion_matrix"]


def test_evaluate_class_subset_checkpoint(cli):
    r = cli.results["evaluate subset"]
    assert r.returncode == 0, r.stderr
    report = json.loads(cli.subset_report.read_text())
    assert report["class_names"] == ["happy", "sad"]
    assert report["num_images"] == 10 and report["tta"] == "flip" and report["split"] == "PrivateTest"
    assert np.array(report["confusion_matrix"]).sum(1).tolist() == [5, 5]
    assert {p["true"] for p in report["predictions"]} == {"happy", "sad"}
    assert all(Path(p["id"]).parent.name == p["true"] for p in report["predictions"])


def test_evaluate_a_7_class_model_on_a_class_subset(cli):
    """--classes: the subset's images only, each scored by the model's choice among those classes."""
    r = cli.results["evaluate restricted"]
    assert r.returncode == 0, r.stderr
    report = json.loads(cli.restricted_report.read_text())
    assert report["class_names"] == ["happy", "sad"]   # the model's order
    split = load_dataset(cli.small, classes=["happy", "sad"]).split("test")
    full = FerClassifier.from_checkpoint(cli.tiny).predict_proba(split.images)
    h, s = FER2013_CLASSES.index("happy"), FER2013_CLASSES.index("sad")
    expected = full[:, [h, s]] / full[:, [h, s]].sum(1, keepdims=True)
    assert report["num_images"] == len(split) == 20
    assert [p["id"] for p in report["predictions"]] == list(split.ids)
    assert np.allclose([p["probabilities"] for p in report["predictions"]], expected, atol=1e-4)
    assert report["accuracy"] == pytest.approx(float((expected.argmax(1) == split.labels.numpy()).mean()))
    assert_one_line_error(cli.results["error restricted to a class the model lacks"], "no class fear")


def test_predict_folder_prints_csv_without_detection(cli):
    r = cli.results["predict folder"]
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [Path(row["path"]).name for row in rows] == ["a.png", "b.jpg", "c.jpg"]
    a, b, c = rows
    assert (a["x"], a["y"], a["w"], a["h"], a["error"]) == ("0", "0", "48", "48", "")
    assert (c["x"], c["y"], c["w"], c["h"]) == ("0", "8", "64", "64")  # the centred square of 64x80
    for row in (a, c):
        probs = {k[2:]: float(v) for k, v in row.items() if k.startswith("p_")}
        assert list(probs) == list(FER2013_CLASSES) and abs(sum(probs.values()) - 1) < 1e-3
        assert row["label"] == max(probs, key=probs.get)
    assert b["error"] == "not a readable image (UnidentifiedImageError)" and Path(b["path"]).name == "b.jpg"
    assert b["label"] == ""


def test_explain_writes_png(cli):
    r = cli.results["explain"]
    assert r.returncode == 0, r.stderr
    img = cv2.imread(str(cli.cam))
    assert img is not None and img.shape == (192, 192 * 2 + 230, 3)
    assert "gradcam++ for 'happy'" in r.stdout and str(cli.cam) in r.stdout


def test_failures_exit_non_zero_with_one_error_line(cli):
    assert_one_line_error(cli.results["error missing data"], str(cli.missing), "does not exist")
    assert_one_line_error(cli.results["error corrupt checkpoint"], "broken.safetensors")
    assert_one_line_error(cli.results["error not an image"], "face.jpg", "not a readable image")
    assert not cli.cam_never.exists()
    assert_one_line_error(cli.results["error unknown split"], "unknown split 'Holdout'")
    assert_one_line_error(cli.results["error unknown class"], "bored")


def test_predict_of_only_unreadable_images_fails(cli):
    """The record carries the error, and the exit code says that every image failed."""
    r = cli.results["predict missing"]
    assert r.returncode == 1
    (record,) = json.loads(r.stdout)
    assert record["faces"] == [] and record["error"] == "file not found" and record["path"].endswith("gone.jpg")


def test_predict_photo_json_in_a_plain_subprocess(tiny_checkpoint, face_photo):
    proc = run_cli("predict", face_photo, "--checkpoint", tiny_checkpoint, "--json")
    assert proc.returncode == 0, proc.stderr
    records = json.loads(proc.stdout)
    assert isinstance(records, list) and len(records) == 1
    rec = records[0]
    assert rec["path"] == str(face_photo) and rec["error"] is None and len(rec["faces"]) == 1
    face = rec["faces"][0]
    assert {"box", "label", "probabilities"} <= set(face)
    x, y, w, h = face["box"]
    fx, fy, fw, fh = FACE_BOX
    assert x < fx + fw and fx < x + w and y < fy + fh and fy < y + h  # overlaps the pasted face
    assert list(face["probabilities"]) == list(FER2013_CLASSES)
    assert abs(sum(face["probabilities"].values()) - 1) < 1e-3
    assert face["label"] == max(face["probabilities"], key=face["probabilities"].get)
    assert rec["tta"] == "flip+crops"   # photos: the ten test-time views unless --tta says otherwise


def test_predict_tta_none_classifies_the_single_crop(tiny_checkpoint, face_photo, capsys):
    from fer_core import load_image, predict_image
    from fer_core.cli import main

    assert main(["predict", str(face_photo), "--checkpoint", str(tiny_checkpoint), "--json", "--tta", "none"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    single = predict_image(FerClassifier.from_checkpoint(tiny_checkpoint), load_image(face_photo), tta="none")
    assert record["tta"] == "none" and len(record["faces"]) == len(single.faces) == 1
    for c, p in single.faces[0].probabilities.items():
        assert abs(record["faces"][0]["probabilities"][c] - p) < 1e-4


def test_train_summary_reports_the_epoch_its_best_checkpoint_holds(cli):
    result = cli.results["train by macro-F1"]
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    rows = [json.loads(line) for line in (cli.base / "runs" / "by-f1" / "metrics.jsonl").read_text().splitlines()]
    assert summary["epochs"] == len(rows) == 3
    chosen = next(r for r in rows if r["epoch"] == summary["best_epoch"])
    assert chosen["val_macro_f1"] == summary["best_val_macro_f1"] == max(r["val_macro_f1"] for r in rows)
    assert summary["best_val_acc"] == chosen["val_acc"]
    saved = FerClassifier.from_checkpoint(summary["best_checkpoint"]).metadata
    assert int(saved["epoch"]) == summary["best_epoch"]


def test_info_and_help_load_neither_timm_sklearn_nor_gradcam(cli):
    """Commands pay only for the libraries they use: the parser lists TTA and CAM modes from fer_core.config."""
    code = ("import contextlib, io\n"
            "from fer_core.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    assert main(['info', '--data', {str(cli.data)!r}, '--json']) == 0\n"
            "    assert main(['info', '--data', '/nowhere/at/all']) == 2")
    assert heavy_libraries_loaded_by(code) == []


# --- in-process checks of single commands (no model needed) ---------------------------------

def _stub_classifier(monkeypatch) -> None:
    """``FerClassifier.from_checkpoint`` gives a stand-in: these commands never reach the model."""
    stub = SimpleNamespace(img_size=48, class_names=FER2013_CLASSES)
    monkeypatch.setattr(FerClassifier, "from_checkpoint", classmethod(lambda cls, path: stub))


def test_info_reports_an_image_over_opencvs_limit_as_skipped(tmp_path, capsys):
    from fer_core.cli import main
    from conftest import huge_png

    data = make_folder_dataset(tmp_path / "fer", per_class=2)
    huge_png(data / "train" / "happy" / "Training_huge.png")
    assert main(["info", "--data", str(data)]) == 0
    out, err = capsys.readouterr()
    assert "skipped 1 unreadable image(s)" in out and "Training_huge.png: too large" in out, out
    assert "error:" not in out + err


def test_predict_names_a_failing_file_once(tmp_path, monkeypatch, capsys):
    from fer_core.cli import main

    _stub_classifier(monkeypatch)
    gone = tmp_path / "gone.jpg"
    assert main(["predict", str(gone), "--checkpoint", "stub"]) == 1
    assert capsys.readouterr().out.splitlines() == [f"{gone}: error: file not found"]
    assert main(["predict", str(gone), "--checkpoint", "stub", "--json"]) == 1
    (record,) = json.loads(capsys.readouterr().out)
    assert (record["path"], record["error"]) == (str(gone), "file not found")
    out = tmp_path / "out.csv"
    assert main(["predict", str(gone), "--checkpoint", "stub", "--csv", str(out)]) == 1
    (row,) = csv.DictReader(out.open())
    assert (row["path"], row["error"]) == (str(gone), "file not found")


def test_explain_writes_its_image_atomically(tmp_path, monkeypatch, capsys):
    import fer_core.explanation as explanation_mod
    from fer_core.cli import main
    from fer_core.storage import temporaries_of

    _stub_classifier(monkeypatch)
    figure = np.zeros((20, 30, 3), np.uint8)
    figure[:, :10] = (255, 0, 0)
    result = SimpleNamespace(method="gradcam", target="happy", predicted="happy", probabilities={"happy": 0.9})
    monkeypatch.setattr(explanation_mod, "explain", lambda *a, **k: [result])
    monkeypatch.setattr(explanation_mod, "explanation_figure", lambda face, r: figure)
    image = tmp_path / "face.png"
    cv2.imwrite(str(image), synthetic_face(3, np.random.default_rng(0)))
    out = tmp_path / "cams" / "cam.png"
    out.parent.mkdir()
    out.write_bytes(b"an older file")
    assert main(["explain", str(image), "--checkpoint", "stub", "--no-detect", "--out", str(out)]) == 0
    written = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)
    assert np.array_equal(written, figure) and temporaries_of(out) == []
    assert "gradcam for 'happy'" in capsys.readouterr().out

    monkeypatch.setattr(FerClassifier, "from_checkpoint", classmethod(lambda cls, path: pytest.fail("loaded")))
    bad = tmp_path / "cams" / "cam.txt"
    assert main(["explain", str(image), "--checkpoint", "stub", "--no-detect", "--out", str(bad)]) == 2
    assert "use a .png or .jpg name" in capsys.readouterr().err   # said before the model is loaded
    assert sorted(p.name for p in out.parent.iterdir()) == ["cam.png"]


def test_an_unforeseen_library_error_is_named_once(monkeypatch, capsys):
    """OpenCV's exception type is called ``error``: the line says ``cv2.error``, not ``error: error:``."""
    import cv2

    from fer_core import cli as cli_mod

    def broken(args):
        raise cv2.error("something inside OpenCV")

    monkeypatch.setattr(cli_mod, "cmd_info", broken)
    assert cli_mod.main(["info", "--data", "anything"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cv2.error: something inside OpenCV") and "error: error" not in err


# --- export to ONNX and the runtime flag --------------------------------------------------------

@pytest.fixture(scope="module")
def runtimes(tmp_path_factory, tiny_checkpoint):
    """The export and --runtime commands of the tiny model, from one batch run."""
    base = tmp_path_factory.mktemp("runtimes")
    ns = SimpleNamespace(base=base, data=make_folder_dataset(base / "fer", per_class=4), onnx=base / "tiny.onnx",
                         copy=base / "copy.safetensors", restricted=base / "two.onnx")
    ns.reports = {name: base / f"{name}.json" for name in ("torch", "onnxruntime", "onnx file")}
    face = base / "face.png"
    cv2.imwrite(str(face), synthetic_face(3, np.random.default_rng(1)))
    evaluate_args = ["evaluate", "--data", ns.data, "--split", "test", "--tta", "flip"]
    ns.results = run_cli_batch({
        "export onnx": ["export", tiny_checkpoint, ns.onnx, "--data", ns.data],
        "export copy": ["export", tiny_checkpoint, ns.copy, "--half"],
        "export restricted": ["export", tiny_checkpoint, ns.restricted, "--classes", "sad,happy"],
        "error half onnx": ["export", tiny_checkpoint, base / "half.onnx", "--half"],
        "evaluate torch": [*evaluate_args, "--checkpoint", tiny_checkpoint, "--runtime", "torch",
                           "--json", ns.reports["torch"]],
        "evaluate onnxruntime": [*evaluate_args, "--checkpoint", tiny_checkpoint, "--runtime", "onnxruntime",
                                 "--json", ns.reports["onnxruntime"]],
        "evaluate onnx file": [*evaluate_args, "--checkpoint", ns.onnx, "--json", ns.reports["onnx file"]],
        "predict onnx file": ["predict", face, "--checkpoint", ns.restricted, "--no-detect", "--json"],
        "error onnx in torch": ["predict", face, "--checkpoint", ns.onnx, "--runtime", "torch"],
    }, base)
    return ns


def test_export_onnx_checks_the_graph_and_keeps_the_safetensors_copy(runtimes, tiny_checkpoint):
    import onnx

    r = runtimes.results["export onnx"]
    assert r.returncode == 0, r.stderr
    assert "ONNX (opset 17, dynamic batch, 7 classes)" in r.stdout and "PyTorch's on 28 PublicTest faces" in r.stdout
    props = {p.key: p.value for p in onnx.load(str(runtimes.onnx)).metadata_props}
    assert json.loads(props["class_names"]) == list(FER2013_CLASSES)
    r = runtimes.results["export copy"]
    assert r.returncode == 0 and "(fp16)" in r.stdout, r.stderr
    copy = FerClassifier.from_checkpoint(runtimes.copy)
    assert copy.class_names == FER2013_CLASSES and next(copy.model.parameters()).dtype.is_floating_point
    r = runtimes.results["export restricted"]
    assert r.returncode == 0 and "2 classes" in r.stdout, r.stderr
    assert_one_line_error(runtimes.results["error half onnx"], "exported in fp32")


def test_evaluate_gives_the_same_report_in_every_runtime(runtimes):
    reports = {}
    for name, path in runtimes.reports.items():
        r = runtimes.results[f"evaluate {name}"]
        assert r.returncode == 0, r.stderr
        reports[name] = json.loads(path.read_text())
    assert [reports[n]["runtime"] for n in reports] == ["torch", "onnxruntime", "onnxruntime"]
    base = reports["torch"]
    for report in reports.values():
        assert report["accuracy"] == base["accuracy"] and report["confusion_matrix"] == base["confusion_matrix"]
        assert np.allclose([p["probabilities"] for p in report["predictions"]],
                           [p["probabilities"] for p in base["predictions"]], atol=1e-4)


def test_predict_takes_an_onnx_file_and_torch_refuses_it(runtimes):
    r = runtimes.results["predict onnx file"]
    assert r.returncode == 0, r.stderr
    (record,) = json.loads(r.stdout)
    assert set(record["faces"][0]["probabilities"]) == {"happy", "sad"}
    assert_one_line_error(runtimes.results["error onnx in torch"], "tiny.onnx",
                          "runs in onnxruntime, not torch")


def test_predict_detector_options_and_json_fields(tiny_checkpoint, face_photo, face_model, tmp_path, capsys):
    from fer_core.cli import main

    base = ["predict", str(face_photo), "--checkpoint", str(tiny_checkpoint), "--json"]
    assert main([*base, "--detector", "yunet", "--face-model", str(face_model), "--min-score", "0.5"]) == 0
    record = json.loads(capsys.readouterr().out)[0]
    assert record["detector"] == "yunet" and record["detector_note"] is None
    face = record["faces"][0]
    assert 0.5 <= face["score"] <= 1 and len(face["landmarks"]) == 5
    fx, fy, fw, fh = FACE_BOX
    assert all(fx <= x <= fx + fw and fy <= y <= fy + fh for x, y in face["landmarks"])  # in the photo's pixels
    assert main([*base, "--detector", "haar"]) == 0
    face = json.loads(capsys.readouterr().out)[0]["faces"][0]
    assert face["score"] is None and face["landmarks"] is None
    assert main([*base, "--face-model", str(tmp_path / "absent.onnx")]) == 0   # falls back, says so
    record = json.loads(capsys.readouterr().out)[0]
    assert record["detector"] == "haar" and "absent.onnx: cannot be read" in record["detector_note"]
    assert main([*base, "--min-face", "400"]) == 0                             # larger than the face
    assert json.loads(capsys.readouterr().out)[0]["faces"] == []


def test_explain_takes_the_detector_options(tiny_checkpoint, face_photo, face_model, tmp_path, capsys):
    from fer_core.cli import main

    out = tmp_path / "cam.png"
    assert main(["explain", str(face_photo), "--checkpoint", str(tiny_checkpoint), "--out", str(out),
                 "--detector", "yunet", "--face-model", str(face_model)]) == 0
    assert out.exists() and "on face 0 at [" in capsys.readouterr().out
