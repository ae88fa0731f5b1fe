"""Calibration (issue 22 item 1): fitting, the sidecar, both runtimes, reports, the CLI and the reliability chart."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import FER2013_CLASSES, make_folder_dataset, synthetic_face
from fer_core import calibration as cal
from fer_core.checkpoint import FerClassifier, save_checkpoint
from fer_core.cli import main
from fer_core.evaluation import build_report, evaluate
from fer_core.storage import CheckpointError, load_report, model_metadata, save_report

NAMES = list(FER2013_CLASSES)


def overconfident(n: int = 3000, c: int = 7, sharpen: float = 3.0, seed: int = 0):
    """Probabilities of a model right about 70% of the time, its logits multiplied by ``sharpen``:
    (probabilities, labels, the calibrated probabilities). Scores ``s`` are unit Gaussians with the true class's
    shifted by ``m``, so the true posterior is ``softmax(m * s)``: calibrated at ``sharpen`` 1."""
    rng, m = np.random.default_rng(seed), 1.8
    labels = rng.integers(0, c, n)
    scores = rng.normal(0, 1, (n, c))
    scores[np.arange(n), labels] += m
    return cal.softmax(m * scores * sharpen), labels, cal.softmax(m * scores)


def faces(n: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([synthetic_face(i % 7, rng) for i in range(n)])


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory):
    """A small untrained checkpoint (no training run: calibration is arithmetic on whatever the model says)."""
    import torch

    from fer_core.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=7, img_size=48, drop_rate=0.0)
    path = tmp_path_factory.mktemp("calib") / "model.safetensors"
    save_checkpoint(path, model.state_dict(), model_metadata("resnet18", NAMES, 48, 0.5, 0.25, 32))
    return path


@pytest.fixture
def checkpoint(random_checkpoint, tmp_path):
    """The module's checkpoint copied into this test's folder, so each test's sidecar is its own."""
    path = tmp_path / "model.safetensors"
    path.write_bytes(random_checkpoint.read_bytes())
    return path


def ece(probs, labels) -> float:
    return cal.summary(probs, labels)["ece"]


def test_temperature_scaling_lowers_the_ece_of_an_overconfident_model():
    probs, labels, fair = overconfident()
    scaling = cal.fit(probs, labels, vector=False)
    after = scaling.apply(probs)
    assert scaling.method == "temperature" and scaling.temperature == pytest.approx(3.0, rel=0.1)
    assert ece(probs, labels) > 0.15 and ece(after, labels) < 0.03
    assert cal.nll(after, labels) < cal.nll(probs, labels)
    assert scaling.fit["before"]["ece"] == pytest.approx(ece(probs, labels))
    assert scaling.fit["after"]["ece"] == pytest.approx(ece(after, labels))
    assert np.abs(after - fair).max() < 0.05   # it finds the map that made the model over-confident


@pytest.mark.parametrize("sharpen", [0.4, 1.0, 5.0])
def test_fitting_a_temperature_never_changes_the_argmax(sharpen):
    probs, labels, _ = overconfident(800, sharpen=sharpen, seed=int(sharpen * 10))
    scaling = cal.fit_temperature(probs, labels)
    assert (scaling.apply(probs).argmax(1) == probs.argmax(1)).all()
    np.testing.assert_allclose(scaling.undo(scaling.apply(probs)), probs, atol=1e-5)


def test_vector_scaling_is_kept_only_when_it_pays_on_held_out_folds():
    probs, labels, _ = overconfident(2000, sharpen=2.0)
    assert not cal.fit(probs, labels).fit["vector_check"]["kept"]   # a temperature is the whole story
    # a class the model over-predicts: per-class bias pays, and moves answers, so accuracy rises too
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 7, 2000)
    logits = rng.normal(0, 1, (2000, 7))
    logits[np.arange(2000), labels] += 1.8
    logits[:, 0] += 2.5
    scaling = cal.fit(cal.softmax(logits), labels)
    check = scaling.fit["vector_check"]
    assert check["kept"] and scaling.method == "vector" and check["nll_gain"] > cal.VECTOR_MIN_GAIN
    assert check["held_out"]["vector"]["accuracy"] >= check["held_out"]["temperature"]["accuracy"]
    assert scaling.bias[0] < min(scaling.bias[1:])


def test_the_sidecar_round_trips_and_the_loaders_apply_it(checkpoint):
    raw = FerClassifier.from_checkpoint(checkpoint)
    assert raw.calibration is None
    probs, labels, _ = overconfident(500)
    scaling = cal.calibrate_checkpoint(checkpoint, NAMES, probs, labels, about={"split": "PublicTest"})
    data = json.loads(cal.sidecar_path(checkpoint).read_text())
    assert data["checkpoint_sha256"] and data["modes"]["none"]["fit"]["split"] == "PublicTest"
    loaded = cal.load_calibration(checkpoint, NAMES)
    assert loaded.scaling("none").temperature == pytest.approx(scaling.temperature)
    assert loaded.scaling("flip") == loaded.scaling("none")   # a mode without its own fit uses none's

    clf = FerClassifier.from_checkpoint(checkpoint)
    x = faces()
    np.testing.assert_allclose(clf.predict_proba(x), scaling.apply(raw.predict_proba(x)), atol=1e-6)
    # a second TTA mode joins the first instead of replacing it
    cal.calibrate_checkpoint(checkpoint, NAMES, *overconfident(500, sharpen=2.0)[:2], tta="flip")
    both = cal.load_calibration(checkpoint, NAMES)
    assert set(both.modes) == {"none", "flip"} and both.scaling("flip").temperature != both.scaling().temperature
    assert cal.remove_calibration(checkpoint) and FerClassifier.from_checkpoint(checkpoint).calibration is None


def test_torch_and_onnxruntime_apply_it_identically(checkpoint, tmp_path):
    pytest.importorskip("onnxruntime")
    from fer_core.onnx_export import export_onnx, file_sha256
    from fer_core.runtime import OnnxClassifier, load_classifier

    cal.calibrate_checkpoint(checkpoint, NAMES, *overconfident(500)[:2])
    x = faces()
    torch_clf, onnx_clf = load_classifier(checkpoint, "torch"), load_classifier(checkpoint, "onnxruntime")
    assert onnx_clf.calibration == torch_clf.calibration is not None
    expected = torch_clf.predict_proba(x)
    np.testing.assert_allclose(onnx_clf.predict_proba(x), expected, atol=1e-4)
    assert np.abs(expected - FerClassifier.from_checkpoint(checkpoint, calibrated=False).predict_proba(x)).max() > 1e-3
    # an exported graph carries it in its metadata, restricted ones the kept classes' share
    out = tmp_path / "model.onnx"
    export_onnx(torch_clf, out, x, source_sha256=file_sha256(checkpoint))
    graph = OnnxClassifier.from_file(out)
    assert graph.calibration == torch_clf.calibration
    np.testing.assert_allclose(graph.predict_proba(x), expected, atol=1e-4)
    four = ["angry", "disgust", "fear", "happy"]
    np.testing.assert_allclose(graph.restricted_to(four).predict_proba(x),
                               torch_clf.restricted_to(four).predict_proba(x), atol=1e-4)
    assert torch_clf.restricted_to(four).calibration.class_names == tuple(four)


def test_a_stale_or_corrupt_calibration_is_a_clear_error(checkpoint):
    cal.calibrate_checkpoint(checkpoint, NAMES, *overconfident(300)[:2])
    sidecar = cal.sidecar_path(checkpoint)
    good = sidecar.read_text()

    other = checkpoint.with_name("other.safetensors")   # other weights beside the same sidecar name
    other.write_bytes(checkpoint.read_bytes()[:-4] + b"\0\0\0\0")
    sidecar.rename(cal.sidecar_path(other))
    with pytest.raises(CheckpointError, match="stale.*refit it .*--remove"):
        FerClassifier.from_checkpoint(other)

    negative = json.loads(good)
    negative["modes"]["none"]["temperature"] = -1.0
    cases = {"secret-content{": "not JSON",
             json.dumps({**json.loads(good), "format": "x"}): "not a FER Studio calibration",
             json.dumps({**json.loads(good), "class_names": NAMES[::-1]}): "fitted for the classes",
             json.dumps(negative): "malformed"}
    for text, message in cases.items():
        sidecar.write_text(text)
        with pytest.raises(CheckpointError, match=message) as e:
            FerClassifier.from_checkpoint(checkpoint)
        assert "secret" not in str(e.value) and str(sidecar) in str(e.value)
    # refitting replaces a bad sidecar instead of failing on it
    cal.calibrate_checkpoint(checkpoint, NAMES, *overconfident(300)[:2])
    assert FerClassifier.from_checkpoint(checkpoint).calibration is not None


def test_a_report_records_before_and_after(checkpoint, tmp_path):
    from fer_core.data import load_dataset

    split = load_dataset(make_folder_dataset(tmp_path / "fer", per_class=4)).split("PublicTest")
    plain = evaluate(FerClassifier.from_checkpoint(checkpoint), split, "PublicTest")
    assert "uncalibrated" not in plain and "calibration" not in plain
    cal.calibrate_checkpoint(checkpoint, NAMES, *cal.report_answers(plain, NAMES), about={"split": "PublicTest"})
    report = evaluate(FerClassifier.from_checkpoint(checkpoint), split, "PublicTest")
    assert report["uncalibrated"]["ece"] == pytest.approx(plain["ece"])
    assert report["uncalibrated"]["mean_confidence"] == pytest.approx(plain["mean_confidence"])
    assert report["nll"] <= plain["nll"] + 1e-6   # fitted on these very answers: never worse
    assert report["accuracy"] == plain["accuracy"] and report["calibration"]["method"] == "temperature"
    # a calibrated report's answers are undone before refitting: the same temperature as from the raw report
    again = cal.fit(*cal.report_answers(report, NAMES), vector=False)
    assert again.temperature == pytest.approx(cal.load_calibration(checkpoint, NAMES).scaling().temperature, rel=1e-3)


def test_cli_calibrate_from_a_report_and_remove(checkpoint, tmp_path, capsys):
    probs, labels, _ = overconfident(600)
    report = tmp_path / "model.PublicTest.json"
    save_report({**build_report(labels, probs, NAMES), "split": "PublicTest", "tta": "none"}, report)
    assert main(["calibrate", "--checkpoint", str(checkpoint), "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert "temperature" in out and "ECE" in out and "NLL" in out and str(cal.sidecar_path(checkpoint)) in out
    saved = cal.load_calibration(checkpoint, NAMES).scaling()
    assert saved.fit["split"] == "PublicTest" and saved.fit["before"]["ece"] == pytest.approx(
        load_report(report)["ece"], abs=1e-4)
    assert main(["calibrate", "--checkpoint", str(checkpoint), "--remove"]) == 0
    assert not cal.sidecar_path(checkpoint).exists()
    assert main(["calibrate", "--checkpoint", str(checkpoint)]) == 2   # neither --data nor --report
    assert "--data" in capsys.readouterr().err


def test_cli_calibrate_on_the_data(checkpoint, tmp_path, capsys):
    data = make_folder_dataset(tmp_path / "fer", per_class=3)
    assert main(["calibrate", "--checkpoint", str(checkpoint), "--data", str(data), "--split", "PublicTest"]) == 0
    assert "PublicTest (21 images, TTA none)" in capsys.readouterr().out
    assert cal.load_calibration(checkpoint, NAMES).scaling().fit["images"] == 21


def test_the_reliability_diagram_draws_both_when_the_report_has_both():
    from dashboard import charts

    probs, labels, _ = overconfident(800)
    plain = build_report(labels, probs, NAMES)
    assert [t.name for t in charts.reliability_diagram(plain).data] == ["accuracy", "mean confidence",
                                                                          "perfect calibration"]
    scaling = cal.fit(probs, labels, vector=False)
    report = {**build_report(labels, scaling.apply(probs), NAMES), "uncalibrated": cal.summary(probs, labels)}
    fig = charts.reliability_diagram(report)
    before = next(t for t in fig.data if t.name == "before calibration")
    filled = [b for b in report["uncalibrated"]["reliability"] if b["count"]]
    assert list(before.y) == pytest.approx([b["accuracy"] for b in filled])
    assert f"{report['uncalibrated']['ece']:.3f} before" in fig.layout.title.text
    assert "before" not in charts.reliability_diagram(report, "happy").layout.title.text
