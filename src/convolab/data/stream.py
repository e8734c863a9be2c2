"""The streaming path: image folders larger than the memory budget, decoded from disk in worker processes.

An image folder whose decoded size (N x C x H x W bytes) exceeds the memory limit (``max_bytes``,
:mod:`convolab.data.limits`) loads as splits whose ``images`` are a :class:`FileImages` — the list of files and
the size they decode to — instead of a uint8 tensor. :class:`StreamLoader` serves them with
:class:`~convolab.data.loader.DeviceLoader`'s interface and semantics: the same order for the same seed (one
``torch.randperm`` per epoch on a CPU generator), the same slice of each batch per process under DDP, the same
resume point from ``state_dict`` plus the number of batches consumed, the same normalisation and memory format.
Only where the pixels come from differs: a torch ``DataLoader`` whose worker processes decode each batch's files
with the function the in-memory path decodes with (:func:`convolab.data.folder.decode_file`), so the uint8
pixels — and therefore the batches — are identical.

:func:`make_loader` picks the loader by the type of ``split.images``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from convolab.data.base import Split
from convolab.data.folder import _decode_one, decode_file
from convolab.data.loader import DeviceLoader, Normalizer, memory_format

__all__ = ["FileImages", "StreamLoader", "make_loader", "close_loaders", "measure", "streamed_stats", "default_workers"]

log = logging.getLogger(__name__)

def _own_generator() -> torch.Generator:
    """A DataLoader's own generator: each DataLoader iterator draws its workers' base seed from its generator, and
    without one from torch's global generator — which would move the model's initialisation, dropout and every
    other global draw of a streamed run away from the in-memory run's (and a resumed run's away from the
    uninterrupted one's). Decoding draws nothing, so a fixed seed serves."""
    return torch.Generator().manual_seed(0)


# Files decoded per task of the measuring pass: large enough to amortise the inter-process transfer,
# small enough to keep every worker busy until the end.
_MEASURE_CHUNK = 64


def default_workers(world_size: int = 1) -> int:
    """Decoding processes per training process: the machine's cores shared among the ``world_size`` processes."""
    return max(1, min(16, (os.cpu_count() or 1) // max(1, world_size)))


class FileImages:
    """Images that stay on disk until indexed: one split's files and the size they decode to.

    Stands in for the uint8 tensor (N, C, H, W) of the in-memory path where the data layer reads it (``len``,
    ``shape``, ``dtype``, ``ndim``); indexing decodes those files exactly as
    :func:`convolab.data.folder.decode_folder` does (same resize, same channel conversion).

    Args:
        files: the image files, one per sample.
        size: (H, W) every image is decoded to.
        channels: 1 or 3.
        pixel_sums: optional (N, C, 2) int64: each image's per-channel sum and sum of squares of its pixel
            values, as :func:`measure` records them, so that :func:`streamed_stats` needs no second pass.
    """

    dtype = torch.uint8
    ndim = 4

    def __init__(self, files: Sequence[str | os.PathLike], size: tuple[int, int], channels: int,
                 pixel_sums: np.ndarray | None = None):
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3; got {channels}")
        self.files = tuple(os.fspath(f) for f in files)  # str: small to pickle into every worker
        self.size = (int(size[0]), int(size[1]))
        self.channels = channels
        if pixel_sums is not None and pixel_sums.shape != (len(self.files), channels, 2):
            raise ValueError(f"pixel_sums must be ({len(self.files)}, {channels}, 2); got {pixel_sums.shape}")
        self.pixel_sums = pixel_sums

    def __len__(self) -> int:
        return len(self.files)

    @property
    def shape(self) -> torch.Size:
        """(N, C, H, W), as the decoded tensor's."""
        return torch.Size((len(self.files), self.channels, *self.size))

    @property
    def nbytes(self) -> int:
        """Bytes the decoded tensor would take."""
        return math.prod(self.shape)

    def __repr__(self) -> str:
        return f"FileImages({len(self)} files -> {self.channels}x{self.size[0]}x{self.size[1]} uint8)"

    def _positions(self, index) -> np.ndarray:
        """An index (slice, int/bool tensor, array or list) -> positions into ``files`` (int64, 1-D)."""
        n = len(self.files)
        if isinstance(index, slice):
            return np.arange(n)[index]
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        idx = np.asarray(index)
        if idx.dtype == bool:
            if idx.shape != (n,):
                raise IndexError(f"a boolean index of shape {idx.shape} for {n} images")
            return np.flatnonzero(idx)
        if idx.size == 0:
            return np.empty(0, np.int64)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise IndexError(f"expected a slice or a 1-D integer or boolean index; got {idx.dtype} {idx.shape}")
        if idx.min() < -n or idx.max() >= n:
            raise IndexError(f"index out of range for {n} images")
        return np.where(idx < 0, idx + n, idx).astype(np.int64)

    def __getitem__(self, index) -> torch.Tensor:
        """Decode: an int -> (C, H, W); a slice, list, array or tensor of indices -> (K, C, H, W); uint8.

        Raises:
            ValueError, OSError: a file that cannot be decoded (one line naming it).
        """
        if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
            return self[[int(index)]][0]
        pos = self._positions(index)
        h, w = self.size
        out = np.empty((len(pos), self.channels, h, w), np.uint8)  # (K, C, H, W)
        for k, i in enumerate(pos):
            out[k] = decode_file(self.files[i], self.size, self.channels)
        return torch.from_numpy(out)

    def subset(self, index) -> FileImages:
        """The images at ``index`` (any index :meth:`__getitem__` takes), still undecoded."""
        pos = self._positions(index)
        sums = None if self.pixel_sums is None else self.pixel_sums[pos]
        return FileImages([self.files[i] for i in pos], self.size, self.channels, sums)


class _MeasureChunks(Dataset):
    """A worker's task in :func:`measure`: decode files ``start .. start + chunk`` and sum their pixels."""

    def __init__(self, images: FileImages, chunk: int):
        self.images, self.chunk = images, chunk

    def __len__(self) -> int:
        return (len(self.images) + self.chunk - 1) // self.chunk

    def __getitem__(self, start: int):
        im = self.images
        stop = min(start + self.chunk, len(im))
        ok = np.zeros(stop - start, bool)
        sums = np.zeros((stop - start, im.channels, 2), np.int64)  # (K, C, [sum, sum of squares])
        reasons = []
        for k, i in enumerate(range(start, stop)):
            a = _decode_one((im.files[i], im.size, im.channels))  # the in-memory path's decode and error text
            if isinstance(a, str):
                reasons.append((i, a))
                continue
            flat = a.reshape(im.channels, -1).astype(np.int64)  # (C, H*W); 255^2 * H * W fits int64
            sums[k, :, 0] = flat.sum(1)
            sums[k, :, 1] = (flat * flat).sum(1)
            ok[k] = True
        return ok, sums, reasons


def measure(images: FileImages,
            num_workers: int | None = None) -> tuple[FileImages, np.ndarray, list[tuple[Path, str]]]:
    """Decode every file once, in worker processes: keep the readable ones, with their pixel sums.

    This is the streaming path's counterpart of decoding a folder into memory: files that pass the header
    check but fail to decode are found (and left out) before the splits are drawn, as ``decode_folder`` does,
    and each image's per-channel sums give exact normalisation statistics for any subset later.

    Returns:
        the readable images (in their order, with ``pixel_sums``), their positions in ``images``, and
        (file, reason) for each file that could not be decoded.
    """
    n, c = len(images), images.channels
    workers = default_workers() if num_workers is None else num_workers
    ok = np.zeros(n, bool)
    sums = np.zeros((n, c, 2), np.int64)
    bad: list[tuple[Path, str]] = []
    starts = list(range(0, n, _MEASURE_CHUNK))
    tasks = DataLoader(_MeasureChunks(images, _MEASURE_CHUNK), sampler=starts, batch_size=None,
                       num_workers=min(workers, len(starts)), generator=_own_generator())
    # iterated to its end (not zipped with starts), so that its workers are shut down now, not when collected
    for k, (chunk_ok, chunk_sums, reasons) in enumerate(tasks):  # in order: DataLoader keeps it
        start = starts[k]
        stop = start + len(chunk_ok)
        ok[start:stop] = np.asarray(chunk_ok)
        sums[start:stop] = np.asarray(chunk_sums)
        bad.extend((Path(images.files[int(i)]), why) for i, why in reasons)
    keep = np.flatnonzero(ok)
    readable = FileImages([images.files[i] for i in keep], images.size, c, sums[keep])
    return readable, keep, bad


def streamed_stats(images: FileImages, num_workers: int | None = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of streamed images, on the 0..1 scale — exact, not sampled.

    From the per-image integer sums :func:`measure` recorded (one streaming pass over the files when they
    are missing). The variance ``(n * S2 - S1^2) / n^2`` is evaluated in exact integer arithmetic and rounded
    once, so the result equals :func:`convolab.data.dataset.normalization_stats` of the decoded tensor up to
    float64 rounding (the tests hold them to 1e-12). A constant channel gets std 1 (left unscaled), as there.

    Raises:
        ValueError: an empty split, or (when measuring here) a file that cannot be decoded.
    """
    if len(images) == 0:
        raise ValueError("cannot compute normalisation statistics of an empty split")
    if images.pixel_sums is None:
        images, _, bad = measure(images, num_workers)
        if bad:
            path, why = bad[0]
            raise ValueError(f"{path}: cannot be decoded ({why})")
    totals = images.pixel_sums.sum(0)  # (C, 2) int64: at most 255^2 per pixel, ~1.4e14 pixels per channel
    count = len(images) * images.size[0] * images.size[1]
    means, stds = [], []
    for s1, s2 in totals.tolist():  # Python ints: count * s2 overflows int64
        var_num = count * s2 - s1 * s1  # count^2 * variance, exactly
        std = math.sqrt(var_num / (count * count)) if var_num > 0 else 255.0  # constant channel: unscaled
        means.append(s1 / count / 255)
        stds.append(std / 255)
    return tuple(means), tuple(stds)


class _DecodeBatches(Dataset):
    """A worker's task in :class:`StreamLoader`: one batch's index tensor -> its uint8 images (B, C, H, W).

    A file that cannot be decoded comes back as its one-line error, raised in the training process (an
    exception raised in a worker would reach the user wrapped in the worker's traceback).
    """

    def __init__(self, images: FileImages):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor | str:
        try:
            return self.images[idx]
        except (ValueError, OSError) as e:
            return str(e) or type(e).__name__


class _EpochBatches(Sampler):
    """The batches of the epoch being served (index tensors), set by the loader before each epoch.

    The sampler runs in the training process, so persistent workers pick up each epoch's new order.
    """

    def __init__(self):
        self.batches: list[torch.Tensor] = []

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class StreamLoader(DeviceLoader):
    """Batches of normalised images and labels from a split that stays on disk (:class:`FileImages`).

    The same interface, order, DDP slicing and resume as :class:`~convolab.data.loader.DeviceLoader` (whose
    bookkeeping it inherits: ``__len__``, ``num_samples``, ``batch_sizes``, ``state_dict``,
    ``load_state_dict``), and the same batches bit for bit: only the decoding differs, done each epoch by
    a torch ``DataLoader``'s worker processes over the batches of this process's order. Labels stay in
    memory on ``device``.

    Args:
        split: a split whose ``images`` are a :class:`FileImages`.
        batch_size, mean, std, device, shuffle, seed, channels_last, rank, world_size: as for ``DeviceLoader``.
        num_workers: decoding processes (kept for the whole run); default: the cores per training process
            (:func:`default_workers`); 0 decodes in the training process.
    """

    def __init__(self, split: Split, batch_size: int, *, mean: Sequence[float], std: Sequence[float],
                 device: torch.device | str = "cpu", shuffle: bool = False, seed: int = 0,
                 channels_last: bool = False, rank: int = 0, world_size: int = 1, num_workers: int | None = None):
        if not isinstance(split.images, FileImages):
            raise ValueError(f"StreamLoader serves images on disk (FileImages); got {type(split.images).__name__} "
                             f"(use DeviceLoader, or make_loader to choose)")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        if batch_size % world_size:
            raise ValueError(f"--batch-size {batch_size} must be divisible by the {world_size} processes")
        if num_workers is not None and num_workers < 0:
            raise ValueError(f"num_workers must be >= 0; got {num_workers}")
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device)
        self.images = split.images  # stays on disk
        self.labels = split.labels.to(self.device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = torch.Generator().manual_seed(seed)  # CPU generator: the same order as DeviceLoader's
        self.normalize = Normalizer(mean, std, self.device)
        self.memory_format = memory_format(channels_last, self.images.ndim)
        self._epoch_start: torch.Tensor | None = None  # generator state before the current epoch's shuffle
        self._skip = 0  # batches the next epoch leaves out (a resumed epoch)
        self.num_workers = default_workers(world_size) if num_workers is None else num_workers
        self._batches = _EpochBatches()
        self._loader = self._data_loader()

    def _data_loader(self) -> DataLoader:
        # batch_size=None: each sampler item is a whole batch's indices, decoded by one worker (no collate);
        # the worker processes start with the first epoch and are kept (persistent) until close()
        return DataLoader(_DecodeBatches(self.images), sampler=self._batches, batch_size=None,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          pin_memory=self.device.type == "cuda", generator=_own_generator())

    def close(self) -> None:
        """Stop the decoding processes now (the next epoch starts new ones).

        Dropping the DataLoader by reference count shuts its workers down in order; left to the cycle
        collector (an exception's traceback holds this loader), torch may find its queues already finalised
        and wait 5 s per worker before killing it.
        """
        self._loader = self._data_loader()

    def _epoch_order(self, skip: int) -> list[torch.Tensor]:
        """This process's batches (CPU index tensors) of the epoch starting now, from batch ``skip`` on;
        draws the epoch's order exactly as ``DeviceLoader.__iter__`` does."""
        n = len(self.labels)
        self._epoch_start = self.generator.get_state() if self.shuffle else None
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        local = self.batch_size // self.world_size
        batches = []
        for i in range(skip, len(self)):
            start = i * self.batch_size + self.rank * local  # this process's slice of global batch i
            stop = start + local if self.world_size > 1 else start + self.batch_size
            batches.append(order[start:stop])
        return batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        skip, self._skip = self._skip, 0
        batches = self._epoch_order(skip)
        if batches:  # (an empty split starts no workers)
            self._batches.batches = batches
            try:
                for k, images in enumerate(self._loader):
                    if isinstance(images, str):
                        raise ValueError(images)
                    images = images.to(self.device, non_blocking=True)  # (B, C, H, W) uint8
                    x = self.normalize(images).contiguous(memory_format=self.memory_format)  # (B, C, H, W) float32
                    yield x, self.labels[batches[k].to(self.device)]
            except Exception:
                self.close()  # a failed epoch: no workers left behind (an abandoned one, a break, keeps them)
                raise
        self._epoch_start = None


def make_loader(split: Split, batch_size: int, *, num_workers: int | None = None,
                **kwargs) -> DeviceLoader | StreamLoader:
    """The loader for ``split``: :class:`StreamLoader` when its images are on disk (:class:`FileImages`),
    else :class:`~convolab.data.loader.DeviceLoader`. ``kwargs`` are DeviceLoader's (``mean``, ``std``,
    ``device``, ``shuffle``, ``seed``, ``channels_last``, ``rank``, ``world_size``); ``num_workers`` applies
    to streamed splits only."""
    if isinstance(split.images, FileImages):
        return StreamLoader(split, batch_size, num_workers=num_workers, **kwargs)
    return DeviceLoader(split, batch_size, **kwargs)


def close_loaders(*loaders: object) -> None:
    """Stop the decoding processes of the :class:`StreamLoader` among ``loaders`` (others, and None, are skipped).

    Called when training ends: a trainer sits in reference cycles, so its loaders would otherwise go with the
    cycle collector, which keeps their persistent workers alive after ``train`` returns and then waits 5 s per
    worker to end them (see :meth:`StreamLoader.close`). The loaders stay usable (a later epoch starts workers).
    """
    for loader in loaders:
        if isinstance(loader, StreamLoader):
            loader.close()
