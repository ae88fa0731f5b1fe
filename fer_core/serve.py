"""``python -m fer_core serve``: the prediction of ``python -m fer_core predict`` as an HTTP API (FastAPI and
uvicorn, imported only here).

``POST /predict`` takes one or more images in multipart fields named ``file`` and the CLI's options (``no_detect``,
``detector``, ``min_face``, ``min_score``, ``tta``; form or query fields) and answers the CLI's ``--json`` records
(``ImagePrediction.to_dict()``); ``GET /health``; ``GET /model`` (classes, input size, architecture, runtime,
detector); OpenAPI docs at ``/docs``. Every error is JSON
``{"error": "..."}`` with a 4xx status for bad input (413: a body over the limit; 422: a missing field, a file that
is not a usable image, a decompression bomb), and the server goes on serving.

One model serves every request. Requests are read and decoded in parallel (FastAPI's thread pool), but finding and
classifying faces runs one request at a time under a lock: OpenCV's detectors keep state per object and are not
documented as thread-safe, and on a few cores parallel forward passes only contend for them.
"""
from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .checkpoint import ClassifierBase
from .config import DETECTOR_NAMES, PHOTO_TTA, TTA_MODES
from .detection import get_detector
from .evaluation import check_tta
from .predict import ImageError, load_image, predict_image

MAX_BODY_BYTES = 32 * 1024 * 1024   # a request's whole body: a few large photos
MAX_FILES = 32                      # images in one request
MAX_NAME = 200                      # characters of an upload's file name kept in its record


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware refusing a request body over ``limit`` bytes with 413: at once from its Content-Length, or,
    without one (chunked uploads), as soon as that many bytes have arrived, so no upload fills memory or disk."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.limit:
            return await self._refuse(scope, receive, send)
        seen, exceeded, started = 0, False, False

        async def counted_receive():
            nonlocal seen, exceeded
            message = await receive()
            seen += len(message.get("body", b"")) if message["type"] == "http.request" else 0
            if seen > self.limit:
                exceeded = True
                raise _BodyTooLarge
            return message

        async def guarded_send(message):
            nonlocal started
            if exceeded:   # the app's answer to a body cut short is replaced by the 413 below
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope, receive, send):
        response = error_response(413, f"the request body is over the limit of {self.limit / 2**20:g} MiB")
        await response(scope, receive, send)


def error_response(status: int, message: str, **extra) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def create_app(classifier: ClassifierBase, face_model: str | Path | None = None, max_body_bytes: int = MAX_BODY_BYTES,
               max_files: int = MAX_FILES) -> FastAPI:
    """The API over one loaded classifier (any runtime's); ``face_model``: the YuNet file (as ``--face-model``),
    a setting of the server, not of a request, since it names a file on the server."""
    app = FastAPI(title="FER Studio", version="1", summary="Facial expression recognition: faces found in photos "
                  "and their expressions, as python -m fer_core predict --json gives them.")
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    lock = threading.Lock()
    _add_error_handlers(app)
    model_info = {"class_names": list(classifier.class_names), "img_size": classifier.img_size,
                  "arch": classifier.arch, "runtime": classifier.runtime, "detector": _default_detector(face_model),
                  "checkpoint": Path(classifier.source).name, "max_body_bytes": max_body_bytes,
                  "max_files": max_files}

    @app.get("/health", summary="Is the server up")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/model", summary="The model that answers: classes, input size, architecture, runtime, detector")
    def model() -> dict:
        return model_info

    @app.post("/predict", summary="Faces and their expressions in one or more images", response_model=None)
    def predict(request: Request,
                file: Annotated[list[UploadFile], File(description="one or more images (JPEG, PNG, WebP, ...)")],
                no_detect: Annotated[bool | None, Form(description="each image is one aligned face crop")] = None,
                detector: Annotated[str | None, Form(description=f"one of {', '.join(DETECTOR_NAMES)}")] = None,
                min_face: Annotated[int | None, Form(description="smallest face side, px")] = None,
                min_score: Annotated[float | None, Form(description="YuNet's smallest face score, 0-1")] = None,
                tta: Annotated[str | None, Form(description=f"test-time views a face: {', '.join(TTA_MODES)} "
                                                            f"(default {PHOTO_TTA})")] = None):
        """The options may also be query parameters (``/predict?no_detect=true``); a form field wins."""
        if len(file) > max_files:
            return error_response(413, f"{len(file)} files in one request; at most {max_files}")
        try:
            options = _options(request.query_params, no_detect=no_detect, detector=detector, min_face=min_face,
                               min_score=min_score, tta=tta)
            check_tta(options["tta"])
        except ValueError as e:
            return error_response(422, str(e))
        images, errors = [], []
        for upload in file:   # all decoded first: a bad file refuses the request before any work
            name = (upload.filename or "upload")[:MAX_NAME]
            try:
                images.append((name, load_image(upload.file.read(), name=name)))
            except ImageError as e:
                errors.append({"file": name, "error": e.reason})
        if errors:
            return error_response(422, f"{len(errors)} of {len(file)} files are not usable images: "
                                  + "; ".join(f"{e['file']}: {e['error']}" for e in errors), files=errors)
        return _predict_all(images, options)

    def _predict_all(images: list, options: dict) -> list[dict] | JSONResponse:
        detect, tta = not options.pop("no_detect"), options.pop("tta")
        with lock:
            try:   # download=False: the model file was fetched, if at all, when the server started
                chosen = get_detector(options.pop("detector") or DETECTOR_NAMES[0], face_model, download=False,
                                      **options) if detect else None
            except ValueError as e:
                return error_response(422, str(e))
            return [predict_image(classifier, rgb, detect, name, detector=chosen, tta=tta).to_dict()
                    for name, rgb in images]

    return app


_OPTION_TYPES = {"no_detect": bool, "detector": str, "min_face": int, "min_score": float, "tta": str}


def _options(query, **form) -> dict:
    """Each option from its form field, else from the query string, else None (``no_detect``: False)."""
    out = {}
    for name, kind in _OPTION_TYPES.items():
        value = form.get(name)
        if value is None and name in query:
            out[name] = _parsed(name, query[name], kind)
        else:
            out[name] = value
    out["no_detect"] = bool(out["no_detect"])
    out["tta"] = out["tta"] or PHOTO_TTA
    return out


def _parsed(name: str, text: str, kind: type):
    if kind is bool:
        if text.lower() not in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            raise ValueError(f"{name} must be true or false")
        return text.lower() in ("true", "1", "yes", "on")
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"{name} must be {'a whole number' if kind is int else 'a number'}") from None


def _default_detector(face_model) -> dict:
    """The detector a request gets by default: YuNet where its model file is (fetched now, once, if it can be), else
    the Haar cascade, with the reason."""
    chosen = get_detector(DETECTOR_NAMES[0], face_model)
    return {"name": chosen.name, "note": chosen.note}


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):   # FastAPI's own 400s and 404s
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        # each problem by field and message only: pydantic's record also quotes the input, which may be file bytes
        problems = [{"field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"), "problem": e.get("msg", "")}
                    for e in exc.errors()]
        missing = [p["field"] for p, e in zip(problems, exc.errors()) if e.get("type") == "missing"]
        message = (f"missing field {', '.join(missing)}: send one or more images as multipart fields named 'file'"
                   if "file" in missing else "; ".join(f"{p['field']}: {p['problem']}" for p in problems))
        return error_response(422, message, problems=problems)

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception):
        # the library's own errors (ValueError kinds: a model giving NaN, say) are written for users; others are bugs
        detail = str(exc)[:300] if isinstance(exc, ValueError) else type(exc).__name__
        return error_response(500, f"the server could not answer: {detail}")


def encode_multipart(files: list[tuple[str, bytes]], fields: dict[str, str] | None = None) -> tuple[bytes, str]:
    """A multipart/form-data body with each ``(file name, bytes)`` in a field named ``file``, and its Content-Type:
    for clients without an HTTP library (the tests, ``bench/serve_load.py``)."""
    boundary = "fer-studio-" + hashlib.sha1(b"".join(data[:64] for _, data in files)).hexdigest()[:16]
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in (fields or {}).items()]
    for name, data in files:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                     "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def serve(classifier: ClassifierBase, host: str = "127.0.0.1", port: int = 8000, face_model: str | None = None,
          max_body_bytes: int = MAX_BODY_BYTES) -> None:
    import uvicorn

    uvicorn.run(create_app(classifier, face_model, max_body_bytes), host=host, port=port, log_level="info")
