"""The explorer's web app: ``create_app(folders)`` -> a FastAPI app with the API of the contract and the front end.

Every endpoint answers JSON (``/api/runs/{id}/stream`` answers Server-Sent Events); every error is ``{"detail": "one
line"}`` with a 4xx status for what the user can fix (unknown model or layer, bad image, too large) and 500
``internal error: <type>: <message>`` for anything else, logged on the server, never a traceback in the response.
Model computations run in a bounded pool of worker threads (:class:`convolab.serve.limits.ComputeGate`); the pure
computations (feature maps, receptive fields, the elastic arithmetic, kernels, the graph) are
:mod:`convolab.serve.inspect` and :mod:`convolab.serve.graph`.
"""

from __future__ import annotations

import base64
import io
import logging
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.exceptions import HTTPException

from convolab.serve.limits import Busy, ComputeGate, ImageError, UploadLimit, decode_image
from convolab.serve.sources import Model, ModelCache, ModelNotFoundError, RunEntry, discover_runs, run_listing
from convolab.serve.streams import metric_events, read_metrics

__all__ = ["create_app", "STATIC_DIR", "ImageCache"]

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
IMAGE_CACHE_SIZE = 64
SOURCE_SIDE = 512  # an upload is kept (for another model's preprocessing) at most this large
MAX_TEST_IMAGES = 64
SPEC_EXAMPLES = [
    "spec:conv(6,5),relu,maxpool(2),conv(16,5),relu,maxpool(2),flatten,fc(120),relu,fc(84),relu,fc",
    "spec:conv(6,5,p=2),tanh,avgpool(2),conv(16,5),tanh,avgpool(2),flatten,fc(120),tanh,fc(84),tanh,fc",
    "spec:conv(32,3,p=same),bn,relu,maxpool(2),conv(64,3,p=same),bn,relu,maxpool(2),flatten,fc(128),relu,fc",
]


# -- errors --------------------------------------------------------------------------------------------------------
def _line(e: BaseException) -> str:
    text = str(e).strip()
    if isinstance(e, OSError) and e.strerror and e.filename is not None:
        text = f"{e.filename}: {e.strerror}"
    first = text.splitlines()[0] if text else type(e).__name__
    return "".join(c if c.isprintable() else " " for c in first)[:500]


def _status(e: BaseException) -> int:
    if isinstance(e, ImageError):
        return e.status
    if isinstance(e, (ModelNotFoundError, FileNotFoundError)):
        return 404
    if isinstance(e, PermissionError):
        return 403
    return 422  # ValueError and the other user errors: the request names something that does not work


def _fast(payload: dict) -> JSONResponse:
    """A large JSON answer (feature maps, graphs) sent as it is: FastAPI's per-value encoder would take longer than
    the model's forward for resnet18."""
    return JSONResponse(payload)


def _error(status: int, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


class ErrorBoundary:
    """ASGI middleware: an exception nothing else handled -> 500 ``internal error: Type: message`` (logged as one
    line, the traceback at debug level); the server goes on."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except Exception as e:  # the boundary: anything unexpected
            detail = f"internal error: {type(e).__name__}: {_line(e)}"
            log.error("%s %s: %s", scope.get("method"), scope.get("path"), detail)
            log.debug("traceback", exc_info=True)
            if not started:
                await _error(500, detail)(scope, receive, send)


# -- the image cache -----------------------------------------------------------------------------------------------
@dataclass
class CachedImage:
    """An analysed image: as the model saw it, and the upload itself (bounded) for another model's preprocessing."""

    model_key: tuple
    array: np.ndarray  # uint8 (C, H, W) as the model sees it (resized, grey or RGB), before normalisation
    source: Any  # the decoded upload (a PIL image at most SOURCE_SIDE large) or the test image's array
    label: int | None = None


class ImageCache:
    """The last ``size`` analysed images by id (uuid4 hex); thread-safe."""

    def __init__(self, size: int = IMAGE_CACHE_SIZE):
        self.size = size
        self._items: OrderedDict[str, CachedImage] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, image: CachedImage) -> str:
        key = uuid.uuid4().hex
        with self._lock:
            self._items[key] = image
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return key

    def get(self, key: Any) -> CachedImage:
        with self._lock:
            image = self._items.get(key) if isinstance(key, str) else None
            if image is None:
                raise ModelNotFoundError("image expired, upload it again")
            self._items.move_to_end(key)
            return image


# -- helpers ----------------------------------------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def png_b64(array) -> str:
    """uint8 (C, H, W) or (H, W) -> base64 PNG (:func:`convolab.serve.inspect.png_b64`)."""
    from convolab.serve.inspect import png_b64 as encode

    return encode(array)


def _model_key(model: Model) -> tuple:
    return (model.ref, model.input_size, len(model.classes))


def _thumbnail(img: Image.Image) -> Image.Image:
    if max(img.size) > SOURCE_SIDE:
        img = img.copy()
        img.thumbnail((SOURCE_SIDE, SOURCE_SIDE), Image.Resampling.BILINEAR)
    return img


def _field(body: dict, name: str, kind: type, *, required: bool = True, default: Any = None) -> Any:
    value = body.get(name, default)
    if value is None:
        if required:
            raise ValueError(f"the request has no {name!r}; expected {kind.__name__}")
        return default
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError(f"{name} {value!r}: expected a whole number")
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"{name} {value!r}: expected a whole number") from None
    if not isinstance(value, kind):
        raise ValueError(f"{name} {value!r}: expected {kind.__name__}")
    return value


def _colour(map2d: np.ndarray, signed: bool) -> tuple[np.ndarray, np.ndarray]:
    """A map as RGB (H, W, 3) uint8 with the colours ``convolab explain`` draws it in (jet; RdBu_r when signed), and
    the overlay's RGBA (strong where the map is strong, transparent where weak), as :mod:`convolab.explain.overlay`."""
    import matplotlib

    if signed:
        lim = float(np.abs(map2d).max()) or 1.0
        rgb = matplotlib.colormaps["RdBu_r"]((map2d / lim + 1) / 2)
        strength = np.abs(map2d)
    else:
        lo, hi = float(map2d.min()), float(map2d.max())
        rgb = matplotlib.colormaps["jet"]((map2d - lo) / ((hi - lo) or 1.0))
        strength = map2d - map2d.min()
    strength = strength / (float(strength.max()) or 1.0)
    rgba = matplotlib.colormaps["jet"](strength)
    rgba[..., 3] = 0.75 * strength
    return (rgb[..., :3] * 255).round().astype(np.uint8), rgba


def _overlay(array: np.ndarray, rgba: np.ndarray) -> np.ndarray:
    """The image (uint8 (C, H, W)) with the overlay's RGBA composited over it -> uint8 (H, W, 3)."""
    img = array.transpose(1, 2, 0).astype(np.float64)
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    alpha = rgba[..., 3:4]
    out = img * (1 - alpha) + rgba[..., :3] * 255 * alpha
    return out.round().clip(0, 255).astype(np.uint8)


def _rgb_png(rgb: np.ndarray) -> str:
    return png_b64(rgb.transpose(2, 0, 1))


# -- the app --------------------------------------------------------------------------------------------------------
class Explorer:
    """The state behind the endpoints: served folders, models, images, datasets, the compute gate."""

    def __init__(self, folders: list[Path], workers: int):
        self.folders = [Path(f) for f in folders]
        self.models = ModelCache(8)
        self.images = ImageCache(IMAGE_CACHE_SIZE)
        self.gate = ComputeGate(workers)
        self._datasets: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()

    def runs(self) -> dict[str, RunEntry]:
        return discover_runs(self.folders)

    def run_entry(self, run_id: str) -> RunEntry:
        entry = self.runs().get(run_id)
        if entry is None:
            raise ModelNotFoundError(f"no served run has the id {run_id!r} (GET /api/runs lists them)")
        return entry

    async def model(self, ref: Any, input_size: Any = None, classes: Any = None) -> Model:
        if not isinstance(ref, str) or not ref:
            raise ValueError("the request has no model 'ref' (run:<id>, zoo:<name> or spec:<spec>)")
        if input_size is not None and not isinstance(input_size, str):
            raise ValueError(f"input {input_size!r}: expected CxHxW, e.g. 1x28x28")
        runs = self.runs() if ref.startswith("run:") else {}
        # built outside inference mode: the parameters must stay usable by the attributions' backward passes
        return await self.gate.run(self.models.get, ref, runs, input_size, classes, grad=True)

    def _cached(self, store: OrderedDict, key: tuple, make, size: int = 8):
        with self._lock:
            if key in store:
                store.move_to_end(key)
                return store[key]
        value = make()
        with self._lock:
            store[key] = value
            while len(store) > size:
                store.popitem(last=False)
        return value

    def summary(self, model: Model):
        """``convolab.analysis.summarize`` of the model at its input size (what ``convolab summary`` prints)."""
        from convolab.analysis import summarize

        with model.lock:  # the copy to the meta device must not catch another request's hooks
            if "summary" not in model.cache:  # kept with the model: a reloaded run is summarised again
                model.cache["summary"] = summarize(model.model, model.input_size)
            return model.cache["summary"]

    def graph(self, model: Model) -> dict:
        from convolab.serve.graph import model_graph

        with model.lock:
            if "graph" not in model.cache:
                model.cache["graph"] = model_graph(model.model, model.input_size)
            return model.cache["graph"]

    def test_split(self, model: Model):
        """The test split of the run's dataset; Fashion-MNIST's for zoo/spec models at 1x28x28."""
        if model.kind == "run":
            from convolab.explain.inputs import run_dataset

            key: tuple = ("run", str(model.run.path))  # type: ignore[attr-defined]
            return self._cached(self._datasets, key, lambda: run_dataset(model.run, download=False).test, size=2)
        if model.input_size != (1, 28, 28) or len(model.classes) != 10:
            raise ModelNotFoundError(f"{model.ref} at {'x'.join(map(str, model.input_size))} with "
                                     f"{len(model.classes)} classes has no test images; zoo and spec models have "
                                     "Fashion-MNIST's at 1x28x28 with 10 classes (or upload an image)")
        from convolab.data import load_dataset

        return self._cached(self._datasets, ("fashion-mnist",),
                            lambda: load_dataset("fashion-mnist", download=False).test, size=2)

    def image_input(self, model: Model, image_id: Any) -> tuple[np.ndarray, torch.Tensor]:
        """A cached image as ``model`` sees it: uint8 (C, H, W) and the normalised batch (1, C, H, W)."""
        image = self.images.get(image_id)
        run = model.run
        array = image.array if image.model_key == _model_key(model) else run.to_array(image.source)  # type: ignore
        x = run.preprocess(torch.from_numpy(np.array(array)))  # type: ignore[attr-defined]
        return array, x


def _check_static() -> None:
    if not STATIC_DIR.is_dir():
        log.warning("the explorer's front end is missing (%s); the API still answers", STATIC_DIR)


def create_app(folders: list[Path], *, max_upload_mb: float = 16, workers: int = 2) -> FastAPI:
    """The explorer app serving the runs under ``folders`` (each a run or a folder of runs), zoo and spec models.

    Args:
        folders: run directories or folders holding runs (searched again on every ``GET /api/runs``).
        max_upload_mb: request bodies larger than this are refused (413).
        workers: model computations that run at once (more wait in a bounded queue, then 503).

    Raises:
        ValueError: a folder is neither a run nor holds any; ``max_upload_mb`` or ``workers`` below 1.
    """
    from convolab import __version__
    from convolab.serve.sources import check_folders

    if not max_upload_mb > 0:
        raise ValueError(f"max upload {max_upload_mb} MB: expected a positive size")
    check_folders(list(folders))
    _check_static()
    state = Explorer(list(folders), workers)
    app = FastAPI(title="convolab explorer", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.explorer = state
    app.add_middleware(ErrorBoundary)
    app.add_middleware(UploadLimit, max_bytes=int(max_upload_mb * 2**20))

    # -- errors: one line each -----------------------------------------------------------------------------------
    @app.exception_handler(Busy)
    async def _busy(request: Request, e: Busy):
        return _error(503, _line(e), {"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        errors = e.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(422, f"{where}: {first.get('msg', 'invalid request')}" if where else "invalid request")

    @app.exception_handler(HTTPException)
    async def _http(request: Request, e: HTTPException):
        detail = e.detail if isinstance(e.detail, str) else "error"
        if e.status_code == 404 and detail == "Not Found":
            detail = f"no such page: {request.url.path[:200]}"
        return _error(e.status_code, detail, getattr(e, "headers", None))

    for kind in (ValueError, OSError, ModelNotFoundError, RuntimeError):
        app.add_exception_handler(kind, _user_error)  # type: ignore[arg-type]

    # -- pages ---------------------------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def index():
        page = STATIC_DIR / "index.html"
        if not page.is_file():
            return _error(404, "the explorer's front end is not installed (no static/index.html); the API answers")
        return FileResponse(page, media_type="text/html")

    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR, follow_symlink=False), name="static")

    @app.get("/api/health")
    async def health():
        return {"ok": True, "version": __version__}

    # -- runs ----------------------------------------------------------------------------------------------------
    @app.get("/api/runs")
    async def runs():
        from starlette.concurrency import run_in_threadpool

        def listing():
            return [run_listing(e) for e in state.runs().values()]

        return {"runs": await run_in_threadpool(listing)}

    @app.get("/api/runs/{run_id:path}/metrics")
    async def metrics(run_id: str):
        from starlette.concurrency import run_in_threadpool

        entry = state.run_entry(run_id)
        return await run_in_threadpool(read_metrics, entry.path)

    @app.get("/api/runs/{run_id:path}/stream")
    async def stream(run_id: str, request: Request, from_epoch: int = 0, from_step: int = 0):
        entry = state.run_entry(run_id)
        poll, heartbeat = app.state.stream_poll, app.state.stream_heartbeat
        events = metric_events(entry.path, from_epoch=from_epoch, from_step=from_step, poll=poll,
                               heartbeat=heartbeat, stop=request.is_disconnected)
        return StreamingResponse(events, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    app.state.stream_poll = 0.5
    app.state.stream_heartbeat = 10.0

    # -- models --------------------------------------------------------------------------------------------------
    @app.get("/api/models")
    async def models():
        from convolab.models import model_entries

        zoo = [{"name": e.name, "family": e.family, "description": e.description,
                "task": "segmentation" if e.input_kind == "segmentation" else "classification"}
               for e in model_entries() if e.input_kind != "clip"]
        return {"zoo": zoo, "examples": SPEC_EXAMPLES}

    @app.get("/api/model")
    async def model_info(ref: str, input: str | None = None, classes: str | None = None):
        from convolab.explain.layers import conv_layers

        model = await state.model(ref, input, classes)
        summary = await state.gate.run(state.summary, model)
        rows = _rows(summary)
        return {"ref": model.ref, "name": model.name, "kind": model.kind, "task": model.task,
                "input_size": list(model.input_size), "classes": model.classes,
                "params": summary.trace.params + summary.trace.frozen, "macs": int(summary.macs),
                "conv_layers": conv_layers(model.model), "layers": [r.name for r in rows]}

    @app.get("/api/test-images")
    async def test_images(ref: str, n: int = 12, input: str | None = None, classes: str | None = None):
        if not 1 <= n <= MAX_TEST_IMAGES:
            raise ValueError(f"n {n}: expected 1..{MAX_TEST_IMAGES} images")
        model = await state.model(ref, input, classes)

        def work():
            split = state.test_split(model)
            out = []
            for i in range(min(n, len(split.images))):
                label = split.labels[i]
                index = int(label) if label.dim() == 0 else None
                out.append({"index": i, "label": index,
                            "class": model.classes[index] if index is not None and index < len(model.classes)
                            else None,
                            "png": png_b64(split.images[i].numpy())})
            return out

        return _fast({"images": await state.gate.run(work)})

    @app.get("/api/graph")
    async def graph(ref: str, input: str | None = None, classes: str | None = None):
        model = await state.model(ref, input, classes)
        return _fast(await state.gate.run(state.graph, model))

    @app.get("/api/kernels")
    async def kernels(ref: str, layer: str, input: str | None = None, classes: str | None = None):
        from convolab.serve.inspect import kernels as layer_kernels

        model = await state.model(ref, input, classes)

        def work():
            with model.lock:
                return layer_kernels(model.model, layer)

        return _fast(await state.gate.run(work))

    # -- an image through the model ------------------------------------------------------------------------------
    @app.post("/api/analyze")
    async def analyze(request: Request):
        t0 = time.perf_counter()
        async with request.form(max_files=1, max_fields=16) as form:
            upload = form.get("file")
            test_index = form.get("test_index")
            model = await state.model(form.get("ref"), form.get("input"), form.get("classes"))
            data = await upload.read() if upload is not None and not isinstance(upload, str) else None
        if data is not None:
            source, label = await state.gate.run(decode_image, data), None
        elif test_index is not None and test_index != "":
            index = _field({"test_index": test_index}, "test_index", int)
            split = await state.gate.run(state.test_split, model)
            if not 0 <= index < len(split.images):
                raise ValueError(f"test_index {index}: the test split has images 0..{len(split.images) - 1}")
            source = split.images[index]  # uint8 (C, H, W) tensor: Run.to_array takes it as it is
            label = int(split.labels[index]) if split.labels[index].dim() == 0 else None
        else:
            raise ValueError("send an image as 'file' (multipart) or a 'test_index'")
        t_read = time.perf_counter()
        result = await state.gate.run(_analyze, state, model, source, label)
        result["timing_ms"]["read"] = round(1000 * (t_read - t0), 2)
        result["timing_ms"]["total"] = round(1000 * (time.perf_counter() - t0), 2)
        return _fast(result)

    @app.post("/api/unit")
    async def unit(request: Request):
        body = await _json(request)
        model = await state.model(body.get("ref"), body.get("input"), body.get("classes"))
        layer = _field(body, "layer", str)
        y, x = _field(body, "y", int), _field(body, "x", int)
        index = _field(body, "index", int, required=False, default=None)
        array, _ = state.image_input(model, _field(body, "image_id", str))
        return _fast(await state.gate.run(_unit, state, model, array, layer, y, x, index))

    @app.post("/api/elastic")
    async def elastic(request: Request):
        from convolab.serve.inspect import elastic as explain_unit

        body = await _json(request)
        model = await state.model(body.get("ref"), body.get("input"), body.get("classes"))
        layer = _field(body, "layer", str)
        channel = _field(body, "channel", int, required=False, default=0)
        y, x = _field(body, "y", int, required=False, default=0), _field(body, "x", int, required=False, default=0)
        image_id = _field(body, "image_id", str)

        def work():
            _, inp = state.image_input(model, image_id)
            with model.lock:
                return explain_unit(model.model, inp, layer, channel, y, x)

        return _fast(await state.gate.run(work))

    @app.post("/api/attribution")
    async def attribution(request: Request):
        from convolab.explain.attribution import METHODS

        body = await _json(request)
        model = await state.model(body.get("ref"), body.get("input"), body.get("classes"))
        method = _field(body, "method", str)
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; methods: {', '.join(METHODS)}")
        target = _field(body, "target", int, required=False)
        layer = _field(body, "layer", str, required=False)
        image_id = _field(body, "image_id", str)
        state.images.get(image_id)  # an expired image is a 404 before the queue
        return _fast(await state.gate.run(_attribution, state, model, image_id, method, target, layer, grad=True))

    @app.post("/api/sanity")
    async def sanity(request: Request):
        from convolab.explain.attribution import METHODS

        body = await _json(request)
        model = await state.model(body.get("ref"), body.get("input"), body.get("classes"))
        method = _field(body, "method", str, required=False, default="gradcam")
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; methods: {', '.join(METHODS)}")
        image_id = _field(body, "image_id", str)
        state.images.get(image_id)
        return _fast(await state.gate.run(_sanity, state, model, image_id, method, grad=True))

    return app


async def _user_error(request: Request, e: Exception) -> JSONResponse:
    if isinstance(e, RuntimeError) and not isinstance(e, NotImplementedError):
        # torch's errors about a model that cannot take an input are RuntimeErrors: still no traceback, but logged
        log.warning("%s %s: %s: %s", request.method, request.url.path, type(e).__name__, _line(e))
        return _error(500, f"internal error: {type(e).__name__}: {_line(e)}")
    return _error(_status(e), _line(e))


async def _json(request: Request) -> dict:
    try:
        body = await request.json()
    except ValueError:
        raise ValueError("the request body is not JSON; expected a JSON object") from None
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object as the request body")
    return body


def _rows(summary) -> list:
    """The traced rows at full depth, without the synthetic row of unused parameters."""
    return [r for r in summary.trace.rows if r.name != "(parameters not used in forward)"]


# -- the computations (worker threads) -------------------------------------------------------------------------------
def _analyze(state: Explorer, model: Model, source: Any, label: int | None) -> dict:
    from convolab.serve.inspect import inspect_image

    t0 = time.perf_counter()
    run = model.run
    array = run.to_array(source)  # type: ignore[attr-defined]  # uint8 (C, H, W) at the model's size
    x = run.preprocess(torch.from_numpy(array))  # type: ignore[attr-defined]  # (1, C, H, W) normalised
    t1 = time.perf_counter()
    with model.lock:
        logits, layers = inspect_image(model.model, x)
    t2 = time.perf_counter()
    logits = torch.as_tensor(logits).float()
    if logits.dim() > 1:  # segmentation: (K, H, W) scores per pixel -> each class's mean probability
        probs = logits.reshape(logits.shape[0], -1).softmax(0).mean(1)
    else:
        probs = logits.softmax(0)
    order = torch.argsort(probs, descending=True).tolist()
    probabilities = [{"class": model.classes[i] if i < len(model.classes) else str(i), "index": i,
                      "probability": float(probs[i])} for i in order]
    if isinstance(source, Image.Image):
        source = _thumbnail(source)
    image_id = state.images.put(CachedImage(_model_key(model), array, source, label))
    t3 = time.perf_counter()
    return {"image_id": image_id, "input": {"png": png_b64(array), "shape": list(array.shape)},
            "label": label, "probabilities": probabilities, "layers": layers,
            "timing_ms": {"preprocess": round(1000 * (t1 - t0), 2), "forward": round(1000 * (t2 - t1), 2),
                          "encode": round(1000 * (t3 - t2), 2)}}


def _unit(state: Explorer, model: Model, array: np.ndarray, layer: str, y: int, x: int,
          index: int | None = None) -> dict:
    """The receptive field of unit (y, x) of ``layer``; ``index`` (its position among /api/analyze's layers) tells
    apart the calls of a module called twice (resnet's relu), which share a name but not a field."""
    from convolab.serve.inspect import unit_field

    summary = state.summary(model)
    every = _rows(summary)
    if index is not None:
        if not 0 <= index < len(every) or every[index].name != layer:
            raise ValueError(f"layer {index} is not {layer!r}; send the index /api/analyze gave the layer (or none)")
        return unit_field(every[index], y, x, tuple(array.shape[-2:]), array)
    rows: dict = {}
    for r in every:  # a module called twice, named alone: its first call
        rows.setdefault(r.name, r)
    if layer not in rows:
        from convolab.errors import UnknownNameError

        raise UnknownNameError("layer", layer, rows, hint="GET /api/model lists the layers")
    return unit_field(rows[layer], y, x, tuple(array.shape[-2:]), array)


def _check_classifier(model: Model, what: str) -> None:
    if model.task != "classification":
        raise ValueError(f"{what} explain a classifier's class score; {model.ref} is a {model.task} model (its "
                         "feature maps, units and kernels are shown)")


def _attribution(state: Explorer, model: Model, image_id: str, method: str, target: int | None,
                 layer: str | None) -> dict:
    from convolab.explain.attribution import CAM_METHODS, attribute
    from convolab.explain.layers import resolve_layer
    from convolab.explain.overlay import heatmap

    _check_classifier(model, "attributions")
    array, x = state.image_input(model, image_id)
    with model.lock:
        with torch.no_grad():
            probs = model.model(x).float().softmax(1)[0]
        if target is not None and not 0 <= target < len(probs):
            raise ValueError(f"target {target}: the model has {len(probs)} classes (0..{len(probs) - 1})")
        tgt = int(probs.argmax()) if target is None else target
        if method in CAM_METHODS[1:] or layer is not None:
            layer = resolve_layer(model.model, layer)[0]
        maps = attribute(model.model, x, method, tgt, layer)
    raw = maps[0].detach().float().cpu()  # what `convolab explain` saves as .npy: (H, W), or (C, H, W) for pixels
    m, signed = heatmap(raw)  # channels summed, as explain draws it
    m = np.ascontiguousarray(m, dtype="<f4")
    rgb, rgba = _colour(m, signed)
    return {"method": method, "target": tgt, "class": model.classes[tgt] if tgt < len(model.classes) else str(tgt),
            "probability": float(probs[tgt]), "layer": layer, "signed": signed,
            "map": {"height": int(m.shape[0]), "width": int(m.shape[1]), "data": _b64(m.tobytes()),
                    "min": float(m.min()), "max": float(m.max())},
            "overlay_png": _rgb_png(_overlay(array, rgba)), "map_png": _rgb_png(rgb)}


def _sanity(state: Explorer, model: Model, image_id: str, method: str) -> dict:
    from convolab.explain.overlay import heatmap
    from convolab.explain.sanity import parameter_randomization
    from convolab.plotting import plt

    _check_classifier(model, "sanity checks")
    _, x = state.image_input(model, image_id)
    with model.lock:
        result = parameter_randomization(model.model, x, method)
    trained, _ = heatmap(result["trained"][0])
    randomized, _ = heatmap(result["randomized"][0])
    fig, axes = plt.subplots(1, 2, figsize=(5.6, 2.9), layout="constrained")
    for ax, m, title in ((axes[0], trained, "trained model"), (axes[1], randomized, "randomized weights")):
        ax.imshow(m, cmap="jet")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{method}: rank correlation {result['mean_correlation']:.2f} ± {result['std_correlation']:.2f} "
                 f"({result['verdict']})", fontsize=9)
    buf = io.BytesIO()
    try:
        fig.savefig(buf, dpi=110, bbox_inches="tight", format="png")
    finally:
        plt.close(fig)
    return {"png": _b64(buf.getvalue()), "method": method, "mean_correlation": result["mean_correlation"],
            "std_correlation": result["std_correlation"], "verdict": result["verdict"]}
