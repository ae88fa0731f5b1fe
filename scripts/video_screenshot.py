"""docs/img/video.png: the Video page after processing a two-person clip made from FER-2013 test faces with the
bundled model, in headless Chromium.

    python scripts/video_screenshot.py [--out docs/img/video.png]

Needs FER-2013 (../shared/data/fer2013 or $FER2013_PATH), the YuNet model ($FER_STUDIO_FACE_MODEL, else
../shared/models/) and Chromium with Playwright. The videos go to a temporary folder, not videos/.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dashboard.live_server import CHROMIUM_ARGS, IDLE, chromium_path, streamlit_server  # noqa: E402
from fer_core.data import find_fer2013  # noqa: E402

FACES = (("happy", "PrivateTest_10077120.jpg"), ("surprise", None))   # None: the 4th PrivateTest face of the class


def clip(data: Path, path: Path, frames: int = 36, fps: float = 12.0) -> Path:
    """A 640x360 clip: two faces at 150 px drifting towards each other."""
    faces = []
    for cls, name in FACES:
        file = data / "test" / cls / name if name else sorted((data / "test" / cls).glob("PrivateTest_*"))[3]
        faces.append(cv2.resize(cv2.imread(str(file), cv2.IMREAD_GRAYSCALE), (150, 150),
                                interpolation=cv2.INTER_CUBIC))
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (640, 360))
    for k in range(frames):
        frame = np.full((360, 640), 190, np.uint8)
        for j, face in enumerate(faces):
            x = 60 + 2 * k if j == 0 else 430 - 2 * k
            frame[105:255, x:x + 150] = face
        out.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    out.release()
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "video.png")
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    data = find_fer2013()
    if data is None:
        raise SystemExit("FER-2013 not found (set FER2013_PATH)")
    face_model = os.environ.get("FER_STUDIO_FACE_MODEL") or str(ROOT.parent / "shared" / "models" /
                                                                "face_detection_yunet_2023mar.onnx")
    with tempfile.TemporaryDirectory() as tmp:
        video = clip(Path(data), Path(tmp) / "interview.mp4")
        env = {**os.environ, "FER_STUDIO_VIDEOS": str(Path(tmp) / "videos"), "PYTHONPATH": str(ROOT),
               "FER_STUDIO_FACE_MODEL": face_model}
        with streamlit_server(env) as url, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
            home = browser.new_page()   # a fresh server's first visit to a page other than Home shows the old nav
            home.goto(url)
            home.wait_for_function(IDLE, timeout=120_000)
            page = browser.new_page(viewport={"width": 1400, "height": 2500})
            page.goto(f"{url}/Video")
            page.wait_for_function(IDLE, timeout=120_000)
            page.locator("input[type='file']").first.set_input_files(str(video))
            page.wait_for_function("() => [...document.querySelectorAll('button')].some(b => "
                                   "b.innerText.includes('Process the video') && !b.disabled)", timeout=30_000)
            page.get_by_role("button", name="Process the video").click()
            page.wait_for_function("() => { const v = document.querySelector('video'); return v && "
                                   "v.readyState >= 2; }", timeout=300_000)
            page.wait_for_function(IDLE, timeout=120_000)
            page.wait_for_timeout(3000)   # charts draw after the script ends
            page.screenshot(path=str(args.out), full_page=True)
            browser.close()
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
