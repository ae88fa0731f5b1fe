"""The dashboard served for a real browser: `streamlit run app.py` on a free localhost port, and the Chromium
settings and idle check that the end-to-end test (tests/test_browser.py) and the render benchmark
(bench/page_render.py) share."""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = {"home": "", "train": "Train", "metrics": "Metrics", "grad-cam": "Grad-CAM", "predict": "Predict",
         "video": "Video"}
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
# the script has run to its end (the app root's script state, which Streamlit sets for its own browser tests),
# and no element still shows its loading skeleton or a spinner
IDLE = ("() => document.querySelector('[data-testid=\"stApp\"]')?.dataset.testScriptState === 'notRunning'"
        " && !!document.querySelector('h1')"
        " && !document.querySelector('[data-testid=\"stSkeleton\"]')"
        " && !document.querySelector('[data-testid=\"stSpinner\"]')")


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def streamlit_server(env: dict, log_path: Path | None = None, timeout_s: float = 90,
                     script: Path = ROOT / "app.py") -> Iterator[str]:
    """Serve ``script`` (app.py) with ``env``; yields its URL once the health check answers, stops it afterwards."""
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
                             "--server.address", "127.0.0.1", "--server.headless", "true",
                             "--browser.gatherUsageStats", "false"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                tail = Path(log_path).read_text(errors="replace")[-2000:] if log_path else ""
                raise RuntimeError(f"streamlit exited with status {proc.returncode}: {tail}")
            try:
                if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not answer its health check within {timeout_s:.0f} s")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        if log_path:
            log.close()
