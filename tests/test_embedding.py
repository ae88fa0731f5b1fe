"""fer_core/embedding.py: penultimate features, the 2-D projection and its cache beside the checkpoint."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from conftest import synthetic_face
from fer_core import embedding
from fer_core.checkpoint import FerClassifier
from fer_core.cli import main
from fer_core.data import FerSplit
from fer_core.storage import file_sha256


def faces(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 7
    return np.stack([synthetic_face(int(k), rng) for k in labels]), labels


@pytest.fixture
def checkpoint(tmp_path, tiny_checkpoint):
    return shutil.copy(tiny_checkpoint, tmp_path / "tiny.safetensors")


def test_features_are_the_heads_input_and_the_probabilities_the_classifiers(tiny_checkpoint):
    clf = FerClassifier.from_checkpoint(tiny_checkpoint)
    images, _ = faces(10)
    features, probs = embedding.penultimate_features(clf, images, batch_size=4)
    assert features.shape == (10, clf.model.num_features) and np.isfinite(features).all()
    np.testing.assert_allclose(probs, clf.predict_proba(images), atol=1e-6)
    head = clf.model.get_classifier()
    with torch.no_grad():   # the head applied to the features gives the model's logits back
        logits = head(torch.as_tensor(features)).numpy()
    np.testing.assert_allclose(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), probs, atol=1e-5)
    four = clf.restricted_to(["angry", "fear", "happy", "sad"])
    sub_features, sub_probs = embedding.penultimate_features(four, images)
    np.testing.assert_allclose(sub_features, features, atol=1e-5)
    assert sub_probs.shape == (10, 4)


def test_the_projection_is_cached_beside_the_checkpoint_and_reused(checkpoint, monkeypatch):
    images, labels = faces(21)
    split = FerSplit(torch.as_tensor(images), torch.as_tensor(labels), [f"img{i}" for i in range(21)])
    first, cached = embedding.cached_embedding(checkpoint, "PrivateTest", split)
    assert not cached and len(first["x"]) == len(first["y"]) == 21 and first["ids"] == split.ids
    saved = json.loads(embedding.embedding_file(checkpoint, "PrivateTest").read_text())
    assert saved["checkpoint_sha256"] == file_sha256(checkpoint) and saved["x"] == first["x"]
    monkeypatch.setattr(embedding, "project", lambda *a, **k: pytest.fail("recomputed a cached map"))
    again, cached = embedding.cached_embedding(checkpoint, "PrivateTest", split)
    assert cached and again["x"] == first["x"] and again["true"] == labels.tolist()
    with open(checkpoint, "ab") as f:   # a rewritten checkpoint: its old map is not shown
        f.write(b" ")
    assert embedding.load_embedding(checkpoint, "PrivateTest") is None


def test_a_map_of_other_images_or_another_method_is_recomputed(checkpoint):
    images, labels = faces(14)
    split = FerSplit(torch.as_tensor(images), torch.as_tensor(labels), [f"a{i}" for i in range(14)])
    embedding.cached_embedding(checkpoint, "test", split)
    other = FerSplit(split.images, split.labels, [f"b{i}" for i in range(14)])
    assert embedding.cached_embedding(checkpoint, "test", other)[1] is False
    assert embedding.cached_embedding(checkpoint, "test", other, seed=1)[1] is False


def test_bad_projection_requests_are_clear_errors():
    with pytest.raises(ValueError, match="unknown projection 'pca'"):
        embedding.project(np.zeros((10, 4)), "pca")
    with pytest.raises(ValueError, match="at least 5 images"):
        embedding.project(np.zeros((3, 4)))


def test_embed_command_writes_the_sidecar(checkpoint, tmp_path, capsys):
    from conftest import make_folder_dataset

    data = make_folder_dataset(tmp_path / "fer", per_class=2)
    assert main(["embed", "--checkpoint", str(checkpoint), "--data", str(data), "--split", "PrivateTest"]) == 0
    out = capsys.readouterr().out
    assert "14 faces" in out and "t-SNE" in out and embedding.embedding_file(checkpoint, "PrivateTest").is_file()
    assert main(["embed", "--checkpoint", str(checkpoint), "--data", str(data), "--split", "PrivateTest"]) == 0
    assert "cached" in capsys.readouterr().out
