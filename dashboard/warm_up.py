"""The dashboard's background warm-up: after the first page, a thread imports the heavy libraries and preloads the
first model and the data set into the pages' caches, each step once no page script has run for a moment."""
from __future__ import annotations

import importlib
import logging
import threading
import time
from contextlib import contextmanager

import streamlit as st

from dashboard.common import checkpoint_choices, data_path, dataset, load_classifier

# the charts of most pages first, then PyTorch, timm, scikit-learn and grad-cam, one library at a time, then the
# modules of ours that use them
HEAVY_MODULES = ("plotly.graph_objects", "torch", "torchvision", "timm", "sklearn.metrics", "pytorch_grad_cam",
                 "fer_core.models", "fer_core.evaluation", "fer_core.explanation")
# An import holds the interpreter for most of a second at a time: beside a page that is loading, it slows the
# page's script and the server that sends it. So each import waits until no script has run for this long.
WARM_UP_IDLE_S = 2.0
WARM_UP_THREAD = "fer-studio-warm-up"

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
