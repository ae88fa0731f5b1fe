"""fer_core.explanation: class-activation maps on EfficientNet-B0 and ResNet-18 classifiers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import synthetic_face
from fer_core.checkpoint import FerClassifier, save_checkpoint
from fer_core.config import GREY_MEAN, GREY_STD
from fer_core.data import FER2013_CLASSES
from fer_core.explanation import Explanation, explain, explanation_figure
from fer_core.models import create_model
from fer_core.storage import model_metadata, read_metadata

METHODS = ("gradcam", "gradcam++", "eigencam")


@pytest.fixture(scope="module")
def effnet(tiny_checkpoint) -> FerClassifier:
    return FerClassifier.from_checkpoint(tiny_checkpoint)


@pytest.fixture(scope="module")
def resnet(tmp_path_factory) -> FerClassifier:
    """A (random) ResNet-18 saved as a checkpoint and loaded back."""
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=len(FER2013_CLASSES), img_size=48)
    path = tmp_path_factory.mktemp("resnet") / "resnet18.safetensors"
    save_checkpoint(path, model.state_dict(), model_metadata("resnet18", FER2013_CLASSES, 48, GREY_MEAN, GREY_STD, 16))
    assert read_metadata(path)["arch"] == "resnet18"
    clf = FerClassifier.from_checkpoint(path)
    with torch.no_grad():
        x = torch.randn(2, 1, 48, 48)
        assert torch.allclose(model.eval()(x), clf.model(x), atol=1e-5)  # same weights back
    return clf


@pytest.fixture(params=["effnet", "resnet"])
def classifier(request) -> FerClassifier:
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.stack([synthetic_face(k, rng) for k in (3, 5, 0)])


@pytest.mark.parametrize("method", METHODS)
def test_maps_shape_range_and_prediction(classifier, faces, method):
    probs = classifier.predict_proba(faces)
    out = explain(classifier, faces, method=method)
    assert len(out) == 3 and all(isinstance(e, Explanation) for e in out)
    for e, p in zip(out, probs):
        assert e.heatmap.shape == (192, 192) and e.heatmap.dtype == np.float32
        assert np.isfinite(e.heatmap).all() and e.heatmap.min() >= 0 and e.heatmap.max() <= 1
        assert e.overlay.shape == (192, 192, 3) and e.overlay.dtype == np.uint8
        assert e.method == method
        assert e.predicted == e.target == classifier.class_names[int(p.argmax())]
        assert list(e.probabilities) == list(classifier.class_names)
        assert np.allclose(list(e.probabilities.values()), p, atol=1e-5)
    # the overlay is the face blended with a colour map: not grey, and not the face alone
    assert (out[0].overlay[..., 0] != out[0].overlay[..., 2]).any()
    # the model is left as it was (no CAM hooks remain)
    assert np.allclose(classifier.predict_proba(faces), probs, atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_target_by_name_and_index(classifier, faces, method):
    face = faces[0]
    default = explain(classifier, face, method=method)[0]
    predicted = default.predicted
    same = explain(classifier, face, method=method, target=predicted)[0]
    assert same.target == predicted and np.allclose(same.heatmap, default.heatmap, atol=1e-5)
    by_name = explain(classifier, face, method=method, target="sad")[0]
    by_index = explain(classifier, face, method=method, target=classifier.class_names.index("sad"))[0]
    assert by_name.target == by_index.target == "sad" and by_name.predicted == predicted
    assert np.allclose(by_name.heatmap, by_index.heatmap, atol=1e-5)
    maps = [explain(classifier, face, method=method, target=t)[0].heatmap for t in range(len(FER2013_CLASSES))]
    identical = all(np.allclose(maps[0], m, atol=1e-5) for m in maps[1:])
    # gradient-based maps depend on the class; Eigen-CAM (first principal component) does not
    assert identical == (method == "eigencam")


def test_one_target_a_face_explains_each_face_for_its_own_class(effnet, faces):
    wanted = ["sad", 3, "fear"]
    each = explain(effnet, faces, method="gradcam", target=wanted)
    assert [e.target for e in each] == ["sad", effnet.class_names[3], "fear"]
    for k, t in enumerate(wanted):   # the batch gives each face the map it would get alone for its class
        alone = explain(effnet, faces[k], method="gradcam", target=t)[0]
        assert np.allclose(each[k].heatmap, alone.heatmap, atol=1e-5)
    with pytest.raises(ValueError, match="2 targets for 3 faces"):
        explain(effnet, faces, target=["sad", "fear"])
    with pytest.raises(ValueError, match="'bored' is not one of"):
        explain(effnet, faces, target=["sad", "bored", "fear"])


def test_with_test_time_views_it_explains_the_class_a_photo_prediction_gives(effnet, faces):
    from fer_core.evaluation import predict_split

    views = predict_split(effnet, torch.from_numpy(faces), "flip+crops")
    out = explain(effnet, faces, method="gradcam", tta="flip+crops")
    for k, e in enumerate(out):
        label = effnet.class_names[int(views[k].argmax())]
        assert e.predicted == e.target == label
        assert np.allclose([e.probabilities[c] for c in effnet.class_names], views[k], atol=1e-6)
        single = explain(effnet, faces[k], method="gradcam", target=label)[0]   # the map: of the single view
        assert np.allclose(e.heatmap, single.heatmap, atol=1e-5)
    plain = explain(effnet, faces, method="gradcam")
    assert np.allclose([[e.probabilities[c] for c in effnet.class_names] for e in plain],
                       effnet.predict_proba(faces), atol=1e-6)
    with pytest.raises(ValueError, match="unknown TTA mode 'rotate'"):
        explain(effnet, faces, tta="rotate")


def test_one_face_and_display_size(effnet, faces):
    out = explain(effnet, torch.from_numpy(faces[1]), method="gradcam", display_size=96)
    assert len(out) == 1 and out[0].heatmap.shape == (96, 96) and out[0].overlay.shape == (96, 96, 3)
    big = np.kron(faces[1], np.ones((2, 2), np.uint8))  # a 96 px face: resized to the model's 48
    assert explain(effnet, big, method="gradcam")[0].heatmap.shape == (192, 192)
    fig = explanation_figure(faces[1], out[0])
    assert fig.shape == (96, 96 * 2 + 230, 3) and fig.dtype == np.uint8


def test_bad_method_and_target(effnet, faces):
    with pytest.raises(ValueError, match="unknown CAM method 'scorecam'"):
        explain(effnet, faces[0], method="scorecam")
    with pytest.raises(ValueError, match="'bored' is not one of this model's classes"):
        explain(effnet, faces[0], target="bored")
    for bad in (7, -1):
        with pytest.raises(ValueError, match="out of range"):
            explain(effnet, faces[0], target=bad)


def test_cam_method_names_in_config_are_the_methods_explain_offers():
    from fer_core.config import CAM_METHOD_NAMES
    from fer_core.explanation import CAM_METHODS

    assert tuple(CAM_METHODS) == CAM_METHOD_NAMES
