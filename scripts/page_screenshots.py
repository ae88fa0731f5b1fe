"""docs/img/home.png and docs/img/predict.png: the Home page with the checkpoints in checkpoints/, and the Predict
page reading its "A group of four" example with the default model, in headless Chromium.

    python scripts/page_screenshots.py [--out docs/img]

Needs FER-2013 (../shared/data/fer2013 or $FER2013_PATH: the example is made of its test faces), the YuNet model
($FER_STUDIO_FACE_MODEL, else ../shared/models/) and Chromium with Playwright. (docs/img/video.png:
scripts/video_screenshot.py.)
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dashboard.live_server import CHROMIUM_ARGS, IDLE, chromium_path, streamlit_server  # noqa: E402
from fer_core.data import find_fer2013  # noqa: E402

EXAMPLE = "A group of four"
WIDTH = 1400
# Streamlit scrolls inside its own container, so a full-page shot is the viewport: make it tall enough
HOME_HEIGHT, PREDICT_HEIGHT = 1500, 2300


def shoot_home(browser, url: str, out: Path) -> None:
    page = browser.new_page(viewport={"width": WIDTH, "height": HOME_HEIGHT})
    page.goto(url)
    page.wait_for_function(IDLE, timeout=120_000)
    page.wait_for_timeout(2000)   # data grids draw after the script ends
    page.screenshot(path=str(out))
    page.close()


def shoot_predict(browser, url: str, out: Path) -> None:
    page = browser.new_page(viewport={"width": WIDTH, "height": PREDICT_HEIGHT})
    page.goto(f"{url}/Predict")
    page.wait_for_function(IDLE, timeout=120_000)
    page.get_by_role("button", name=EXAMPLE).click()
    page.get_by_text("Face 4:").first.wait_for(timeout=180_000)
    page.wait_for_function(IDLE, timeout=180_000)
    page.wait_for_timeout(2000)
    page.screenshot(path=str(out))
    page.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "img", help="the folder for home.png and predict.png")
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    if find_fer2013() is None:
        raise SystemExit("FER-2013 not found (set FER2013_PATH)")
    face_model = os.environ.get("FER_STUDIO_FACE_MODEL") or str(ROOT.parent / "shared" / "models" /
                                                                "face_detection_yunet_2023mar.onnx")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FER_STUDIO_FACE_MODEL": face_model}
    args.out.mkdir(parents=True, exist_ok=True)
    with streamlit_server(env) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        # Home first: a fresh server's first visit to another page shows the old navigation
        shoot_home(browser, url, args.out / "home.png")
        shoot_predict(browser, url, args.out / "predict.png")
        browser.close()
    print(args.out / "home.png", args.out / "predict.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
