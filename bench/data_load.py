"""FER-2013 load time: cold (an empty cache folder: every image decoded) and warm (the second load,
from the decoded-array cache). Target: warm under 3 s. First, the Home page's cold case: the summary (class
counts) of an uncached data set, which decodes and caches the images without importing PyTorch.

    python bench/data_load.py
    python bench/data_load.py --img-size 64 --repeats 3
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from fer_core.data import load_dataset, summarize_dataset  # noqa: E402

WARM_TARGET_S = 3.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "fer2013",
                   help="FER-2013 folder or fer2013.csv (default: ../shared/data/fer2013 from the repo root)")
    p.add_argument("--img-size", type=int, default=48, help="image size to load at (default 48)")
    p.add_argument("--repeats", type=int, default=1, help="warm loads to time; the best is reported (default 1)")
    p.add_argument("--cache-dir", type=Path,
                   help="an empty or new cache folder to use (kept); default: a temporary one, removed afterwards")
    args = p.parse_args()
    if not args.data.exists():
        print(f"error: {args.data} not found (pass --data PATH to FER-2013)", file=sys.stderr)
        return 2

    own = args.cache_dir is None
    cache = Path(tempfile.mkdtemp(prefix="fer-bench-cache-")) if own else args.cache_dir
    try:
        if not own and cache.exists() and any(cache.iterdir()):
            print(f"error: --cache-dir {cache} is not empty; a cold load needs an empty (or new) folder",
                  file=sys.stderr)
            return 2
        cache.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        summarize_dataset(args.data, img_size=args.img_size, cache_dir=cache / "summary")   # before PyTorch loads
        summary = time.perf_counter() - t0
        t0 = time.perf_counter()
        ds = load_dataset(args.data, img_size=args.img_size, cache_dir=cache)
        cold = time.perf_counter() - t0
        warm_times = []
        for _ in range(max(1, args.repeats)):
            t0 = time.perf_counter()
            again = load_dataset(args.data, img_size=args.img_size, cache_dir=cache)
            warm_times.append(time.perf_counter() - t0)
        warm = min(warm_times)
        assert {k: len(v) for k, v in again.splits.items()} == {k: len(v) for k, v in ds.splits.items()}
        shutil.rmtree(cache / "summary", ignore_errors=True)
        cache_mb = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) / 1e6
    finally:
        if own:
            shutil.rmtree(cache, ignore_errors=True)

    n = sum(len(s) for s in ds.splits.values())
    print(f"{ds.source}: {n:,} images at {args.img_size} px "
          f"({', '.join(f'{k} {len(v):,}' for k, v in ds.splits.items())}); cache {cache_mb:.0f} MB")
    print(f"\n{'load':<32}{'seconds':>10}{'images/s':>12}")
    print(f"{'cold summary (Home, no PyTorch)':<32}{summary:>10.2f}{n / summary:>12,.0f}")
    print(f"{'cold (empty cache, decode all)':<32}{cold:>10.2f}{n / cold:>12,.0f}")
    print(f"{'warm (from the cache)':<32}{warm:>10.2f}{n / warm:>12,.0f}")
    verdict = "PASS" if warm < WARM_TARGET_S else "FAIL"
    print(f"\ncold / warm: {cold / warm:.1f}x; warm {warm:.2f}s against a target of < {WARM_TARGET_S:.0f}s: {verdict}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
