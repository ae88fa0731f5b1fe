"""fer_core.evaluation: reports from hand-made arrays, test-time augmentation, evaluation and JSON."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fer_core.checkpoint import FerClassifier
from fer_core.data import load_dataset
from fer_core.evaluation import (build_report, calibration, evaluate, predict_split, report_probabilities,
                                 summary_line, tta_views)
from fer_core.metrics import macro_f1
from fer_core.storage import load_report, save_report

NAMES = ("a", "b", "c")
# true label, probabilities -> predicted, confidence, right?
CASES = [
    (0, [0.70, 0.20, 0.10]),   # 0  .70  right
    (0, [0.60, 0.30, 0.10]),   # 0  .60  right
    (0, [0.20, 0.55, 0.25]),   # 1  .55  wrong
    (1, [0.05, 0.85, 0.10]),   # 1  .85  right
    (1, [0.45, 0.30, 0.25]),   # 0  .45  wrong
    (2, [0.10, 0.10, 0.80]),   # 2  .80  right
    (2, [0.90, 0.05, 0.05]),   # 0  .90  wrong
    (2, [0.20, 0.15, 0.65]),   # 2  .65  right
]


@pytest.fixture
def report():
    y = np.array([t for t, _ in CASES])
    probs = np.array([p for _, p in CASES])
    return build_report(y, probs, NAMES, ids=[f"img{i}" for i in range(8)], n_bins=4)


def test_report_accuracy_and_confusion(report):
    assert report["num_images"] == 8 and report["class_names"] == list(NAMES)
    assert report["accuracy"] == pytest.approx(5 / 8)
    assert report["confusion_matrix"] == [[2, 1, 0], [1, 1, 0], [1, 0, 2]]  # rows: true, columns: predicted


def test_report_per_class_metrics_by_hand(report):
    precision = {"a": 2 / 4, "b": 1 / 2, "c": 2 / 2}     # right / predicted as the class
    recall = {"a": 2 / 3, "b": 1 / 2, "c": 2 / 3}        # right / truly the class
    support = {"a": 3, "b": 2, "c": 3}
    predicted = {"a": 4, "b": 2, "c": 2}
    conf_right = {"a": (0.70 + 0.60) / 2, "b": 0.85, "c": (0.80 + 0.65) / 2}
    conf_wrong = {"a": 0.55, "b": 0.45, "c": 0.90}
    f1 = {}
    for c in NAMES:
        pc = report["per_class"][c]
        f1[c] = 2 * precision[c] * recall[c] / (precision[c] + recall[c])
        assert pc["precision"] == pytest.approx(precision[c])
        assert pc["recall"] == pytest.approx(recall[c])
        assert pc["f1"] == pytest.approx(f1[c])
        assert pc["support"] == support[c] and pc["predicted"] == predicted[c]
        assert pc["mean_confidence_correct"] == pytest.approx(conf_right[c])
        assert pc["mean_confidence_wrong"] == pytest.approx(conf_wrong[c])
    assert report["macro"]["f1"] == pytest.approx(sum(f1.values()) / 3)
    assert report["macro"]["precision"] == pytest.approx(sum(precision.values()) / 3)
    assert report["weighted"]["recall"] == pytest.approx(sum(recall[c] * support[c] for c in NAMES) / 8)
    assert report["weighted"]["f1"] == pytest.approx(sum(f1[c] * support[c] for c in NAMES) / 8)
    assert report["mean_confidence"] == pytest.approx(sum(max(p) for _, p in CASES) / 8)
    # class a was predicted for .70 .60 (right) .45 .90 (wrong): with 4 bins, one image each in
    # [.25,.5) and [.75,1], two in [.5,.75)
    assert report["per_class"]["a"]["calibration_ece"] == pytest.approx(
        (1 * 0.45 + 2 * abs(1 - 0.65) + 1 * 0.90) / 4)


def test_report_ece_by_hand(report):
    # 4 bins of confidence: [0,.25) [.25,.5) [.5,.75) [.75,1]
    # [.25,.5): .45 wrong; [.5,.75): .70 .60 .65 right, .55 wrong; [.75,1]: .85 .80 right, .90 wrong
    ece = 1 / 8 * abs(0 - 0.45) + 4 / 8 * abs(3 / 4 - (0.70 + 0.60 + 0.55 + 0.65) / 4) \
        + 3 / 8 * abs(2 / 3 - (0.85 + 0.80 + 0.90) / 3)
    assert report["ece"] == pytest.approx(ece)
    bins = report["reliability"]
    assert [b["count"] for b in bins] == [0, 1, 4, 3]
    assert [b["lower"] for b in bins] == [0, 0.25, 0.5, 0.75] and bins[-1]["upper"] == 1
    assert bins[0]["accuracy"] is None and bins[2]["accuracy"] == pytest.approx(0.75)
    assert bins[3]["confidence"] == pytest.approx(0.85)


def test_report_predictions_list(report):
    preds = report["predictions"]
    assert len(preds) == 8
    assert preds[2] == {"id": "img2", "true": "a", "predicted": "b", "probabilities": [0.2, 0.55, 0.25]}
    assert [p["predicted"] for p in preds] == ["a", "a", "b", "b", "a", "c", "a", "c"]
    plain = build_report(np.array([1]), np.array([[0.1, 0.9]]), ("x", "y"))
    assert plain["predictions"] == [{"id": "0", "true": "y", "predicted": "y", "probabilities": [0.1, 0.9]}]
    json.dumps(plain)  # JSON-able as it is


def test_perfectly_calibrated_gives_zero_ece():
    # 10 answers at .8 confidence, 8 right; 5 at .6, 3 right; 20 at .95, 19 right
    y, probs = [], []
    for conf, n, right in ((0.8, 10, 8), (0.6, 5, 3), (0.95, 20, 19)):
        for i in range(n):
            probs.append([conf, 1 - conf])
            y.append(0 if i < right else 1)
    rep = build_report(np.array(y), np.array(probs), ("p", "q"))
    assert rep["ece"] == pytest.approx(0, abs=1e-9)
    assert rep["accuracy"] == pytest.approx(30 / 35)
    over = build_report(np.array([0, 1] * 10), np.array([[0.9, 0.1]] * 20), ("p", "q"))
    assert over["ece"] == pytest.approx(0.4)   # 90% confident, 50% right
    assert calibration(np.array([]), np.array([], bool))["ece"] is None


def test_tta_views():
    x = torch.randn(2, 1, 8, 8)
    none = tta_views(x, "none")
    assert len(none) == 1 and torch.equal(none[0], x)
    flip = tta_views(x, "flip")
    assert len(flip) == 2 and torch.equal(flip[0], x) and torch.equal(flip[1], x.flip(-1))
    crops = tta_views(x, "flip+crops", shift=2)
    assert len(crops) == 10 and all(v.shape == x.shape for v in crops)
    assert torch.equal(crops[0], x) and torch.equal(crops[1], x.flip(-1))
    # the first crop is the image moved 2 px right and down (reflected borders); then its mirror
    assert torch.equal(crops[2][..., 2:, 2:], x[..., :-2, :-2]) and torch.equal(crops[3], crops[2].flip(-1))
    assert torch.equal(crops[8][..., :-2, :-2], x[..., 2:, 2:])  # the last: moved up and left
    assert all(v.is_contiguous(memory_format=torch.channels_last) for v in crops)
    with pytest.raises(ValueError, match="unknown TTA mode 'rotate'"):
        tta_views(x, "rotate")


@pytest.fixture(scope="module")
def classifier(tiny_checkpoint) -> FerClassifier:
    return FerClassifier.from_checkpoint(tiny_checkpoint)


@pytest.fixture
def test_split(folder_dataset):
    return load_dataset(folder_dataset).split("test")


def test_evaluate_without_tta(classifier, test_split):
    rep = evaluate(classifier, test_split, "test", tta="none", batch_size=32, source="synthetic")
    assert rep["num_images"] == len(test_split) == 84
    assert (rep["split"], rep["tta"], rep["data"], rep["img_size"]) == ("test", "none", "synthetic", 48)
    assert rep["checkpoint_arch"] == "efficientnet_b0"
    expected = classifier.predict_proba(test_split.images)
    got = np.array([p["probabilities"] for p in rep["predictions"]])
    assert np.allclose(got, expected, atol=1e-4)
    truth = [classifier.class_names[k] for k in test_split.labels.tolist()]
    assert [p["true"] for p in rep["predictions"]] == truth
    assert [p["id"] for p in rep["predictions"]] == test_split.ids
    right = np.mean([p["true"] == p["predicted"] for p in rep["predictions"]])
    assert rep["accuracy"] == pytest.approx(right)
    assert np.array(rep["confusion_matrix"]).sum() == 84
    assert np.trace(np.array(rep["confusion_matrix"])) == round(right * 84)
    assert "accuracy" in summary_line(rep) and "84 images" in summary_line(rep)


def test_evaluate_with_flip_averages_the_mirror(classifier, test_split):
    rep = evaluate(classifier, test_split, "test", tta="flip")
    expected = (classifier.predict_proba(test_split.images) + classifier.predict_proba(test_split.images.flip(-1))) / 2
    got = np.array([p["probabilities"] for p in rep["predictions"]])
    assert np.allclose(got, expected, atol=1e-4) and rep["tta"] == "flip"


def test_evaluate_with_flip_and_crops(classifier, test_split):
    small = type(test_split)(test_split.images[:20], test_split.labels[:20], test_split.ids[:20])
    rep = evaluate(classifier, small, "test", tta="flip+crops", batch_size=8)
    assert rep["tta"] == "flip+crops" and rep["num_images"] == 20
    crops = np.array([p["probabilities"] for p in rep["predictions"]])
    flip = predict_split(classifier, small.images, tta="flip")
    assert crops.shape == (20, 7) and np.allclose(crops.sum(1), 1, atol=1e-3)
    assert not np.allclose(crops, flip, atol=1e-4)  # the shifted crops count
    assert np.allclose(predict_split(classifier, small.images, tta="flip+crops", batch_size=256), crops, atol=1e-4)
    assert predict_split(classifier, small.images[:0]).shape == (0, 7)


def test_evaluate_empty_split_is_a_clear_error(classifier, test_split):
    empty = type(test_split)(test_split.images[:0], test_split.labels[:0], [])
    with pytest.raises(ValueError, match="split 'PublicTest' has no images"):
        evaluate(classifier, empty, "PublicTest")


def test_save_and_load_report(report, tmp_path):
    path = tmp_path / "reports" / "nested" / "r.json"
    save_report(report, path)
    back = load_report(path)
    assert back == json.loads(json.dumps(report))
    assert back["confusion_matrix"] == report["confusion_matrix"] and back["ece"] == report["ece"]
    save_report({**report, "accuracy": 0.5}, path)  # replaced whole
    assert load_report(path)["accuracy"] == 0.5
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temporary files left


def test_report_probabilities_only_for_the_same_images_classes_and_no_tta():
    names = ["happy", "sad", "angry"]
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]])
    report = {**build_report(np.array([0, 1, 2]), probs, names, ["a", "b", "c"]), "tta": "none"}
    np.testing.assert_allclose(report_probabilities(report, ["a", "b", "c"], names), probs, atol=1e-5)
    assert report_probabilities(report, ["a", "c", "b"], names) is None        # other order
    assert report_probabilities(report, ["a", "b"], names) is None             # other images
    assert report_probabilities(report, ["a", "b", "c"], names[::-1]) is None  # other classes
    assert report_probabilities({**report, "tta": "flip"}, ["a", "b", "c"], names) is None


def test_a_class_without_test_images_is_left_out_of_the_macro_average():
    # a, b have images; c has none, but the model said c once (a wrong answer for a b face)
    y = np.array([0, 0, 1, 1, 1])
    probs = np.array([[.8, .1, .1], [.6, .3, .1], [.1, .8, .1], [.2, .7, .1], [.1, .2, .7]])
    rep = build_report(y, probs, NAMES)
    assert rep["absent_classes"] == ["c"]
    f1_a, f1_b = 1.0, 2 * 1.0 * (2 / 3) / (1 + 2 / 3)
    assert rep["macro"]["f1"] == pytest.approx((f1_a + f1_b) / 2)          # not (f1_a + f1_b + 0) / 3
    # the macro-F1 that training, ensemble weights and audits use is the report's
    assert macro_f1(y, probs.argmax(1)) == pytest.approx(rep["macro"]["f1"])
    assert rep["macro"]["recall"] == pytest.approx((1 + 2 / 3) / 2)
    assert rep["weighted"]["f1"] == pytest.approx((2 * f1_a + 3 * f1_b) / 5)
    c = rep["per_class"]["c"]
    assert (c["support"], c["predicted"], c["recall"], c["f1"], c["precision"]) == (0, 1, None, None, 0.0)
    # never predicted and absent: no precision either
    never = build_report(y, probs * [1, 1, 0], NAMES)
    assert never["per_class"]["c"]["precision"] is None and never["absent_classes"] == ["c"]
    assert finite_or_none(never)
    assert build_report(np.array([t for t, _ in CASES]), np.array([p for _, p in CASES]), NAMES)["absent_classes"] == []


def finite_or_none(report: dict) -> bool:
    """Every figure of a report is finite or None (a report holds no NaN)."""
    def walk(v):
        if isinstance(v, float):
            assert np.isfinite(v), v
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
    walk(report)
    return True


def test_report_inputs_that_would_give_nan_are_refused():
    y = np.array([0, 1])
    with pytest.raises(ValueError, match="1 of 2 images have NaN or infinite probabilities"):
        build_report(y, np.array([[0.5, 0.5, 0.0], [np.nan, 0.5, 0.5]]), NAMES)
    with pytest.raises(ValueError, match="one row of 3 a label"):
        build_report(y, np.array([[0.5, 0.5], [0.5, 0.5]]), NAMES)
    with pytest.raises(ValueError, match="class indices from 0 to 2"):
        build_report(np.array([0, 3]), np.full((2, 3), 1 / 3), NAMES)
    with pytest.raises(ValueError, match="at least one image"):
        build_report(np.array([], int), np.zeros((0, 3)), NAMES)


def _refuse(constant: str):
    raise ValueError(f"not standard JSON: {constant}")


def test_saved_report_is_standard_json(tmp_path):
    # empty calibration bins, a class never predicted and one absent: every undefined figure is null
    y = np.array([0, 0, 1])
    probs = np.array([[.9, .05, .05], [.2, .7, .1], [.3, .6, .1]])
    report = build_report(y, probs, NAMES, n_bins=10)
    assert finite_or_none(report)
    path = tmp_path / "r.json"
    save_report({**report, "split": "test", "tta": "none"}, path)
    back = json.loads(path.read_text(), parse_constant=_refuse)
    assert back["per_class"]["c"]["recall"] is None and back["reliability"][0]["accuracy"] is None
    with pytest.raises(ValueError, match="not standard JSON: NaN"):
        json.loads('{"ece": NaN}', parse_constant=_refuse)
