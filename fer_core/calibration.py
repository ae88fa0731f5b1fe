"""Calibrated probabilities: temperature scaling (and per-class vector scaling where it pays), fitted on the
selection split, stored beside the checkpoint and applied by every runtime; and the calibration measures (ECE,
reliability bins, NLL) that reports quote.

A model's probabilities become logits again as their logarithm: softmax is shift-invariant, so
``softmax(log p / T)`` is ``softmax(z / T)`` for the logits ``z`` that gave ``p``. A map is therefore fitted on
probabilities alone (a saved report's, without the data set) and applied after a runtime's softmax and after
TTA's average, one temperature a TTA mode (averaging views softens the answers, so each mode needs its own).
Only numpy and scipy: a report is calibrated without PyTorch.

Stored as a sidecar, ``<stem>.calibration.json`` beside ``<stem>.safetensors``, not in the checkpoint's
metadata: a calibration is refitted or removed after training, and rewriting the weights file for a few numbers
would change its SHA-256, the identity the ONNX cache, exported graphs and reports know it by. The sidecar holds
that SHA-256, so one left beside other weights is refused with a clear error instead of miscalibrating them. An
exported ``.onnx`` graph carries the calibration in its own metadata (``calibration``), as it travels alone.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .storage import CheckpointError, atomic_write_bytes, json_bytes

CALIBRATION_FORMAT = "fer-studio-calibration/1"
SIDECAR_SUFFIX = ".calibration.json"
MAX_SIDECAR_BYTES = 1 << 20     # a few numbers a TTA mode; anything bigger is not one of ours
PROBABILITY_FLOOR = 1e-12       # log(0) of a probability a report rounded to 0
TEMPERATURE_RANGE = (0.05, 20.0)
VECTOR_FOLDS = 5
VECTOR_MIN_GAIN = 0.005         # nats of held-out NLL vector scaling must win by to be kept over a temperature
N_BINS = 15


# --- measures ------------------------------------------------------------------------------

def reliability(confidence: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> dict:
    """Expected calibration error and the reliability-diagram bins (equal-width on confidence)."""
    edges = np.linspace(0, 1, n_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        mask = which == b
        n = int(mask.sum())
        conf = float(confidence[mask].mean()) if n else None
        acc = float(correct[mask].mean()) if n else None
        if n:
            ece += n / len(confidence) * abs(acc - conf)
        bins.append({"lower": float(edges[b]), "upper": float(edges[b + 1]), "count": n,
                     "confidence": conf, "accuracy": acc})
    return {"ece": float(ece) if len(confidence) else None, "bins": bins}


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true labels."""
    picked = np.asarray(probs, np.float64)[np.arange(len(labels)), labels]
    return float(-np.log(np.maximum(picked, PROBABILITY_FLOOR)).mean())


def summary(probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS) -> dict:
    """ECE, NLL, accuracy, mean confidence and the reliability bins of ``probs`` against ``labels``."""
    probs = np.asarray(probs, np.float64)
    conf, correct = probs.max(1), probs.argmax(1) == labels
    rel = reliability(conf, correct, n_bins)
    return {"ece": rel["ece"], "nll": nll(probs, labels), "accuracy": float(correct.mean()),
            "mean_confidence": float(conf.mean()), "reliability": rel["bins"]}


# --- the maps ------------------------------------------------------------------------------

def as_logits(probs: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(np.asarray(probs, np.float64), PROBABILITY_FLOOR))


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


@dataclass(frozen=True)
class Scaling:
    """One TTA mode's map on logits: ``z / temperature``, or with vector scaling ``z * scale + bias`` (per class).
    ``fit`` records where it was fitted and how it did (split, images, before/after, the vector check)."""

    temperature: float
    scale: tuple[float, ...] | None = None
    bias: tuple[float, ...] | None = None
    fit: dict = field(default_factory=dict, compare=False)

    @property
    def method(self) -> str:
        return "temperature" if self.scale is None else "vector"

    def logits(self, z: np.ndarray) -> np.ndarray:
        if self.scale is None:
            return z / self.temperature
        return z * np.asarray(self.scale) + np.asarray(self.bias)

    def apply(self, probs: np.ndarray) -> np.ndarray:
        return softmax(self.logits(as_logits(probs))).astype(np.float32)

    def undo(self, probs: np.ndarray) -> np.ndarray:
        """The probabilities :meth:`apply` was given (to the precision of ``probs``): a calibrated report's raw
        answers, so a report made with a calibration can be refitted."""
        z = as_logits(probs)
        z = z * self.temperature if self.scale is None else (z - np.asarray(self.bias)) / np.asarray(self.scale)
        return softmax(z).astype(np.float32)

    def subset(self, index: list[int]) -> Scaling:
        if self.scale is None:
            return self
        return replace(self, scale=tuple(self.scale[i] for i in index), bias=tuple(self.bias[i] for i in index))

    def to_dict(self) -> dict:
        out = {"method": self.method, "temperature": self.temperature}
        if self.scale is not None:
            out.update(scale=list(self.scale), bias=list(self.bias))
        return {**out, **({"fit": self.fit} if self.fit else {})}


@dataclass(frozen=True)
class Calibration:
    """A model's calibration: one :class:`Scaling` a TTA mode it was fitted for. A mode without its own uses
    ``none``'s (the one ``predict`` and the server need)."""

    class_names: tuple[str, ...]
    modes: dict[str, Scaling]

    def scaling(self, tta: str = "none") -> Scaling:
        return self.modes.get(tta) or self.modes.get("none") or next(iter(self.modes.values()))

    def apply(self, probs: np.ndarray, tta: str = "none") -> np.ndarray:
        return self.scaling(tta).apply(probs)

    def subset(self, index: list[int]) -> Calibration:
        """This calibration for a classifier restricted to the classes at ``index`` (``restricted_to``)."""
        return Calibration(tuple(self.class_names[i] for i in index),
                           {m: s.subset(index) for m, s in self.modes.items()})

    def describe(self, tta: str = "none") -> dict:
        """What a report records of the map applied to its probabilities (enough to undo it)."""
        s = self.scaling(tta)
        return {**s.to_dict(), "tta": tta, "fitted_for_tta": tta in self.modes}

    def with_mode(self, tta: str, scaling: Scaling) -> Calibration:
        return replace(self, modes={**self.modes, tta: scaling})

    def to_dict(self) -> dict:
        return {"class_names": list(self.class_names), "modes": {m: s.to_dict() for m, s in self.modes.items()}}

    @classmethod
    def from_dict(cls, data, source: str) -> Calibration:
        """A calibration from JSON data, every field checked: a CheckpointError naming ``source`` otherwise."""
        try:
            names = tuple(data["class_names"])
            if not (names and all(isinstance(n, str) for n in names) and isinstance(data["modes"], dict)
                    and data["modes"]):
                raise ValueError
            modes = {str(m): _scaling(s, len(names)) for m, s in data["modes"].items()}
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{source}: the calibration is malformed (it needs class_names and, a TTA mode, a "
                                  "temperature above 0 or a scale and bias a class); refit it with "
                                  "python -m fer_core calibrate") from None
        return cls(names, modes)


def _scaling(data: dict, num_classes: int) -> Scaling:
    """A Scaling from JSON, raising ValueError for anything but finite numbers of the right count."""
    t = data["temperature"]
    if not (_finite(t) and t > 0):
        raise ValueError
    if "scale" not in data:
        return Scaling(float(t), fit=dict(data.get("fit") or {}))
    scale, bias = data["scale"], data["bias"]
    if not (len(scale) == len(bias) == num_classes and all(_finite(v) for v in [*scale, *bias])):
        raise ValueError
    return Scaling(float(t), tuple(map(float, scale)), tuple(map(float, bias)), dict(data.get("fit") or {}))


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# --- fitting -------------------------------------------------------------------------------

def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> Scaling:
    """The temperature minimising the NLL of ``labels`` (a 1-D search on log T: NLL is smooth and unimodal in it).
    A temperature never changes which class is largest."""
    from scipy.optimize import minimize_scalar

    z, labels = as_logits(probs), np.asarray(labels)

    def loss(log_t: float) -> float:
        return -_log_softmax(z / math.exp(log_t))[np.arange(len(labels)), labels].mean()

    lo, hi = (math.log(v) for v in TEMPERATURE_RANGE)
    return Scaling(float(math.exp(minimize_scalar(loss, bounds=(lo, hi), method="bounded").x)))


def fit_vector(probs: np.ndarray, labels: np.ndarray) -> Scaling:
    """Per-class scale and bias on the logits minimising the NLL (L-BFGS from the fitted temperature)."""
    from scipy.optimize import minimize

    z, labels = as_logits(probs), np.asarray(labels)
    n, c = z.shape
    start = fit_temperature(probs, labels).temperature
    onehot = np.eye(c)[labels]

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        scale, bias = params[:c], params[c:]
        log_p = _log_softmax(z * scale + bias)
        residual = (np.exp(log_p) - onehot) / n    # d NLL / d logits
        return -(log_p * onehot).sum() / n, np.concatenate([(residual * z).sum(0), residual.sum(0)])

    x0 = np.concatenate([np.full(c, 1 / start), np.zeros(c)])
    params = minimize(loss, x0, jac=True, method="L-BFGS-B").x
    return Scaling(start, tuple(map(float, params[:c])), tuple(map(float, params[c:])))


def vector_check(probs: np.ndarray, labels: np.ndarray, folds: int = VECTOR_FOLDS, seed: int = 0) -> dict:
    """Whether vector scaling pays over a temperature on held-out images of this split (``folds``-fold: each
    fitted on the rest, scored on the fold), so the choice is never made on the split a model is reported on."""
    labels = np.asarray(labels)
    order = np.random.default_rng(seed).permutation(len(labels))
    held = {"temperature": np.zeros((len(labels), probs.shape[1])), "vector": np.zeros((len(labels), probs.shape[1]))}
    for part in np.array_split(order, folds):
        rest = np.setdiff1d(order, part)
        held["temperature"][part] = fit_temperature(probs[rest], labels[rest]).apply(probs[part])
        held["vector"][part] = fit_vector(probs[rest], labels[rest]).apply(probs[part])
    scores = {m: {"nll": nll(p, labels), "accuracy": float((p.argmax(1) == labels).mean())} for m, p in held.items()}
    gain = scores["temperature"]["nll"] - scores["vector"]["nll"]
    keep = gain >= VECTOR_MIN_GAIN and scores["vector"]["accuracy"] >= scores["temperature"]["accuracy"]
    return {"folds": folds, "held_out": scores, "nll_gain": gain, "min_gain": VECTOR_MIN_GAIN, "kept": bool(keep)}


def fit(probs: np.ndarray, labels: np.ndarray, vector: bool = True) -> Scaling:
    """A temperature, or vector scaling when :func:`vector_check` says it pays (``vector``); ``fit`` records the
    split's measures before and after and the check."""
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    check = vector_check(probs, labels) if vector else None
    scaling = fit_vector(probs, labels) if check and check["kept"] else fit_temperature(probs, labels)
    before, after = summary(probs, labels), summary(scaling.apply(probs), labels)
    record = {"images": int(len(labels)), "before": _measures(before), "after": _measures(after)}
    return replace(scaling, fit={**record, **({"vector_check": check} if check else {})})


def _measures(s: dict) -> dict:
    return {k: s[k] for k in ("ece", "nll", "accuracy", "mean_confidence")}


# --- the sidecar ---------------------------------------------------------------------------

def sidecar_path(checkpoint: str | Path) -> Path:
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + SIDECAR_SUFFIX)


def _sha256(checkpoint: Path) -> str:
    from .onnx_export import file_sha256   # the one hasher of checkpoints (the ONNX cache keys on it too)

    return file_sha256(checkpoint)


def save_calibration(calibration: Calibration, checkpoint: str | Path) -> Path:
    """Write ``calibration`` beside ``checkpoint`` (atomically), stamped with the checkpoint's SHA-256."""
    checkpoint = Path(checkpoint)
    path = sidecar_path(checkpoint)
    atomic_write_bytes(path, json_bytes({"format": CALIBRATION_FORMAT, "checkpoint": checkpoint.name,
                                         "checkpoint_sha256": _sha256(checkpoint), **calibration.to_dict()}))
    return path


def load_calibration(checkpoint: str | Path, class_names) -> Calibration | None:
    """The calibration beside ``checkpoint``, None without one. A sidecar that is unreadable, malformed, made for
    other weights (its SHA-256 differs) or other classes is a CheckpointError saying how to refit or remove it."""
    checkpoint = Path(checkpoint)
    path = sidecar_path(checkpoint)
    if not path.is_file():
        return None
    fix = f"refit it (python -m fer_core calibrate --checkpoint {checkpoint} --data D) or remove it (--remove)"
    data = _read_sidecar(path, fix)
    if data.get("checkpoint_sha256") != _sha256(checkpoint):
        raise CheckpointError(f"{path} was fitted for other weights than {checkpoint.name}'s (its SHA-256 "
                              f"differs): it is stale; {fix}")
    calibration = Calibration.from_dict(data, str(path))
    if list(calibration.class_names) != list(class_names):
        raise CheckpointError(f"{path} was fitted for the classes {', '.join(calibration.class_names)}, not the "
                              f"checkpoint's {', '.join(class_names)}; {fix}")
    return calibration


def _read_sidecar(path: Path, fix: str) -> dict:
    if path.stat().st_size > MAX_SIDECAR_BYTES:
        raise CheckpointError(f"{path} is {path.stat().st_size:,} bytes, too big for a calibration; {fix}")
    try:
        data = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError):   # its content stays out of the message
        raise CheckpointError(f"{path} is not JSON (a truncated or corrupt calibration); {fix}") from None
    if not isinstance(data, dict) or data.get("format") != CALIBRATION_FORMAT:
        raise CheckpointError(f"{path} is not a FER Studio calibration (format {CALIBRATION_FORMAT!r}); {fix}")
    return data


def remove_calibration(checkpoint: str | Path) -> bool:
    """Delete the sidecar of ``checkpoint``; whether there was one."""
    path = sidecar_path(checkpoint)
    existed = path.is_file()
    path.unlink(missing_ok=True)
    return existed


def graph_calibration(metadata: dict, source: str) -> Calibration | None:
    """The calibration an exported ONNX graph carries in its metadata (``calibration``), None without one."""
    if "calibration" not in metadata:
        return None
    try:
        data = json.loads(metadata["calibration"])
    except (ValueError, TypeError):
        raise CheckpointError(f"{source}: the graph's calibration metadata is not JSON; export it again") from None
    calibration = Calibration.from_dict(data, source)
    if list(calibration.class_names) != list(metadata["class_names"]):
        raise CheckpointError(f"{source}: the graph's calibration is for other classes than its own; export it again")
    return calibration


# --- calibrating a checkpoint ---------------------------------------------------------------

def report_answers(report: dict, class_names) -> tuple[np.ndarray, np.ndarray]:
    """(raw probabilities, true labels) of a saved evaluation report of a model with ``class_names``: a report made
    with a calibration has it undone (its ``calibration`` says which map), so refitting never compounds one."""
    if list(report.get("class_names", [])) != list(class_names):
        raise CheckpointError(f"the report is of a model with the classes {', '.join(report.get('class_names', []))}"
                              f", not {', '.join(class_names)}")
    records = report.get("predictions") or []
    if not records:
        raise CheckpointError("the report holds no per-image predictions to fit on")
    index = {c: i for i, c in enumerate(class_names)}
    try:
        probs = np.array([r["probabilities"] for r in records], np.float64).reshape(len(records), len(class_names))
        labels = np.array([index[r["true"]] for r in records])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError("the report's predictions are malformed (each needs true and probabilities, one a "
                              "class)") from None
    if "calibration" in report:
        probs = Calibration.from_dict({"class_names": list(class_names), "modes": {"any": report["calibration"]}},
                                      "the report").scaling().undo(probs)
    return probs, labels


def calibrate_checkpoint(checkpoint: str | Path, class_names, probs: np.ndarray, labels: np.ndarray,
                         tta: str = "none", vector: bool = True, about: dict | None = None) -> Scaling:
    """Fit ``tta``'s map on a split's raw answers and save it beside ``checkpoint``, keeping the sidecar's other
    TTA modes (a stale or unreadable sidecar is replaced). ``about`` (split, data) joins the fit's record."""
    scaling = fit(probs, labels, vector)
    scaling = replace(scaling, fit={**(about or {}), **scaling.fit})
    try:
        current = load_calibration(checkpoint, class_names)
    except CheckpointError:   # stale or corrupt: this fit replaces it
        current = None
    current = current or Calibration(tuple(class_names), {})
    save_calibration(current.with_mode(tta, scaling), checkpoint)
    return scaling
