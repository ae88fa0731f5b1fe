"""fer_core.data: the challenge CSV, the folder layouts, generic class folders, subsets and the cache."""
from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import fer_core.data as data_mod
from conftest import huge_png, FER_ROOT, fer_files, make_folder_dataset, needs_fer, synthetic_face, write_fer_csv
from fer_core.data import FER2013_CLASSES, DataError, load_dataset


def _grey(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)


def _class_of_id(image_id: str) -> str:
    """The (normalised) class folder an id's path names."""
    return data_mod.normalise_class_name(Path(image_id).parent.name)


# --- the challenge's fer2013.csv -----------------------------------------------------------

@pytest.fixture
def real_csv(fer_root, tmp_path):
    """A fer2013.csv of eight real FER-2013 images, with the images and rows it holds."""
    picks = [("train", "angry", "Training_", "Training", 2), ("train", "happy", "Training_", "Training", 2),
             ("train", "disgust", "Training_", "Training", 1), ("test", "sad", "PublicTest_", "PublicTest", 2),
             ("test", "neutral", "PrivateTest_", "PrivateTest", 1)]
    rows = []
    for split_dir, cls, prefix, usage, n in picks:
        for f in fer_files(split_dir, cls, prefix, n):
            rows.append((FER2013_CLASSES.index(cls), _grey(f), usage))
    return write_fer_csv(tmp_path / "fer2013.csv", rows), rows


def test_csv_labels_splits_and_pixels(real_csv):
    path, rows = real_csv
    ds = load_dataset(path, use_cache=False)
    assert ds.class_names == FER2013_CLASSES
    assert ds.validation_split == "PublicTest" and ds.test_splits == ("PublicTest", "PrivateTest")
    assert [len(ds.splits[s]) for s in ("Training", "PublicTest", "PrivateTest")] == [5, 2, 1]
    counts = ds.counts()
    assert counts["Training"] == {**dict.fromkeys(FER2013_CLASSES, 0), "angry": 2, "happy": 2, "disgust": 1}
    assert counts["PublicTest"]["sad"] == 2 and sum(counts["PublicTest"].values()) == 2
    assert counts["PrivateTest"]["neutral"] == 1 and sum(counts["PrivateTest"].values()) == 1
    # rows keep their order within a split; pixel values are exact (48 px needs no resizing)
    for split, usage in (("Training", "Training"), ("PublicTest", "PublicTest"), ("PrivateTest", "PrivateTest")):
        expected = [(label, img) for label, img, u in rows if u == usage]
        sp = ds.splits[split]
        assert sp.images.dtype == torch.uint8 and tuple(sp.images.shape[1:]) == (48, 48)
        assert sp.labels.tolist() == [label for label, _ in expected]
        for got, (_, img) in zip(sp.images, expected):
            assert np.array_equal(got.numpy(), img)
        assert all(i.startswith(usage + "_") for i in sp.ids)


def test_csv_found_inside_a_folder_and_resized(real_csv):
    path, rows = real_csv
    ds = load_dataset(path.parent, img_size=64, use_cache=False)
    assert ds.source.endswith("fer2013.csv")
    assert tuple(ds.splits["Training"].images.shape) == (5, 64, 64)


def test_csv_without_public_test_carves_validation(tmp_path):
    rng = np.random.default_rng(0)
    rows = [(k % 7, synthetic_face(k % 7, rng), "Training") for k in range(70)]
    rows += [(k % 7, synthetic_face(k % 7, rng), "PrivateTest") for k in range(7)]
    ds = load_dataset(write_fer_csv(tmp_path / "fer2013.csv", rows), use_cache=False)
    assert len(ds.splits["PublicTest"]) == 7 and len(ds.splits["Training"]) == 63
    assert ds.test_splits == ("PrivateTest",)
    assert any("PublicTest" in w for w in ds.warnings)


def _write_rows(path: Path, lines: list[str], header: str = "emotion,pixels,Usage") -> Path:
    path.write_text("\n".join(([header] if header else []) + lines) + "\n")
    return path


GOOD_PIXELS = " ".join(["128"] * 2304)


@pytest.mark.parametrize("bad_line, message", [
    ("0," + " ".join(["1"] * 2303) + ",Training", "expected 2304 pixel values, found 2303"),
    ("0," + " ".join(["1"] * 2305) + ",Training", "found 2305"),
    ("0," + " ".join(["1"] * 2303 + ["x7"]) + ",Training", "non-numeric"),
    ("7," + GOOD_PIXELS + ",Training", "unknown emotion label 7"),
    ("-1," + GOOD_PIXELS + ",Training", "unknown emotion label -1"),
    ("happy," + GOOD_PIXELS + ",Training", "not an integer label"),
    ("3," + GOOD_PIXELS + ",Validation", "unknown Usage (expected Training, PublicTest, PrivateTest)"),
    ("3," + " ".join(["300"] * 2304) + ",Training", "0-255"),
])
def test_csv_errors_name_file_and_line(tmp_path, bad_line, message):
    path = _write_rows(tmp_path / "fer2013.csv", ["3," + GOOD_PIXELS + ",Training", bad_line])
    with pytest.raises(DataError) as err:
        load_dataset(path, use_cache=False)
    text = str(err.value)
    assert "fer2013.csv" in text and "line 3" in text, text
    assert message in text, text


def test_csv_missing_header(tmp_path):
    path = _write_rows(tmp_path / "fer2013.csv", ["3," + GOOD_PIXELS + ",Training"], header="")
    with pytest.raises(DataError) as err:
        load_dataset(path, use_cache=False)
    text = str(err.value)
    assert "fer2013.csv" in text and "line 1" in text and "header" in text, text
    assert "128" not in text, text   # the row taken for a header is not quoted


SECRET = "root:$6$s3cr3t-hash:19000:0:99999:7:::"


@pytest.mark.parametrize("name", ["shadow", "shadow.csv", "notes.txt"])
def test_data_errors_never_quote_the_file(tmp_path, name):
    """A file that is no data set (here one shaped like /etc/shadow) is named, its content never shown."""
    path = tmp_path / name
    path.write_text((SECRET + "\n") * 200)
    for call in (lambda: load_dataset(path, use_cache=False), lambda: data_mod.check_data_source(path)):
        with pytest.raises(DataError) as err:
            call()
        text = str(err.value)
        assert str(path) in text and "expected" in text and "emotion,pixels" in text, text
        rest = text.replace(str(path), "")
        assert "s3cr3t" not in rest and "root" not in rest and len(rest) < 300, text


@pytest.mark.parametrize("cells", ["s3cr3t-label,{pixels},Training", "3,{pixels},s3cr3t-split"])
def test_bad_cells_are_not_quoted(tmp_path, cells):
    path = _write_rows(tmp_path / "fer2013.csv", [cells.format(pixels=GOOD_PIXELS)])
    with pytest.raises(DataError) as err:
        load_dataset(path, use_cache=False)
    assert "line 2" in str(err.value) and "s3cr3t" not in str(err.value), str(err.value)


def test_csv_row_the_csv_module_refuses_names_the_file(tmp_path):
    path = _write_rows(tmp_path / "fer2013.csv", ["3," + GOOD_PIXELS + ",Training", "3," + "7" * 200_000 + ",x"])
    with pytest.raises(DataError) as err:
        load_dataset(path, use_cache=False)
    text = str(err.value)
    assert str(path) in text and "line 3: not a CSV row (field larger than field limit" in text and "777" not in text


@pytest.mark.parametrize("where", ["header", "row"])
def test_csv_that_is_not_utf8_names_the_file(tmp_path, where):
    path = tmp_path / "fer2013.csv"
    good = f"3,{GOOD_PIXELS},Training\n".encode()
    header = b"emotion,pixels,Usage\n" if where == "row" else b"emotion,pix\xffels\n"
    path.write_bytes(header + good * 3 + b"3,\xff\xfe\x00 s3cr3t,Training\n")
    with pytest.raises(DataError) as err:
        load_dataset(path, use_cache=False)
    text = str(err.value)
    assert str(path) in text and "UTF-8" in text and "s3cr3t" not in text, text


def test_csv_header_only_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no data rows"):
        load_dataset(_write_rows(tmp_path / "fer2013.csv", []), use_cache=False)


def test_missing_path(tmp_path):
    missing = tmp_path / "nowhere" / "fer2013"
    with pytest.raises(DataError) as err:
        load_dataset(missing)
    assert str(missing) in str(err.value) and "does not exist" in str(err.value)


def test_folder_without_class_folders_is_an_error(tmp_path):
    (tmp_path / "train" / "cats").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "train" / "cats" / "a.png"), np.zeros((48, 48), np.uint8))
    with pytest.raises(DataError, match="no class folders"):
        load_dataset(tmp_path, use_cache=False)


# --- check_data_source ---------------------------------------------------------------------

def test_check_data_source_accepts_each_form(tmp_path, folder_dataset, monkeypatch):
    flat = tmp_path / "flat"
    (flat / "Happiness").mkdir(parents=True)   # an alias counts, as the loaders read it
    cv2.imwrite(str(flat / "Happiness" / "a.png"), np.zeros((48, 48), np.uint8))
    (tmp_path / "csv").mkdir()
    csv_file = _write_rows(tmp_path / "csv" / "fer2013.csv", ["3," + GOOD_PIXELS + ",Training"])
    odd = _write_rows(tmp_path / "Odd.CSV", ["3," + GOOD_PIXELS], header="\ufeffPixels, Emotion")
    # cheap: neither listing every file nor decoding one
    monkeypatch.setattr(data_mod, "_list_class_folders", lambda root: pytest.fail("listed every file"))
    monkeypatch.setattr(data_mod, "_decode", lambda *a: pytest.fail("decoded an image"))
    assert data_mod.check_data_source(folder_dataset) == folder_dataset.resolve()
    assert data_mod.check_data_source(flat) == flat.resolve()
    assert data_mod.check_data_source(csv_file.parent) == csv_file.resolve()   # the file the loaders read
    assert data_mod.check_data_source(csv_file) == csv_file.resolve()
    assert data_mod.check_data_source(odd) == odd.resolve()
    monkeypatch.setenv("HOME", str(tmp_path))
    assert data_mod.check_data_source("~/flat") == flat.resolve()


def test_check_data_source_reads_only_the_first_line(tmp_path):
    ok = tmp_path / "ok.csv"
    ok.write_bytes(b"emotion,pixels,Usage\n" + b"\xff\x00" * 500_000)   # rows the check does not read
    assert data_mod.check_data_source(ok) == ok.resolve()
    long = tmp_path / "long.csv"
    long.write_bytes(b"emotion,pixels" + b",x" * 2_000_000 + b"\n")   # no header is 4 MB long
    with pytest.raises(DataError, match="line 1: not a FER-2013 CSV"):
        data_mod.check_data_source(long)


def test_check_data_source_refusals_name_the_path(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    no_images = tmp_path / "no-images"
    (no_images / "train" / "happy").mkdir(parents=True)
    (no_images / "train" / "happy" / "notes.txt").write_text("not an image")
    wrong_header = _write_rows(tmp_path / "other.csv", ["1,2"], header="label,image")
    for path, message in [(tmp_path / "nowhere", "does not exist"), (empty, "no class folders"),
                          (no_images, "no class folders"), (wrong_header, "line 1: not a FER-2013 CSV")]:
        with pytest.raises(DataError) as err:
            data_mod.check_data_source(path)
        assert str(path) in str(err.value) and message in str(err.value), str(err.value)
    # find_fer2013 follows the same rule
    monkeypatch.setenv("FER2013_PATH", str(no_images))
    assert data_mod.find_fer2013() is None
    cv2.imwrite(str(no_images / "train" / "happy" / "a.png"), np.zeros((48, 48), np.uint8))
    assert data_mod.find_fer2013() == no_images


# --- the folder layout ---------------------------------------------------------------------

def test_folder_prefixes_map_to_splits(folder_dataset):
    ds = load_dataset(folder_dataset)
    assert ds.class_names == FER2013_CLASSES
    assert {s: len(sp) for s, sp in ds.splits.items()} == {"Training": 42, "PublicTest": 42, "PrivateTest": 42}
    assert ds.validation_split == "PublicTest" and ds.test_splits == ("PublicTest", "PrivateTest")
    prefix = {"Training": "train/", "PublicTest": "test/", "PrivateTest": "test/"}
    for name, sp in ds.splits.items():
        assert all(i.startswith(prefix[name]) and Path(i).name.startswith(name + "_") for i in sp.ids)
        assert [_class_of_id(i) for i in sp.ids] == [FER2013_CLASSES[k] for k in sp.labels.tolist()]
        assert all(n == 6 for n in sp.class_counts(7))
    # the stored image is the file's (lossless PNG at 48 px)
    sp = ds.splits["PrivateTest"]
    assert np.array_equal(sp.images[10].numpy(), _grey(folder_dataset / sp.ids[10]))
    assert not ds.skipped and not ds.warnings


def test_split_test_joins_both_test_splits(folder_dataset):
    ds = load_dataset(folder_dataset)
    test = ds.split("test")
    pub, priv = ds.splits["PublicTest"], ds.splits["PrivateTest"]
    assert len(test) == len(pub) + len(priv) == 84
    assert test.ids == pub.ids + priv.ids
    assert torch.equal(test.images, torch.cat([pub.images, priv.images]))
    assert torch.equal(test.labels, torch.cat([pub.labels, priv.labels]))
    assert ds.split("privatetest") is priv and ds.split("Training") is ds.splits["Training"]
    with pytest.raises(DataError, match="unknown split 'Validation'"):
        ds.split("Validation")


@pytest.fixture
def unprefixed(tmp_path) -> Path:
    return make_folder_dataset(tmp_path / "plain", per_class=20, test_prefixes=False)


def test_unprefixed_test_folder_and_carved_validation(unprefixed):
    ds = load_dataset(unprefixed, seed=3)
    assert ds.validation_split == "Validation" and ds.test_splits == ("Test",)
    assert set(ds.splits) == {"Training", "Validation", "Test"}
    test = ds.splits["Test"]
    assert len(test) == 140 and all(i.startswith("test/") for i in test.ids)
    train, val = ds.splits["Training"], ds.splits["Validation"]
    assert len(train) + len(val) == 140 and len(val) == 14
    # stratified: 10% of each class's 20 training images
    assert val.class_counts(7) == [2] * 7 and train.class_counts(7) == [18] * 7
    assert set(train.ids).isdisjoint(val.ids)
    all_train = sorted(p.relative_to(unprefixed).as_posix() for p in (unprefixed / "train").rglob("*.png"))
    assert sorted(train.ids + val.ids) == all_train
    assert [_class_of_id(i) for i in val.ids] == [FER2013_CLASSES[k] for k in val.labels.tolist()]
    assert torch.equal(ds.split("test").images, test.images) and ds.split("test").ids == test.ids


def test_carved_validation_is_seeded(unprefixed):
    a = load_dataset(unprefixed, seed=3).splits["Validation"].ids
    b = load_dataset(unprefixed, seed=3).splits["Validation"].ids
    c = load_dataset(unprefixed, seed=4).splits["Validation"].ids
    assert a == b
    assert set(a) != set(c)
    assert len(load_dataset(unprefixed, val_fraction=0.25).splits["Validation"]) == 35


def test_small_set_without_validation_still_loads(tmp_path):
    """Fewer held-out images than classes: no stratification possible, but no crash either."""
    root = make_folder_dataset(tmp_path / "small", per_class=3, test_prefixes=False)
    ds = load_dataset(root, use_cache=False)
    assert len(ds.splits["Training"]) + len(ds.splits["Validation"]) == 21
    assert len(ds.splits["Validation"]) == 3 and len(ds.splits["Test"]) == 21


def test_test_folder_with_public_prefix_only_is_kept(tmp_path):
    """Only PublicTest_ files in test/: they are the test split, not silently dropped."""
    root = make_folder_dataset(tmp_path / "fer", per_class=10)
    for f in (root / "test").rglob("PrivateTest_*"):
        f.unlink()
    ds = load_dataset(root)
    assert len(ds.splits["Test"]) == 70 and all(Path(i).name.startswith("PublicTest_") for i in ds.splits["Test"].ids)
    assert len(ds.splits["Training"]) + len(ds.splits["Validation"]) == 70


def test_unprefixed_files_next_to_prefixed_ones_are_reported(folder_dataset):
    for cls in ("happy", "sad"):
        cv2.imwrite(str(folder_dataset / "test" / cls / "extra.png"), np.full((48, 48), 9, np.uint8))
    ds = load_dataset(folder_dataset)
    assert len(ds.splits["PublicTest"]) == len(ds.splits["PrivateTest"]) == 42
    assert len(ds.warnings) == 1 and "2 image(s)" in ds.warnings[0] and "left out" in ds.warnings[0]


def test_class_folders_directly_under_root(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "flat"
    for cls in ("fear", "angry", "surprise"):
        (root / cls).mkdir(parents=True)
        for i in range(10):
            cv2.imwrite(str(root / cls / f"{i}.png"), synthetic_face(FER2013_CLASSES.index(cls), rng))
    ds = load_dataset(root, seed=0)
    assert ds.class_names == ("angry", "fear", "surprise")  # FER-2013's order, present classes only
    sizes = {s: len(sp) for s, sp in ds.splits.items()}
    assert sum(sizes.values()) == 30 and sizes["Test"] == 3 and sizes["Validation"] == 3
    ids = [i for sp in ds.splits.values() for i in sp.ids]
    assert len(set(ids)) == 30
    for sp in ds.splits.values():
        assert [_class_of_id(i) for i in sp.ids] == [ds.class_names[k] for k in sp.labels.tolist()]
    assert ds.splits["Test"].class_counts(3) == [1, 1, 1]


def test_generic_colour_images_of_another_size(tmp_path):
    """100x80 RGB PNGs, two classes, one folder under an alias name; centre-cropped and greyed."""
    root = tmp_path / "generic"
    colours = {"happiness": (30, 200, 90), "sad": (200, 40, 160)}  # RGB, one a class
    for split in ("train", "test"):
        for folder, rgb in colours.items():
            (root / split / folder).mkdir(parents=True)
            for i in range(4 if split == "train" else 3):
                img = np.zeros((80, 100, 3), np.uint8)
                img[:, :] = rgb
                img[:, :10] = (255, 0, 0)     # side bands the square centre crop removes
                img[:, 90:] = (0, 0, 255)
                cv2.imwrite(str(root / split / folder / f"img{i}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    ds = load_dataset(root)
    assert ds.class_names == ("happy", "sad")
    assert len(ds.splits["Test"]) == 6 and len(ds.splits["Training"]) + len(ds.splits["Validation"]) == 8
    for sp in ds.splits.values():
        assert tuple(sp.images.shape[1:]) == (48, 48)
        for img, label in zip(sp.images.numpy(), sp.labels.tolist()):
            r, g, b = list(colours.values())[label]
            grey = 0.299 * r + 0.587 * g + 0.114 * b
            assert abs(int(img.min()) - grey) <= 2 and abs(int(img.max()) - grey) <= 2
    assert ds.split("test").class_counts(2) == [3, 3]


def test_unreadable_files_are_skipped_and_reported(folder_dataset):
    (folder_dataset / "train" / "happy" / "Training_broken.jpg").write_bytes(b"this is not a jpeg at all")
    (folder_dataset / "test" / "sad" / "PublicTest_empty.png").write_bytes(b"")
    (folder_dataset / "train" / "fear" / "notes.txt").write_text("ignored: not an image suffix")
    ds = load_dataset(folder_dataset)
    assert {s: len(sp) for s, sp in ds.splits.items()} == {"Training": 42, "PublicTest": 42, "PrivateTest": 42}
    skipped = {Path(p).name: reason for p, reason in ds.skipped}
    assert set(skipped) == {"Training_broken.jpg", "PublicTest_empty.png"}
    assert all(skipped.values())
    assert all(str(folder_dataset) in p for p, _ in ds.skipped)


def test_an_image_over_opencvs_limit_is_skipped(folder_dataset):
    huge = huge_png(folder_dataset / "train" / "happy" / "Training_huge.png")
    assert huge.stat().st_size < 1000
    ds = load_dataset(folder_dataset, use_cache=False)
    assert ds.skipped == [(str(huge), "too large (over OpenCV's image size limit)")]
    assert len(ds.splits["Training"]) == 42


def test_any_decoding_failure_is_a_skipped_file(folder_dataset, monkeypatch):
    def fail(*args, **kwargs):
        raise MemoryError("s3cr3t")

    monkeypatch.setattr(data_mod.cv2, "imdecode", fail)
    with pytest.raises(DataError, match="no readable images"):
        load_dataset(folder_dataset, use_cache=False)
    assert data_mod._decode(folder_dataset / "train" / "happy" / "x.png", 48) == (None, "cannot read (No such file "
                                                                                     "or directory)")
    some = next((folder_dataset / "train" / "happy").iterdir())
    assert data_mod._decode(some, 48) == (None, "not a decodable image (MemoryError)")


def test_empty_class_folder_warns(tmp_path):
    root = make_folder_dataset(tmp_path / "fer", per_class=4)
    for f in (root / "train" / "disgust").iterdir():
        f.unlink()
    ds = load_dataset(root)
    assert ds.class_names == FER2013_CLASSES
    assert ds.counts()["Training"]["disgust"] == 0 and ds.counts()["PublicTest"]["disgust"] == 4
    assert len(ds.warnings) == 1 and "disgust" in ds.warnings[0]


def test_all_unreadable_is_an_error(tmp_path):
    (tmp_path / "happy").mkdir()
    (tmp_path / "happy" / "a.jpg").write_bytes(b"nope")
    with pytest.raises(DataError, match="no readable images"):
        load_dataset(tmp_path, use_cache=False)


# --- class subsets -------------------------------------------------------------------------

def test_subset_relabels_in_given_order(folder_dataset):
    full = load_dataset(folder_dataset)
    sub = full.subset(["sad", "angry", "surprise"])
    assert sub.class_names == ("sad", "angry", "surprise") and sub.num_classes == 3
    for name, sp in sub.splits.items():
        assert len(sp) == 18 and sp.class_counts(3) == [6, 6, 6]
        assert [_class_of_id(i) for i in sp.ids] == [sub.class_names[k] for k in sp.labels.tolist()]
        by_id = dict(zip(full.splits[name].ids, full.splits[name].images))
        for i, img in zip(sp.ids, sp.images):
            assert torch.equal(img, by_id[i])
    assert len(sub.split("test")) == 36


def test_load_dataset_classes_with_alias(folder_dataset):
    ds = load_dataset(folder_dataset, classes=["happiness", "sad"])
    assert ds.class_names == ("happy", "sad")
    assert ds.counts()["Training"] == {"happy": 6, "sad": 6}
    assert set(ds.splits["Training"].labels.tolist()) == {0, 1}


def test_subset_errors(folder_dataset):
    ds = load_dataset(folder_dataset)
    with pytest.raises(DataError, match="not in this data set"):
        ds.subset(["happy", "bored"])
    with pytest.raises(DataError, match="duplicates"):
        ds.subset(["happy", "happiness"])
    small = ds.subset(["happy", "sad"])
    with pytest.raises(DataError, match="not in this data set"):
        small.subset(["angry"])


def test_parse_class_list():
    assert data_mod.parse_class_list("Angry, happiness ,sad") == ["angry", "happy", "sad"]
    assert data_mod.parse_class_list("") is None and data_mod.parse_class_list(None) is None
    with pytest.raises(DataError, match="bored"):
        data_mod.parse_class_list("happy,bored")


# --- the on-disk cache ---------------------------------------------------------------------

def test_cache_second_load_does_not_decode(folder_dataset, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    (folder_dataset / "train" / "angry" / "Training_bad.png").write_bytes(b"broken")
    first = load_dataset(folder_dataset, cache_dir=cache)
    assert len(list(cache.iterdir())) == 1

    def no_decode(*args, **kwargs):
        raise AssertionError("decoded again although the cache is valid")

    monkeypatch.setattr(data_mod, "_decode", no_decode)
    second = load_dataset(folder_dataset, cache_dir=cache)
    assert second.class_names == first.class_names and second.skipped == first.skipped
    for name in first.splits:
        a, b = first.splits[name], second.splits[name]
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) and a.ids == b.ids
    # a subset is taken after the cache: same cached arrays serve it
    assert load_dataset(folder_dataset, cache_dir=cache, classes=["fear"]).counts()["Training"] == {"fear": 6}

    # an added file changes the key: the source is read again
    cv2.imwrite(str(folder_dataset / "train" / "happy" / "Training_new.png"), np.full((48, 48), 7, np.uint8))
    with pytest.raises(AssertionError, match="decoded again"):
        load_dataset(folder_dataset, cache_dir=cache)
    monkeypatch.undo()
    third = load_dataset(folder_dataset, cache_dir=cache)
    assert len(third.splits["Training"]) == 43 and third.counts()["Training"]["happy"] == 7
    assert len(list(p for p in cache.iterdir() if not p.name.count(".tmp"))) == 2


def test_cache_invalidated_by_changed_csv(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    path = write_fer_csv(tmp_path / "fer2013.csv", [(1, synthetic_face(1, rng), "PrivateTest")] * 3)
    cache = tmp_path / "cache"
    assert len(load_dataset(path, cache_dir=cache).splits["PrivateTest"]) == 3

    def no_read(*args, **kwargs):
        raise AssertionError("read again")

    monkeypatch.setattr(data_mod, "_read_csv", no_read)
    assert len(load_dataset(path, cache_dir=cache).splits["PrivateTest"]) == 3
    monkeypatch.undo()
    write_fer_csv(path, [(1, synthetic_face(1, rng), "PrivateTest")] * 5)
    assert len(load_dataset(path, cache_dir=cache).splits["PrivateTest"]) == 5


def test_use_cache_false_writes_nothing(folder_dataset, tmp_path):
    cache = tmp_path / "cache"
    load_dataset(folder_dataset, cache_dir=cache, use_cache=False)
    assert not cache.exists()


# --- the real FER-2013 ---------------------------------------------------------------------

def _readme_counts() -> dict[str, dict[str, int]]:
    table = {}
    for line in (FER_ROOT / "README.md").read_text().splitlines():
        m = re.match(r"\|\s*(\w+)\s*\|\s*([\d,]+)\s*\|\s*([\d,]+)\s*\|\s*([\d,]+)\s*\|", line)
        if m and m.group(1) in FER2013_CLASSES:
            table[m.group(1)] = [int(v.replace(",", "")) for v in m.groups()[1:]]
    assert set(table) == set(FER2013_CLASSES), "README table not parsed"
    return {s: {c: table[c][k] for c in FER2013_CLASSES} for k, s in enumerate(("Training", "PublicTest",
                                                                               "PrivateTest"))}


@needs_fer
def test_full_fer2013_counts(fer_root):
    expected = _readme_counts()
    ds = load_dataset(fer_root)
    assert {s: len(sp) for s, sp in ds.splits.items()} == {"Training": 28709, "PublicTest": 3589,
                                                           "PrivateTest": 3589}
    assert ds.counts() == expected
    assert not ds.skipped and not ds.warnings
    assert tuple(ds.splits["Training"].images.shape) == (28709, 48, 48)

    four = load_dataset(fer_root, classes=["angry", "disgust", "fear", "happy"])
    test = four.split("test")
    assert len(test) == 3867 == sum(expected[s][c] for s in ("PublicTest", "PrivateTest")
                                     for c in ("angry", "disgust", "fear", "happy"))
    assert test.class_counts(4) == [expected["PublicTest"][c] + expected["PrivateTest"][c]
                                    for c in ("angry", "disgust", "fear", "happy")]


def test_without_pixels_a_cached_set_reads_only_labels_ids_and_splits(folder_dataset, tmp_path):
    cache = tmp_path / "cache"
    (folder_dataset / "train" / "angry" / "Training_bad.png").write_bytes(b"broken")
    full = load_dataset(folder_dataset, cache_dir=cache)   # reads and caches
    (images,) = cache.glob("*/images.npy")
    images.write_bytes(b"no longer an array")   # not needed without pixels
    light = load_dataset(folder_dataset, cache_dir=cache, pixels=False, classes=["angry", "happy"])
    assert light.counts() == full.subset(["angry", "happy"]).counts()
    assert light.counts()["Training"]["angry"] == 6   # the broken file is not counted
    for name, sp in light.splits.items():
        assert sp.ids == full.subset(["angry", "happy"]).splits[name].ids and sp.images.shape == (len(sp), 0, 0)
    assert (light.validation_split, light.test_splits) == (full.validation_split, full.test_splits)


def test_without_pixels_a_first_read_returns_no_images_but_caches_them(folder_dataset, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    light = load_dataset(folder_dataset, cache_dir=cache, pixels=False)   # decodes (nothing is cached yet)
    assert all(sp.images.shape == (len(sp), 0, 0) for sp in light.splits.values())

    def no_decode(*args, **kwargs):
        raise AssertionError("decoded again although the cache is valid")

    monkeypatch.setattr(data_mod, "_decode", no_decode)
    full = load_dataset(folder_dataset, cache_dir=cache)   # the pixels, from the cache the first read wrote
    assert full.splits["Training"].images.shape == (len(full.splits["Training"]), 48, 48)
    assert full.counts() == light.counts()


@pytest.mark.parametrize("layout", ["prefixed", "unprefixed", "csv"])
def test_summary_matches_the_loaded_data_set_before_and_after_caching(layout, tmp_path):
    if layout == "csv":
        rng = np.random.default_rng(0)
        path = write_fer_csv(tmp_path / "fer2013.csv", [(k, synthetic_face(k, rng), usage) for k in range(7)
                                                         for usage in ("Training", "Training", "PublicTest",
                                                                       "PrivateTest")])
    else:
        path = make_folder_dataset(tmp_path / layout, per_class={"angry": 9, "disgust": 2, "happy": 12},
                                   test_prefixes=layout == "prefixed")
    cache = tmp_path / "cache"
    uncached = data_mod.summarize_dataset(path, cache_dir=cache, seed=4)   # loads and caches
    assert list(cache.iterdir())
    (images,) = cache.glob("*/images.npy")
    images.write_bytes(b"no longer an array")   # counting from the cache reads labels only
    cached = data_mod.summarize_dataset(path, cache_dir=cache, seed=4)
    loaded = load_dataset(path, use_cache=False, seed=4)
    assert uncached == cached == loaded.summary()
    assert (cached.validation_split, cached.test_splits) == (loaded.validation_split, loaded.test_splits)
    for split in [*loaded.splits, "test"]:
        assert cached.num_images(split) == len(loaded.split(split)) > 0
        assert cached.num_images(split, ["angry", "happy"]) == len(loaded.subset(["angry", "happy"]).split(split))
    with pytest.raises(DataError, match="unknown split 'Nowhere'"):
        cached.num_images("Nowhere")


# --- decoding progress ---------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["folders", "csv"])
def test_progress_is_reported_while_decoding_and_not_from_the_cache(layout, tmp_path, monkeypatch):
    """A page draws a progress bar from the callback: rising counts, the last one the whole data set."""
    monkeypatch.setattr(data_mod, "DECODE_CHUNK", 8)
    monkeypatch.setattr(data_mod, "CSV_PROGRESS_ROWS", 8)
    if layout == "csv":
        rng = np.random.default_rng(0)
        path = write_fer_csv(tmp_path / "fer2013.csv", [(k % 7, synthetic_face(k % 7, rng), "Training")
                                                        for k in range(40)])
    else:
        path = make_folder_dataset(tmp_path / "fer", per_class=4)
    calls = []
    summary = data_mod.summarize_dataset(path, cache_dir=tmp_path / "cache",
                                         progress=lambda done, total: calls.append((done, total)))
    n = sum(sum(c.values()) for c in summary.counts.values())
    assert len(calls) >= 3 and calls[-1] == (n, n)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and all(0 < d <= t for d, t in calls)
    again = []
    load_dataset(path, cache_dir=tmp_path / "cache", progress=lambda *a: again.append(a))
    assert again == []   # read from the cache: nothing to report


def test_decoding_in_chunks_keeps_the_file_order(folder_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(data_mod, "DECODE_CHUNK", 5)
    chunked = load_dataset(folder_dataset, use_cache=False)
    monkeypatch.setattr(data_mod, "DECODE_CHUNK", 10_000)
    whole = load_dataset(folder_dataset, use_cache=False)
    for name in whole.splits:
        assert chunked.splits[name].ids == whole.splits[name].ids
        assert torch.equal(chunked.splits[name].images, whole.splits[name].images)
