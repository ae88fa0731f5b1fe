"""A checkpoint as an ONNX graph: dynamic batch axis, the checkpoint's metadata in ``metadata_props``, checked
by the ONNX checker and against PyTorch's outputs before anything is written.

The graph takes the normalised batch :meth:`FerClassifier.preprocess` makes, float32 ``(N, 1, S, S)`` named
``input``, and gives the logits ``(N, C)`` named ``logits``; softmax and preprocessing stay in the caller,
shared by both runtimes, so the two differ only where the network runs. Its metadata has the checkpoint's keys
(``arch``, ``class_names``, ``img_size``, ``mean``, ``std``, ...; :func:`fer_core.storage.model_metadata`), a
``format`` of its own, and ``source_sha256``: the hash of the checkpoint it came from.
"""
from __future__ import annotations

import io
import json
import textwrap
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checkpoint import FerClassifier
from .storage import CheckpointError, atomic_write_bytes, file_sha256, model_metadata  # noqa: F401 (importable here)

ONNX_FORMAT = "fer_studio.onnx.v1"   # bump when the graph's inputs, outputs or metadata change
OPSET = 17
INPUT_NAME, OUTPUT_NAME = "input", "logits"
PARITY_TOLERANCE = 1e-4   # largest difference in probability allowed between the graph and PyTorch


class ExportError(CheckpointError):
    """The model could not be exported, or the graph does not answer as the PyTorch model does."""


@dataclass
class ExportResult:
    graph: bytes                 # the serialised ONNX model
    max_difference: float        # largest probability difference from PyTorch on the check faces
    faces_checked: int


def synthetic_faces(size: int, n: int = 32, seed: int = 0) -> np.ndarray:
    """Deterministic face-like grey images (smooth blobs on a gradient, some noise), uint8 (n, size, size), for a
    parity check where no data set is at hand: the graph's arithmetic is what is checked, not its accuracy."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, size, size), np.float64)
    for i in range(n):
        img = rng.uniform(40, 200) + rng.uniform(-60, 60) * yy
        for _ in range(4):   # eyes, mouth, cheeks: a few Gaussian blobs
            cy, cx, r, a = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.2), rng.uniform(-90, 90)
            img = img + a * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        out[i] = img + rng.normal(0, 8, (size, size))
    return np.clip(out, 0, 255).astype(np.uint8)


def reference_faces(data: str | Path | None, size: int, n: int = 256) -> tuple[np.ndarray, str]:
    """Faces to check an export on, and what they are: ``n`` faces spread over the validation split of the data
    set at ``data`` (the one :func:`fer_core.data.find_fer2013` finds when None), else :func:`synthetic_faces`."""
    from .data import find_fer2013, load_dataset

    data = data or find_fer2013()
    if data is None:
        return synthetic_faces(size), "synthetic faces (no data set found; --data PATH checks on real ones)"
    dataset = load_dataset(data)
    images = dataset.split(dataset.validation_split).images
    picked = images[np.linspace(0, len(images) - 1, min(n, len(images))).astype(int)] if len(images) else images
    return picked.numpy(), f"{dataset.validation_split} faces of {dataset.source}"


def export_graph(classifier: FerClassifier, faces: np.ndarray | torch.Tensor | None = None,
                 source_sha256: str = "") -> ExportResult:
    """``classifier`` (a restricted one too: its ``LogitSubset`` is part of the graph) as a checked ONNX model:
    the ONNX checker passes and its probabilities on ``faces`` (default: :func:`synthetic_faces`) are within
    ``PARITY_TOLERANCE`` of PyTorch's, in one batch and one face at a time (the batch axis is dynamic)."""
    try:
        import onnx
    except ImportError:
        raise ExportError("exporting to ONNX needs the onnx package (pip install onnx)") from None
    graph = _traced(classifier)
    model = onnx.load_from_string(graph)
    meta = _graph_metadata(classifier, source_sha256)
    onnx.helper.set_model_props(model, meta)
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"{classifier.source or 'the model'}: the exported graph fails the ONNX checker "
                          f"({textwrap.shorten(str(e), 200)})") from None
    graph = model.SerializeToString()
    faces = synthetic_faces(classifier.img_size) if faces is None else np.asarray(faces)
    difference = _parity(classifier, graph, faces)
    return ExportResult(graph, difference, len(faces))


def export_onnx(classifier: FerClassifier, out: str | Path, faces: np.ndarray | torch.Tensor | None = None,
                source_sha256: str = "") -> ExportResult:
    """:func:`export_graph`, then the graph written atomically to ``out`` (only once it has passed its checks)."""
    result = export_graph(classifier, faces, source_sha256)
    atomic_write_bytes(out, result.graph)
    return result


def _traced(classifier: FerClassifier) -> bytes:
    size = classifier.img_size
    example = torch.zeros(2, 1, size, size)
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            # torch's notice that the TorchScript exporter is the older one: it is the one that needs no further
            # package (the newer needs onnxscript), and its graph matches PyTorch to 1e-6 here
            warnings.simplefilter("ignore")
            torch.onnx.export(classifier.model.eval(), (example,), buffer, dynamo=False, opset_version=OPSET,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    except Exception as e:  # torch's exporter raises many kinds; each is "this model does not export"
        raise ExportError(f"{classifier.source or 'the model'}: cannot be exported to ONNX "
                          f"({type(e).__name__}: {textwrap.shorten(str(e), 200)})") from None
    return buffer.getvalue()


def _graph_metadata(classifier: FerClassifier, source_sha256: str) -> dict[str, str]:
    meta = classifier.metadata
    props = model_metadata(classifier.arch, classifier.class_names, classifier.img_size, classifier.mean,
                           classifier.std, meta["output_stride"], meta.get("drop_rate", 0.0))
    props.update(format=ONNX_FORMAT, source=Path(classifier.source).name, source_sha256=source_sha256,
                 opset=str(OPSET), torch_version=torch.__version__)
    if "epoch" in meta:
        props["epoch"] = str(meta["epoch"])
    if isinstance(meta.get("metrics"), dict):
        props["metrics"] = json.dumps(meta["metrics"])
    if "members" in meta:   # an ensemble: its members, for the record (the graph holds their weights)
        props["members"] = meta["members"]
    if classifier.calibration is not None:   # the graph travels without the checkpoint's sidecar
        props["calibration"] = json.dumps(classifier.calibration.to_dict())
    return props


def _parity(classifier: FerClassifier, graph: bytes, faces: np.ndarray) -> float:
    """The largest probability difference between the graph (in ONNX Runtime) and PyTorch on ``faces``; an
    ExportError beyond ``PARITY_TOLERANCE``."""
    from .runtime import OnnxClassifier

    onnx_classifier = OnnxClassifier.from_bytes(graph, classifier.source or "the exported graph")
    expected = classifier.predict_proba(faces)
    difference = float(np.abs(onnx_classifier.predict_proba(faces) - expected).max(initial=0.0))
    if len(faces):
        single = onnx_classifier.predict_proba(faces[:1])   # a batch of one: the dynamic axis works
        difference = max(difference, float(np.abs(single - expected[:1]).max()))
    if not difference <= PARITY_TOLERANCE:   # also catches NaN
        raise ExportError(f"{classifier.source or 'the model'}: the ONNX graph's probabilities differ from "
                          f"PyTorch's by {difference:.2g} (allowed {PARITY_TOLERANCE:g}) on {len(faces)} faces")
    return difference
