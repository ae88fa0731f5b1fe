"""ONNX export and the runtime choice: the graph carries its metadata and a dynamic batch axis, answers as PyTorch
does (restricted models and TTA too), is cached under the checkpoint's hash, and bad files are clear errors."""
from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest

from conftest import FER2013_CLASSES, fer_files, needs_fer, synthetic_face
from fer_core import runtime
from fer_core.checkpoint import FerClassifier
from fer_core.cli import default_checkpoint
from fer_core.evaluation import evaluate
from fer_core.data import load_dataset
from fer_core.onnx_export import ONNX_FORMAT, PARITY_TOLERANCE, ExportError, export_graph, export_onnx, file_sha256
from fer_core.runtime import OnnxClassifier, load_classifier
from fer_core.storage import CheckpointError

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="session")
def tiny_torch(tiny_checkpoint) -> FerClassifier:
    return FerClassifier.from_checkpoint(tiny_checkpoint)


@pytest.fixture(scope="session")
def tiny_onnx(tiny_checkpoint, tiny_torch, tmp_path_factory):
    """The tiny checkpoint exported once for the session."""
    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    result = export_onnx(tiny_torch, out, source_sha256=file_sha256(tiny_checkpoint))
    return out, result


def faces(n: int = 24, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([synthetic_face(i % 7, rng) for i in range(n)])


def test_export_carries_metadata_and_a_dynamic_batch_axis(tiny_onnx, tiny_checkpoint, tiny_torch):
    path, result = tiny_onnx
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    props = {p.key: p.value for p in model.metadata_props}
    assert props["format"] == ONNX_FORMAT and props["arch"] == tiny_torch.arch
    assert json.loads(props["class_names"]) == list(tiny_torch.class_names)
    assert int(props["img_size"]) == tiny_torch.img_size
    assert json.loads(props["mean"]) == [tiny_torch.mean] and json.loads(props["std"]) == [tiny_torch.std]
    assert props["source_sha256"] == file_sha256(tiny_checkpoint) and props["source"] == tiny_checkpoint.name
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.dim_value   # symbolic: any batch size
    assert result.max_difference <= PARITY_TOLERANCE and result.faces_checked > 0


def test_onnx_classifier_answers_as_pytorch_at_every_batch_size(tiny_onnx, tiny_torch):
    clf = OnnxClassifier.from_file(tiny_onnx[0])
    assert (clf.class_names, clf.img_size, clf.arch, clf.runtime) == (tiny_torch.class_names, tiny_torch.img_size,
                                                                     tiny_torch.arch, "onnxruntime")
    x = faces(40)
    expected = tiny_torch.predict_proba(x)
    for batch_size in (1, 7, 64):
        assert np.abs(clf.predict_proba(x, batch_size=batch_size) - expected).max() < PARITY_TOLERANCE
    assert clf.predict_proba(np.zeros((0, 48, 48), np.uint8)).shape == (0, len(clf.class_names))


@pytest.mark.parametrize("tta", ["none", "flip+crops"])
def test_evaluation_and_tta_agree_across_runtimes(tiny_onnx, tiny_torch, folder_dataset, tta):
    split = load_dataset(folder_dataset).split("test")
    torch_report = evaluate(tiny_torch, split, "test", tta=tta)
    onnx_report = evaluate(OnnxClassifier.from_file(tiny_onnx[0]), split, "test", tta=tta)
    assert onnx_report["accuracy"] == torch_report["accuracy"]
    diff = max(abs(a - b) for p, q in zip(onnx_report["predictions"], torch_report["predictions"])
               for a, b in zip(p["probabilities"], q["probabilities"]))
    assert diff <= PARITY_TOLERANCE


def test_a_restricted_model_exports_and_restricts_in_onnxruntime(tiny_onnx, tiny_torch):
    keep = list(tiny_torch.class_names[1:4])
    restricted = tiny_torch.restricted_to(keep)
    graph = export_graph(restricted).graph   # the LogitSubset is part of the graph
    exported = OnnxClassifier.from_bytes(graph, "restricted.onnx")
    assert exported.class_names == restricted.class_names == tuple(keep)
    x = faces()
    expected = restricted.predict_proba(x)
    assert np.abs(exported.predict_proba(x) - expected).max() < PARITY_TOLERANCE
    after = OnnxClassifier.from_file(tiny_onnx[0]).restricted_to(keep)   # or the full graph, restricted after
    assert after.class_names == tuple(keep)
    assert np.abs(after.predict_proba(x) - expected).max() < PARITY_TOLERANCE
    with pytest.raises(CheckpointError, match="no class nope"):
        after.restricted_to(["nope"])


def test_load_classifier_picks_the_runtime_and_caches_the_graph(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("FER_STUDIO_CACHE", str(tmp_path))
    assert isinstance(load_classifier(tiny_checkpoint, "torch"), FerClassifier)
    auto = load_classifier(tiny_checkpoint)   # auto: onnxruntime is installed here
    assert isinstance(auto, OnnxClassifier) and auto.source == str(tiny_checkpoint)
    cached = list((tmp_path / "onnx").glob("*.onnx"))
    assert len(cached) == 1 and cached[0].name.startswith(file_sha256(tiny_checkpoint)[:40])

    def no_export(*a, **k):
        raise AssertionError("exported again")

    monkeypatch.setattr(runtime, "export_graph", no_export)   # the second load is the cached graph
    again = load_classifier(tiny_checkpoint, "onnxruntime")
    assert isinstance(again, OnnxClassifier) and again.metadata["source_sha256"] == file_sha256(tiny_checkpoint)
    assert isinstance(load_classifier(cached[0]), OnnxClassifier)   # an .onnx file is accepted as a checkpoint
    with pytest.raises(CheckpointError, match="runs in onnxruntime, not torch"):
        load_classifier(cached[0], "torch")
    with pytest.raises(ValueError, match="unknown runtime 'tensorflow'"):
        load_classifier(tiny_checkpoint, "tensorflow")


def test_a_damaged_cache_entry_is_exported_again(tiny_checkpoint, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("FER_STUDIO_CACHE", str(tmp_path))
    load_classifier(tiny_checkpoint, "onnxruntime")
    [cached] = (tmp_path / "onnx").glob("*.onnx")
    cached.write_bytes(b"\x00garbage")
    with caplog.at_level(logging.WARNING, logger="fer_core.runtime"):
        clf = load_classifier(tiny_checkpoint, "onnxruntime")
    assert isinstance(clf, OnnxClassifier) and "re-exporting" in caplog.text
    assert OnnxClassifier.from_file(cached).metadata["source_sha256"] == file_sha256(tiny_checkpoint)


def test_an_unwritable_cache_still_gives_the_fast_runtime(tiny_checkpoint, tmp_path, monkeypatch, caplog):
    (tmp_path / "onnx").write_text("a file where the cache folder should be")
    monkeypatch.setenv("FER_STUDIO_CACHE", str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="fer_core.runtime"):
        assert isinstance(load_classifier(tiny_checkpoint, "onnxruntime"), OnnxClassifier)
    assert "could not cache the graph" in caplog.text


def test_auto_falls_back_to_pytorch_when_the_graph_fails_its_check(tiny_checkpoint, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("FER_STUDIO_CACHE", str(tmp_path))

    def mismatch(*a, **k):
        raise ExportError("the ONNX graph's probabilities differ from PyTorch's by 0.3")

    monkeypatch.setattr(runtime, "export_graph", mismatch)
    with caplog.at_level(logging.WARNING, logger="fer_core.runtime"):
        assert isinstance(load_classifier(tiny_checkpoint, "auto"), FerClassifier)
    assert "differ from PyTorch" in caplog.text
    with pytest.raises(ExportError, match="differ"):
        load_classifier(tiny_checkpoint, "onnxruntime")


def test_bad_onnx_files_are_clear_errors_without_their_content(tiny_onnx, tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"SECRET-CONTENT " * 50)
    with pytest.raises(CheckpointError, match="junk.onnx is not an ONNX model") as e:
        load_classifier(junk)
    assert "SECRET" not in str(e.value)
    with pytest.raises(CheckpointError, match="not found"):
        load_classifier(tmp_path / "missing.onnx")
    model = onnx.load(str(tiny_onnx[0]))
    for prop in model.metadata_props:
        if prop.key == "class_names":
            prop.value = '["happy", "happy"]'
    bad = tmp_path / "bad_meta.onnx"
    bad.write_bytes(model.SerializeToString())
    with pytest.raises(CheckpointError, match="bad_meta.onnx: metadata 'class_names' must be"):
        load_classifier(bad)
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    bare.write_bytes(model.SerializeToString())
    with pytest.raises(CheckpointError, match="no FER Studio metadata"):
        load_classifier(bare)


def test_grad_cam_gets_the_pytorch_model(tiny_checkpoint, tiny_onnx, tmp_path, monkeypatch):
    from fer_core.explanation import explain

    monkeypatch.setenv("FER_STUDIO_CACHE", str(tmp_path))
    clf = load_classifier(tiny_checkpoint, "onnxruntime")
    result = explain(clf, faces(2), method="gradcam")   # predictions in ONNX Runtime, the map from PyTorch
    assert len(result) == 2 and set(result[0].probabilities) == set(clf.class_names)
    assert result[0].heatmap.max() > 0
    with pytest.raises(CheckpointError, match="no gradients for Grad-CAM"):
        _ = OnnxClassifier.from_file(tiny_onnx[0]).model


@needs_fer
def test_bundled_model_parity_on_real_faces(tmp_path, monkeypatch):
    """The bundled model in both runtimes on 301 PrivateTest faces: same labels' accuracy, probabilities within
    1e-4 (docs/BENCHMARKS.md has the whole split)."""
    checkpoint = default_checkpoint()
    if checkpoint is None:
        pytest.skip("no bundled checkpoint")
    monkeypatch.setenv("FER_STUDIO_CACHE", str(tmp_path))
    files = [(f, c) for c, name in enumerate(FER2013_CLASSES) for f in fer_files("test", name, "PrivateTest_", 43)]
    images = np.stack([cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f, _ in files])
    labels = np.array([c for _, c in files])
    torch_probs = load_classifier(checkpoint, "torch").predict_proba(images)
    onnx_probs = load_classifier(checkpoint, "onnxruntime").predict_proba(images)
    assert len(images) == 301
    assert np.abs(onnx_probs - torch_probs).max() < PARITY_TOLERANCE
    assert (onnx_probs.argmax(1) == labels).mean() == pytest.approx((torch_probs.argmax(1) == labels).mean(),
                                                                    abs=1e-3)
