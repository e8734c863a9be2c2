"""Datasets from a folder of images in class subfolders.

Two layouts:

* ``PATH/train/<class>/...`` and ``PATH/test/<class>/...`` (``PATH/val/<class>/...`` optional);
* ``PATH/<class>/...``, split into train and test by a stratified, seeded draw.

The most common image size (or the ``image_size`` asked for) and channel count across the folder
decide the tensor shape; images that differ are resized/converted to it (and the log says how many).
Files that are not readable images (named pipes, empty or truncated files, decompression bombs ...)
are skipped with a warning naming them.

Before anything is decoded, :func:`check_memory` says whether the decoded tensors fit the memory limit
(:mod:`convolab.data.limits`, 2 GiB by default): a folder that does not is streamed from disk
(:mod:`convolab.data.stream`), or refused where the caller cannot stream. A folder of large photos (longer
side over ``LARGE_SIDE`` pixels) is refused unless an ``image_size`` is given: training at photo resolution
needs gigabytes per batch, streamed or not. The messages say how much it would take and how to downscale.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convolab.data.images import IMAGE_EXTENSIONS, channels_of_mode, image_header, image_to_array, open_image
from convolab.data.limits import format_bytes, max_data_bytes

__all__ = ["FolderScan", "scan_folder", "decode_folder", "decode_file", "check_memory", "LARGE_SIDE"]

# Folder images with a longer side above this are "photos": refused at their own size unless asked for.
LARGE_SIDE = 1024

log = logging.getLogger(__name__)


@dataclass
class FolderScan:
    """What a first, header-only pass over an image folder found."""

    root: Path
    classes: list[str]
    files: dict[str, list[tuple[Path, int]]]  # split name ("train", "val", "test" or "all") -> (file, label)
    size: tuple[int, int]  # (H, W) every image is decoded to: image_size if given, else the dominant size
    native_size: tuple[int, int]  # the dominant (H, W) of the files themselves
    channels: int  # dominant channel count (1 or 3)
    n_resized: int
    n_converted: int
    bad: list[tuple[Path, str]]  # unreadable files and why

    size_given: bool = False  # the size was asked for (image_size), not taken from the files

    def all_files(self) -> list[Path]:
        return [p for items in self.files.values() for p, _ in items]

    def num_images(self) -> int:
        return sum(len(items) for items in self.files.values())

    def decoded_bytes(self) -> int:
        """Bytes of the decoded uint8 tensors (N x C x H x W)."""
        h, w = self.size
        return self.num_images() * self.channels * h * w


def _list_class_dir(split_dir: Path, classes: list[str],
                    extensions: frozenset[str] | set[str] = IMAGE_EXTENSIONS) -> list[tuple[Path, int]]:
    items = []
    for label, name in enumerate(classes):
        d = split_dir / name
        if not d.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(d):
            dirnames[:] = sorted(x for x in dirnames if not x.startswith("."))
            for f in sorted(filenames):
                if not f.startswith(".") and Path(f).suffix.lower() in extensions:
                    items.append((Path(dirpath) / f, label))
    return items


def _class_names(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))


def list_class_folders(root: Path, extensions: frozenset[str] | set[str],
                       what: str) -> tuple[list[str], dict[str, list[tuple[Path, int]]]]:
    """The classes and files of ``ROOT/<class>/`` or ``ROOT/train|val|test/<class>/`` (image and video folders).

    Args:
        extensions: the file suffixes to list (lower case, with the dot).
        what: ``"image"`` or ``"video"``, for the messages.

    Returns:
        the class names (train's subfolders, sorted) and ``{split: [(path, label), ...]}`` (``"all"`` when
        there are no split folders).

    Raises:
        FileNotFoundError: no such folder.
        ValueError: a file, no class subfolders, no files, or a split folder with classes train/ lacks.
    """
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such folder")
    if not root.is_dir():
        raise ValueError(f"{root}: expected a folder of class subfolders of {what}s, got a file")
    splits = [s for s in ("train", "val", "test") if (root / s).is_dir()]
    if splits:
        if "train" not in splits:
            raise ValueError(f"{root}: has {'/'.join(splits)}/ but no train/ folder")
        classes = _class_names(root / "train")
        for s in splits[1:]:
            extra = set(_class_names(root / s)) - set(classes)
            if extra:
                raise ValueError(f"{root / s}: classes {sorted(extra)} do not appear in {root / 'train'}")
        files = {s: _list_class_dir(root / s, classes, extensions) for s in splits}
    else:
        classes = _class_names(root)
        files = {"all": _list_class_dir(root, classes, extensions)}
    if not classes:
        raise ValueError(f"{root}: no class subfolders; expected {root}/<class>/<{what}> "
                         f"or {root}/train/<class>/<{what}>")
    if not any(files.values()):
        raise ValueError(f"{root}: no {what} files ({', '.join(sorted(extensions))}) in its class folders")
    return classes, files


def _reason(path: Path, e: Exception) -> str:
    """The error's text without the leading file name (the warning names the file once)."""
    text = str(e)
    return text.removeprefix(f"{path}: ") or type(e).__name__


def _header(path: Path) -> tuple[tuple[int, int], str] | str:
    try:
        return image_header(path)
    except (ValueError, OSError) as e:  # image_header gives one line per bad file
        return _reason(path, e)


def _check_size(image_size) -> tuple[int, int] | None:
    if image_size is None:
        return None
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(v, int) and 1 <= v <= 65535 for v in size):
        raise ValueError(f"image_size must be an int or (height, width) of positive ints; got {image_size!r}")
    return size  # type: ignore[return-value]


def scan_folder(root: str | os.PathLike, image_size: int | tuple[int, int] | None = None) -> FolderScan:
    """List the images of a class-folder dataset and read their headers (sizes and modes).

    Args:
        image_size: (H, W) (or one side for square images) to decode every image to; default: the most
            common size among the files.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ValueError: no class subfolders or no images.
    """
    size_given = _check_size(image_size)
    root = Path(root).expanduser()
    classes, files = list_class_folders(root, IMAGE_EXTENSIONS, "image")

    paths = [p for items in files.values() for p, _ in items]
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        headers = dict(zip(paths, pool.map(_header, paths)))
    bad = [(p, h) for p, h in headers.items() if isinstance(h, str)]
    good = {p: h for p, h in headers.items() if not isinstance(h, str)}
    if not good:
        raise ValueError(f"{root}: none of its {len(paths)} image files could be read")
    native = Counter(h[0] for h in good.values()).most_common(1)[0][0]
    size = size_given or native
    channels = Counter(channels_of_mode(h[1]) for h in good.values()).most_common(1)[0][0]
    target_mode = "L" if channels == 1 else "RGB"
    n_resized = sum(h[0] != size for h in good.values())
    n_converted = sum(h[1] != target_mode for h in good.values())
    bad_set = {p for p, _ in bad}
    files = {s: [(p, y) for p, y in items if p not in bad_set] for s, items in files.items()}
    return FolderScan(root, classes, files, size, native, channels, n_resized, n_converted, bad,
                      size_given=size_given is not None)


def check_memory(scan: FolderScan, max_bytes: int | None = None, *, stream: bool = False) -> bool:
    """Whether a folder's decoded tensors fit in memory; refuse, before decoding, what cannot work at all.

    Args:
        max_bytes: the limit on the decoded tensors (N x C x H x W bytes); default
            ``$CONVOLAB_MAX_DATA_BYTES`` or 2 GiB.
        stream: the caller can stream a folder that does not fit (then False is returned, not an error).

    Returns:
        True when the decoded tensors fit the limit (the in-memory path), False when they must be streamed.

    Raises:
        ValueError: one line with the figures and how to proceed: a folder of large photos without an
            ``image_size``, or (``stream=False``) a folder over the limit.
    """
    limit = max_data_bytes() if max_bytes is None else max_bytes
    h, w = scan.size
    n, c = scan.num_images(), scan.channels
    need = scan.decoded_bytes()
    if not scan.size_given and max(h, w) > LARGE_SIDE:
        small = _fitting_size(scan.size, min(256, LARGE_SIDE))
        raise ValueError(
            f"{scan.root}: its images are mostly {h}x{w} pixels (large photos): decoded they take "
            f"{format_bytes(need)} for {n:,} images, and training at that size needs gigabytes per batch; "
            f"downscale them with image_size (convolab train --image-size {small[0]}x{small[1]}), or give "
            f"--image-size {h}x{w} to train at full size")
    if need <= limit:
        return True
    if stream:
        return False
    # the largest size with the same aspect ratio that fits the limit
    side = int(max(h, w) * (limit / max(need, 1)) ** 0.5)
    fit = _fitting_size(scan.size, max(side, 1))
    raise ValueError(
        f"{scan.root}: {n:,} images of {c}x{h}x{w} would take {format_bytes(need)} in memory, more than the "
        f"limit of {format_bytes(limit)} ($CONVOLAB_MAX_DATA_BYTES); downscale them with image_size "
        f"(convolab train --image-size {fit[0]}x{fit[1]} fits), or raise $CONVOLAB_MAX_DATA_BYTES")


def _fitting_size(size: tuple[int, int], longer: int) -> tuple[int, int]:
    """(H, W) scaled so that the longer side is ``longer`` (never larger than ``size``)."""
    h, w = size
    scale = min(1.0, longer / max(h, w))
    return max(1, int(h * scale)), max(1, int(w * scale))


def decode_file(path: str | os.PathLike, size: tuple[int, int], channels: int) -> np.ndarray:
    """One image file -> uint8 (channels, H, W), as every folder image is decoded (in memory or streamed).

    Raises:
        FileNotFoundError, ValueError, OSError: one line naming the file (see :func:`open_image`).
    """
    with open_image(path) as img:
        return image_to_array(img, size, channels)


def _decode_one(args) -> np.ndarray | str:
    path, size, channels = args
    try:
        return decode_file(path, size, channels)
    except (ValueError, OSError) as e:
        return _reason(path, e)


def decode_folder(scan: FolderScan) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Decode every image of a scan into uint8 arrays (N, C, H, W) and int64 labels, per split.

    Files that pass the header check but fail to decode (truncated data) are added to ``scan.bad``.
    Each image is written into one preallocated array as it is decoded (no list of copies to stack).
    """
    out = {}
    h, w = scan.size
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        for split, items in scan.files.items():
            x = np.empty((len(items), scan.channels, h, w), np.uint8)  # (N, C, H, W)
            ok = np.zeros(len(items), bool)
            jobs = ((p, scan.size, scan.channels) for p, _ in items)
            for i, a in enumerate(pool.map(_decode_one, jobs)):
                if isinstance(a, str):
                    scan.bad.append((items[i][0], a))
                else:
                    x[i], ok[i] = a, True
            y = np.asarray([label for _, label in items], np.int64)
            out[split] = (x, y) if ok.all() else (x[ok], y[ok])
    return out
