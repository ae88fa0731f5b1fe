"""The HTTP API on a real uvicorn server (a thread of this process, a free localhost port): the endpoints answer the
CLI's records, bad input is a 4xx JSON error after which the server goes on serving, concurrent requests each get
their own answer; ``python -m fer_core serve`` starts it."""
from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from conftest import ROOT, huge_png, synthetic_face, training_env, wait_for_value
from fer_core.predict import load_image, predict_image
from fer_core.runtime import load_classifier

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
from fer_core.serve import create_app, encode_multipart  # noqa: E402

LIMIT = 256 * 1024   # the test server's body limit


def png(face: np.ndarray) -> bytes:
    return cv2.imencode(".png", face)[1].tobytes()


def faces(n: int) -> list[bytes]:
    rng = np.random.default_rng(3)
    return [png(cv2.resize(synthetic_face(i % 7, rng), (96, 96))) for i in range(n)]


class Client:
    def __init__(self, port: int):
        self.port = port

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                chunked: bool = False) -> tuple[int, object]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            pieces = (body[i:i + 16384] for i in range(0, len(body or b""), 16384))
            conn.request(method, path, body=pieces if chunked else body, headers=headers or {},
                         encode_chunked=chunked)
            response = conn.getresponse()
            return response.status, json.loads(response.read() or b"null")
        finally:
            conn.close()

    def predict(self, files: list[tuple[str, bytes]], query: str = "", **fields) -> tuple[int, object]:
        body, kind = encode_multipart(files, fields)
        return self.request("POST", "/predict" + query, body, {"Content-Type": kind})


@pytest.fixture(scope="module")
def classifier(tiny_checkpoint):
    return load_classifier(tiny_checkpoint, "onnxruntime")


@pytest.fixture(scope="module")
def client(classifier):
    server = uvicorn.Server(uvicorn.Config(create_app(classifier, max_body_bytes=LIMIT), log_level="warning"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for_value(lambda: server.started, 30, "the server to start")
    yield Client(sock.getsockname()[1])
    server.should_exit = True
    thread.join(10)


def expected(classifier, data: bytes, name: str, detect: bool = False, **options) -> dict:
    return predict_image(classifier, load_image(data, name=name), detect, name, **options).to_dict()


def test_health_model_and_openapi(client, classifier):
    assert client.request("GET", "/health") == (200, {"status": "ok"})
    status, info = client.request("GET", "/model")
    assert status == 200 and info["class_names"] == list(classifier.class_names)
    assert (info["img_size"], info["arch"], info["runtime"]) == (48, classifier.arch, "onnxruntime")
    assert info["checkpoint"] == "best.safetensors" and info["detector"]["name"] in ("yunet", "haar")
    status, spec = client.request("GET", "/openapi.json")
    assert status == 200 and {"/predict", "/health", "/model"} <= set(spec["paths"])


def test_predict_answers_the_clis_records(client, classifier):
    images = faces(2)
    status, records = client.predict([("a.png", images[0]), ("b.png", images[1])], no_detect="true")
    assert status == 200
    assert records == [expected(classifier, images[0], "a.png"), expected(classifier, images[1], "b.png")]
    assert records[0]["detected"] is False and len(records[0]["faces"]) == 1
    status, by_query = client.predict([("a.png", images[0])], query="?no_detect=true")
    assert status == 200 and by_query == records[:1] and records[0]["tta"] == "flip+crops"
    status, single = client.predict([("a.png", images[0])], no_detect="true", tta="none")
    assert status == 200 and single == [expected(classifier, images[0], "a.png", tta="none")] != records[:1]
    status, detected = client.predict([("a.png", images[0])])   # detection on: a synthetic face may have none
    assert status == 200 and detected[0]["detected"] is True
    status, haar = client.predict([("a.png", images[0])], query="?detector=haar&min_face=30")
    assert status == 200 and haar[0]["detector"] == "haar"


def test_bad_input_is_a_4xx_json_error_and_the_server_goes_on(client, classifier, tmp_path):
    good = faces(1)[0]
    secret = b"SECRET-TEXT, not an image at all " * 10
    bomb = huge_png(tmp_path / "bomb.png").read_bytes()
    big, big_kind = encode_multipart([("big.png", b"\0" * (LIMIT * 2))])   # sent without a Content-Length
    cases = {
        "not an image": (client.predict([("notes.txt", secret)]), 422, "notes.txt: not a readable image"),
        "one bad among good": (client.predict([("a.png", good), ("notes.txt", secret)]), 422, "1 of 2 files"),
        "decompression bomb": (client.predict([("bomb.png", bomb)]), 422, "too large (40000x40000 px"),
        "no file field": (client.predict([], no_detect="true"), 422, "missing field file"),
        "not multipart": (client.request("POST", "/predict", b'{"file": 1}', {"Content-Type": "application/json"}),
                          422, "missing field file"),
        "bad option": (client.predict([("a.png", good)], no_detect="perhaps"), 422, "no_detect"),
        "bad test-time views": (client.predict([("a.png", good)], tta="sideways"), 422, "unknown TTA mode"),
        "too large": (client.predict([("big.png", b"\0" * (LIMIT + 1))]), 413, "over the limit of 0.25 MiB"),
        "too large, chunked": (client.request("POST", "/predict", big, {"Content-Type": big_kind}, chunked=True),
                               413, "over the limit"),
        "unknown detector": (client.predict([("a.png", good)], query="?detector=mtcnn"), 422, "unknown detector"),
        "bad score": (client.predict([("a.png", good)], min_score="2"), 422, "min_score must lie between 0 and 1"),
    }
    for what, ((status, answer), want_status, fragment) in cases.items():
        assert status == want_status, (what, answer)
        assert fragment in answer["error"], (what, answer)
        assert "SECRET" not in json.dumps(answer), what
        assert client.request("GET", "/health") == (200, {"status": "ok"}), what
    status, records = client.predict([("a.png", good)], no_detect="true")
    assert status == 200 and records == [expected(classifier, good, "a.png")]


def test_concurrent_requests_get_their_own_answers(client, classifier):
    images = faces(8)
    want = [expected(classifier, data, f"{i}.png") for i, data in enumerate(images)]

    def ask(k: int):
        i = k % len(images)
        return i, client.predict([(f"{i}.png", images[i])], no_detect="true")

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, range(64)))
    for i, (status, records) in answers:
        assert status == 200 and records == [want[i]]


def test_the_serve_command_starts_the_server(tiny_checkpoint):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()   # a race with another process for the port is possible but unlikely on a test machine
    proc = subprocess.Popen([sys.executable, "-m", "fer_core", "serve", "--port", str(port), "--checkpoint",
                             str(tiny_checkpoint), "--runtime", "torch"], cwd=ROOT, env=training_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def up():
            try:
                return Client(port).request("GET", "/model")
            except OSError:
                return None

        status, info = wait_for_value(up, 120, "python -m fer_core serve to answer", proc)
        assert status == 200 and info["runtime"] == "torch"
    finally:
        proc.terminate()
        proc.wait(30)
