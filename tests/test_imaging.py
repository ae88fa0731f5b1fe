"""fer_core.imaging: the crops and resizes between a photo (or a data-set image) and the model's input, and
that every caller (data sets, predict, explain, the dashboard) gets the same face through them."""
from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

import fer_core.explanation as explanation_mod
from conftest import heavy_libraries_loaded_by
from dashboard import faces
from fer_core import cli, imaging
from fer_core.checkpoint import FerClassifier
from fer_core.data import load_dataset
from fer_core.predict import load_image, predict_image


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w), dtype=np.uint8)


# --- the functions -------------------------------------------------------------------------

@pytest.mark.parametrize("shape, box", [((80, 100), [10, 0, 80, 80]), ((100, 80), [0, 10, 80, 80]),
                                        ((7, 7, 3), [0, 0, 7, 7]), ((5, 8), [1, 0, 5, 5])])
def test_centre_square(shape, box):
    img = np.arange(np.prod(shape)).reshape(shape)
    assert imaging.centre_square_box(shape) == box
    x, y, s, _ = box
    assert np.array_equal(imaging.centre_square(img), img[y:y + s, x:x + s])


def test_resize_square_shrinks_by_area_and_enlarges_linearly():
    big, small = _noise(90, 120), _noise(30, 40, seed=1)
    assert np.array_equal(imaging.resize_square(big, 48),
                          cv2.resize(big[:, 15:105], (48, 48), interpolation=cv2.INTER_AREA))
    assert np.array_equal(imaging.resize_square(small, 48),
                          cv2.resize(small[:, 5:35], (48, 48), interpolation=cv2.INTER_LINEAR))
    same = _noise(48, 48)
    assert np.array_equal(imaging.resize_square(same, 48), same)
    stacked = imaging.resize_squares([big, small], 48)
    assert stacked.shape == (2, 48, 48) and np.array_equal(stacked[1], imaging.resize_square(small, 48))
    assert imaging.resize_squares([], 64).shape == (0, 64, 64)


@pytest.mark.parametrize("box", [[0, 0, 50, 50], [70, 75, 30, 25], [-10, 90, 40, 40], [20, 30, 40, 20],
                                 [0, 0, 120, 100]])
def test_crop_face_is_square_with_replicated_borders(box):
    gray = _noise(100, 110, seed=1)
    crop = imaging.crop_face(gray, box, margin=0.15)
    x, y, w, h = box
    side = int(round(max(w, h) * 1.3))
    assert crop.shape == (side, side)
    x0, y0 = int(round(x + w / 2 - side / 2)), int(round(y + h / 2 - side / 2))
    big = 300
    padded = np.pad(gray, big, mode="edge")
    assert np.array_equal(crop, padded[y0 + big:y0 + big + side, x0 + big:x0 + big + side])
    assert np.array_equal(imaging.crop_face(gray, box), crop)   # FACE_MARGIN is the default


def test_fit_within_grey_and_display():
    img = np.zeros((160, 240, 3), np.uint8)
    small, scale = imaging.fit_within(img, 100)
    assert small.shape == (67, 100, 3) and scale == pytest.approx(100 / 240)
    same, scale = imaging.fit_within(img, 240)
    assert same is img and scale == 1.0
    assert imaging.fit_within(np.zeros((1, 5000), np.uint8), 100)[0].shape == (1, 100)   # never 0 px
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (255, 255, 255)
    assert imaging.to_grey(rgb).tolist() == [[255, 0], [0, 0]]
    grey = _noise(4, 4)
    assert imaging.to_grey(grey) is grey
    assert np.array_equal(imaging.display_square(grey, 12), cv2.resize(grey, (12, 12), interpolation=cv2.INTER_CUBIC))


def test_imaging_needs_no_torch():
    assert heavy_libraries_loaded_by("import fer_core.imaging", libraries=("torch",)) == []


# --- one face, whichever way it is read ----------------------------------------------------

class _Recorder:
    """A classifier stand-in that keeps the faces it is asked about, as its ``preprocess`` receives them."""

    img_size = 48
    class_names = ("happy", "sad")

    def __init__(self):
        self.batches = []

    def preprocess(self, faces):
        self.batches.append(np.asarray(faces))
        return torch.zeros(len(faces), 1, self.img_size, self.img_size)

    def logits(self, x):
        return torch.zeros(len(x), len(self.class_names))

    def calibrated(self, probs, tta="none"):
        return probs


def _explain_face(image, monkeypatch, tmp_path, detect: bool = False) -> np.ndarray:
    """The face ``python -m fer_core explain IMAGE [--no-detect]`` hands to the CAM method."""
    seen = []

    class Stop(Exception):
        pass

    def record(classifier, face, **kwargs):
        seen.append(np.asarray(face))
        raise Stop

    monkeypatch.setattr(FerClassifier, "from_checkpoint", classmethod(lambda cls, path: _Recorder()))
    monkeypatch.setattr(explanation_mod, "explain", record)
    args = SimpleNamespace(image=str(image), checkpoint="stub", no_detect=not detect, face=0, method="gradcam",
                           tta="none", target=None, out=str(tmp_path / "cam.png"), detector="yunet", face_model=None,
                           min_face=None, min_score=None)
    with pytest.raises(Stop):
        cli.cmd_explain(args)
    return seen[0]


@pytest.mark.parametrize("h, w", [(90, 120), (30, 40), (48, 48)])   # shrunk, enlarged, as it is
def test_every_caller_gets_the_same_face(tmp_path, monkeypatch, h, w):
    root = tmp_path / "set"
    (root / "happy").mkdir(parents=True)
    image = root / "happy" / "face.png"
    cv2.imwrite(str(image), _noise(h, w, seed=h))
    rgb = load_image(image)

    dataset = load_dataset(root, use_cache=False)
    from_data = next(sp.images[0].numpy() for sp in dataset.splits.values() if len(sp))
    recorder = _Recorder()
    prediction = predict_image(recorder, rgb, detect=False)
    from_predict = recorder.batches[0][0]
    from_page = faces.prediction_faces(rgb, prediction, 48)[0]
    from_gradcam_page, found = faces.main_face(rgb, 48)
    from_explain = _explain_face(image, monkeypatch, tmp_path)

    assert not found   # noise: no face detected, so the page takes the centred square too
    for face in (from_predict, from_page, from_gradcam_page, from_explain):
        assert face.shape == (48, 48) and np.array_equal(face, from_data)


def test_every_caller_gets_the_same_detected_face(face_photo, tmp_path, monkeypatch):
    rgb = load_image(face_photo)
    recorder = _Recorder()
    prediction = predict_image(recorder, rgb, detect=True)
    assert len(prediction.faces) == 1
    from_predict = recorder.batches[0][0]
    from_page = faces.prediction_faces(rgb, prediction, 48)[0]   # from the prediction's box
    from_gradcam_page, found = faces.main_face(rgb, 48)
    assert found
    for face in (from_page, from_gradcam_page, _explain_face(face_photo, monkeypatch, tmp_path, detect=True)):
        assert np.array_equal(face, from_predict)
