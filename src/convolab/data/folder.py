"""Datasets from a folder of images in class subfolders.

Two layouts:

* ``PATH/train/<class>/...`` and ``PATH/test/<class>/...`` (``PATH/val/<class>/...`` optional);
* ``PATH/<class>/...``, split into train and test by a stratified, seeded draw.

The most common image size and channel count across the folder decide the tensor shape; images
that differ are resized/converted to it (and the log says how many). Files that are not readable
images are skipped with a warning naming them.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from convolab.data.images import IMAGE_EXTENSIONS, channels_of_mode, image_to_array

__all__ = ["FolderScan", "scan_folder", "decode_folder"]

log = logging.getLogger(__name__)


@dataclass
class FolderScan:
    """What a first, header-only pass over an image folder found."""

    root: Path
    classes: list[str]
    files: dict[str, list[tuple[Path, int]]]  # split name ("train", "val", "test" or "all") -> (file, label)
    size: tuple[int, int]  # dominant (H, W)
    channels: int  # dominant channel count (1 or 3)
    n_resized: int
    n_converted: int
    bad: list[tuple[Path, str]]  # unreadable files and why

    def all_files(self) -> list[Path]:
        return [p for items in self.files.values() for p, _ in items]


def _list_class_dir(split_dir: Path, classes: list[str]) -> list[tuple[Path, int]]:
    items = []
    for label, name in enumerate(classes):
        d = split_dir / name
        if not d.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(d):
            dirnames[:] = sorted(x for x in dirnames if not x.startswith("."))
            for f in sorted(filenames):
                if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS:
                    items.append((Path(dirpath) / f, label))
    return items


def _class_names(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))


def _header(path: Path) -> tuple[tuple[int, int], str] | str:
    try:
        with Image.open(path) as img:
            return (img.height, img.width), img.mode
    except Exception as e:  # PIL raises many types for bad files
        return f"{type(e).__name__}: {e}"


def scan_folder(root: str | os.PathLike) -> FolderScan:
    """List the images of a class-folder dataset and read their headers (sizes and modes).

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ValueError: no class subfolders or no images.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such folder")
    if not root.is_dir():
        raise ValueError(f"{root}: expected a folder of class subfolders, got a file")
    splits = [s for s in ("train", "val", "test") if (root / s).is_dir()]
    if splits:
        if "train" not in splits:
            raise ValueError(f"{root}: has {'/'.join(splits)}/ but no train/ folder")
        classes = _class_names(root / "train")
        for s in splits[1:]:
            extra = set(_class_names(root / s)) - set(classes)
            if extra:
                raise ValueError(f"{root / s}: classes {sorted(extra)} do not appear in {root / 'train'}")
        files = {s: _list_class_dir(root / s, classes) for s in splits}
    else:
        classes = _class_names(root)
        files = {"all": _list_class_dir(root, classes)}
    if not classes:
        raise ValueError(f"{root}: no class subfolders; expected {root}/<class>/<image> "
                         f"or {root}/train/<class>/<image>")
    if not any(files.values()):
        raise ValueError(f"{root}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in its class folders")

    paths = [p for items in files.values() for p, _ in items]
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        headers = dict(zip(paths, pool.map(_header, paths)))
    bad = [(p, h) for p, h in headers.items() if isinstance(h, str)]
    good = {p: h for p, h in headers.items() if not isinstance(h, str)}
    if not good:
        raise ValueError(f"{root}: none of its {len(paths)} image files could be read")
    size = Counter(h[0] for h in good.values()).most_common(1)[0][0]
    channels = Counter(channels_of_mode(h[1]) for h in good.values()).most_common(1)[0][0]
    target_mode = "L" if channels == 1 else "RGB"
    n_resized = sum(h[0] != size for h in good.values())
    n_converted = sum(h[1] != target_mode for h in good.values())
    bad_set = {p for p, _ in bad}
    files = {s: [(p, y) for p, y in items if p not in bad_set] for s, items in files.items()}
    return FolderScan(root, classes, files, size, channels, n_resized, n_converted, bad)


def _decode_one(args) -> np.ndarray | str:
    path, size, channels = args
    try:
        with Image.open(path) as img:
            img.load()
            return image_to_array(img, size, channels)
    except Exception as e:
        return f"{type(e).__name__}: {e}"


def decode_folder(scan: FolderScan) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Decode every image of a scan into uint8 arrays (N, C, H, W) and int64 labels, per split.

    Files that pass the header check but fail to decode (truncated data) are added to ``scan.bad``.
    """
    out = {}
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        for split, items in scan.files.items():
            arrays = list(pool.map(_decode_one, [(p, scan.size, scan.channels) for p, _ in items]))
            keep = [i for i, a in enumerate(arrays) if not isinstance(a, str)]
            scan.bad.extend((items[i][0], arrays[i]) for i, a in enumerate(arrays) if isinstance(a, str))
            h, w = scan.size
            x = np.stack([arrays[i] for i in keep]) if keep else np.empty((0, scan.channels, h, w), np.uint8)
            y = np.asarray([items[i][1] for i in keep], np.int64)
            out[split] = (x, y)
    return out
