"""fer_core.predict: safe image loading, face detection, cropping, classification, tables and drawing."""
from __future__ import annotations

import csv
import io
import pickle
import re

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import fer_core.predict as predict_mod
from conftest import synthetic_face
from fer_core.checkpoint import FerClassifier
from fer_core.config import PHOTO_TTA
from fer_core.detection import DETECT_MAX_SIDE, detect_faces
from fer_core.evaluation import predict_split
from fer_core.imaging import fit_within
from fer_core.predict import (FacePrediction, ImageError, ImagePrediction, annotate, face_colour, load_image,
                              predict_image, predict_paths, predictions_table, write_csv)
from fer_core.storage import temporaries_of
from conftest import huge_png

FACE_BOX = (220, 100, 160, 160)  # x, y, w, h of the face pasted into the face_photo fixture


@pytest.fixture(scope="module")
def classifier(tiny_checkpoint) -> FerClassifier:
    return FerClassifier.from_checkpoint(tiny_checkpoint)


def _pattern(h: int = 40, w: int = 60) -> np.ndarray:
    """An RGB image with distinct colour blocks (survives JPEG well)."""
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2, : w // 2] = (220, 30, 30)
    img[: h // 2, w // 2:] = (30, 220, 30)
    img[h // 2:, : w // 2] = (30, 30, 220)
    img[h // 2:, w // 2:] = (240, 240, 240)
    return img


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    return inter / (aw * ah + bw * bh - inter)


# --- load_image ----------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, kw, tol", [("JPEG", {"quality": 95}, 6), ("PNG", {}, 0),
                                          ("WEBP", {"lossless": True}, 0)])
def test_load_image_from_path_bytes_and_file(tmp_path, fmt, kw, tol):
    src = _pattern()
    blob = _encode(Image.fromarray(src), fmt, **kw)
    path = tmp_path / f"img.{fmt.lower()}"
    path.write_bytes(blob)
    results = [load_image(path), load_image(str(path)), load_image(blob), load_image(io.BytesIO(blob))]
    with open(path, "rb") as f:
        results.append(load_image(f))
    for img in results:
        assert img.shape == (40, 60, 3) and img.dtype == np.uint8
        assert np.array_equal(img, results[0])
        assert np.abs(img.astype(int) - src).mean() <= tol  # mean error: JPEG smears the block edges


def test_rgba_is_composited_on_white():
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[:, :5] = (255, 0, 0, 0)        # fully transparent red: white
    rgba[:, 5:] = (0, 0, 255, 128)      # half-transparent blue over white
    rgba[0, 0] = (10, 200, 10, 255)     # opaque green stays
    img = load_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert img.shape == (10, 10, 3) and img.dtype == np.uint8
    assert (img[1:, :5] == 255).all()
    assert np.abs(img[3, 7].astype(int) - (127, 127, 255)).max() <= 2
    assert tuple(img[0, 0]) == (10, 200, 10)


def test_grey_la_and_palette_images():
    grey = np.tile(np.arange(0, 250, 25, dtype=np.uint8), (5, 1))
    img = load_image(_encode(Image.fromarray(grey, "L"), "PNG"))
    assert img.shape == (5, 10, 3) and (img == grey[..., None]).all()

    la = Image.merge("LA", [Image.fromarray(grey), Image.fromarray(np.full_like(grey, 0))])
    assert (load_image(_encode(la, "PNG")) == 255).all()  # fully transparent: white

    pal = Image.fromarray(_pattern()).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    img = load_image(_encode(pal, "PNG"))
    assert img.shape == (40, 60, 3) and np.array_equal(img, np.asarray(pal.convert("RGB")))

    pal_t = pal.copy()
    pal_t.info["transparency"] = pal.getpixel((0, 0))  # top-left colour transparent
    img = load_image(_encode(pal_t, "PNG", transparency=pal.getpixel((0, 0))))
    assert (img[0, 0] == 255).all() and not (img[-1, 0] == 255).all()


def test_16_bit_grey_png():
    a = np.tile(np.linspace(1000, 60000, 16).astype(np.uint16), (4, 1))
    im = Image.fromarray(a)
    assert im.mode.startswith("I;16")
    img = load_image(_encode(im, "PNG"))
    assert img.shape == (4, 16, 3) and img.dtype == np.uint8
    row = img[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255 and (np.diff(row) > 0).all()
    assert (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()


def test_cmyk_jpeg():
    cmyk = Image.new("CMYK", (30, 20), (0, 255, 255, 0))  # red ink-free of cyan: red
    img = load_image(_encode(cmyk, "JPEG", quality=95))
    assert img.shape == (20, 30, 3) and img.dtype == np.uint8
    r, g, b = img[10, 15].astype(int)
    assert r > 200 and g < 60 and b < 60


def test_exif_orientation_is_honoured():
    src = _pattern(40, 60)                # red block top-left
    exif = Image.Exif()
    exif[0x0112] = 6                      # display rotated 90 degrees clockwise
    blob = _encode(Image.fromarray(src), "JPEG", quality=95, exif=exif.tobytes())
    img = load_image(blob)
    assert img.shape == (60, 40, 3)
    # clockwise: the top-left (red) block ends at the top right, the bottom-left (blue) at top left
    assert img[5, 35, 0] > 180 and img[5, 35, 2] < 80
    assert img[5, 5, 2] > 180 and img[5, 5, 0] < 80


def test_bad_files_raise_image_error(tmp_path, monkeypatch):
    text = tmp_path / "notes.jpg"
    text.write_text("just some text, not an image\n" * 20)
    with pytest.raises(ImageError, match=r"notes\.jpg: not a readable image"):
        load_image(text)

    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.png: not a readable image"):
        load_image(empty)

    noise = np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    blob = _encode(Image.fromarray(noise), "JPEG", quality=90)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ImageError, match=r"cut\.jpg: the image is damaged or truncated"):
        load_image(cut)

    with pytest.raises(ImageError, match="file not found"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="^upload: not a readable image"):
        load_image(b"\x00\x01garbage")
    with pytest.raises(ImageError, match="^photo.png: not a readable image"):
        load_image(b"garbage", name="photo.png")

    ok = tmp_path / "ok.png"
    Image.fromarray(_pattern()).save(ok)
    assert load_image(ok).shape == (40, 60, 3)
    monkeypatch.setattr(predict_mod, "MAX_PIXELS", 2000)
    with pytest.raises(ImageError, match=r"ok\.png: image is too large \(60x40 px"):
        load_image(ok)
    assert load_image(_encode(Image.fromarray(_pattern(20, 50)), "PNG")).shape == (20, 50, 3)


def test_an_image_over_pillows_limit_is_too_large_not_unreadable(tmp_path):
    """Pillow refuses a decompression bomb before saying its size; the message still gives it."""
    path = huge_png(tmp_path / "huge.png", 20_000, 20_000)
    expected = "image is too large (20000x20000 px; at most 40 megapixels)"
    with pytest.raises(ImageError, match=rf"huge\.png: {re.escape(expected)}"):
        load_image(path)
    with pytest.raises(ImageError) as err:
        load_image(path.read_bytes(), name="upload.png")
    assert str(err.value) == f"upload.png: {expected}" and err.value.reason == expected
    with open(path, "rb") as f, pytest.raises(ImageError, match=re.escape(expected)):
        load_image(f)


def test_image_error_carries_name_and_reason():
    e = ImageError("a.png", "file not found")
    assert (str(e), e.name, e.reason) == ("a.png: file not found", "a.png", "file not found")
    back = pickle.loads(pickle.dumps(e))
    assert (str(back), back.reason) == (str(e), e.reason)


# --- detection and crops -------------------------------------------------------------------

def _needs(detector: str, request) -> str:
    """``detector``, after skipping when it is YuNet and the shared model is absent."""
    if detector == "yunet":
        request.getfixturevalue("face_model")
    return detector


@pytest.mark.parametrize("detector", ["haar", "yunet"])
def test_detect_faces_finds_the_face(face_photo, detector, request):
    rgb = load_image(face_photo)
    assert rgb.shape == (400, 600, 3)
    faces = detect_faces(rgb, _needs(detector, request))
    assert len(faces) == 1
    assert _iou(faces[0].box, FACE_BOX) > 0.4, faces


@pytest.mark.parametrize("detector", ["haar", "yunet"])
def test_detect_faces_on_a_large_photo_maps_boxes_back(face_photo, detector, request):
    """Detection runs on a copy at most DETECT_MAX_SIDE px; boxes and landmarks come back in full-size pixels."""
    _needs(detector, request)
    rgb = cv2.resize(load_image(face_photo), (1800, 1200), interpolation=cv2.INTER_CUBIC)
    faces = detect_faces(rgb, detector)
    assert len(faces) == 1
    assert _iou(faces[0].box, [3 * v for v in FACE_BOX]) > 0.4, faces
    copy, scale = fit_within(rgb, DETECT_MAX_SIDE)   # what the detector saw, mapped back by hand
    on_copy = detect_faces(copy, detector)
    assert np.abs(np.array(faces[0].box) - np.array(on_copy[0].box) / scale).max() <= 2
    if detector == "yunet":
        # within 3% of the face: landmarks of a tilted face are measured again on an upright copy of the full image
        err = np.abs(np.array(faces[0].landmarks) - np.array(on_copy[0].landmarks) / scale).max()
        assert err < 0.03 * faces[0].box[2], err


@pytest.mark.parametrize("detector", ["haar", "yunet"])
def test_blank_image_has_no_face(detector, request):
    assert detect_faces(np.full((300, 400, 3), 128, np.uint8), _needs(detector, request)) == []
    noise = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    assert detect_faces(noise, detector) == []


# --- classification ------------------------------------------------------------------------

def test_predict_image_on_a_photo(classifier, face_photo):
    rgb = load_image(face_photo)
    result = predict_image(classifier, rgb, path=str(face_photo))
    assert (result.width, result.height, result.detected, result.error) == (600, 400, True, None)
    assert len(result.faces) == 1
    face = result.faces[0]
    assert _iou(face.box, FACE_BOX) > 0.4 and all(isinstance(v, int) for v in face.box)
    assert list(face.probabilities) == list(classifier.class_names)
    probs = np.array(list(face.probabilities.values()))
    assert abs(probs.sum() - 1) < 1e-3 and (probs >= 0).all()
    assert face.label == classifier.class_names[int(probs.argmax())]
    assert face.confidence == pytest.approx(probs.max(), abs=1e-4)
    d = result.to_dict()
    assert d["faces"][0]["box"] == face.box and d["path"] == str(face_photo)


def test_predict_image_without_detection(classifier):
    face = synthetic_face(5, np.random.default_rng(2))
    rgb = np.repeat(face[..., None], 3, axis=2)
    result = predict_image(classifier, rgb, detect=False, tta="none")
    assert result.detected is False and len(result.faces) == 1
    assert result.faces[0].box == [0, 0, 48, 48]
    expected = classifier.predict_proba(face[None])[0]
    got = np.array([result.faces[0].probabilities[c] for c in classifier.class_names])
    assert np.allclose(got, expected, atol=1e-4)

    wide = np.zeros((60, 100, 3), np.uint8)
    wide[:, 20:80] = 200
    result = predict_image(classifier, wide, detect=False)
    assert result.faces[0].box == [20, 0, 60, 60]


def test_predict_image_averages_each_face_over_test_time_views(classifier):
    face = synthetic_face(3, np.random.default_rng(7))
    face[:, :20] = 30   # lopsided: the mirror image is another input, with other probabilities
    rgb = np.repeat(face[..., None], 3, axis=2)
    plain, flipped = classifier.predict_proba(np.stack([face, face[:, ::-1].copy()]))
    assert not np.allclose(plain, flipped, atol=1e-3)
    result = predict_image(classifier, rgb, detect=False, tta="flip")
    got = np.array([result.faces[0].probabilities[c] for c in classifier.class_names])
    assert np.allclose(got, (plain + flipped) / 2, atol=1e-4) and result.tta == "flip"
    assert result.to_dict()["tta"] == "flip"
    default = predict_image(classifier, rgb, detect=False)   # photos: the ten flip+crops views
    assert default.tta == PHOTO_TTA == "flip+crops"
    views = predict_split(classifier, torch.from_numpy(face[None]), "flip+crops")[0]
    assert np.allclose([default.faces[0].probabilities[c] for c in classifier.class_names], views, atol=1e-4)
    with pytest.raises(ValueError, match="unknown TTA mode"):
        predict_image(classifier, rgb, detect=False, tta="sideways")
    with pytest.raises(ValueError, match="unknown TTA mode"):   # refused before any work, faces or none
        predict_image(classifier, np.zeros((40, 40, 3), np.uint8), tta="sideways")


def test_predict_image_blank_has_no_faces(classifier):
    result = predict_image(classifier, np.full((200, 200, 3), 90, np.uint8))
    assert result.faces == [] and result.detected and result.error is None


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(4)
    cv2.imwrite(str(folder / "a.png"), synthetic_face(3, rng))
    (folder / "b_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    cv2.imwrite(str(folder / "sub" / "c.jpg"), synthetic_face(1, rng))
    (folder / "readme.txt").write_text("not an image; ignored")
    return folder


def test_predict_paths_keeps_going_after_a_bad_file(classifier, image_folder):
    results = predict_paths(classifier, [image_folder], detect=False)
    assert [r.path.rsplit("/", 1)[-1] for r in results] == ["a.png", "b_broken.jpg", "c.jpg"]
    good, bad, good2 = results
    # the record's path names the file; its error says why, without naming it again
    assert bad.error == "the image is damaged or truncated (Truncated File Read)" and bad.faces == []
    for r in (good, good2):
        assert r.error is None and len(r.faces) == 1 and (r.width, r.height) == (48, 48)
    # a file given directly, and a missing one, each give a record too
    more = predict_paths(classifier, [image_folder / "a.png", image_folder / "gone.png"], detect=False)
    assert more[0].faces[0].probabilities == good.faces[0].probabilities
    assert more[1].error == "file not found" and more[1].path == str(image_folder / "gone.png")


def test_predictions_table_and_csv(classifier, face_photo, tmp_path):
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((120, 160, 3), 128, np.uint8))
    results = predict_paths(classifier, [face_photo, blank, tmp_path / "gone.jpg"])
    rows = predictions_table(results, classifier.class_names)
    assert len(rows) == 3
    face_row, blank_row, missing_row = rows
    assert face_row["path"] == str(face_photo) and face_row["error"] == "" and face_row["face"] == 0
    f = results[0].faces[0]
    assert [face_row[k] for k in "xywh"] == f.box and face_row["label"] == f.label
    assert {c: face_row[f"p_{c}"] for c in classifier.class_names} == f.probabilities
    assert blank_row["error"] == "no face found" and blank_row["label"] == ""
    assert "file not found" in missing_row["error"]
    assert all(list(r) == list(face_row) for r in rows)

    out = tmp_path / "out.csv"
    write_csv(rows, out)
    back = list(csv.DictReader(out.open()))
    assert len(back) == 3 and back[0]["label"] == f.label
    assert float(back[0][f"p_{f.label}"]) == pytest.approx(f.probabilities[f.label])
    assert back[1]["error"] == "no face found"
    buf = io.StringIO()
    write_csv(rows, buf)
    assert buf.getvalue().replace("\r\n", "\n") == out.read_text().replace("\r\n", "\n")

    two = ImagePrediction("x.png", 10, 10, faces=[results[0].faces[0]] * 2)
    assert [r["face"] for r in predictions_table([two], classifier.class_names)] == [0, 1]


class _Explodes:
    """A cell whose text cannot be made: the writer fails mid-file, after the header and a row."""

    def __str__(self):
        raise RuntimeError("disk full, say")


def test_write_csv_is_atomic(tmp_path):
    out = tmp_path / "predictions.csv"
    rows = [{"path": f"img{i}.png", "label": "happy"} for i in range(2000)]
    write_csv(rows, out)
    before = out.read_bytes()
    assert before.count(b"happy") == 2000
    with pytest.raises(RuntimeError, match="disk full"):
        write_csv([{"path": "new.png", "label": "sad"}] * 1000 + [{"path": "x", "label": _Explodes()}], out)
    assert out.read_bytes() == before and temporaries_of(out) == []
    write_csv([{"path": "new.png", "label": "sad"}], out)
    assert out.read_text().splitlines() == ["path,label", "new.png,sad"] and temporaries_of(out) == []


def test_annotate_draws_inside_the_box_only(classifier, face_photo):
    rgb = load_image(face_photo)
    pred = predict_image(classifier, rgb)
    out = annotate(rgb, pred)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert not np.array_equal(out, rgb) and np.array_equal(rgb, load_image(face_photo))  # input untouched
    x, y, w, h = pred.faces[0].box
    changed = (out != rgb).any(axis=2)
    assert changed[y:y + h + 1, x:x + w + 1].any()
    assert changed[y, x:x + w].all() and changed[y:y + h, x].all()  # the box's edges
    # far from the box and its label nothing changes
    assert not changed[:, : max(0, x - 5)].any() and not changed[y + h + 60:, :].any()
    assert np.array_equal(annotate(rgb, ImagePrediction("x", 600, 400)), rgb)


def _face(box: list[int], label: str = "happy") -> FacePrediction:
    return FacePrediction(box, label, 0.9, {label: 0.9})


@pytest.mark.parametrize("upper, lower", [([100, 20, 120, 100], [100, 126, 120, 100]),    # stacked, 6 px apart
                                          ([100, 126, 120, 100], [100, 20, 120, 100])])   # the same, in turn
def test_annotate_labels_cover_no_other_face_box(upper, lower):
    rgb = np.full((400, 400, 3), 128, np.uint8)
    out = annotate(rgb, ImagePrediction("x", 400, 400, [_face(upper), _face(lower, "sad")]))
    changed = (out != rgb).any(axis=2)
    for x, y, w, h in (upper, lower):   # inside each box, away from its own edges and label, nothing drawn
        inner = changed[y + 4:y + h - 4, x + 4:x + w - 4]
        assert not inner[inner.shape[0] // 3:].any()
    top, bottom = sorted((upper, lower), key=lambda b: b[1])
    gap = changed[top[1] + top[3] + 3:bottom[1] - 2, :]
    assert not gap.any()                 # neither label went into the narrow gap between them
    # the lower face's label is not above it (that would cover the upper box): it is below or inside its top
    assert (out[bottom[1] + bottom[3] + 3:, :] == face_colour([upper, lower].index(bottom))).all(axis=2).any()


def test_annotate_numbers_faces_in_their_colours():
    rgb = np.full((300, 600, 3), 128, np.uint8)
    faces = [_face([50 + 180 * i, 100, 120, 120]) for i in range(3)]
    out = annotate(rgb, ImagePrediction("x", 600, 300, faces))
    assert len({face_colour(i) for i in range(3)}) == 3 and face_colour(0) == face_colour(6)
    for i, (x, y, w, _) in enumerate(f.box for f in faces):
        assert tuple(out[y, x + w // 2]) == face_colour(i)          # its box
        label = out[max(0, y - 40):y - 2, x:x + w]
        assert (label == face_colour(i)).all(axis=2).sum() > 100     # its label, above it, in the same colour
