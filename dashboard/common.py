"""Locations and cached loaders shared by the pages."""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import streamlit as st

from fer_core.data import DatasetSummary, find_fer2013, load_dataset, summarize_dataset
from fer_core.runs import RunStore
from fer_core.storage import BUNDLED_CHECKPOINT, BUNDLED_DIR, CheckpointError, load_report, read_metadata

if TYPE_CHECKING:
    from fer_core.checkpoint import FerClassifier

ROOT = Path(__file__).resolve().parent.parent


def checkpoint_dir() -> Path:
    """``$FER_STUDIO_CHECKPOINTS`` or ``checkpoints/``, read on each call (tests set it per test)."""
    return Path(os.environ.get("FER_STUDIO_CHECKPOINTS", BUNDLED_DIR))


def runs_dir() -> Path:
    """``$FER_STUDIO_RUNS`` or ``runs/``, read on each call."""
    return Path(os.environ.get("FER_STUDIO_RUNS", ROOT / "runs"))


def videos_dir() -> Path:
    """``$FER_STUDIO_VIDEOS`` or ``videos/``, read on each call: the Video page's jobs, one folder each."""
    return Path(os.environ.get("FER_STUDIO_VIDEOS", ROOT / "videos"))


def __getattr__(name: str):
    # CHECKPOINT_DIR and RUNS_DIR stay importable, but follow the environment at the time of use
    if name == "CHECKPOINT_DIR":
        return checkpoint_dir()
    if name == "RUNS_DIR":
        return runs_dir()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def data_path() -> Path | None:
    """Where FER-2013 is (``$FER2013_PATH``, else the usual folders), or None."""
    return find_fer2013()


# where a data path typed into the dashboard may point: these folders and any named in the setting
DATA_ROOTS_SETTING = "FER_STUDIO_DATA_ROOTS"


def allowed_data_roots() -> list[Path]:
    """The places a data path typed into the dashboard may lie in, resolved, existing, each once: the usual data
    folders (the repository's ``data/``, ``../shared/data/``), the data set found (:func:`data_path`: the folder,
    or the CSV file, that ``$FER2013_PATH`` names, else one in those folders), and every folder in
    ``$FER_STUDIO_DATA_ROOTS`` (separated by ``os.pathsep``). Not the folder around ``$FER2013_PATH``: that may be
    a home folder. Read on each call."""
    candidates = [ROOT / "data", ROOT.parent / "shared" / "data", data_path()]
    if os.environ.get("FER2013_PATH"):
        candidates.append(Path(os.environ["FER2013_PATH"]).expanduser())
    candidates += [Path(p).expanduser() for p in os.environ.get(DATA_ROOTS_SETTING, "").split(os.pathsep) if p]
    roots = [p.resolve() for p in candidates if p is not None and p.exists()]
    return list(dict.fromkeys(roots))


def confine_data_path(text: str) -> Path:
    """The data path typed by a user, resolved (``~`` expanded, symlinks followed, relative to the repository),
    if it lies inside one of :func:`allowed_data_roots`; else ValueError with a message for the page. The file
    itself is not opened."""
    roots = allowed_data_roots()
    allowed = ", ".join(f"`{r}`" for r in roots) or "none (no data folder exists)"
    hint = (f"Data sets are read only from the data folders: {allowed}. To use another folder, add it to "
            f"`{DATA_ROOTS_SETTING}` (folders separated by `{os.pathsep}`) and restart the dashboard.")
    if not text.strip():
        raise ValueError(f"No data path given. {hint}")
    try:
        path = Path(text.strip()).expanduser()
        path = (path if path.is_absolute() else ROOT / path).resolve()
    except (OSError, RuntimeError, ValueError):   # a symlink loop, a NUL byte
        raise ValueError(f"`{text}` is not a usable path. {hint}") from None
    if not any(path.is_relative_to(root) for root in roots):
        raise ValueError(f"`{text}` is outside the data folders. {hint}")
    return path


def run_store() -> RunStore:
    return RunStore(runs_dir())


def bundled_checkpoints() -> list[Path]:
    """The checkpoints in :func:`checkpoint_dir`, the default model (the CLI's) first, then by name: Home shows the
    first and the pages preselect it, so a file named before it must not displace it."""
    return sorted(checkpoint_dir().glob("*.safetensors"), key=lambda p: (p.name != BUNDLED_CHECKPOINT.name, p.name))


def checkpoint_choices() -> dict[str, Path]:
    """Label -> checkpoint file: the bundled ones first (:func:`bundled_checkpoints`), then each run's best."""
    choices = {f"bundled: {p.stem}": p for p in bundled_checkpoints()}
    for run in run_store().list():
        if run.best_checkpoint.exists():
            choices[f"run: {run.run_id}"] = run.best_checkpoint
    return choices


# the other JSON files beside a checkpoint: its calibration, a split's embedding map and slices (not reports)
SIDECAR_KINDS = ("calibration", "embedding", "slices")


def saved_reports(checkpoint: Path) -> dict[str, Path]:
    """Evaluation reports saved beside a checkpoint: ``<stem>.<split>[.tta].json`` -> {label: path}."""
    files = sorted(checkpoint.parent.glob(f"{checkpoint.stem}.*.json"))
    labels = {p.name[len(checkpoint.stem) + 1:-5]: p for p in files}
    return {label: p for label, p in labels.items() if label.rpartition(".")[2] not in SIDECAR_KINDS}


# where the dashboard's models predict: auto (ONNX Runtime when installed and matching PyTorch), torch, onnxruntime
RUNTIME_SETTING = "FER_STUDIO_RUNTIME"


@st.cache_resource(show_spinner="Loading the model…")
def classifier(path: str, mtime: float) -> FerClassifier:
    """A model, cached per file version (``mtime`` invalidates a rewritten checkpoint). Its predictions run in the
    fastest runtime that matches PyTorch (``$FER_STUDIO_RUNTIME``, default auto; the graph is exported once and
    cached); Grad-CAM gets the PyTorch model from its ``model``, loaded when first asked."""
    from fer_core.runtime import load_classifier as load_in_runtime  # PyTorch: imported by the pages that use a model

    return load_in_runtime(path, os.environ.get(RUNTIME_SETTING, "auto"))


def load_classifier(path: Path) -> FerClassifier:
    return classifier(str(path), path.stat().st_mtime)


def classifier_or_stop(path: Path) -> FerClassifier:
    """The model, or an error on the page (and the script stops) when the file cannot be used."""
    try:
        return load_classifier(path)
    except (ValueError, OSError) as e:   # CheckpointError, or a bad $FER_STUDIO_RUNTIME
        st.error(f"Cannot load the model `{path.name}`: {e}")
        st.stop()


@st.cache_data(show_spinner=False)
def checkpoint_metadata(path: str, mtime: float) -> dict | None:
    try:
        return read_metadata(path)
    except CheckpointError:
        return None


@st.cache_resource(show_spinner=False)
def _summaries() -> tuple[dict[str, DatasetSummary], threading.Lock]:
    """The data sets' summaries by path, once per server, and the lock that lets one session decode at a time.
    Not ``st.cache_data``: its replay refuses the progress bar, an element drawn into a block made outside it."""
    return {}, threading.Lock()


def data_summary(path: str) -> DatasetSummary:
    """Class names, images per split and class, and the split roles; no images and no PyTorch once cached. An
    uncached data set is decoded first, with a progress bar where this is called (FER-2013: seconds)."""
    memo, lock = _summaries()
    with lock:
        if path not in memo:
            memo[path] = summarize_dataset(path, progress=DecodingProgress())
    return memo[path]


class DecodingProgress:
    """A ``progress(done, total)`` callback for ``fer_core.data``: a progress bar drawn on its first call where it
    was made, and removed when the last image is decoded."""

    def __init__(self, what: str = "Decoding the data set's images"):
        self.what, self.slot, self.bar = what, st.empty(), None

    def __call__(self, done: int, total: int) -> None:
        text = f"{self.what}: {done:,} of {total:,} (once: they are cached for the next visit)"
        if self.bar is None:
            self.bar = self.slot.progress(0.0, text=text)
        self.bar.progress(min(done / max(total, 1), 1.0), text=text)
        if done >= total:
            self.slot.empty()


@st.cache_resource(show_spinner="Reading the data set…")
def dataset(path: str, classes: tuple[str, ...] | None = None, pixels: bool = True):
    """The data set (``pixels=False``: labels, ids and splits only, fast once it is cached)."""
    return load_dataset(path, classes=list(classes) if classes else None, pixels=pixels)


@st.cache_data(show_spinner=False)
def report(path: str, mtime: float) -> dict:
    return load_report(path)
