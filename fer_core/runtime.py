"""Runtimes: one classifier interface over PyTorch (:class:`FerClassifier`) and ONNX Runtime
(:class:`OnnxClassifier`), chosen by :func:`load_classifier`.

Both give ``class_names``, ``img_size``, ``arch``, ``preprocess`` (uint8 faces -> the normalised torch batch),
``logits`` (that batch -> float logits, non-finite ones refused), ``predict_proba`` and ``restricted_to``, so
evaluation (TTA included), prediction and the server call them alike. ``runtime="auto"`` takes the fastest
installed runtime (``RUNTIME_PREFERENCE``, measured in ``bench/inference.py``) whose graph answered as PyTorch
does when it was exported, and falls back to PyTorch otherwise. A ``.safetensors`` checkpoint run in ONNX
Runtime is exported once, checked, and cached in ``<cache>/onnx/`` (``$FER_STUDIO_CACHE`` or
``~/.cache/fer_studio``) under the checkpoint's SHA-256, so nobody exports by hand; an ``.onnx`` file made by
``python -m fer_core export`` is accepted wherever a checkpoint is. Grad-CAM needs gradients: an
:class:`OnnxClassifier` made from a checkpoint loads the PyTorch model for ``.model`` when first asked.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import logging
import textwrap
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from .calibration import Calibration, graph_calibration, load_calibration
from .checkpoint import ClassifierBase, FerClassifier, finite_logits, kept_class_index, to_model_input
from .config import RUNTIME_NAMES
from .onnx_export import INPUT_NAME, ONNX_FORMAT, OUTPUT_NAME, ExportError, export_graph, file_sha256
from .storage import CheckpointError, checked_metadata, atomic_write_bytes, read_metadata

log = logging.getLogger(__name__)

RUNTIME_PREFERENCE = ("onnxruntime", "torch")   # fastest first, as bench/inference.py measures on CPUs
Classifier = ClassifierBase   # what load_classifier returns: FerClassifier or OnnxClassifier


def installed_runtimes() -> tuple[str, ...]:
    """The runtimes this environment can run, fastest first."""
    def present(name: str) -> bool:
        return name == "torch" or importlib.util.find_spec(name) is not None

    return tuple(r for r in RUNTIME_PREFERENCE if present(r))


@dataclass
class OnnxClassifier(ClassifierBase):
    """An exported graph in an ONNX Runtime session (thread-safe: ``InferenceSession.run`` may be called from
    several threads at once), with the metadata it was exported with."""

    runtime: ClassVar[str] = "onnxruntime"

    session: Any
    class_names: tuple[str, ...]
    img_size: int
    mean: float
    std: float
    arch: str
    metadata: dict
    source: str = ""                         # the file it came from, for error messages
    checkpoint: str | None = None            # the .safetensors it was exported from, when known (Grad-CAM)
    index: tuple[int, ...] | None = None     # restricted_to: the graph's logits kept, else all
    calibration: Calibration | None = None   # the graph's own, or (made from a checkpoint) the sidecar's
    _torch: FerClassifier | None = field(default=None, repr=False, compare=False)
    _torch_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def from_file(cls, path: str | Path, threads: int = 0) -> OnnxClassifier:
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"ONNX model {path} not found")
        return cls.from_bytes(path.read_bytes(), str(path), threads)

    @classmethod
    def from_bytes(cls, graph: bytes, source: str, threads: int = 0) -> OnnxClassifier:
        session = _session(graph, source, threads)
        meta = dict(session.get_modelmeta().custom_metadata_map)
        if meta.get("format") != ONNX_FORMAT:
            shown = textwrap.shorten(meta["format"], 40) if "format" in meta else "none"
            raise CheckpointError(f"{source} has no FER Studio metadata (format {shown!r}, not {ONNX_FORMAT!r}); "
                                  "export it with python -m fer_core export CKPT OUT.onnx")
        meta.update(checked_metadata(Path(source), meta))   # the checkpoint's own checks: types and ranges
        _check_signature(session, meta, source)
        return cls(session, tuple(meta["class_names"]), meta["img_size"], meta["mean"][0], meta["std"][0],
                   meta["arch"], meta, source, calibration=graph_calibration(meta, source))

    def preprocess(self, faces: torch.Tensor | np.ndarray) -> torch.Tensor:
        """uint8 grey faces (N, H, W) -> normalised float (N, 1, S, S): the same code PyTorch's path runs."""
        x = torch.as_tensor(faces)
        if x.ndim == 2:
            x = x[None]
        return to_model_input(x.cpu(), self.img_size, self.mean, self.std)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        batch = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        out = torch.from_numpy(self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]).float()
        if self.index is not None:
            out = out[:, list(self.index)]
        return finite_logits(out, self.source)

    def restricted_to(self, classes) -> OnnxClassifier:
        """As :meth:`FerClassifier.restricted_to`: the other classes' logits are dropped before the softmax."""
        keep = kept_class_index(self.class_names, classes)
        index = tuple(self.index[i] for i in keep) if self.index is not None else tuple(keep)
        return dataclasses.replace(self, class_names=tuple(self.class_names[i] for i in keep), index=index,
                                   calibration=self.calibration_subset(keep), _torch=None,
                                   _torch_lock=threading.Lock())

    @property
    def model(self) -> torch.nn.Module:
        """The PyTorch model of the checkpoint this graph came from (Grad-CAM needs its gradients), loaded on first
        use and restricted as this classifier is."""
        if self.checkpoint is None:
            raise CheckpointError(f"{self.source}: an ONNX model has no gradients for Grad-CAM; "
                                  "use its .safetensors checkpoint")
        with self._torch_lock:
            if self._torch is None:
                clf = FerClassifier.from_checkpoint(self.checkpoint)
                self._torch = clf.restricted_to(self.class_names) if self.index is not None else clf
        return self._torch.model


def _session(graph: bytes, source: str, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    # as many threads as PyTorch uses (OMP_NUM_THREADS, torch.set_num_threads), so the two compare like for like
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3   # warnings about unused initialisers are not the user's concern
    try:
        return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's errors come in several classes; each means an unusable file
        raise CheckpointError(f"{source} is not an ONNX model ONNX Runtime can run "
                              f"({type(e).__name__}: {textwrap.shorten(str(e), 120)})") from None


def _check_signature(session, meta: dict, source: str) -> None:
    """One input (N, 1, S, S) and logits (N, C) as the metadata says, so a wrong file fails here, not mid-run."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    shape = list(inputs[0].shape) if len(inputs) == 1 else []
    size = meta["img_size"]
    if (len(inputs) != 1 or inputs[0].name != INPUT_NAME or shape[1:] != [1, size, size]
            or OUTPUT_NAME not in [o.name for o in outputs]):
        raise CheckpointError(f"{source}: the graph does not take one grey {size}x{size} batch named "
                              f"{INPUT_NAME!r} and give {OUTPUT_NAME!r} (its input is {shape})")


def cache_dir() -> Path:
    from .data import default_cache_dir

    return default_cache_dir() / "onnx"


def cached_graph(checkpoint: str | Path, threads: int = 0) -> OnnxClassifier:
    """The checkpoint in ONNX Runtime, from the cache when its graph is there (keyed on the checkpoint's SHA-256
    and ``ONNX_FORMAT``), else exported, checked against PyTorch and cached (written atomically)."""
    checkpoint = Path(checkpoint)
    read_metadata(checkpoint)   # a bad checkpoint is its own error, before hashing it
    sha = file_sha256(checkpoint)
    path = cache_dir() / f"{sha[:40]}.{ONNX_FORMAT}.onnx"
    classifier = None
    if path.is_file():
        try:
            classifier = OnnxClassifier.from_file(path, threads)
        except CheckpointError as e:   # a damaged cache entry is replaced, not an error
            log.warning("re-exporting %s: the cached graph is unusable (%s)", checkpoint, e)
    if classifier is None or classifier.metadata.get("source_sha256") != sha:
        result = export_graph(FerClassifier.from_checkpoint(checkpoint, calibrated=False), source_sha256=sha)
        try:
            atomic_write_bytes(path, result.graph)
            log.info("exported %s to %s (probabilities within %.1g of PyTorch)", checkpoint, path,
                     result.max_difference)
        except OSError as e:   # a read-only or full cache costs the next run an export, not this one its model
            log.warning("exported %s, but could not cache the graph at %s (%s)", checkpoint, path, e)
        classifier = OnnxClassifier.from_bytes(result.graph, str(path), threads)
    # the cache is keyed on the weights alone: the calibration is the sidecar's as it is now, not the one exported
    return dataclasses.replace(classifier, source=str(checkpoint), checkpoint=str(checkpoint),
                               calibration=load_calibration(checkpoint, classifier.class_names))


def load_classifier(path: str | Path, runtime: str = "auto", threads: int = 0) -> Classifier:
    """A classifier for a ``.safetensors`` checkpoint or an exported ``.onnx`` file, in ``runtime``: ``torch``,
    ``onnxruntime``, or ``auto`` (the fastest installed that matches PyTorch; PyTorch when the graph cannot be
    made or checked, with a warning)."""
    if runtime not in RUNTIME_NAMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIME_NAMES)}")
    path = Path(path)
    onnx_file = path.suffix.lower() == ".onnx"
    if runtime == "onnxruntime" or (runtime == "auto" and (onnx_file or "onnxruntime" in installed_runtimes())):
        if "onnxruntime" not in installed_runtimes():
            raise CheckpointError(f"{path}: the onnxruntime package is not installed (pip install onnxruntime)")
        if onnx_file:
            return OnnxClassifier.from_file(path, threads)
        try:
            return cached_graph(path, threads)
        except ExportError as e:
            if runtime == "onnxruntime":
                raise
            log.warning("running %s in PyTorch: %s", path, e)
        except CheckpointError:
            if runtime == "onnxruntime":
                raise
            # auto: a file neither runtime can use gets PyTorch's loader's error, as with runtime="torch"
    if onnx_file:
        raise CheckpointError(f"{path}: an ONNX model runs in onnxruntime, not torch; give the .safetensors "
                              "checkpoint it was exported from")
    return FerClassifier.from_checkpoint(path)
