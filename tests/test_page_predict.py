"""The Predict page (pages/4_Predict.py) driven through Streamlit's AppTest: uploads, camera, bad files."""
from __future__ import annotations

import csv
import io
import re

import numpy as np
import pytest
from PIL import Image
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest

from conftest import ROOT

PAGE = str(ROOT / "pages" / "4_Predict.py")


@pytest.fixture
def env(studio_env):
    """A checkpoints folder with the tiny model, no runs, no data set."""
    return studio_env


@pytest.fixture
def downloads(monkeypatch) -> dict[str, bytes]:
    """The data behind every download button, by its file name (AppTest keeps media in memory)."""
    files: dict[str, bytes] = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def record(self, path_or_data, mimetype, kind, filename=None):
        if filename:
            files[filename] = path_or_data if isinstance(path_or_data, bytes) else path_or_data.encode()
        return original(self, path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", record)
    return files


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _page() -> AppTest:
    return AppTest.from_file(PAGE, default_timeout=120).run()


def _upload(at: AppTest, *files: tuple[str, bytes, str]) -> AppTest:
    at.file_uploader(key="predict_uploads").set_value(list(files))
    return at.run()


def _texts(elements) -> list[str]:
    return [e.value for e in elements]


def _face_headings(at: AppTest) -> list[tuple[int, str, str]]:
    """(number, label, colour) of every face card's heading, in page order."""
    found = [re.search(r'color:(#[0-9a-f]{6}).*\*\*Face (\d+): (\w+) \(\d+%\)\*\*', t) for t in _texts(at.markdown)]
    return [(int(m[2]), m[3], m[1]) for m in found if m]


def _csv_rows(downloads) -> list[dict]:
    return list(csv.DictReader(io.StringIO(downloads["predictions.csv"].decode())))


def test_no_checkpoint_is_explained(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_STUDIO_CHECKPOINTS", str(tmp_path / "empty"))
    monkeypatch.setenv("FER_STUDIO_RUNS", str(tmp_path / "runs"))
    at = _page()
    assert not at.exception
    assert any("No model to predict with" in t for t in _texts(at.info))
    assert not at.file_uploader


def test_face_photo_is_labelled_with_probabilities_csv_and_png(env, face_photo, downloads):
    at = _page()
    assert not at.exception
    assert at.selectbox(key="predict_checkpoint").value == "bundled: tiny"
    assert any("Upload one or more photos" in t for t in _texts(at.info))
    assert not at.camera_input  # the camera is only requested when asked for

    at = _upload(at, ("photo.jpg", face_photo.read_bytes(), "image/jpeg"))
    assert not at.exception and not at.error and not at.warning
    labels = _face_headings(at)
    assert len(labels) == 1 and labels[0][0] == 1
    label = labels[0][1]
    assert label in ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    charts = at.get("plotly_chart")
    assert len(charts) == 1 and '"orientation":"h"' in charts[0].proto.spec.replace(" ", "")
    assert any("1 face found" in c for i in at.image for c in i.captions)

    rows = _csv_rows(downloads)
    assert len(rows) == 1 and rows[0]["path"] == "photo.jpg" and rows[0]["label"] == label
    assert abs(sum(float(rows[0][f"p_{c}"]) for c in ("angry", "disgust", "fear", "happy", "sad", "surprise",
                                                      "neutral")) - 1) < 1e-3
    box = [int(rows[0][k]) for k in "xywh"]
    assert 150 < box[0] + box[2] / 2 < 450 and 80 < box[1] + box[3] / 2 < 280  # around the pasted face
    annotated = Image.open(io.BytesIO(downloads["photo_annotated.png"]))
    assert annotated.size == (600, 400)

    at.selectbox(key="predict_method").set_value("eigencam").run()  # another CAM method: still one face and map
    assert not at.exception and len(at.get("plotly_chart")) == 1
    assert any(c.startswith("eigencam") for i in at.image for c in i.captions)


def test_blank_image_says_no_face_then_whole_image_option(env, downloads):
    blank = _encode(Image.new("RGB", (320, 240), (128, 128, 128)), "PNG")
    at = _upload(_page(), ("blank.png", blank, "image/png"))
    assert not at.exception
    assert any("No face found in blank.png" in t for t in _texts(at.warning))
    assert not at.get("plotly_chart")
    assert _csv_rows(downloads)[0]["error"] == "no face found"

    at.checkbox[0].check().run()
    assert not at.exception and not at.warning
    assert [n for n, *_ in _face_headings(at)] == [1]
    assert len(at.get("plotly_chart")) == 1
    rows = _csv_rows(downloads)
    assert len(rows) == 1 and rows[0]["label"] and rows[0]["error"] == ""
    assert [int(rows[0][k]) for k in "xywh"] == [40, 0, 240, 240]  # the centred square

    at.checkbox[0].uncheck().run()  # and back
    assert any("No face found" in t for t in _texts(at.warning))


def test_bad_files_are_reported_and_the_rest_processed(env, face_photo, downloads):
    good = face_photo.read_bytes()
    truncated = good[: len(good) // 3]
    at = _upload(_page(), ("notes.jpg", b"these are not the pixels you are looking for\n" * 20, "image/jpeg"),
                 ("cut.jpg", truncated, "image/jpeg"), ("empty.png", b"", "image/png"),
                 ("photo.jpg", good, "image/jpeg"))
    assert not at.exception
    errors = _texts(at.error)
    assert len(errors) == 3
    assert "notes.jpg" in errors[0] and "not a readable image" in errors[0]
    assert "cut.jpg" in errors[1] and "damaged or truncated" in errors[1]
    assert "empty.png" in errors[2] and "empty" in errors[2]
    assert [n for n, *_ in _face_headings(at)] == [1]  # the good photo
    rows = _csv_rows(downloads)
    assert [r["path"] for r in rows] == ["notes.jpg", "cut.jpg", "empty.png", "photo.jpg"]
    assert rows[0]["error"] and rows[1]["error"] and rows[3]["error"] == "" and rows[3]["label"]


def test_huge_cmyk_and_16_bit_images(env, downloads):
    huge = _encode(Image.new("1", (8000, 6000)), "PNG")  # 48 megapixels: more than MAX_PIXELS
    cmyk = _encode(Image.new("CMYK", (200, 150), (0, 200, 200, 0)), "JPEG", quality=90)
    deep = _encode(Image.fromarray(np.tile(np.linspace(0, 65535, 160).astype(np.uint16), (120, 1))), "PNG")
    assert Image.open(io.BytesIO(deep)).mode.startswith("I;16")
    at = _upload(_page(), ("huge.png", huge, "image/png"), ("cmyk.jpg", cmyk, "image/jpeg"),
                 ("deep.png", deep, "image/png"))
    assert not at.exception
    errors = _texts(at.error)
    assert len(errors) == 1 and "huge.png" in errors[0] and "too large" in errors[0]
    # neither synthetic image holds a face: both are read and say so, none fails
    warnings = _texts(at.warning)
    assert any("cmyk.jpg" in w for w in warnings) and any("deep.png" in w for w in warnings)
    at.checkbox[0].check().run()  # cmyk.jpg as a whole face
    assert not at.exception
    assert [n for n, *_ in _face_headings(at)] == [1]
    assert [r["path"] for r in _csv_rows(downloads)] == ["huge.png", "cmyk.jpg", "deep.png"]


def test_camera_photo(env, face_photo, downloads):
    at = _page()
    at.toggle(key="predict_use_camera").set_value(True).run()
    assert not at.exception and len(at.camera_input) == 1
    at.camera_input(key="predict_camera").upload("image.jpg", face_photo.read_bytes()).run()
    assert not at.exception and not at.error
    assert "Camera photo" in _texts(at.subheader)
    assert [n for n, *_ in _face_headings(at)] == [1]
    assert len(_csv_rows(downloads)) == 1


def test_detection_confidence_landmarks_and_which_detector_ran(env, face_photo, face_model, downloads):
    at = _upload(_page(), ("photo.jpg", face_photo.read_bytes(), "image/jpeg"))
    assert not at.exception and not at.warning
    assert any("Faces found by YuNet" in c for c in _texts(at.caption))
    assert any(c == "aligned" for i in at.image for c in i.captions)       # the aligned crop beside the map
    plain = downloads["photo_annotated.png"]
    at.toggle(key="predict_landmarks").set_value(True).run()
    assert not at.exception and downloads["photo_annotated.png"] != plain  # the dots are drawn
    at.slider(key="predict_min_score").set_value(0.95).run()               # stricter than this face's score
    assert not at.exception
    assert any("No face found" in t and "lower detection confidence" in t for t in _texts(at.warning))


def test_missing_face_model_says_so_and_uses_haar(env, face_photo, tmp_path, monkeypatch):
    monkeypatch.setenv("FER_STUDIO_FACE_MODEL", str(tmp_path / "absent.onnx"))
    at = _upload(_page(), ("photo.jpg", face_photo.read_bytes(), "image/jpeg"))
    assert not at.exception
    warnings = _texts(at.warning)
    assert len(warnings) == 1 and "absent.onnx: cannot be read" in warnings[0]
    assert "the Haar cascade ran" in warnings[0] and "set FER_STUDIO_FACE_MODEL=PATH" in warnings[0]
    assert any("Haar cascade" in c for c in _texts(at.caption))
    assert [n for n, *_ in _face_headings(at)] == [1]


def test_an_unknown_runtime_setting_is_an_error_on_the_page(env, monkeypatch):
    monkeypatch.setenv("FER_STUDIO_RUNTIME", "tensorrt")
    at = _page()
    assert not at.exception
    assert any("unknown runtime 'tensorrt'" in t for t in _texts(at.error))


def test_no_examples_without_the_data_set(env):
    at = _page()
    assert not at.exception
    assert not [b for b in at.button if b.key.startswith("predict_example_")]


@pytest.fixture
def with_fer(env, monkeypatch):
    from conftest import FER_ROOT, HAVE_FER

    if not HAVE_FER:
        pytest.skip(f"FER-2013 not found at {FER_ROOT} (set FER2013_PATH): the examples are made from it")
    monkeypatch.setenv("FER2013_PATH", str(FER_ROOT))
    return env


def test_example_faces_are_numbered_alike_on_cards_table_and_csv(with_fer, face_model, downloads):
    from dashboard.faces import colour_hex

    at = _page()
    assert not at.exception
    keys = [b.key for b in at.button if b.key.startswith("predict_example_")]
    assert keys == ["predict_example_one_face", "predict_example_two_faces_side_by_side",
                    "predict_example_a_group_of_four"]
    at.button(key="predict_example_a_group_of_four").click().run()
    assert not at.exception and not at.error
    assert "Example: A group of four" in _texts(at.subheader)
    headings = _face_headings(at)
    assert [n for n, *_ in headings] == [1, 2, 3, 4]
    assert [c for *_, c in headings] == [colour_hex(i) for i in range(4)]   # the boxes' colours
    table = at.dataframe[0].value
    assert table["face"].tolist() == [1, 2, 3, 4] and table["label"].tolist() == [lab for _, lab, _ in headings]
    assert {"photo", "face", "label", "confidence", "happy"} <= set(table.columns)
    assert not [c for c in table.columns if c.startswith("p_")]
    rows = _csv_rows(downloads)     # the CSV keeps the CLI's columns, faces from 0
    assert [r["face"] for r in rows] == ["0", "1", "2", "3"] and [r["label"] for r in rows] == table["label"].tolist()
    assert "example_a_group_of_four_annotated.png" in downloads

    at.button(key="predict_example_two_faces_side_by_side").click().run()   # another example replaces it
    assert not at.exception and [n for n, *_ in _face_headings(at)] == [1, 2]


def test_test_time_views_toggle_gives_the_library_s_tta_probabilities(env, face_photo, tiny_checkpoint, downloads):
    from fer_core import FerClassifier, load_image, predict_image
    from fer_core.data import FER2013_CLASSES as classes

    at = _upload(_page(), ("photo.jpg", face_photo.read_bytes(), "image/jpeg"))
    assert at.toggle(key="predict_tta").value is True   # on by default, as the library's photo default
    views = [float(_csv_rows(downloads)[0][f"p_{c}"]) for c in classes]
    at.toggle(key="predict_tta").set_value(False).run()
    assert not at.exception and not at.error
    plain = [float(_csv_rows(downloads)[0][f"p_{c}"]) for c in classes]
    classifier = FerClassifier.from_checkpoint(tiny_checkpoint)
    for got, tta in ((views, "flip+crops"), (plain, "none")):
        expected = predict_image(classifier, load_image(face_photo), tta=tta)
        assert len(expected.faces) == 1
        assert np.allclose(got, [expected.faces[0].probabilities[c] for c in classes], atol=1e-4)
    assert not np.allclose(views, plain, atol=1e-4)
