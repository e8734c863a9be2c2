"""One image -> one uint8 array, the same way for training folders and for ``predict``.

Every image convolab reads goes through :func:`image_to_array`, so a file given to ``predict`` is
converted, resized and laid out exactly as the training images were.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["IMAGE_EXTENSIONS", "channels_of_mode", "image_to_array", "load_image", "open_image"]

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"}

# Modes that hold one intensity per pixel (alpha aside): they count as single-channel images.
_GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def channels_of_mode(mode: str) -> int:
    """1 for grayscale PIL modes, 3 for everything else (RGB, RGBA, P, CMYK, YCbCr ...)."""
    return 1 if mode in _GRAY_MODES else 3


def _to_gray_8bit(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        # 16-bit grayscale: keep the top 8 bits (PIL's convert("L") would clip, not scale).
        arr = np.asarray(img, dtype=np.uint16) >> 8
        return Image.fromarray(arr.astype(np.uint8), "L")
    if img.mode in ("I", "F"):
        arr = np.clip(np.asarray(img, dtype=np.float64), 0, 255)
        return Image.fromarray(arr.astype(np.uint8), "L")
    return img.convert("L")


def image_to_array(img: Image.Image, size: tuple[int, int], channels: int) -> np.ndarray:
    """Convert a PIL image to a uint8 array (channels, H, W).

    Colour images become grayscale (ITU-R 601 luma, PIL's ``convert("L")``) when ``channels == 1``;
    grayscale becomes RGB by repetition when ``channels == 3``; alpha is dropped. An image whose
    size differs from ``size`` (H, W) is resized with bilinear interpolation (antialiased).
    """
    if channels == 1:
        img = img if img.mode == "L" else _to_gray_8bit(img)
    elif channels == 3:
        if img.mode != "RGB":
            img = _to_gray_8bit(img).convert("RGB") if img.mode in ("I", "F") or img.mode.startswith("I;16") \
                else img.convert("RGB")
    else:
        raise ValueError(f"channels must be 1 or 3; got {channels}")
    h, w = size
    if img.size != (w, h):
        img = img.resize((w, h), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1).copy()


def open_image(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image file; a ``ValueError`` naming the file when it is not a readable image."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise ValueError(f"{path}: is a folder, not an image")
    try:
        img = Image.open(path)
        img.load()  # decode now: truncated files fail here, not later
        return img
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        reason = "not an image file" if isinstance(e, UnidentifiedImageError) else f"cannot decode ({e})"
        raise ValueError(f"{path}: {reason}") from None


def load_image(path: str | os.PathLike, size: tuple[int, int], channels: int) -> np.ndarray:
    """Read an image file into a uint8 array (channels, H, W); see :func:`image_to_array`."""
    return image_to_array(open_image(path), size, channels)
