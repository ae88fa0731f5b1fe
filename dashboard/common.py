"""Locations and cached loaders shared by the pages."""
from __future__ import annotations

import importlib
import logging
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import streamlit as st

from fer_core.storage import CheckpointError, load_report, read_metadata
from fer_core.data import DatasetSummary, find_fer2013, load_dataset, summarize_dataset
from fer_core.runs import RunStore

if TYPE_CHECKING:
    from fer_core.checkpoint import FerClassifier

ROOT = Path(__file__).resolve().parent.parent


def checkpoint_dir() -> Path:
    """``$FER_STUDIO_CHECKPOINTS`` or ``checkpoints/``, read on each call (tests set it per test)."""
    return Path(os.environ.get("FER_STUDIO_CHECKPOINTS", ROOT / "checkpoints"))


def runs_dir() -> Path:
    """``$FER_STUDIO_RUNS`` or ``runs/``, read on each call."""
    return Path(os.environ.get("FER_STUDIO_RUNS", ROOT / "runs"))


def __getattr__(name: str):
    # CHECKPOINT_DIR and RUNS_DIR stay importable, but follow the environment at the time of use
    if name == "CHECKPOINT_DIR":
        return checkpoint_dir()
    if name == "RUNS_DIR":
        return runs_dir()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run_store() -> RunStore:
    return RunStore(runs_dir())


def checkpoint_choices() -> dict[str, Path]:
    """Label -> checkpoint file: the bundled ones first, then each run's best checkpoint."""
    choices = {f"bundled: {p.stem}": p for p in sorted(checkpoint_dir().glob("*.safetensors"))}
    for run in run_store().list():
        if run.best_checkpoint.exists():
            choices[f"run: {run.run_id}"] = run.best_checkpoint
    return choices


def saved_reports(checkpoint: Path) -> dict[str, Path]:
    """Evaluation reports saved beside a checkpoint: ``<stem>.<split>[.tta].json`` -> {label: path}."""
    return {p.name[len(checkpoint.stem) + 1:-5]: p
            for p in sorted(checkpoint.parent.glob(f"{checkpoint.stem}.*.json"))}


@st.cache_resource(show_spinner="Loading the model…")
def classifier(path: str, mtime: float) -> FerClassifier:
    """A model, cached per file version (``mtime`` invalidates a rewritten checkpoint)."""
    from fer_core.checkpoint import FerClassifier  # PyTorch: imported by the pages that use a model

    return FerClassifier.from_checkpoint(path)


def load_classifier(path: Path) -> FerClassifier:
    return classifier(str(path), path.stat().st_mtime)


def classifier_or_stop(path: Path) -> FerClassifier:
    """The model, or an error on the page (and the script stops) when the file cannot be used."""
    try:
        return load_classifier(path)
    except (CheckpointError, OSError) as e:
        st.error(f"Cannot load the model `{path.name}`: {e}")
        st.stop()


@st.cache_data(show_spinner=False)
def checkpoint_metadata(path: str, mtime: float) -> dict | None:
    try:
        return read_metadata(path)
    except CheckpointError:
        return None


@st.cache_data(show_spinner="Reading the data set…")
def data_summary(path: str) -> DatasetSummary:
    """Class names, images per split and class, and the split roles; no images and no PyTorch once cached."""
    return summarize_dataset(path)


@st.cache_resource(show_spinner="Reading the data set…")
def dataset(path: str, classes: tuple[str, ...] | None = None, pixels: bool = True):
    """The data set (``pixels=False``: labels, ids and splits only, fast once it is cached)."""
    return load_dataset(path, classes=list(classes) if classes else None, pixels=pixels)


@st.cache_data(show_spinner=False)
def report(path: str, mtime: float) -> dict:
    return load_report(path)


# the charts of most pages first, then PyTorch, timm, scikit-learn and grad-cam, one library at a time, then the
# modules of ours that use them
HEAVY_MODULES = ("plotly.graph_objects", "torch", "torchvision", "timm", "sklearn.metrics", "pytorch_grad_cam",
                 "fer_core.models", "fer_core.evaluation", "fer_core.explanation")
# An import holds the interpreter for most of a second at a time: beside a page that is loading, it slows the
# page's script and the server that sends it. So each import waits until no script has run for this long.
WARM_UP_IDLE_S = 2.0

_scripts_running = 0
_last_script_end = 0.0
_scripts_idle = threading.Condition()


@contextmanager
def page_script_running():
    """Wrap every page run: the background imports wait for the pages."""
    global _scripts_running, _last_script_end
    with _scripts_idle:
        _scripts_running += 1
    try:
        yield
    finally:
        with _scripts_idle:
            _scripts_running -= 1
            _last_script_end = time.monotonic()
            _scripts_idle.notify_all()


def wait_until_idle(idle_s: float) -> None:
    """Return once no page script is running and none has run for ``idle_s`` seconds."""
    while True:
        with _scripts_idle:
            _scripts_idle.wait_for(lambda: _scripts_running == 0)
            wait = idle_s - (time.monotonic() - _last_script_end)
        if wait <= 0:
            return
        time.sleep(wait)


def import_when_idle(names: tuple[str, ...], idle_s: float) -> None:
    """Import ``names`` one by one, each once no page script has run for ``idle_s`` seconds."""
    for name in names:
        wait_until_idle(idle_s)
        importlib.import_module(name)


def warm_up() -> None:
    """The heavy imports, then the first checkpoint and the data set at the size it needs (what the Grad-CAM page
    opens on), into the caches the pages use."""
    import_when_idle(HEAVY_MODULES, WARM_UP_IDLE_S)
    choices, data = checkpoint_choices(), data_path()
    if not choices:
        return
    try:
        wait_until_idle(WARM_UP_IDLE_S)
        model = load_classifier(next(iter(choices.values())))
        if data is not None:
            wait_until_idle(WARM_UP_IDLE_S)
            dataset(str(data), tuple(model.class_names))
    except Exception as e:  # a page that needs them reports the error; here it only costs the head start
        logging.getLogger(__name__).info("warm-up: could not preload the model or data set: %s", e)


WARM_UP_THREAD = "fer-studio-warm-up"


@st.cache_resource(show_spinner=False)
def start_warm_up() -> threading.Thread:
    """Start :func:`warm_up` in a background thread, once per server, so that the pages which need PyTorch, timm,
    scikit-learn, grad-cam, a model or the images open without paying for them. Called after the first page."""
    # the cached loaders, called outside a page, would warn that the thread has no page (ScriptRunContext)
    logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").addFilter(
        lambda record: record.threadName != WARM_UP_THREAD)
    thread = threading.Thread(target=warm_up, name=WARM_UP_THREAD, daemon=True)
    thread.start()
    return thread


def data_path() -> Path | None:
    return find_fer2013()
