"""Checkpoints: one ``.safetensors`` file whose metadata says how to rebuild and use the model.

Metadata keys (all strings; JSON where structured): ``format``, ``arch``, ``class_names``,
``img_size``, ``in_chans``, ``mean``, ``std``, ``output_stride``, ``drop_rate``, ``config`` (the
training config), ``epoch``, ``metrics``. A ``last`` checkpoint also carries the training state
(optimizer moments, EMA weights, step counters) under the ``train_state.`` prefix, so a run resumes
from it; model loaders ignore those tensors. An ensemble (``arch`` "ensemble", :mod:`fer_core.ensemble`) holds
no tensors: its ``members`` name the member checkpoints beside it.

Nothing in a file is taken on trust: ``storage.read_metadata`` checks each field's type and range,
:meth:`FerClassifier.from_checkpoint` refuses NaN or infinite weights, and :meth:`FerClassifier.logits`
refuses NaN or infinite outputs, so a broken file is a clear error rather than confident-looking labels.
"""
from __future__ import annotations

import dataclasses
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from safetensors.torch import load_file, save

from .calibration import Calibration, load_calibration
from .config import ENSEMBLE_ARCH
from .storage import STATE_PREFIX, CheckpointError, atomic_write_bytes, read_metadata

EMA_PREFIX = "ema."   # the EMA weights inside a last checkpoint's training state


def save_checkpoint(path: str | Path, model_state: dict[str, torch.Tensor], metadata: dict[str, str],
                    train_state: dict[str, torch.Tensor] | None = None, half: bool = False) -> None:
    tensors = {}
    for k, v in model_state.items():
        v = v.detach().cpu()
        if half and v.is_floating_point():
            v = v.half()
        tensors[k] = v.contiguous()
    for k, v in (train_state or {}).items():
        tensors[STATE_PREFIX + k] = v.detach().cpu().contiguous()
    atomic_write_bytes(path, save(_unshare(tensors), metadata=metadata))


def _unshare(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory; copy the rare ones that do."""
    seen, out = set(), {}
    for k, v in tensors.items():
        ptr = (v.untyped_storage().data_ptr(), v.storage_offset()) if v.numel() else None
        out[k] = v.clone() if ptr in seen else v
        if ptr:
            seen.add(ptr)
    return out


def ema_weights(train_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The EMA model weights kept in a training state (empty when the run had no EMA)."""
    return {k[len(EMA_PREFIX):]: v for k, v in train_state.items() if k.startswith(EMA_PREFIX)}


def read_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(model state, training state) of a checkpoint."""
    try:
        tensors = load_file(str(path))
    except Exception as e:  # safetensors' own error names no file
        raise CheckpointError(f"{path}: the weights cannot be read ({textwrap.shorten(str(e), 100)}); "
                              "the file may be truncated or corrupt") from None
    model = {k: v for k, v in tensors.items() if not k.startswith(STATE_PREFIX)}
    state = {k[len(STATE_PREFIX):]: v for k, v in tensors.items() if k.startswith(STATE_PREFIX)}
    return model, state


class ClassifierBase:
    """What every runtime's classifier shares: probabilities from its own ``preprocess`` and ``logits``. A runtime
    (PyTorch here, ONNX Runtime in :mod:`fer_core.runtime`) supplies those two, ``class_names`` and ``img_size``;
    evaluation, prediction and the server call only these.

    ``calibration`` (:mod:`fer_core.calibration`, the checkpoint's sidecar or an exported graph's metadata) maps the
    probabilities after the softmax (and after TTA's average, in evaluation): applied here, every consumer reports
    calibrated probabilities. ``logits`` stay the network's (distillation's teacher reads them)."""

    runtime: ClassVar[str] = ""
    calibration: Calibration | None = None

    @torch.no_grad()
    def predict_proba(self, faces: torch.Tensor | np.ndarray, batch_size: int = 256) -> np.ndarray:
        faces = torch.as_tensor(faces)
        if faces.ndim == 2:
            faces = faces[None]
        out = []
        for i in range(0, len(faces), batch_size):
            out.append(torch.softmax(self.logits(self.preprocess(faces[i:i + batch_size])), 1).cpu())
        probs = torch.cat(out).numpy() if out else np.zeros((0, len(self.class_names)), np.float32)
        return self.calibrated(probs)

    def calibrated(self, probs: np.ndarray, tta: str = "none") -> np.ndarray:
        """``probs`` (the softmax, averaged over ``tta``'s views) through the model's calibration, if it has one."""
        if self.calibration is None or not len(probs):
            return probs
        return self.calibration.apply(probs, tta)

    def calibration_subset(self, index: list[int]) -> Calibration | None:
        """The calibration of this model restricted to the classes at ``index`` (``restricted_to``)."""
        return None if self.calibration is None else self.calibration.subset(index)


def kept_class_index(class_names, classes) -> list[int]:
    """Indices of ``classes`` among a model's ``class_names``, in the model's order (``restricted_to``)."""
    unknown = [c for c in classes if c not in class_names]
    if unknown:
        raise CheckpointError(f"the model has no class {', '.join(unknown)}; it knows {', '.join(class_names)}")
    return [i for i, c in enumerate(class_names) if c in classes]


def finite_logits(out: torch.Tensor, source: str) -> torch.Tensor:
    """``out`` if every row is finite. Non-finite logits are refused: softmax would turn them into NaN
    probabilities, and argmax into a confident-looking label."""
    finite = torch.isfinite(out).all(1)
    if not finite.all():
        raise CheckpointError(f"{source or 'the model'}: NaN or infinite outputs for "
                              f"{int((~finite).sum())} of {len(out)} faces; its weights overflow "
                              "(a corrupt checkpoint or one saved from a diverged run)")
    return out


@dataclass
class FerClassifier(ClassifierBase):
    """A trained model with what it needs to turn grey face crops into class probabilities."""

    runtime: ClassVar[str] = "torch"

    model: torch.nn.Module
    class_names: tuple[str, ...]
    img_size: int
    mean: float
    std: float
    arch: str
    metadata: dict
    source: str = ""  # the checkpoint file, for error messages
    calibration: Calibration | None = None   # its sidecar's (fer_core.calibration), read on load

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu",
                        calibrated: bool = True) -> FerClassifier:
        """The model of a checkpoint, with the calibration beside it unless ``calibrated`` is False (refitting one,
        which may be stale)."""
        meta = read_metadata(path)  # checked: every field used here is there, typed and in range
        calibration = load_calibration(path, meta["class_names"]) if calibrated else None
        if meta["arch"] == ENSEMBLE_ARCH:   # a file naming member checkpoints
            from .ensemble import build_ensemble_net

            model = build_ensemble_net(path, meta, device)
        else:
            from .models import create_model, fused_for_inference  # timm: imported only when a model is built

            model = create_model(meta["arch"], num_classes=len(meta["class_names"]), img_size=meta["img_size"],
                                 output_stride=meta["output_stride"], drop_rate=meta["drop_rate"])
            state, _ = read_tensors(path)
            _load_weights(model, state, path, meta["arch"])
            model = fused_for_inference(model)
        model.to(device).eval().to(memory_format=torch.channels_last)
        return cls(model, tuple(meta["class_names"]), meta["img_size"], meta["mean"][0], meta["std"][0],
                   meta["arch"], meta, str(path), calibration)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def restricted_to(self, classes) -> FerClassifier:
        """This model choosing among some of its classes only, e.g. a 7-class model scored on a 4-class
        protocol: the other classes' logits are dropped before the softmax. Keeps the model's class order."""
        index = kept_class_index(self.class_names, classes)
        return dataclasses.replace(self, model=LogitSubset(self.model, index),
                                   class_names=tuple(self.class_names[i] for i in index),
                                   calibration=self.calibration_subset(index))

    def preprocess(self, faces: torch.Tensor | np.ndarray) -> torch.Tensor:
        """uint8 grey faces (N, H, W) -> normalised float (N, 1, S, S) on the model's device."""
        x = torch.as_tensor(faces)
        if x.ndim == 2:
            x = x[None]
        return to_model_input(x.to(self.device), self.img_size, self.mean, self.std)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Float logits for a batch from :meth:`preprocess`. Non-finite ones are refused: softmax would turn
        them into NaN probabilities, and argmax into a confident-looking label."""
        return finite_logits(self.model(x).float(), self.source)


def _load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path, arch: str) -> None:
    """Load a checkpoint's weights (fp16 ones as float32), refusing NaN or infinite values: they come from a
    corrupt file or a diverged run, and every answer of the model would be NaN."""
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path}: {len(bad)} weight tensors hold NaN or infinite values (the first: "
                              f"{bad[0]}); the file is corrupt or was saved from a diverged run")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # torch lists every missing key: hundreds of lines for a file of another model
        raise CheckpointError(f"{path}: weights do not fit a {arch}: {textwrap.shorten(str(e), 300)}") from None


class LogitSubset(torch.nn.Module):
    """A classifier whose output keeps only the logits at ``index``."""

    def __init__(self, model: torch.nn.Module, index: list[int]):
        super().__init__()
        self.model = model
        self.register_buffer("index", torch.tensor(index, dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).index_select(1, self.index.to(x.device))


def to_model_input(images: torch.Tensor, img_size: int, mean: float, std: float) -> torch.Tensor:
    """uint8 (N, H, W) -> float (N, 1, img_size, img_size), normalised, channels-last."""
    x = images.unsqueeze(1).float().div_(255.0)
    if x.shape[-1] != img_size or x.shape[-2] != img_size:
        x = torch.nn.functional.interpolate(x, size=(img_size, img_size), mode="bilinear",
                                            align_corners=False, antialias=x.shape[-1] > img_size)
    x = (x - mean) / std
    return x.contiguous(memory_format=torch.channels_last)
