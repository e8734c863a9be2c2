"""``load_dataset``: a named dataset or an image folder -> in-memory uint8 splits.

The dataset contract (DESIGN.md): train/val/test splits as uint8 image tensors (N, C, H, W) and
int64 labels, class names, and per-channel normalisation statistics of the training split.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from convolab.data import cache, clips, segmentation
from convolab.data.base import ImageDataset, Split, normalization_stats
from convolab.data.builtin import _canonical, canonical_name, load_builtin, locate_dataset
from convolab.data.folder import FolderScan, check_memory, decode_folder, scan_folder
from convolab.data.limits import format_bytes, max_data_bytes
from convolab.data.named import DATASETS
from convolab.data.split import stratified_split
from convolab.data.stream import FileImages, default_workers, measure, streamed_stats
from convolab.errors import UnknownNameError

__all__ = ["Split", "ImageDataset", "load_dataset", "list_datasets", "locate_dataset", "normalization_stats",
           "canonical_name"]

log = logging.getLogger(__name__)


def list_datasets() -> list[str]:
    """Names of the built-in datasets (any folder of class subfolders works too)."""
    return sorted(DATASETS)


def _square(size) -> tuple[int, ...]:
    return (size, size) if isinstance(size, int) else tuple(size)


def _looks_like_path(name: str) -> bool:
    return os.sep in name or "/" in name or name.startswith(".") or name.startswith("~") or Path(name).exists()


def _describe_scan(scan: FolderScan) -> None:
    h, w = scan.size
    log.info("image folder %s: %d classes; dominant size %dx%d, %d channel%s -> images are %dx%dx%d "
             "(%d resized, %d converted)", scan.root, len(scan.classes), h, w, scan.channels,
             "" if scan.channels == 1 else "s", scan.channels, h, w, scan.n_resized, scan.n_converted)


def _warn_bad(bad: list[str]) -> None:
    if bad:
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        log.warning("skipped %d unreadable image file%s: %s", len(bad), "" if len(bad) == 1 else "s", shown)


def _take(x, idx):
    """Rows ``idx`` of decoded images (an array) or of streamed ones (FileImages: still undecoded)."""
    return x.subset(idx) if hasattr(x, "subset") else x[idx]


def _split_folder(arrays: dict, scan: FolderScan, test_fraction: float, seed: int):
    """A folder's train, test and (its own val/, else None) splits as (images, labels) pairs, from its
    train/val/test (or "all") parts — the same draws for decoded arrays and for streamed files."""
    val = (arrays["val_x"], arrays["val_y"]) if "val_x" in arrays else None
    if "all_x" in arrays:
        x, y = arrays["all_x"], arrays["all_y"]
        tr_idx, te_idx = stratified_split(torch.from_numpy(y), test_fraction, seed=seed)
        tr = (_take(x, tr_idx), y[tr_idx])
        te = (_take(x, te_idx), y[te_idx])
        log.info("no train/ and test/ folders: holding out a stratified %.0f%% of %s as the test split",
                 100 * test_fraction, scan.root)
    else:
        tr = (arrays["train_x"], arrays["train_y"])
        if "test_x" in arrays:
            te = (arrays["test_x"], arrays["test_y"])
        else:
            tr_idx, te_idx = stratified_split(torch.from_numpy(tr[1]), test_fraction, seed=seed)
            tr, te = (_take(tr[0], tr_idx), tr[1][tr_idx]), (_take(tr[0], te_idx), tr[1][te_idx])
            log.info("no test/ folder: holding out a stratified %.0f%% of train/ as the test split",
                     100 * test_fraction)
    return tr, te, val


def _load_folder(scan: FolderScan, use_cache: bool, test_fraction: float, seed: int):
    """The in-memory path: decode the folder (or read it from the decode cache) into uint8 arrays."""
    h, w = scan.size
    key = cache.fingerprint(f"folder:{scan.root.resolve()}", scan.all_files(), extra=f"{h}x{w}x{scan.channels}")
    hit = cache.load_cached(f"folder-{scan.root.name}", key) if use_cache else None
    _describe_scan(scan)
    if hit is not None:
        arrays, meta = hit
        bad = meta.get("bad", [])
    else:
        decoded = decode_folder(scan)
        arrays = {}
        for split, (x, y) in decoded.items():
            arrays[f"{split}_x"], arrays[f"{split}_y"] = x, y
        bad = [f"{p} ({why})" for p, why in scan.bad]
        if use_cache:
            cache.save_cached(f"folder-{scan.root.name}", key, arrays, {"bad": bad})
    _warn_bad(bad)
    tr, te, val = _split_folder(arrays, scan, test_fraction, seed)
    return tr[0], tr[1], te[0], te[1], scan.classes, str(scan.root), val


def _load_streamed(scan: FolderScan, display: str, val_fraction: float, test_fraction: float, seed: int,
                   limit: int) -> ImageDataset:
    """The streaming path: splits of :class:`~convolab.data.stream.FileImages` (files, decoded per batch).

    One pass decodes every file in worker processes (without keeping the pixels) to leave out the files that
    fail to decode — before the splits are drawn, as on the in-memory path, so both paths draw the same
    splits — and to record each image's pixel sums, from which the training split's statistics are exact.
    The decode cache is not used: it would hold the very tensors that do not fit.
    """

    h, w = scan.size
    log.info("image folder %s: %d images of %dx%dx%d take %s decoded, more than the in-memory limit of %s "
             "(max_bytes / $CONVOLAB_MAX_DATA_BYTES): streaming them from disk, decoded each epoch by %d worker "
             "process%s", scan.root, scan.num_images(), scan.channels, h, w, format_bytes(scan.decoded_bytes()),
             format_bytes(limit), default_workers(), "" if default_workers() == 1 else "es")
    _describe_scan(scan)
    arrays = {}
    for split, items in scan.files.items():
        images, keep, bad = measure(FileImages([p for p, _ in items], scan.size, scan.channels))
        scan.bad.extend(bad)
        arrays[f"{split}_x"] = images
        arrays[f"{split}_y"] = np.asarray([label for _, label in items], np.int64)[keep]
    _warn_bad([f"{p} ({why})" for p, why in scan.bad])
    tr, te, val = _split_folder(arrays, scan, test_fraction, seed)
    _check_splits(display, scan.classes, tr[0], tr[1], te[0], te[1], folder=True)
    if val is not None:
        train = Split(tr[0], torch.from_numpy(tr[1]))
        val_split = Split(val[0], torch.from_numpy(val[1]))
    else:
        keep, held = stratified_split(torch.from_numpy(tr[1]), val_fraction, seed=seed)  # as load_dataset's
        train = Split(tr[0].subset(keep), torch.from_numpy(tr[1][keep]))
        val_split = Split(tr[0].subset(held), torch.from_numpy(tr[1][held]))
    if len(train) == 0:
        raise ValueError(f"{display}: the training split is empty")
    mean, std = streamed_stats(train.images)
    ds = ImageDataset(display, list(scan.classes), train, val_split, Split(te[0], torch.from_numpy(te[1])), mean, std,
                      str(scan.root))
    log.info("%s (streamed from disk)", ds.describe())
    return ds


def _check_splits(display: str, classes: list[str], tr_x, tr_y, te_x, te_y, folder: bool) -> None:
    """Refuse, before any training, splits a classifier cannot be trained or measured on (one line each)."""
    if len(classes) < 2:
        what = f"one class folder ({classes[0]!r})" if folder and classes else f"{len(classes)} class"
        raise ValueError(f"{display}: has only {what}; a classifier needs at least two classes"
                         + (" (one subfolder of images per class)" if folder else ""))
    for split, x, y in (("train", tr_x, tr_y), ("test", te_x, te_y)):
        if y.ndim != 1 or len(y) != len(x):
            raise ValueError(f"{display}: the {split} labels have shape {tuple(y.shape)}; expected one label "
                             f"per image ({len(x)},)")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(classes)):
            bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
            raise ValueError(f"{display}: the {split} labels hold {bad}, outside the {len(classes)} classes "
                             f"(expected 0..{len(classes) - 1})")
    if tuple(tr_x.shape[1:]) != tuple(te_x.shape[1:]):
        shape = "x".join(str(v) for v in tr_x.shape[1:])
        raise ValueError(f"{display}: the train images are {shape} but the test images are "
                         f"{'x'.join(str(v) for v in te_x.shape[1:])}; both splits need the same size")
    present = np.unique(np.asarray(tr_y))
    if len(tr_y) and len(present) < 2:
        raise ValueError(f"{display}: every training image is of class {classes[int(present[0])]!r}; "
                         f"a classifier needs images of at least two classes")
    if len(te_y) == 0:
        how = ("put images in its test/<class>/ folders, or remove test/ to hold out a share of train/"
               if folder else "the test files hold no images")
        raise ValueError(f"{display}: the test split is empty, so accuracy could not be measured; {how}")


def load_dataset(
    name_or_path: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    download: bool = True,
    cache: bool = True,
    test_fraction: float = 0.2,
    image_size: int | tuple[int, int] | None = None,
    max_bytes: int | None = None,
    frames: int | None = None,
) -> ImageDataset:
    """Load a named dataset or an image folder into memory.

    Args:
        name_or_path: ``fashion-mnist``, ``mnist``, ``kmnist``, ``cifar10``, ``cifar100``, ``svhn``,
            ``digits``, or a folder of class subfolders (see :mod:`convolab.data.folder`).
        data_dir: searched first for named datasets (then ``$CONVOLAB_DATA``, the user cache,
            system copies, and finally a torchvision download into the user cache).
        val_fraction: share of the training split held out for validation (stratified, seeded),
            unless the folder has its own ``val/``.
        seed: seed of the validation (and folder test) split.
        download: allow the torchvision download when the data is nowhere on disk.
        cache: keep decoded tensors in the user cache (``decoded/``) and reuse them.
        test_fraction: share held out as test for a folder with no ``test/``.
        image_size: (H, W), or one side, every image of a folder is resized to (default: the folder's most
            common size; a folder of photos larger than :data:`convolab.data.folder.LARGE_SIDE` needs one).
            A named dataset accepts only its own size.
        max_bytes: the most a folder's decoded images may take in memory (default
            ``$CONVOLAB_MAX_DATA_BYTES`` or 2 GiB, see :mod:`convolab.data.limits`): a folder whose decoded
            estimate (N x C x H x W bytes) is larger is streamed from disk instead — its splits' ``images`` are
            :class:`~convolab.data.stream.FileImages`, served by ``convolab.data.stream.make_loader``.
        frames: frames per clip (T), for video datasets and folders of videos (None: the dataset's own).

    Segmentation data (a folder of ``images/`` and ``masks/``, or a named segmentation dataset) loads
    through :mod:`convolab.data.segmentation`, video data through :mod:`convolab.data.clips`; the result
    says which in ``task``.

    Raises:
        UnknownNameError: not a dataset name and not an existing path.
        DataNotFoundError: a named dataset found nowhere (the message lists every place searched).
        ValueError: a folder without usable images or of large photos (see ``image_size``),
            a bad fraction, fewer than two classes, labels outside the classes, train and test images of
            different sizes, or an empty test split — refused before any training.
    """
    name = os.fspath(name_or_path)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1); got {val_fraction}")

    common = dict(data_dir=data_dir, val_fraction=val_fraction, seed=seed, download=download, cache=cache,
                  test_fraction=test_fraction, image_size=image_size, max_bytes=max_bytes)
    if segmentation.is_segmentation_source(name):
        return segmentation.load_segmentation(name, **common)
    if clips.is_clip_source(name):
        return clips.load_clips(name, frames=frames, **common)
    canonical = _canonical(name)
    val = None
    if canonical is not None:
        spec = DATASETS[canonical]
        if image_size is not None and _square(image_size) != tuple(spec.image_size):
            h, w = spec.image_size
            raise ValueError(f"image_size {image_size!r}: the {canonical} images are {h}x{w}; resizing applies to "
                             f"image folders only")
        tr_x, tr_y, te_x, te_y, classes, source = load_builtin(spec, data_dir, download, cache)
        display = canonical
    elif _looks_like_path(name):
        display = str(Path(name).expanduser())
        scan = scan_folder(name, image_size)
        limit = max_data_bytes() if max_bytes is None else max_bytes
        if not check_memory(scan, limit, stream=True):  # before anything is decoded or read from the cache
            return _load_streamed(scan, display, val_fraction, test_fraction, seed, limit)
        tr_x, tr_y, te_x, te_y, classes, source, val = _load_folder(scan, cache, test_fraction, seed)
    else:
        raise UnknownNameError("dataset", name, DATASETS,
                               hint="or give a path to a folder of class subfolders; `convolab datasets` lists them")
    _check_splits(display, list(classes), np.asarray(tr_x), np.asarray(tr_y), np.asarray(te_x), np.asarray(te_y),
                  folder=canonical is None)
    tr_x, tr_y = torch.from_numpy(np.asarray(tr_x)), torch.from_numpy(np.asarray(tr_y))
    if val is not None:
        train = Split(tr_x, tr_y)
        val_split = Split(torch.from_numpy(val[0]), torch.from_numpy(val[1]))
    else:
        keep, held = stratified_split(tr_y, val_fraction, seed=seed)
        train = Split(tr_x[keep], tr_y[keep])
        val_split = Split(tr_x[held], tr_y[held])
    test = Split(torch.from_numpy(np.asarray(te_x)), torch.from_numpy(np.asarray(te_y)))
    if len(train) == 0:
        raise ValueError(f"{display}: the training split is empty")
    mean, std = normalization_stats(train.images)
    ds = ImageDataset(display, list(classes), train, val_split, test, mean, std, source)
    log.info("%s", ds.describe())
    return ds
