"""End to end in a real browser: `streamlit run app.py` on a free port, headless Chromium driven by
Playwright. Uploads a face photo on Predict, waits for the label; processes an uploaded video on Video, waits for
the annotated video to play and the person's timeline; and saves a screenshot of every page (to
$FER_STUDIO_SCREENSHOTS, default tests/artifacts/screenshots, ignored by git)."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import ROOT, SHARED_FACE_MODEL
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
           "FER_STUDIO_VIDEOS": str(base / "videos"), "PYTHONPATH": str(ROOT)}
    if SHARED_FACE_MODEL.exists():
        env["FER_STUDIO_FACE_MODEL"] = str(SHARED_FACE_MODEL)
    with streamlit_server(env, log_path=base / "streamlit.log") as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def open_page(browser, url: str, height: int = 1000):
    page = browser.new_page(viewport={"width": 1400, "height": height})
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


def face_video(photo: Path, path: Path, frames: int = 24, fps: float = 12.0) -> Path:
    """Two seconds of the face photo drifting right by 3 px a frame (MPEG-4, as a phone's MP4 is read)."""
    still = cv2.imread(str(photo))
    h, w = still.shape[:2]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert out.isOpened()
    for k in range(frames):
        out.write(cv2.warpAffine(still, np.float32([[1, 0, 3 * k - 36], [0, 1, 0]]), (w, h),
                                 borderMode=cv2.BORDER_REPLICATE))
    out.release()
    return path


def test_video_page_processes_an_upload_and_plays_the_annotated_video(server, browser, face_photo, tmp_path):
    video = face_video(face_photo, tmp_path / "clip.mp4")
    page = open_page(browser, f"{server}/Video", height=2600)   # the whole results view in one screenshot
    wait_until_idle(page)
    page.locator("input[type='file']").first.set_input_files(str(video))
    submit = page.get_by_role("button", name="Process the video")
    page.wait_for_function("() => [...document.querySelectorAll('button')].some(b => "
                           "b.innerText.includes('Process the video') && !b.disabled)", timeout=30_000)
    submit.click()
    # the job runs in its own process; the page polls it and then shows the results
    page.wait_for_function("() => { const v = document.querySelector('video'); return v && v.readyState >= 2; }",
                           timeout=180_000)
    wait_until_idle(page)
    assert not page.locator("[data-testid='stException']").count(), "the Video page raised an exception"
    size = page.evaluate("() => { const v = document.querySelector('video'); "
                         "return [v.videoWidth, v.videoHeight, v.duration]; }")
    assert size[:2] == [600, 400] and abs(size[2] - 2.0) < 0.3
    assert page.get_by_text("Person 1", exact=True).count() >= 1
    assert page.locator("[data-testid='stPlotlyChart']").count() >= 2   # the timeline and a face's probabilities
    assert page.get_by_role("button", name=re.compile("Download the annotated video")).count() == 1
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(2000)
    page.screenshot(path=str(SHOTS / "video_results.png"), full_page=True)
    page.close()
