"""Seconds each dashboard page's script takes on the server alone, without a browser: the app's own share of
a page render (bench/page_render.py measures the whole, browser included).

Each page runs in a fresh Python process under Streamlit's AppTest: the first run is cold (imports, models and
data sets loading into the caches), the next ones warm (the median of `--runs`). A cold page pays for all it
needs: the background warm-up that app.py starts after its first page (dashboard/warm_up.py) waits for 2 s
without a page script, and the runs here follow each other without such a gap.

    python bench/page_script.py [--runs 3] [--checkpoints DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE_FILES = {"home": "app.py", "train": "pages/1_Train.py", "metrics": "pages/2_Metrics.py",
              "grad-cam": "pages/3_Grad-CAM.py", "predict": "pages/4_Predict.py"}

CHILD = """
import json, sys, time
sys.path.insert(0, {root!r})
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({script!r}, default_timeout=600)
seconds = []
for _ in range({runs} + 1):
    t = time.perf_counter()
    at.run()
    seconds.append(time.perf_counter() - t)
    if at.exception:
        raise SystemExit("the page raised: " + at.exception[0].message)
print(json.dumps(seconds))
"""


def page_seconds(script: Path, runs: int, env: dict) -> list[float]:
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), script=str(script), runs=runs)],
                         cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"{script}: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3, help="warm runs after the cold one (default 3)")
    p.add_argument("--checkpoints", type=Path, default=ROOT / "checkpoints", help="checkpoint folder the pages show")
    args = p.parse_args()
    env = {**os.environ, "FER_STUDIO_CHECKPOINTS": str(args.checkpoints.resolve())}
    print(f"{'page':<10}{'cold s':>8}{'warm s':>8}")
    for name, script in PAGE_FILES.items():
        cold, *warm = page_seconds(ROOT / script, args.runs, env)
        print(f"{name:<10}{cold:>8.2f}{statistics.median(warm):>8.2f}", flush=True)


if __name__ == "__main__":
    main()
