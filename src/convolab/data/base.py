"""The dataset contract's types: :class:`Split` and :class:`ImageDataset`, and the normalisation statistics.

The lowest module of ``convolab.data`` that speaks of loaded data: the readers (image folders, segmentation
folders, videos, streaming) build these, and ``convolab.data.dataset.load_dataset`` dispatches to the readers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Split", "ImageDataset", "normalization_stats"]


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

    def with_train_size(self, n: int, seed: int = 0) -> ImageDataset:
        """This dataset with ``n`` images of the training split, drawn per class in proportion to its share (exactly
        ``n``: the rounding remainder goes to the classes with the largest fractions; by seed). The validation and
        test splits and the normalisation statistics (of the whole training split) are unchanged. Segmentation
        masks have no class per image: their ``n`` images are drawn uniformly."""
        import dataclasses

        import numpy as np

        total = len(self.train)
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"--train-size must be a positive number of images; got {n!r}")
        if n > total:
            raise ValueError(f"--train-size {n:,} exceeds the {total:,} images of {self.name}'s training split")
        if n == total:
            return self
        rng = np.random.default_rng(seed)
        if self.task == "segmentation":
            keep = np.sort(rng.choice(total, n, replace=False))
        else:
            y = self.train.labels.numpy()
            classes, counts = np.unique(y, return_counts=True)
            share = counts * n / total
            quota = np.floor(share).astype(int)
            extra = n - quota.sum()
            quota[np.argsort(-(share - quota), kind="stable")[:extra]] += 1
            keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), q, replace=False)
                                           for c, q in zip(classes, quota)]))
        idx = torch.from_numpy(keep)
        images = self.train.images
        images = images.subset(keep) if hasattr(images, "subset") else images[idx]
        groups = None if self.train.groups is None else self.train.groups[idx]
        return dataclasses.replace(self, train=Split(images, self.train.labels[idx], groups))

    def describe(self) -> str:
        shape = "x".join(str(v) for v in self.input_size)
        what = {"clips": "clips", "segmentation": "images with masks"}.get(self.task, "images")
        return (f"{self.name}: {len(self.train):,} train / {len(self.val):,} val / {len(self.test):,} test {what}, "
                f"{shape}, {self.num_classes} classes (from {self.source})")


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
