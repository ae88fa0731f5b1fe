"""Time to first render of every dashboard page in a real browser, and a photo's prediction on the
Predict page: starts `streamlit run app.py` on a free port and drives headless Chromium (Playwright).

A page counts as rendered when its script has finished and no loading skeleton is left. The first
visit of each page is cold (models and data sets load into Streamlit's caches); the second is warm.

    python bench/page_render.py [--checkpoints DIR] [--photo PHOTO.jpg]
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = {"home": "", "train": "Train", "metrics": "Metrics", "grad-cam": "Grad-CAM", "predict": "Predict"}
IDLE = ("() => document.querySelector('h1') && !document.querySelector('[data-testid=\"stStatusWidget\"]')"
        " && !document.querySelector('[data-testid=\"stSkeleton\"]')")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(env: dict) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(port),
                             "--server.address", "127.0.0.1", "--server.headless", "true"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(180):
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    sys.exit("streamlit did not start")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", type=Path, default=ROOT / "checkpoints", help="checkpoint folder the app shows")
    p.add_argument("--photo", type=Path, help="a photo to predict on the Predict page (default: a FER-2013 face "
                   "pasted into a 1280x960 image)")
    p.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    photo = args.photo
    if photo is None:
        sys.path.insert(0, str(ROOT / "bench"))
        from inference import demo_photo

        photo = Path(tempfile.mkdtemp()) / "photo.jpg"
        photo.write_bytes(demo_photo(ROOT.parent / "shared/data/fer2013/test/happy/PrivateTest_10077120.jpg"))
    env = {**os.environ, "FER_STUDIO_CHECKPOINTS": str(args.checkpoints), "PYTHONPATH": str(ROOT)}
    proc, url = start_server(env)
    rows = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, headless=True, args=CHROMIUM_ARGS)
            for visit in ("cold", "warm"):
                for name, path in PAGES.items():
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    t = time.perf_counter()
                    page.goto(f"{url}/{path}", wait_until="domcontentloaded")
                    page.wait_for_function(IDLE, timeout=180_000)
                    rows.append((name, visit, time.perf_counter() - t))
                    if name == "predict" and visit == "warm":
                        t = time.perf_counter()
                        page.locator("input[type='file']").first.set_input_files(str(photo))
                        page.get_by_text("Face 1:").first.wait_for(timeout=120_000)
                        page.wait_for_function(IDLE, timeout=120_000)
                        rows.append(("predict: upload -> label shown", "warm", time.perf_counter() - t))
                    page.close()
            browser.close()
    finally:
        proc.terminate()
    print(f"{'page':<34}{'visit':>6}{'seconds':>10}")
    for name, visit, seconds in rows:
        print(f"{name:<34}{visit:>6}{seconds:>10.2f}")
    worst = max(s for n, v, s in rows if not n.startswith("predict:"))
    print(f"slowest page render: {worst:.2f}s against a target of < 3s: {'PASS' if worst < 3 else 'FAIL'}")


if __name__ == "__main__":
    main()
