"""The in-memory batch loader: the whole split lives on the training device as uint8.

Written by hand because the per-sample pipeline of the tutorials (``Dataset.__getitem__`` ->
PIL image -> ``ToTensor`` -> ``Normalize`` -> collate) costs more than the forward and backward
pass of a small CNN. Here a batch is one gather from a resident uint8 tensor, one conversion to
float and one fused multiply-add for the normalisation.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from convolab.data.base import Split

__all__ = ["DeviceLoader", "Normalizer", "memory_format"]


class Normalizer:
    """uint8 images (N, C, H, W) or clips (N, C, T, H, W) -> float32 ``(x / 255 - mean) / std``, as one
    multiply-add."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device | str = "cpu"):
        mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)  # (1, C, 1, 1)
        self.shift = -mean_t / std_t

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        scale, shift = self.scale, self.shift
        if images.ndim == 5:  # clips: (1, C, 1, 1, 1)
            scale, shift = scale.unsqueeze(-1), shift.unsqueeze(-1)
        return torch.addcmul(shift, images.to(torch.float32), scale)


def memory_format(channels_last: bool, ndim: int) -> torch.memory_format:
    """The layout of a batch of ``ndim`` dimensions: channels last (NHWC / NDHWC) or contiguous."""
    if not channels_last:
        return torch.contiguous_format
    return torch.channels_last_3d if ndim == 5 else torch.channels_last


class DeviceLoader:
    """Batches of normalised images and labels from a split held on ``device``.

    Args:
        split: the uint8 images and labels.
        batch_size: images per batch (the last batch may be smaller).
        mean, std: per-channel statistics on the 0..1 scale.
        device: where the split is kept and the batches are made.
        shuffle: draw a new order each epoch from a generator seeded with ``seed``.
        channels_last: lay batches out as NHWC, which the CPU's convolution kernels prefer.
        rank, world_size: data parallelism: every process draws the same order, cuts it into batches
            of ``batch_size`` and takes the ``rank``-th of ``world_size`` equal slices of each
            (``batch_size / world_size`` images); an incomplete last batch is dropped so that every
            process takes the same number of equal steps.
    """

    def __init__(self, split: Split, batch_size: int, *, mean: Sequence[float], std: Sequence[float],
                 device: torch.device | str = "cpu", shuffle: bool = False, seed: int = 0,
                 channels_last: bool = False, rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        if batch_size % world_size:
            raise ValueError(f"--batch-size {batch_size} must be divisible by the {world_size} processes")
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device)
        self.images = split.images.to(self.device)  # uint8, resident for the whole run
        self.labels = split.labels.to(self.device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = torch.Generator().manual_seed(seed)  # CPU generator: same order on every device
        self.normalize = Normalizer(mean, std, self.device)
        self.memory_format = memory_format(channels_last, self.images.ndim)
        self._epoch_start: torch.Tensor | None = None  # generator state before the current epoch's shuffle
        self._skip = 0  # batches the next epoch leaves out (a resumed epoch)

    def __len__(self) -> int:
        if self.world_size > 1:
            return len(self.labels) // self.batch_size
        return (len(self.labels) + self.batch_size - 1) // self.batch_size

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    def batch_sizes(self) -> list[int]:
        """Images in each of this process's batches of one epoch."""
        if self.world_size > 1:
            return [self.batch_size // self.world_size] * len(self)
        n, b = len(self.labels), self.batch_size
        return [min(b, n - start) for start in range(0, n, b)]

    def state_dict(self) -> dict:
        """The data order's state: the generator as it was before the current epoch's shuffle (or now,
        between epochs). With the number of batches already consumed it restarts an epoch exactly."""
        state = self._epoch_start if self._epoch_start is not None else self.generator.get_state()
        return {"generator": state.clone()}

    def load_state_dict(self, state: dict, skip_batches: int = 0) -> None:
        """Restore :meth:`state_dict`; the next epoch then starts after ``skip_batches`` batches."""
        self.generator.set_state(state["generator"])
        self._epoch_start = None
        self._skip = skip_batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        skip, self._skip = self._skip, 0
        self._epoch_start = self.generator.get_state() if self.shuffle else None
        order = torch.randperm(n, generator=self.generator).to(self.device) if self.shuffle else None
        local = self.batch_size // self.world_size
        for i in range(skip, len(self)):
            start = i * self.batch_size + self.rank * local  # this process's slice of global batch i
            stop = start + local if self.world_size > 1 else start + self.batch_size
            if order is None:
                images, labels = self.images[start:stop], self.labels[start:stop]
            else:
                idx = order[start:stop]
                images, labels = self.images[idx], self.labels[idx]
            x = self.normalize(images).contiguous(memory_format=self.memory_format)  # (B, C, H, W) float32
            yield x, labels
        self._epoch_start = None
