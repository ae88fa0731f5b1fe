"""The embedding map: a split's penultimate-layer features projected to 2-D, cached beside the checkpoint.

Features are what the classifier head sees: timm models describe their head (``get_classifier()``), and its input
in eval mode is the pooled feature vector (EfficientNet-B0: 1,280 values a face), so a forward hook on it gives the
features and the model's own probabilities from one pass, for any architecture in ``models.ARCHITECTURES``.

The projection is t-SNE from scikit-learn after PCA to 50 dimensions. UMAP (``umap-learn``) was timed against it on
the bundled model's 3,589 PrivateTest faces (docs/RESULTS.md): on this shared 2-core machine neither was clearly
faster (t-SNE 51 and 157 s, UMAP 77 s with numba's compilation and 96 s without, under varying load), so t-SNE
stays, with no new dependency (numba, llvmlite, pynndescent); UMAP is used where installed and asked for.

The result is plain data (``EMBEDDING_FORMAT``), saved as ``<stem>.<split>.embedding.json`` beside the checkpoint
with the checkpoint's SHA-256: a page shows it without the data set or PyTorch, and a rewritten checkpoint's stale
map is recomputed, never shown.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .storage import atomic_write_bytes, file_sha256, json_bytes

EMBEDDING_FORMAT = "fer-studio.embedding/1"
PROJECTIONS = ("tsne", "umap")
PCA_DIMENSIONS = 50   # t-SNE's usual first step: denoises and cuts its neighbour search from 1,280 to 50 values


def embedding_file(checkpoint: str | Path, split: str) -> Path:
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.stem}.{split}.embedding.json")


def penultimate_features(classifier, images, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, D), probabilities (N, C)) of uint8 faces (N, H, W) for a PyTorch ``FerClassifier``: the input
    of the model's classifier head, caught by a hook while ``predict_proba`` runs, so the probabilities are exactly
    the classifier's (a class subset or calibration included)."""
    from .checkpoint import LogitSubset

    net = classifier.model.model if isinstance(classifier.model, LogitSubset) else classifier.model
    caught: list[np.ndarray] = []
    hook = net.get_classifier().register_forward_hook(
        lambda _module, inputs, _output: caught.append(inputs[0].detach().float().flatten(1).cpu().numpy()))
    try:
        probs = classifier.predict_proba(images, batch_size=batch_size)
    finally:
        hook.remove()
    features = np.concatenate(caught) if caught else np.zeros((0, 0), np.float32)
    return features, probs


def project(features: np.ndarray, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """(N, 2) coordinates of (N, D) features: standardised, PCA to ``PCA_DIMENSIONS``, then t-SNE or UMAP."""
    if method not in PROJECTIONS:
        raise ValueError(f"unknown projection {method!r}; choose one of {', '.join(PROJECTIONS)}")
    if len(features) < 5:
        raise ValueError(f"an embedding map needs at least 5 images, not {len(features)}")
    from sklearn.decomposition import PCA

    x = (features - features.mean(0)) / (features.std(0) + 1e-6)
    x = PCA(min(PCA_DIMENSIONS, *x.shape), random_state=seed).fit_transform(x)
    if method == "umap":
        try:
            import umap
        except ImportError:
            raise ValueError("--method umap needs umap-learn (pip install umap-learn); t-SNE needs nothing more"
                             ) from None
        return umap.UMAP(n_components=2, random_state=seed).fit_transform(x)
    from sklearn.manifold import TSNE

    # perplexity must stay below the number of points; 30 (the default) for any real split
    return TSNE(2, perplexity=min(30.0, (len(x) - 1) / 3), init="pca", random_state=seed).fit_transform(x)


def compute_embedding(classifier, images, ids: list[str], labels, split: str, method: str = "tsne",
                      seed: int = 0) -> dict:
    """The embedding map of a split as plain data: per image its id, 2-D position, true and predicted class index
    and confidence; the seconds the features and the projection took."""
    start = time.perf_counter()
    features, probs = penultimate_features(classifier, images)
    featured = time.perf_counter()
    xy = project(features, method, seed)
    projected = time.perf_counter()
    return {"format": EMBEDDING_FORMAT, "split": split, "method": method, "seed": seed,
            "class_names": list(classifier.class_names), "num_images": len(ids), "feature_dim": features.shape[1],
            "seconds": {"features": round(featured - start, 2), "projection": round(projected - featured, 2)},
            "ids": list(ids), "x": np.round(xy[:, 0], 3).tolist(), "y": np.round(xy[:, 1], 3).tolist(),
            "true": np.asarray(labels).astype(int).tolist(), "predicted": probs.argmax(1).tolist(),
            "confidence": np.round(probs.max(1), 4).tolist()}


def save_embedding(embedding: dict, checkpoint: str | Path) -> Path:
    """Write the map beside ``checkpoint`` with its SHA-256 (atomically); its path."""
    path = embedding_file(checkpoint, embedding["split"])
    atomic_write_bytes(path, json_bytes({**embedding, "checkpoint_sha256": file_sha256(checkpoint)}, indent=None))
    return path


def load_embedding(checkpoint: str | Path, split: str) -> dict | None:
    """The map saved beside ``checkpoint`` for ``split``, or None when there is none, it is unreadable, or it was
    made from another version of the checkpoint (its SHA-256 differs)."""
    path = embedding_file(checkpoint, split)
    try:
        embedding = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(embedding, dict) or embedding.get("format") != EMBEDDING_FORMAT:
        return None
    return embedding if embedding.get("checkpoint_sha256") == file_sha256(checkpoint) else None


def cached_embedding(checkpoint: str | Path, split_name: str, split, method: str = "tsne", seed: int = 0,
                     classifier=None) -> tuple[dict, bool]:
    """(the map, whether it came from the cache): the saved one when it matches the checkpoint, the split's images
    (ids) and the method; else computed (``classifier``, default the checkpoint's PyTorch model) and saved."""
    saved = load_embedding(checkpoint, split_name)
    if saved and saved["ids"] == list(split.ids) and saved["method"] == method and saved.get("seed") == seed:
        return saved, True
    if classifier is None:
        from .checkpoint import FerClassifier

        classifier = FerClassifier.from_checkpoint(checkpoint)
    embedding = compute_embedding(classifier, split.images, split.ids, split.labels.numpy(), split_name, method,
                                  seed)
    save_embedding(embedding, checkpoint)
    return embedding, False
