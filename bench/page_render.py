"""Time to first render of every dashboard page in a real browser, and a photo's prediction on the
Predict page: starts `streamlit run app.py` on a free port and drives headless Chromium (Playwright).

A page counts as rendered when its script has finished and no loading skeleton or spinner is left.
The first visit of each page is cold (models and data sets load into Streamlit's caches); the second
is warm. The first page opened also starts the app's background import of timm, scikit-learn and
grad-cam; `--first grad-cam` measures a user who opens the Grad-CAM page before any other.

    python bench/page_render.py [--first PAGE] [--pause S] [--baseline] [--checkpoints DIR] [--photo PHOTO.jpg]

By default the pages are opened back to back, while the background import may still be running (the
worst case for the pages after the first); `--pause 8` waits 8 s before each visit, as a user reading
a page would.

`--baseline` adds the same timing for Streamlit pages with no app logic (a title; a title and one
Plotly chart): the part of a render that the browser and Streamlit take on this machine.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from dashboard.live_server import CHROMIUM_ARGS, IDLE, PAGES, chromium_path, streamlit_server  # noqa: E402


BASELINES = {   # what the browser alone costs: Streamlit pages with no app logic
    "baseline: a title": "st.title('Baseline')",
    "baseline: a title and a Plotly chart": "import plotly.graph_objects as go\nst.title('Baseline')\n"
                                            "st.plotly_chart(go.Figure(go.Bar(x=[1, 2, 3], y=[3, 1, 2])))",
}


def render_seconds(browser, url: str) -> tuple[float, object]:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    t = time.perf_counter()
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_function(IDLE, timeout=180_000)
    return time.perf_counter() - t, page


def baseline_rows(browser, env: dict) -> list[tuple[str, str, float]]:
    rows = []
    for name, body in BASELINES.items():
        script = Path(tempfile.mkdtemp()) / "baseline.py"
        script.write_text("import streamlit as st\n" + body + "\n")
        with streamlit_server(env, script=script) as url:
            for visit in ("cold", "warm"):
                seconds, page = render_seconds(browser, url)
                page.close()
                rows.append((name, visit, seconds))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", type=Path, default=ROOT / "checkpoints", help="checkpoint folder the app shows")
    p.add_argument("--photo", type=Path, help="a photo to predict on the Predict page (default: a FER-2013 face "
                   "pasted into a 1280x960 image)")
    p.add_argument("--first", choices=list(PAGES), default="home",
                   help="the page opened first on the fresh server (the others follow in menu order)")
    p.add_argument("--pause", type=float, default=0.0, help="seconds to wait before each visit (a user reading "
                   "the previous page); default: none")
    p.add_argument("--screenshots", type=Path, help="save a full-page PNG of each warm page here")
    p.add_argument("--baseline", action="store_true", help="also time Streamlit pages with no app logic, the "
                   "floor that the browser and Streamlit set on this machine")
    p.add_argument("--chromium", default=chromium_path() or "/usr/bin/chromium")
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    photo = args.photo
    if photo is None:
        sys.path.insert(0, str(ROOT / "bench"))
        from inference import demo_photo

        photo = Path(tempfile.mkdtemp()) / "photo.jpg"
        photo.write_bytes(demo_photo(ROOT.parent / "shared/data/fer2013/test/happy/PrivateTest_10077120.jpg"))
    env = {**os.environ, "FER_STUDIO_CHECKPOINTS": str(args.checkpoints), "PYTHONPATH": str(ROOT)}
    shared_yunet = ROOT.parent / "shared" / "models" / "face_detection_yunet_2023mar.onnx"
    if shared_yunet.is_file():   # the Predict page as a user with YuNet sees it, not the offline fallback
        env.setdefault("FER_STUDIO_FACE_MODEL", str(shared_yunet))
    order = {args.first: PAGES[args.first], **PAGES}
    rows = []
    with streamlit_server(env, timeout_s=180) as url:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, headless=True, args=CHROMIUM_ARGS)
            for visit in ("cold", "warm"):
                for name, path in order.items():
                    time.sleep(args.pause)
                    seconds, page = render_seconds(browser, f"{url}/{path}")
                    rows.append((name, visit, seconds))
                    if name == "predict" and visit == "warm":
                        t = time.perf_counter()
                        page.locator("input[type='file']").first.set_input_files(str(photo))
                        page.get_by_text("Face 1:").first.wait_for(timeout=120_000)
                        page.wait_for_function(IDLE, timeout=120_000)
                        rows.append(("predict: upload -> label shown", "warm", time.perf_counter() - t))
                    if args.screenshots and visit == "warm":
                        args.screenshots.mkdir(parents=True, exist_ok=True)
                        page.wait_for_timeout(1500)   # charts draw after the script has finished
                        page.screenshot(path=str(args.screenshots / f"{name}.png"), full_page=True)
                    page.close()
            if args.baseline:
                rows += baseline_rows(browser, env)
            browser.close()
    print(f"{'page':<40}{'visit':>6}{'seconds':>10}")
    for name, visit, seconds in rows:
        print(f"{name:<40}{visit:>6}{seconds:>10.2f}")
    worst = max(s for n, v, s in rows if n in PAGES)
    print(f"slowest page render: {worst:.2f}s against a target of < 3s: {'PASS' if worst < 3 else 'FAIL'}")


if __name__ == "__main__":
    main()
