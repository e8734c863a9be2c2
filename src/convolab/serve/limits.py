"""What keeps the explorer up under bad or heavy input: an upload cap, safe image decoding, a bounded compute pool.

- :class:`UploadLimit` (pure ASGI middleware): a request whose ``Content-Length`` exceeds the cap is answered 413
  before its body is read; a body without a length (chunked) is counted as it is read and cut at the cap (413).
- :func:`decode_image`: Pillow ``open`` + ``verify`` then a fresh ``open`` + ``load``, under a pixel limit checked from
  the header before anything is decoded: a decompression bomb is 413, a truncated image 400, a non-image 415.
- :class:`ComputeGate`: N computations at a time in worker threads, a bounded queue behind them; past it, 503 with
  ``Retry-After``. Work that needs no gradient runs under ``torch.inference_mode``.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from PIL import Image, UnidentifiedImageError
from starlette.exceptions import HTTPException

__all__ = ["UploadLimit", "ImageError", "decode_image", "ComputeGate", "Busy", "MAX_PIXELS", "BodyTooLarge"]

MAX_PIXELS = 40_000_000  # an upload with more pixels is refused as a possible decompression bomb
T = TypeVar("T")


class BodyTooLarge(HTTPException):
    """A request body past the upload cap (an ``HTTPException``, so FastAPI's body parsing passes it on as 413)."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body larger than the upload limit of {_mb(limit)} "
                              "(convolab serve --max-upload-mb raises it)")


def _mb(n: int) -> str:
    return f"{n / 2**20:g} MB"


class UploadLimit:
    """ASGI middleware: refuse request bodies larger than ``max_bytes`` (413, ``{"detail": ...}``)."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = None
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    await _send_json(send, 400, "Content-Length is not a number")
                    return
        if length is not None and length > self.max_bytes:
            # answered before a byte of the body is read; the server closes the connection after the response
            await _send_json(send, 413, BodyTooLarge(self.max_bytes).detail, close=True)
            return
        seen = 0
        started = False

        async def counted_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracked_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge as e:  # raised where nothing turned it into a response
            if not started:
                await _send_json(send, 413, e.detail, close=True)


async def _send_json(send, status: int, detail: str, close: bool = False, headers: dict | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        head.append((b"connection", b"close"))
    for k, v in (headers or {}).items():
        head.append((k.lower().encode(), str(v).encode()))
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


class ImageError(ValueError):
    """An upload that is no usable image; ``status`` is the HTTP answer (400, 413 or 415)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# warning filters are process-wide: the header-only Image.open that may warn is serialised
_OPEN_LOCK = threading.Lock()


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _open(data: bytes, max_pixels: int) -> Image.Image:
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(413, f"refused as a possible decompression bomb (more than {max_pixels:,} pixels)") from None
    except UnidentifiedImageError:
        raise ImageError(415, "not an image (no format Pillow reads: send a PNG, JPEG, BMP, GIF, WebP or TIFF)") \
            from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(400, f"cannot decode the image ({_first_line(e)})") from None
    if img.width * img.height > max_pixels:
        raise ImageError(413, f"refused as a possible decompression bomb ({img.width}x{img.height} pixels, more "
                              f"than {max_pixels:,})")
    return img


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The uploaded bytes as a fully decoded Pillow image.

    Raises:
        ImageError: 400 empty, truncated or corrupt; 413 more than ``max_pixels`` pixels (checked from the header,
            before decoding); 415 not an image. One line each.
    """
    if not data:
        raise ImageError(400, "the upload is empty; send an image file")
    img = _open(data, max_pixels)
    try:
        img.verify()  # checks the file's structure (chunk CRCs of a PNG) without decoding pixels
    except Exception as e:  # Pillow raises many types here (SyntaxError, OSError, struct.error ...)
        raise ImageError(400, f"the image is truncated or corrupt ({_first_line(e)})") from None
    img = _open(data, max_pixels)  # verify() leaves the image unusable: open again to decode
    try:
        img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(413, f"refused as a possible decompression bomb (more than {max_pixels:,} pixels)") from None
    except Exception as e:
        raise ImageError(400, f"the image is truncated or corrupt ({_first_line(e)})") from None
    return img


class Busy(Exception):
    """Every compute slot is taken and the queue is full: answer 503 with ``Retry-After``."""


class ComputeGate:
    """At most ``slots`` computations at a time, each in a worker thread; at most ``max_waiting`` requests wait for a
    slot, none longer than ``max_wait`` seconds. Created inside the server's event loop (at the first request)."""

    def __init__(self, slots: int = 2, *, max_waiting: int = 20, max_wait: float = 10.0):
        if slots < 1:
            raise ValueError(f"workers {slots}: expected at least 1 compute slot")
        self.slots = slots
        self.max_waiting = max_waiting
        self.max_wait = max_wait
        self.waiting = 0
        self.busy = 0
        self._sem: asyncio.Semaphore | None = None

    async def run(self, fn: Callable[..., T], *args: Any, grad: bool = False) -> T:
        """``fn(*args)`` in a worker thread once a slot is free (under ``torch.inference_mode`` unless ``grad``).

        Raises:
            Busy: the queue is full, or no slot came free within ``max_wait`` seconds.
        """
        from starlette.concurrency import run_in_threadpool

        if self._sem is None:
            self._sem = asyncio.Semaphore(self.slots)
        if self._sem.locked() and self.waiting >= self.max_waiting:
            raise Busy(f"the server is busy ({self.slots} computations running, {self.waiting} waiting); "
                       "try again in a moment")
        self.waiting += 1
        try:  # (wait_for, not asyncio.timeout: Python 3.10 has no timeout; a permit won at the deadline is kept)
            await asyncio.wait_for(self._sem.acquire(), self.max_wait)
        except asyncio.TimeoutError:
            raise Busy(f"the server is busy (no compute slot came free in {self.max_wait:g} s); try again") from None
        finally:
            self.waiting -= 1
        self.busy += 1
        try:
            return await run_in_threadpool(_call, fn, args, grad)
        finally:
            self.busy -= 1
            self._sem.release()


def _call(fn, args, grad: bool):
    import torch

    if grad:
        return fn(*args)
    with torch.inference_mode():
        return fn(*args)
