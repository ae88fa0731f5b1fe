"""End to end in a real browser: `streamlit run app.py` on a free port, headless Chromium driven by
Playwright. Uploads a face photo on Predict, waits for the label, and saves a screenshot of every
page (to $FER_STUDIO_SCREENSHOTS, default tests/artifacts/screenshots, ignored by git)."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from conftest import ROOT
from dashboard.live_server import CHROMIUM_ARGS, IDLE, PAGES, chromium_path, streamlit_server

pytestmark = pytest.mark.browser

CHROMIUM = chromium_path()
playwright = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
if CHROMIUM is None:
    pytest.skip("Chromium is not installed (apt-get install chromium)", allow_module_level=True)

SHOTS = Path(os.environ.get("FER_STUDIO_SCREENSHOTS", ROOT / "tests" / "artifacts" / "screenshots"))


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_checkpoint):
    base = tmp_path_factory.mktemp("browser")
    (base / "checkpoints").mkdir()
    shutil.copy(tiny_checkpoint, base / "checkpoints" / "demo.safetensors")
    env = {**os.environ, "FER_STUDIO_CHECKPOINTS": str(base / "checkpoints"), "FER_STUDIO_RUNS": str(base / "runs"),
           "PYTHONPATH": str(ROOT)}
    with streamlit_server(env, log_path=base / "streamlit.log") as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_selector("[data-testid='stApp']", timeout=60_000)
    return page


def wait_until_idle(page, timeout_ms: int = 90_000) -> None:
    page.wait_for_function(IDLE, timeout=timeout_ms)


def test_every_page_renders_and_predict_labels_an_uploaded_face(server, browser, face_photo):
    SHOTS.mkdir(parents=True, exist_ok=True)
    for name, path in PAGES.items():
        page = open_page(browser, f"{server}/{path}")
        page.wait_for_selector("h1", timeout=60_000)
        wait_until_idle(page)
        assert not page.locator("[data-testid='stException']").count(), f"{name} page raised an exception"
        if name == "predict":
            page.locator("input[type='file']").first.set_input_files(str(face_photo))
            label = page.get_by_text(re.compile(r"Face 1: \w+ \(\d+%\)"))
            label.first.wait_for(timeout=90_000)
            wait_until_idle(page)
            assert re.match(r"Face 1: (angry|disgust|fear|happy|sad|surprise|neutral) \(\d+%\)",
                            label.first.inner_text())
            assert not page.locator("[data-testid='stException']").count()
        page.wait_for_timeout(2000)  # charts and data grids draw after the script finishes
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
        page.close()
    assert sorted(p.name for p in SHOTS.glob("*.png")) >= sorted(f"{n}.png" for n in PAGES)
