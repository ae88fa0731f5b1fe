"""fer_core/slices.py: image properties, their cache, and accuracy and recall in quantile bins."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from conftest import make_folder_dataset, synthetic_face
from fer_core import slices
from fer_core.cli import main
from fer_core.data import load_dataset
from fer_core.detection import Face
from fer_core.evaluation import build_report
from fer_core.storage import save_report

NAMES = ("angry", "fear", "happy")


def test_properties_follow_brightness_contrast_and_blur():
    rng = np.random.default_rng(0)
    face = synthetic_face(2, rng)
    images = np.stack([face, face // 4, np.full_like(face, 128), cv2.GaussianBlur(face, (7, 7), 3)])
    props = slices.pixel_properties(images)
    assert props["brightness"][1] < props["brightness"][0] / 3
    assert props["contrast"][2] == 0 and props["contrast"][0] > 30
    assert props["sharpness"][3] < props["sharpness"][0] / 4 and props["sharpness"][2] == 0


def test_properties_are_computed_once_and_cached(tmp_path, monkeypatch):
    images = np.random.default_rng(1).integers(0, 255, (12, 48, 48), dtype=np.uint8)
    first = slices.image_properties(images, cache_dir=tmp_path)
    assert len(list((tmp_path / "properties").glob("*.npz"))) == 1
    computed = []
    real = slices.pixel_properties
    monkeypatch.setattr(slices, "pixel_properties", lambda imgs: computed.append(len(imgs)) or real(imgs))
    again = slices.image_properties(images, cache_dir=tmp_path)
    assert all(np.array_equal(first[k], again[k]) for k in slices.PIXEL_PROPERTIES) and computed == []
    slices.image_properties(images[:6], cache_dir=tmp_path)   # other pixels: not read from that cache
    assert computed == [6]


def test_head_roll_is_the_eye_lines_angle():
    class Tilted:   # a stand-in for YuNet: right eye at (60, 80), left eye 10 degrees clockwise from level
        def detect(self, img):
            if img.mean() == 0:
                return []
            angle = np.radians(10)
            return [Face([0, 0, 10, 10], 0.9, [[60, 80], [60 + 50 * np.cos(angle), 80 + 50 * np.sin(angle)],
                                               [0, 0], [0, 0], [0, 0]])]

    images = np.stack([np.full((48, 48), 90, np.uint8), np.zeros((48, 48), np.uint8)])
    roll = slices.head_roll(images, Tilted())
    assert roll[0] == pytest.approx(10) and np.isnan(roll[1])


def test_slice_counts_add_up_to_the_split_with_ties_and_missing_values():
    rng = np.random.default_rng(2)
    n = 103
    y_true, y_pred = rng.integers(0, 3, n), rng.integers(0, 3, n)
    tied = np.repeat([1.0, 2.0, 3.0], [60, 40, 3])   # the quantile cuts fall inside the 60 equal values
    roll = rng.normal(size=n)
    roll[:7] = np.nan
    report = slices.slice_report({"flat": tied, "spread": rng.normal(size=n), "roll": roll}, y_true, y_pred, NAMES,
                                 n_bins=4)
    for rows in report["properties"].values():
        assert sum(r["count"] for r in rows) == n and sum(r["correct"] for r in rows) == int((y_true == y_pred).sum())
        for i, c in enumerate(NAMES):
            assert sum(r["support"][c] for r in rows) == int((y_true == i).sum())
    assert len(report["properties"]["spread"]) == 4
    assert [(r["lower"], r["upper"]) for r in report["properties"]["flat"]] == [(1, 1), (2, 3)]   # ties stay together
    assert report["properties"]["roll"][-1]["count"] == 7 and report["properties"]["roll"][-1]["lower"] is None
    json.dumps(report, allow_nan=False)   # plain, standard JSON


def test_a_planted_dark_slice_where_fear_is_missed_is_found():
    rng = np.random.default_rng(3)
    y_true = np.arange(240) % 3
    dark = rng.random(240) < 0.25
    images = np.stack([synthetic_face(int(k), rng) // (5 if d else 1) for k, d in zip(y_true, dark)])
    y_pred = y_true.copy()
    y_pred[dark & (y_true == 1)] = 0   # fear in the dark faces is called angry
    report = slices.slice_report(slices.pixel_properties(images), y_true, y_pred, NAMES, n_bins=4)
    darkest = report["properties"]["brightness"][0]
    assert darkest["recall"]["fear"] < 0.2 and darkest["recall"]["happy"] == 1.0
    assert all(r["recall"]["fear"] == 1.0 for r in report["properties"]["brightness"][2:])
    worst = slices.worst_slices(report, min_support=5)[0]
    assert (worst["property"], worst["bin"], worst["class"]) == ("brightness", 0, "fear")


def test_predictions_are_matched_by_id_and_foreign_reports_refused():
    report = build_report(np.array([0, 1, 2]), np.eye(3)[[0, 0, 2]], NAMES, ids=["a", "b", "c"])
    y_true, y_pred = slices.predictions_for(report, ["c", "a", "b"])
    assert y_true.tolist() == [2, 0, 1] and y_pred.tolist() == [2, 0, 0]
    with pytest.raises(ValueError, match="no prediction for 1 of the split's 2 images"):
        slices.predictions_for(report, ["a", "zz"])
    with pytest.raises(ValueError, match="no usable per-image predictions"):
        slices.predictions_for({"class_names": list(NAMES)}, ["a"])


def test_slices_command_slices_the_saved_report(tmp_path, tiny_checkpoint, capsys):
    import shutil

    from fer_core.checkpoint import FerClassifier
    from fer_core.evaluation import evaluate

    data = make_folder_dataset(tmp_path / "fer", per_class=3)
    ckpt = shutil.copy(tiny_checkpoint, tmp_path / "m.safetensors")
    split = load_dataset(data).split("PrivateTest")
    save_report(evaluate(FerClassifier.from_checkpoint(ckpt), split, "PrivateTest"), tmp_path / "m.PrivateTest.json")
    assert main(["slices", "--checkpoint", str(ckpt), "--data", str(data), "--split", "PrivateTest",
                 "--bins", "3"]) == 0
    saved = slices.load_slices(slices.slices_file(ckpt, "PrivateTest"))
    assert saved["num_images"] == len(split) == 21 and "21 images" in capsys.readouterr().out
    assert all(sum(r["count"] for r in rows) == 21 for rows in saved["properties"].values())
