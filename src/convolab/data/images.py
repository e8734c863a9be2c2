"""One image -> one uint8 array, the same way for training folders and for ``predict``.

Every image convolab reads goes through :func:`image_to_array`, so a file given to ``predict`` is
converted, resized and laid out exactly as the training images were.
"""

from __future__ import annotations

import os
import stat
import struct
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["IMAGE_EXTENSIONS", "channels_of_mode", "image_header", "image_to_array", "load_image", "open_image"]

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
    arr = np.asarray(img, dtype=np.uint8)  # read-only view of PIL's buffer: copied below, so callers may write
    return arr[None].copy() if arr.ndim == 2 else arr.transpose(2, 0, 1).copy()


# Pillow warns past Image.MAX_IMAGE_PIXELS (89 M pixels) and raises past twice that; both are refused here.
# Warning filters are process-wide, so the (cheap, header-only) Image.open that may warn is serialised.
_OPEN_LOCK = threading.Lock()


def _check_regular_file(path: Path) -> None:
    """Refuse what is not a non-empty regular file before anything reads it (a named pipe blocks ``open``)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ValueError(f"{path}: is a folder, not an image")
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path}: is not a regular file (a named pipe, socket or device), not an image")
    if st.st_size == 0:
        raise ValueError(f"{path}: is an empty file, not an image")


def _open_lazy(path: Path) -> Image.Image:
    """``Image.open`` (header only) with the checks above and Pillow's decompression-bomb limit as an error."""
    _check_regular_file(path)
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ValueError(f"{path}: refused as a possible decompression bomb ({e})") from None
    except UnidentifiedImageError:
        raise ValueError(f"{path}: not an image file (no format Pillow reads)") from None
    except PermissionError:
        raise PermissionError(f"{path}: no permission to read it") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ValueError(f"{path}: cannot decode ({_one_line(e)})") from None
    if img.width * img.height > (Image.MAX_IMAGE_PIXELS or float("inf")):  # a filter set elsewhere let it pass
        img.close()
        raise ValueError(f"{path}: refused as a possible decompression bomb ({img.width}x{img.height} pixels, "
                         f"more than {Image.MAX_IMAGE_PIXELS:,})")
    return img


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def image_header(path: str | os.PathLike) -> tuple[tuple[int, int], str]:
    """``((H, W), mode)`` of an image file from its header alone, with the checks of :func:`open_image`."""
    with _open_lazy(Path(path)) as img:
        return (img.height, img.width), img.mode


def open_image(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: one line naming the file when it is a folder, a named pipe or other non-regular file, empty,
            a possible decompression bomb (more pixels than Pillow's ``Image.MAX_IMAGE_PIXELS``), not an image,
            truncated or otherwise undecodable.
    """
    path = Path(path)
    img = _open_lazy(path)
    try:
        img.load()  # decode now: truncated files fail here, not later
        return img
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        img.close()
        raise ValueError(f"{path}: refused as a possible decompression bomb ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as e:
        img.close()
        if isinstance(e, PermissionError):
            raise PermissionError(f"{path}: no permission to read it") from None
        raise ValueError(f"{path}: cannot decode ({_one_line(e)})") from None


def load_image(path: str | os.PathLike, size: tuple[int, int], channels: int) -> np.ndarray:
    """Read an image file into a uint8 array (channels, H, W); see :func:`image_to_array`."""
    return image_to_array(open_image(path), size, channels)
