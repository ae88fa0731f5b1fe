"""The Grad-CAM page (pages/3_Grad-CAM.py) driven through Streamlit's AppTest on a synthetic folder set."""
from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from conftest import ROOT, make_folder_dataset

PAGE = str(ROOT / "pages" / "3_Grad-CAM.py")
PER_CLASS = 4                   # faces a class in each split: 28 a split


@pytest.fixture
def env(studio_env):
    return studio_env


@pytest.fixture
def with_data(env, monkeypatch):
    data = make_folder_dataset(env / "fer", per_class=PER_CLASS, seed=3)
    monkeypatch.setenv("FER2013_PATH", str(data))
    return data


@pytest.fixture
def without_data(env, monkeypatch):
    monkeypatch.setenv("FER2013_PATH", str(env / "nowhere"))


def _page() -> AppTest:
    return AppTest.from_file(PAGE, default_timeout=120).run()


def _grid(at: AppTest) -> list[str]:
    """Captions of the grid's faces ('3. ✓ true happy, predicted happy 91%')."""
    return [c for i in at.image for c in i.captions if re.match(r"\d+\. [✓✗] true ", c)]


def _counts(at: AppTest) -> tuple[int, int]:
    """(matching, shown) from the caption above the grid."""
    text = next(c.value for c in at.caption if "match the filters" in c.value)
    m = re.search(r"([\d,]+) match the filters; showing (\d+)", text)
    return int(m.group(1).replace(",", "")), int(m.group(2))


def test_grid_filters_and_detail(with_data):
    at = _page()
    assert not at.exception and not at.error
    assert at.selectbox(key="gradcam_split").value == "PublicTest"
    assert _counts(at) == (7 * PER_CLASS, 24)
    assert len(_grid(at)) == 24
    assert at.get("plotly_chart")  # the detail's probabilities

    at.selectbox(key="gradcam_true_class").set_value("happy").run()
    assert _counts(at) == (PER_CLASS, PER_CLASS)
    assert all("true happy," in c for c in _grid(at)) and len(_grid(at)) == PER_CLASS

    at.selectbox(key="gradcam_true_class").set_value("any").run()
    right = _counts(at.selectbox(key="gradcam_outcome").set_value("right").run())[0]
    assert all("✓" in c for c in _grid(at))
    wrong = _counts(at.selectbox(key="gradcam_outcome").set_value("wrong").run())[0]
    assert all("✗" in c for c in _grid(at))
    assert right + wrong == 7 * PER_CLASS
    if not wrong:
        assert any("No face matches" in i.value for i in at.info)

    at.selectbox(key="gradcam_outcome").set_value("all")
    at.selectbox(key="gradcam_predicted_class").set_value("surprise").run()
    matching, shown = _counts(at)
    assert shown == min(matching, 24) and all("predicted surprise" in c for c in _grid(at))

    at.selectbox(key="gradcam_predicted_class").set_value("any")
    at.selectbox(key="gradcam_limit").set_value(12).run()
    assert _counts(at) == (7 * PER_CLASS, 12) and len(_grid(at)) == 12
    assert not at.exception


def test_method_target_split_and_detail_face(with_data):
    at = _page()
    at.selectbox(key="gradcam_method").set_value("gradcam++").run()
    assert not at.exception
    assert any(c.startswith("gradcam++ for ") for i in at.image for c in i.captions)

    at.selectbox(key="gradcam_target").set_value("angry").run()
    assert not at.exception
    detail = [c for i in at.image for c in i.captions if " for " in c]
    assert detail and detail[0].startswith("gradcam++ for angry (predicted ")

    at.selectbox(key="gradcam_detail").set_value(2).run()
    note = at.caption[-1].value
    assert not at.exception and at.selectbox(key="gradcam_detail").value == 2
    assert re.search(r"PublicTest_\d+\.png: true class", note)
    label = at.selectbox(key="gradcam_detail").format_func(2)
    assert label.startswith("3. ") and "PublicTest_" in label and label.split(" ")[1] in note

    at.selectbox(key="gradcam_split").set_value("PrivateTest").run()
    assert not at.exception
    assert _counts(at)[0] == 7 * PER_CLASS
    assert "PrivateTest" in at.caption[-1].value


def test_without_data_set_offers_an_upload(without_data, face_photo):
    at = _page()
    assert not at.exception
    assert any("FER-2013 was not found" in i.value for i in at.info)
    at.file_uploader(key="gradcam_upload").set_value(("photo.jpg", face_photo.read_bytes(), "image/jpeg")).run()
    assert not at.exception and not at.error
    assert any(c.startswith("gradcam for ") for i in at.image for c in i.captions)
    assert "largest face found" in at.caption[-1].value
    assert at.get("plotly_chart")

    buf = io.BytesIO()
    Image.new("L", (100, 80), 90).save(buf, "PNG")
    at.file_uploader(key="gradcam_upload").set_value(("grey.png", buf.getvalue(), "image/png")).run()
    assert not at.exception and "whole image" in at.caption[-1].value

    at.file_uploader(key="gradcam_upload").set_value(("bad.png", b"not an image", "image/png")).run()
    assert not at.exception and "bad.png" in at.error[0].value


def test_no_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_STUDIO_CHECKPOINTS", str(tmp_path / "empty"))
    monkeypatch.setenv("FER_STUDIO_RUNS", str(tmp_path / "runs"))
    at = _page()
    assert not at.exception
    assert any("No model to explain" in i.value for i in at.info)


def test_uses_the_report_saved_beside_the_checkpoint(env, with_data):
    """A saved PublicTest report (no TTA) is where the grid's predictions come from."""
    from fer_core import FerClassifier, build_report, load_dataset, save_report

    names = FerClassifier.from_checkpoint(env / "ckpt" / "tiny.safetensors").class_names
    split = load_dataset(with_data).split("PublicTest")
    probs = np.full((len(split), len(names)), 0.01)
    probs[:, names.index("surprise")] = 0.94          # the saved report says: surprise, every face
    save_report({**build_report(split.labels.numpy(), probs, names, split.ids), "split": "PublicTest",
                 "tta": "none"}, env / "ckpt" / "tiny.PublicTest.json")
    at = _page()
    assert not at.exception and not at.error
    assert all(", predicted surprise 94%" in c for c in _grid(at)) and _grid(at)
    assert f"{1 / 7:.1%} right" in next(c.value for c in at.caption if "match the filters" in c.value)


def test_the_grid_opens_on_the_most_confident_mistakes_and_tiles_open_the_detail(with_data):
    at = _page()
    assert not at.exception
    assert at.selectbox(key="gradcam_order").value == "most confident mistakes first"
    marks = [c.split(" ")[1] for c in _grid(at)]
    assert marks == sorted(marks, key=lambda m: m != "✗")   # the mistakes, then the right answers
    wrong = [float(re.search(r"(\d+)%$", c).group(1)) for c in _grid(at) if "✗" in c]
    assert wrong == sorted(wrong, reverse=True)
    assert at.slider(key="gradcam_opacity").value == pytest.approx(0.45)
    at.button(key="gradcam_tile_4").click().run()
    assert not at.exception and at.selectbox(key="gradcam_detail").value == 4
    at.slider(key="gradcam_opacity").set_value(1.0).run()
    assert not at.exception


def test_a_filter_change_computes_only_the_maps_not_shown_before(with_data, monkeypatch):
    from dashboard import faces

    computed = []
    real = faces.explain_faces
    monkeypatch.setattr(faces, "explain_faces", lambda clf, crops, *a, **k: computed.append(len(crops)) or
                        real(clf, crops, *a, **k))
    at = _page()
    first = sum(computed)
    assert first == 24
    at.selectbox(key="gradcam_true_class").set_value("happy").run()   # faces the grid showed, most of them
    at.selectbox(key="gradcam_true_class").set_value("any").run()     # all shown before
    assert not at.exception and sum(computed) - first <= PER_CLASS


def test_face_order_and_borders():
    from dashboard import face_grid

    labels = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array([[.9, .1, 0], [.2, .8, 0], [.3, .7, 0], [.6, .4, 0], [0, .1, .9], [.05, .05, .9]])
    assert face_grid.order_faces(np.arange(6), labels, probs, "most confident mistakes first").tolist()[:2] == [1, 3]
    shuffled = face_grid.order_faces(np.arange(6), labels, probs, "shuffled across classes")
    assert sorted(labels[shuffled[:3]].tolist()) == [0, 1, 2] and sorted(shuffled.tolist()) == list(range(6))
    tile = face_grid.bordered(np.zeros((10, 10, 3), np.uint8), right=False)
    assert tile.shape == (18, 18, 3) and tuple(tile[0, 0]) == face_grid.BORDER[False]
    face = np.full((48, 48), 200, np.uint8)
    assert np.array_equal(face_grid.overlay(face, np.zeros((8, 8)), 0.0, 96)[..., 0], np.full((96, 96), 200))


def test_an_ensemble_shows_a_map_per_member_under_the_detail(env, with_data):
    import shutil

    from fer_core.ensemble import save_ensemble

    ckpt = env / "ckpt"
    shutil.copy(ckpt / "tiny.safetensors", ckpt / "tiny_b.safetensors")
    save_ensemble(ckpt / "pair.safetensors", [ckpt / "tiny.safetensors", ckpt / "tiny_b.safetensors"])
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.run()
    label = next(o for o in at.selectbox(key="gradcam_checkpoint").options if "pair" in o)
    at.selectbox(key="gradcam_checkpoint").set_value(label).run()
    assert not at.exception and not at.error
    members = [c for i in at.image for c in i.captions if c.startswith("member ")]
    assert members == ["member 1", "member 2"]
    assert any("mean of its members' maps" in c.value for c in at.caption)
