"""dashboard/faces.py: the view helpers of the Predict and Grad-CAM pages (no Streamlit needed)."""
from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from PIL import Image

from conftest import synthetic_face

from dashboard import faces  # noqa: E402
from fer_core.checkpoint import FerClassifier  # noqa: E402
from fer_core.predict import ImageError, ImagePrediction, predict_image  # noqa: E402

CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


@pytest.fixture(scope="module")
def classifier(tiny_checkpoint) -> FerClassifier:
    return FerClassifier.from_checkpoint(tiny_checkpoint)


class _Upload:
    def __init__(self, name, data):
        self.name, self._data = name, data

    def getvalue(self):
        return self._data


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def _face_image(size: int = 200) -> np.ndarray:
    """An RGB image that is one (synthetic) face crop."""
    face = synthetic_face(3, np.random.default_rng(0), 48)
    big = np.asarray(Image.fromarray(face).resize((size, size)))
    return np.repeat(big[..., None], 3, axis=2)


# --- reading uploads ----------------------------------------------------------------------

def test_read_upload_and_its_errors():
    img = np.zeros((30, 40, 3), np.uint8)
    img[:, :20] = (250, 10, 10)
    out = faces.read_upload(_Upload("a.png", _png(img)))
    assert out.shape == (30, 40, 3) and np.array_equal(out, img)
    with pytest.raises(ImageError, match="empty.png: the file is empty"):
        faces.read_upload(_Upload("empty.png", b""))
    with pytest.raises(ImageError, match="text.jpg: not a readable image"):
        faces.read_upload(_Upload("text.jpg", b"hello world\n" * 10))
    with pytest.raises(ImageError, match="cut.png: the image is damaged or truncated"):
        faces.decode_image(_png(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8))[:300], "cut.png")
    buf = io.BytesIO()
    Image.new("1", (7000, 6000)).save(buf, "PNG")
    with pytest.raises(ImageError, match="huge.png: image is too large"):
        faces.decode_image(buf.getvalue(), "huge.png")


# --- faces, analysis, downloads -----------------------------------------------------------

def test_prediction_faces_are_what_was_classified(classifier):
    rgb = _face_image(150)
    prediction = predict_image(classifier, rgb, detect=False, tta="none")
    crops = faces.prediction_faces(rgb, prediction, classifier.img_size)
    assert crops.shape == (1, classifier.img_size, classifier.img_size) and crops.dtype == np.uint8
    probs = classifier.predict_proba(crops)[0]
    assert np.allclose(probs, [prediction.faces[0].probabilities[c] for c in classifier.class_names], atol=1e-4)
    empty = ImagePrediction("x", 10, 10, faces=[], detected=True)
    assert faces.prediction_faces(rgb, empty, 48).shape == (0, 48, 48)


def test_main_face_falls_back_to_the_whole_image():
    face, found = faces.main_face(np.full((90, 120, 3), 128, np.uint8), 64)
    assert face.shape == (64, 64) and not found


def test_analyse_image_previews_and_annotates(classifier, monkeypatch):
    monkeypatch.setattr(faces, "PREVIEW_SIDE", 100)
    rgb = np.zeros((160, 240, 3), np.uint8)
    rgb[:, 40:200] = _face_image(160)
    analysis = faces.analyse_image(classifier, rgb, detect=False, name="crop.png")
    assert analysis.prediction.path == "crop.png" and not analysis.prediction.detected
    assert len(analysis.prediction.faces) == 1 and analysis.prediction.faces[0].box == [40, 0, 160, 160]
    assert analysis.preview.shape == (67, 100, 3)
    full = np.asarray(Image.open(io.BytesIO(analysis.annotated_png)))
    assert full.shape == (160, 240, 3) and not np.array_equal(full, rgb)  # the box is drawn
    assert analysis.faces.shape == (1, classifier.img_size, classifier.img_size)
    blank = faces.analyse_image(classifier, np.full((120, 160, 3), 200, np.uint8), detect=True)
    assert blank.prediction.faces == [] and blank.faces.shape[0] == 0
    for shape in [(1, 5000, 3), (3000, 2, 3)]:  # a line of pixels: nothing to find, nothing breaks
        line = faces.analyse_image(classifier, np.zeros(shape, np.uint8), detect=True)
        assert line.prediction.faces == [] and min(line.preview.shape[:2]) == 1


def test_png_bytes_round_trip():
    rgb = np.random.default_rng(1).integers(0, 255, (20, 30, 3), np.uint8)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(faces.png_bytes(rgb)))), rgb)
    grey = rgb[..., 0].copy()
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(faces.png_bytes(grey)))), grey)


def _results(classifier):
    good = predict_image(classifier, _face_image(100), detect=False, path="face.png")
    return [ImagePrediction("bad.jpg", 0, 0, error="not a readable image"),
            ImagePrediction("blank.png", 50, 50), good]


def test_predictions_csv_and_frame(classifier):
    results = _results(classifier)
    rows = list(csv.DictReader(io.StringIO(faces.predictions_csv(results, classifier.class_names))))
    assert [r["path"] for r in rows] == ["bad.jpg", "blank.png", "face.png"]
    assert rows[0]["error"] == "not a readable image" and rows[1]["error"] == "no face found"
    assert rows[2]["error"] == "" and rows[2]["label"] == results[2].faces[0].label
    assert faces.predictions_csv([], classifier.class_names) == ""

    assert rows[2]["face"] == "0"                       # the CSV (as the CLI writes it) counts from 0

    frame = faces.predictions_frame(results, classifier.class_names)
    assert list(frame.columns[:4]) == ["photo", "face", "label", "confidence"]
    assert list(frame["photo"]) == ["bad.jpg", "blank.png", "face.png"]
    assert frame["face"].isna().tolist() == [True, True, False] and frame["face"].tolist()[2] == 1  # as on the cards
    assert frame["confidence"].dtype.kind == "f" and frame["confidence"].isna().tolist() == [True, True, False]
    assert str(frame["x"].dtype) == "Int64" and frame["x"].tolist()[2] == 0
    assert abs(frame.loc[2, list(classifier.class_names)].sum() - 1) < 1e-3
    assert not [c for c in frame.columns if c.startswith("p_")]
    assert faces.predictions_frame([], classifier.class_names).empty


def test_face_headings_and_colours_match_the_annotation():
    from fer_core.predict import FacePrediction, face_colour

    face = FacePrediction([0, 0, 10, 10], "happy", 0.87, {"happy": 0.87})
    assert faces.colour_hex(0) == "#{:02x}{:02x}{:02x}".format(*face_colour(0))
    heading = faces.face_heading(face, 2)
    assert faces.colour_hex(2) in heading and heading.endswith("**Face 3: happy (87%)**")


def test_examples_need_the_data_set(tmp_path):
    assert faces.example_names(None) == [] and faces.example_names(tmp_path / "absent") == []
    assert faces.example_names(tmp_path) == []           # a folder without FER-2013's test images


def test_example_photos_are_made_from_fer2013():
    from conftest import FER_ROOT, HAVE_FER

    if not HAVE_FER:
        pytest.skip(f"FER-2013 not found at {FER_ROOT} (set FER2013_PATH): the examples are made from it")
    assert faces.example_names(FER_ROOT) == list(faces.EXAMPLES)
    for name, members in faces.EXAMPLES.items():
        photo = faces.example_photo(FER_ROOT, name)
        rgb = faces.decode_image(photo.getvalue(), photo.name)
        assert photo.name.endswith(".png") and photo.file_id.startswith("example-")
        assert rgb.shape[0] >= faces.EXAMPLE_FACE and rgb.shape[1] >= len(members[:2]) * faces.EXAMPLE_FACE
        assert faces.example_photo(FER_ROOT, name).getvalue() == photo.getvalue()   # the same each time


# --- charts and Grad-CAM images -----------------------------------------------------------

def test_probability_figure():
    probs = dict(zip(CLASSES, [0.05, 0.05, 0.1, 0.5, 0.1, 0.1, 0.1]))
    fig = faces.probability_figure(probs)
    bar = fig.data[0]
    assert bar.orientation == "h" and list(bar.y) == list(CLASSES) and list(bar.x) == list(probs.values())
    assert bar.marker.color[3] == faces.PRIMARY and bar.marker.color.count(faces.PRIMARY) == 1
    assert bar.text[3] == "50%"
    assert fig.layout.yaxis.autorange == "reversed" and tuple(fig.layout.xaxis.range) == (0, 1)
    other = faces.probability_figure(probs, highlight="sad", title="Face 1")
    assert other.data[0].marker.color[4] == faces.PRIMARY and other.layout.title.text == "Face 1"


def test_heatmap_rgb_colours():
    heat = faces.heatmap_rgb(np.array([[0.0, 1.0]]))
    assert heat.shape == (1, 2, 3) and heat.dtype == np.uint8
    assert heat[0, 0, 2] > 100 and heat[0, 0, 0] < 50   # 0: blue
    assert heat[0, 1, 0] > 100 and heat[0, 1, 2] < 50   # 1: red


def test_explanation_images_and_caption(classifier):
    crops = np.stack([synthetic_face(k, np.random.default_rng(k), 48) for k in (3, 5)])
    exps = faces.explain_faces(classifier, crops, "gradcam", target="sad")
    assert len(exps) == 2 and all(e.target == "sad" for e in exps)
    images = faces.explanation_images(crops[0], exps[0])
    size = exps[0].overlay.shape[0]
    assert set(images) == {"face", "overlay", "heatmap"}
    assert all(v.shape == (size, size, 3) and v.dtype == np.uint8 for v in images.values())
    assert images["face"][..., 0].mean() == pytest.approx(images["face"][..., 1].mean())  # grey
    caption = faces.explanation_caption(exps[0])
    assert caption.startswith(f"gradcam for sad (predicted {exps[0].predicted}, ") and caption.endswith("%)")
    assert faces.explain_faces(classifier, np.zeros((0, 48, 48), np.uint8), "gradcam") == []


# --- faces of a split ---------------------------------------------------------------------

def test_select_faces():
    labels = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array([[.9, .1, 0], [.4, .6, 0], [.2, .7, .1], [.1, .3, .6], [0, .2, .8], [.5, 0, .5]])
    # predicted: 0 1 1 2 2 0 ; right: T F T F T F
    idx, n = faces.select_faces(labels, probs)
    assert idx.tolist() == [0, 1, 2, 3, 4, 5] and n == 6
    assert faces.select_faces(labels, probs, true_class=1)[0].tolist() == [2, 3]
    assert faces.select_faces(labels, probs, predicted_class=0)[0].tolist() == [0, 5]
    assert faces.select_faces(labels, probs, outcome="right")[0].tolist() == [0, 2, 4]
    assert faces.select_faces(labels, probs, outcome="wrong")[0].tolist() == [1, 3, 5]
    assert faces.select_faces(labels, probs, true_class=0, outcome="wrong")[0].tolist() == [1]
    assert faces.select_faces(labels, probs, order="most confident first")[0].tolist() == [0, 4, 2, 1, 3, 5]
    assert faces.select_faces(labels, probs, order="least confident first")[0].tolist() == [5, 1, 3, 2, 4, 0]
    idx, n = faces.select_faces(labels, probs, limit=2)
    assert idx.tolist() == [0, 1] and n == 6
    idx, n = faces.select_faces(labels, probs, true_class=2, predicted_class=1)
    assert idx.tolist() == [] and n == 0
    with pytest.raises(ValueError, match="outcome"):
        faces.select_faces(labels, probs, outcome="maybe")
    with pytest.raises(ValueError, match="order"):
        faces.select_faces(labels, probs, order="random")
