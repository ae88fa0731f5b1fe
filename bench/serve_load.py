"""Load on ``python -m fer_core serve``: the server started on a free localhost port, then a bounded number of
``POST /predict`` requests from N concurrent clients (each its own keep-alive connection), for each N: throughput,
p50 and p99 latency, errors (non-200 answers or failed connections; must be 0), and the server's resident memory
before and after.

    python bench/serve_load.py --clients 1 4 16 --requests 1000

Each request carries one FER-2013 face (``no_detect``: the face is the image) unless ``--photo`` names an image,
which is then sent with face detection on.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from fer_core.config import PHOTO_TTA, TTA_MODES  # noqa: E402
from fer_core.serve import encode_multipart  # noqa: E402

DEFAULT_FACE = ROOT.parent / "shared/data/fer2013/test/happy/PrivateTest_10077120.jpg"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(port: int, args) -> subprocess.Popen:
    command = [sys.executable, "-m", "fer_core", "serve", "--port", str(port), "--runtime", args.runtime]
    if args.checkpoint:
        command += ["--checkpoint", str(args.checkpoint)]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the server exited ({proc.returncode}) before answering")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    sys.exit("the server did not answer within 180 s")


def client(port: int, body: bytes, headers: dict, path: str, count: int) -> tuple[list[float], int, list[str]]:
    """``count`` requests on one keep-alive connection: latencies (s), errors, and each answer's first label."""
    latencies, errors, labels = [], 0, []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(count):
        t = time.perf_counter()
        try:
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            answer = response.read()
            if response.status != 200:
                errors += 1
            else:
                labels.append(json.loads(answer)[0]["faces"][0]["label"])
        except (OSError, http.client.HTTPException, ValueError, IndexError, KeyError):
            errors += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        latencies.append(time.perf_counter() - t)
    conn.close()
    return latencies, errors, labels


def load(port: int, body: bytes, headers: dict, path: str, clients: int, requests: int) -> dict:
    per_client = [requests // clients + (i < requests % clients) for i in range(clients)]
    t = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda n: client(port, body, headers, path, n), per_client))
    wall = time.perf_counter() - t
    latencies = sorted(x for r in results for x in r[0])
    labels = {label for r in results for label in r[2]}
    return {"clients": clients, "requests": len(latencies), "throughput": len(latencies) / wall,
            "p50_ms": statistics.median(latencies) * 1000,
            "p99_ms": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000,
            "errors": sum(r[1] for r in results), "labels": sorted(labels)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, help="default: the bundled one")
    p.add_argument("--runtime", default="auto")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--requests", type=int, default=1000, help="requests for each number of clients")
    p.add_argument("--photo", type=Path, help="an image sent with face detection on (default: a face, no_detect)")
    p.add_argument("--tta", default=PHOTO_TTA, choices=TTA_MODES,
                   help=f"the test-time views a face (default {PHOTO_TTA}, as the server's default)")
    args = p.parse_args()
    image = args.photo or DEFAULT_FACE
    if not image.exists():
        sys.exit(f"{image} not found: pass --photo IMAGE")
    body, kind = encode_multipart([(image.name, image.read_bytes())])
    query = {"tta": args.tta} | ({} if args.photo else {"no_detect": "true"})
    path = "/predict?" + urllib.parse.urlencode(query)   # encoded: a bare "+" in flip+crops would read as a space
    headers = {"Content-Type": kind}
    port = free_port()
    server = start_server(port, args)
    try:
        started = rss_mb(server.pid)
        load(port, body, headers, path, 1, 20)   # warm-up: first-request allocations are not growth
        before = rss_mb(server.pid)
        print(f"server pid {server.pid} on port {port}; {image.name}, {os.path.getsize(image)} bytes a request; "
              f"memory {started:.1f} MB after start, {before:.1f} MB after warm-up")
        print(f"{'clients':>8}{'requests':>10}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}  labels")
        for n in args.clients:
            r = load(port, body, headers, path, n, args.requests)
            print(f"{r['clients']:>8}{r['requests']:>10}{r['throughput']:>10.1f}{r['p50_ms']:>10.1f}"
                  f"{r['p99_ms']:>10.1f}{r['errors']:>8}  {','.join(r['labels'])}")
        after = rss_mb(server.pid)
        print(f"server memory: {before:.1f} MB before, {after:.1f} MB after ({after - before:+.1f} MB)")
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
