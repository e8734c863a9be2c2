"""Reading and writing video files with PyAV (FFmpeg's libraries), as uint8 frames (T, H, W, C).

torchvision.io's video functions are deprecated and themselves call PyAV, so convolab calls PyAV directly.
Frames come out as RGB (C = 3), or grey (C = 1) for streams stored grey (``gray`` pixel formats).

Writing picks the codec from the file's extension: ``.mkv`` and ``.avi`` get FFV1 (lossless: frames read back
bit-exact, in RGB as ``bgr0`` or grey as ``gray``); ``.mp4`` and ``.mov`` get H.264 at ``qp 0``
(lossless in YUV 4:4:4, but the RGB <-> YUV conversion rounds: values differ by up to 2 levels); ``.webm``
gets VP9 (lossless in YUV, the same rounding). Grey frames stay grey only in FFV1 files; the others store them
as RGB (they read back with C = 3). Files are written atomically (:mod:`convolab.atomic`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from convolab.atomic import atomic_path

__all__ = ["VIDEO_EXTENSIONS", "VideoInfo", "probe_video", "iter_frames", "read_video", "write_video"]

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mkv", ".webm", ".mov"})

# extension -> (container format, codec, pixel format for RGB, for grey (None: written as RGB), codec options)
_WRITERS = {
    ".mkv": ("matroska", "ffv1", "bgr0", "gray", {}),
    ".avi": ("avi", "ffv1", "bgr0", "gray", {}),
    ".mp4": ("mp4", "libx264", "yuv444p", None, {"qp": "0", "preset": "veryfast"}),
    ".mov": ("mov", "libx264", "yuv444p", None, {"qp": "0", "preset": "veryfast"}),
    ".webm": ("webm", "libvpx-vp9", "yuv444p", None, {"lossless": "1"}),
}


@dataclass(frozen=True)
class VideoInfo:
    """What a video file's header says."""

    size: tuple[int, int]  # (H, W)
    channels: int  # 1 for grey pixel formats, else 3
    frames: int  # frame count from the header; 0 when the container does not record it (Matroska)


def _reason(e: Exception) -> str:
    """PyAV's one-line reason, without the file name it repeats."""
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    text = re.sub(r"^\[Errno -?\d+\] ", "", text)  # FFmpeg's error number means nothing to a user
    return text.split(": '", 1)[0] if ": '" in text else text


def _open(path: Path):
    import av

    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not path.is_file():
        raise ValueError(f"{path}: not a regular file")
    try:
        container = av.open(str(path))
    except av.FFmpegError as e:
        raise ValueError(f"{path}: cannot decode video ({_reason(e)})") from None
    if not container.streams.video:
        container.close()
        raise ValueError(f"{path}: cannot decode video (no video stream)")
    return container


def _channels(pix_fmt: str | None) -> int:
    return 1 if pix_fmt and pix_fmt.startswith(("gray", "ya")) else 3


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Read a video's header only: its frame size, channels and (when recorded) frame count.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a decodable video (one line naming the file and PyAV's reason).
    """
    path = Path(path)
    with _open(path) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        if not ctx.width or not ctx.height:
            raise ValueError(f"{path}: cannot decode video (its header gives no frame size)")
        return VideoInfo((int(ctx.height), int(ctx.width)), _channels(ctx.pix_fmt), int(stream.frames or 0))


def iter_frames(path: str | os.PathLike, channels: int | None = None) -> Iterator[np.ndarray]:
    """Decode a video frame by frame: uint8 arrays (H, W, C), C = ``channels`` (default: the stream's).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file (or a frame in it) cannot be decoded.
    """
    import av

    path = Path(path)
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame threads: FFmpeg decodes ahead while Python consumes
        c = channels or _channels(stream.codec_context.pix_fmt)
        fmt = "gray" if c == 1 else "rgb24"
        try:
            for frame in container.decode(stream):
                a = frame.to_ndarray(format=fmt)  # (H, W) grey or (H, W, 3) RGB
                yield a[:, :, None] if a.ndim == 2 else a
        except av.FFmpegError as e:
            raise ValueError(f"{path}: cannot decode video ({_reason(e)})") from None


def read_video(path: str | os.PathLike, *, max_frames: int | None = None, channels: int | None = None
               ) -> torch.Tensor:
    """Decode a video file into uint8 frames (T, H, W, C).

    Args:
        max_frames: stop after this many frames (the rest is not decoded).
        channels: 1 (grey) or 3 (RGB); default: grey for grey streams, else RGB.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file cannot be decoded (one line naming it and PyAV's reason), or holds no frames.
    """
    frames = []
    for a in iter_frames(path, channels):
        if max_frames is not None and len(frames) >= max_frames:
            break
        frames.append(a)
    if not frames:
        raise ValueError(f"{path}: cannot decode video (no frames)")
    return torch.from_numpy(np.stack(frames))  # (T, H, W, C)


def write_video(path: str | os.PathLike, frames: torch.Tensor | np.ndarray, fps: float = 25) -> None:
    """Write uint8 frames (T, H, W, C), C = 1 or 3, as a video file; the codec follows the extension.

    ``.mkv``/``.avi`` (FFV1) are lossless; ``.mp4``/``.mov`` (H.264, qp 0, 4:4:4) are lossless up to the
    RGB <-> YUV rounding (grey frames are exact); ``.webm`` (VP9 lossless in YUV) likewise. H.264 needs even
    sides only in 4:2:0, which is not used here. Grey frames (C = 1) are stored grey in FFV1 and as RGB otherwise.

    Raises:
        ValueError: an unsupported extension, or frames that are not uint8 (T, H, W, 1 | 3).
    """
    import av

    path = Path(path)
    ext = path.suffix.lower()
    if ext not in _WRITERS:
        raise ValueError(f"{path}: cannot write a video with extension {ext!r}; use one of "
                         f"{', '.join(sorted(_WRITERS))}")
    a = frames.numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if a.dtype != np.uint8 or a.ndim != 4 or a.shape[-1] not in (1, 3) or a.shape[0] == 0:
        raise ValueError(f"{path}: expected uint8 frames (T, H, W, 1 or 3) with T >= 1; got {a.dtype} "
                         f"{tuple(a.shape)}")
    fmt, codec, rgb_pix, grey_pix, options = _WRITERS[ext]
    if a.shape[-1] == 1 and grey_pix is None:
        a = np.repeat(a, 3, axis=-1)  # (T, H, W, 3): this codec's grey formats are not lossless here
    grey = a.shape[-1] == 1
    t, h, w, _ = a.shape
    with atomic_path(path) as tmp:
        # the temporary name ends in .tmp, so the container format is named rather than guessed
        with av.open(str(tmp), "w", format=fmt) as container:
            stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height = w, h
            stream.pix_fmt = grey_pix if grey else rgb_pix
            stream.options = dict(options)
            for i in range(t):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(a[i, :, :, 0] if grey else a[i]),
                                                   format="gray" if grey else "rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode())  # flush the encoder's delayed frames
