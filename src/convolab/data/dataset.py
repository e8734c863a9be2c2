"""``load_dataset``: a named dataset or an image folder -> in-memory uint8 splits.

The dataset contract (DESIGN.md): train/val/test splits as uint8 image tensors (N, C, H, W) and
int64 labels, class names, and per-channel normalisation statistics of the training split.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from convolab.data import cache
from convolab.data.folder import FolderScan, check_memory, decode_folder, scan_folder
from convolab.data.limits import format_bytes, max_data_bytes
from convolab.data.named import DATASETS, DatasetSpec, decode, download, find_files, source_files
from convolab.data.resolve import search_places, user_cache_dir
from convolab.data.split import stratified_split
from convolab.errors import DataNotFoundError, UnknownNameError

__all__ = ["Split", "ImageDataset", "load_dataset", "list_datasets", "locate_dataset", "normalization_stats",
           "canonical_name"]

log = logging.getLogger(__name__)


@dataclass
class Split:
    """One split: uint8 inputs and their targets.

    ``images``: (N, C, H, W) images, or (N, C, T, H, W) clips of T frames. ``labels``: int64 class labels
    (N,), or uint8 class-index masks (N, H, W) for segmentation. ``groups``: for clips cut from longer
    videos, the video each clip came from (N,) int64, so that predictions can be averaged per video.
    """

    images: torch.Tensor
    labels: torch.Tensor
    groups: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class ImageDataset:
    """A loaded dataset (the dataset contract)."""

    name: str  # "fashion-mnist", or the folder's path
    classes: list[str]
    train: Split
    val: Split  # carved from train (may be empty when val_fraction == 0)
    test: Split
    mean: tuple[float, ...]  # per-channel mean of the training split, on the 0..1 scale
    std: tuple[float, ...]  # per-channel standard deviation, same scale
    source: str  # where the data came from (a folder, "scikit-learn", ...)
    # what the targets are: "classification" (a label per image), "segmentation" (a mask per image) or
    # "clips" (a label per clip of frames)
    task: str = "classification"
    ignore_index: int | None = None  # segmentation: the mask value that marks pixels without a class

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_chans(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the images (or of each frame of a clip)."""
        return int(self.train.images.shape[-2]), int(self.train.images.shape[-1])

    @property
    def frames(self) -> int | None:
        """Frames per clip (clips only), else None."""
        return int(self.train.images.shape[2]) if self.train.images.ndim == 5 else None

    @property
    def input_size(self) -> tuple[int, ...]:
        """(C, H, W), or (C, T, H, W) for clips: what a model of this data takes per sample."""
        return tuple(int(v) for v in self.train.images.shape[1:])

    def describe(self) -> str:
        shape = "x".join(str(v) for v in self.input_size)
        what = {"clips": "clips", "segmentation": "images with masks"}.get(self.task, "images")
        return (f"{self.name}: {len(self.train):,} train / {len(self.val):,} val / {len(self.test):,} test {what}, "
                f"{shape}, {self.num_classes} classes (from {self.source})")


def list_datasets() -> list[str]:
    """Names of the built-in datasets (any folder of class subfolders works too)."""
    return sorted(DATASETS)


def normalization_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images (N, C, H, W), on the 0..1 scale.

    Exact and fast: a 256-bin histogram per channel gives the mean and variance without a float
    copy of the dataset.
    """
    if len(images) == 0:
        raise ValueError("cannot compute normalisation statistics of an empty split")
    values = torch.arange(256, dtype=torch.float64)
    means, stds = [], []
    for c in range(images.shape[1]):
        channel = images[:, c].reshape(-1)
        if channel.dtype != torch.uint8:
            channel = channel.to(torch.int64)
        hist = torch.bincount(channel, minlength=256).to(torch.float64)  # uint8 counts directly: no int64 copy
        n = hist.sum()
        mean = (hist * values).sum() / n
        var = (hist * (values - mean) ** 2).sum() / n
        std = var.sqrt().item() if var > 0 else 255.0  # a constant channel: leave it unscaled
        means.append(mean.item() / 255)
        stds.append(std / 255)
    return tuple(means), tuple(stds)


def _square(size) -> tuple[int, ...]:
    return (size, size) if isinstance(size, int) else tuple(size)


def canonical_name(name: str) -> str | None:
    """The built-in dataset ``name`` stands for (aliases, case and ``_`` allowed), or None."""
    return _canonical(name)


def _canonical(name: str) -> str | None:
    key = name.strip().lower().replace("_", "-")
    aliases = {"fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist", "cifar-10": "cifar10",
               "cifar-100": "cifar100", "k-mnist": "kmnist"}
    key = aliases.get(key, key)
    return key if key in DATASETS else None


def _looks_like_path(name: str) -> bool:
    return os.sep in name or "/" in name or name.startswith(".") or name.startswith("~") or Path(name).exists()


def locate_dataset(spec: DatasetSpec, data_dir: str | os.PathLike | None = None) -> tuple[Path | None, list[str]]:
    """The folder holding ``spec``'s files (or None) and the places searched, in order, as text.

    Raises:
        DataNotFoundError: ``data_dir`` is given but is no folder (a typo would otherwise be searched past).
    """
    if data_dir is not None and not Path(data_dir).expanduser().is_dir():
        raise DataNotFoundError(f"--data-dir {data_dir}: no such folder")
    looked = []
    for place in search_places(data_dir, spec.system_dirs):
        looked.append(place.describe())
        if place.path is not None:
            found = find_files(spec, place.path)
            if found is not None:
                return found, looked
    return None, looked


def _not_found(spec: DatasetSpec, looked: list[str], download_error: str | None) -> DataNotFoundError:
    files = ", ".join(f"{f}[.gz]" if spec.kind == "idx" else f for f in spec.files)
    ways = list(spec.how_to_get)
    ways.append(f"download: `convolab datasets --download {spec.name}` (needs internet; torchvision fetches it)")
    ways.append(f"--data-dir DIR (or $CONVOLAB_DATA) pointing to a folder with {files}")
    dl = f"download failed ({download_error})" if download_error else "download not attempted"
    return DataNotFoundError(
        f"dataset {spec.name!r} not found. Looked in: {'; '.join(looked)}; {dl}. To get it: " + "; or ".join(ways)
    )


def _load_named(spec: DatasetSpec, data_dir, download_ok: bool, use_cache: bool):
    if data_dir is not None and not Path(data_dir).expanduser().is_dir():  # a typo, even where it is not needed
        raise DataNotFoundError(f"--data-dir {data_dir}: no such folder")
    if spec.kind == "digits":
        tr_x, tr_y, te_x, te_y = decode(spec, None)
        return tr_x, tr_y, te_x, te_y, list(spec.classes), "scikit-learn (sklearn.datasets.load_digits)"
    folder, looked = locate_dataset(spec, data_dir)
    if folder is None:
        if not download_ok:
            raise _not_found(spec, looked, None)
        try:
            folder = download(spec, user_cache_dir())
        except Exception as e:  # download() says why in one line (e.reason); anything else is passed on briefly
            reason = getattr(e, "reason", None) or f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            raise _not_found(spec, looked, reason) from None
    key = cache.fingerprint(spec.name, source_files(spec, folder)) if use_cache else None
    hit = cache.load_cached(spec.name, key) if key else None
    if hit is not None:
        a, _ = hit
        return a["train_x"], a["train_y"], a["test_x"], a["test_y"], list(spec.classes), str(folder)
    log.info("decoding %s from %s", spec.name, folder)
    tr_x, tr_y, te_x, te_y = decode(spec, folder)
    if key:
        cache.save_cached(spec.name, key, dict(train_x=tr_x, train_y=tr_y, test_x=te_x, test_y=te_y), {})
    return tr_x, tr_y, te_x, te_y, list(spec.classes), str(folder)


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
    from convolab.data.stream import FileImages, default_workers, measure, streamed_stats  # (builds on this module)

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
    from convolab.data import clips, segmentation  # (they build on this module)

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
        tr_x, tr_y, te_x, te_y, classes, source = _load_named(spec, data_dir, download, cache)
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
