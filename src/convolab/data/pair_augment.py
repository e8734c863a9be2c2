"""Augmentation of image + mask batches on the training device (segmentation): both move together.

The geometric half of :mod:`convolab.data.augment`, applied with the same per-sample draw to an image batch
``x`` (B, C, H, W) and its masks ``y`` (B, H, W), so that every pixel keeps its class:

* **random crop with padding**: each pair shifted by up to ``crop_pad`` pixels per axis (torchvision's
  ``RandomCrop(size, padding=crop_pad)`` applied to both); the uncovered border of the image is ``fill``
  (black after normalisation, ``-mean / std``, by default 0) and that of the mask is ``ignore_index``,
  so the loss and the metrics skip pixels that were never in the image;
* **horizontal flip** of half of the pairs.

Per-sample parameters come from one ``torch.Generator`` on the device (no host round trip); its state is
``state_dict()``, so a resumed run draws exactly what the uninterrupted one would have.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["PairAugment"]


class PairAugment:
    """Random crop with padding and horizontal flip of image and mask batches, drawn on ``device``.

    Args:
        crop_pad: shift each pair by up to this many pixels per axis (0: off).
        hflip: mirror half of the pairs left-right.
        ignore_index: mask value of the padded border (None: 0, the background).
        device: where batches live and the random numbers are drawn.
        seed: seeds the device generator.
        fill: per-channel image value of the padded border, (C,) (default 0).
    """

    def __init__(self, crop_pad: int = 0, hflip: bool = False, ignore_index: int | None = 255,
                 device: torch.device | str = "cpu", seed: int = 0, *, fill: torch.Tensor | None = None):
        if not isinstance(crop_pad, int) or isinstance(crop_pad, bool) or crop_pad < 0:
            raise ValueError(f"crop_pad must be a non-negative number of pixels; got {crop_pad!r}")
        if ignore_index is not None and not 0 <= ignore_index <= 255:
            raise ValueError(f"ignore_index must be a uint8 mask value (0..255) or None; got {ignore_index}")
        self.crop_pad = crop_pad
        self.hflip = bool(hflip)
        self.ignore_index = ignore_index
        self.device = torch.device(device)
        self.fill = None if fill is None else fill.to(self.device, torch.float32).view(1, -1, 1, 1)  # (1, C, 1, 1)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    @property
    def active(self) -> bool:
        """Whether any operation is on."""
        return self.crop_pad > 0 or self.hflip

    def describe(self) -> str:
        parts = [f"crop pad {self.crop_pad}" if self.crop_pad else "", "hflip" if self.hflip else ""]
        return ", ".join(p for p in parts if p) or "none"

    def state_dict(self) -> dict:
        return {"torch": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["torch"])

    def _uniform(self, *shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=self.generator, device=self.device)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment images ``x`` (B, C, H, W) and masks ``y`` (B, H, W) alike; dtypes are kept."""
        if x.ndim != 4 or y.ndim != 3 or x.shape[0] != y.shape[0] or x.shape[2:] != y.shape[1:]:
            raise ValueError(f"expected images (B, C, H, W) and masks (B, H, W) of the same B, H and W; got "
                             f"{tuple(x.shape)} and {tuple(y.shape)}")
        if self.crop_pad:
            x, y = self.translate(x, y, self.crop_pad)
        if self.hflip:
            flip = self._uniform(x.shape[0]) < 0.5  # (B,)
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
            y = torch.where(flip[:, None, None], y.flip(2), y)
        return x, y

    def translate(self, x: torch.Tensor, y: torch.Tensor, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Shift each pair by the same (dy, dx) in [-pad, pad]^2; the border is ``fill`` / ``ignore_index``."""
        b, c, h, w = x.shape
        # The border is written, not added (x - fill + fill would round the image's own pixels).
        xp = x.new_zeros(b, c, h + 2 * pad, w + 2 * pad)  # (B, C, H + 2p, W + 2p)
        if self.fill is not None:
            xp[:] = self.fill.to(x.dtype)
        xp[:, :, pad:pad + h, pad:pad + w] = x
        border = 0 if self.ignore_index is None else self.ignore_index
        yp = F.pad(y, (pad, pad, pad, pad), value=border)  # (B, H + 2p, W + 2p)
        offsets = (self._uniform(b, 2) * (2 * pad + 1)).long().clamp_(max=2 * pad)  # top-left corner of each crop
        rows = offsets[:, 0:1] + torch.arange(h, device=x.device)  # (B, H)
        cols = offsets[:, 1:2] + torch.arange(w, device=x.device)  # (B, W)
        batch = torch.arange(b, device=x.device)[:, None, None]
        # Advanced indexing puts the indexed dimensions first: (B, H, W, C) -> NCHW (channels-last in memory).
        x_out = xp[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
        y_out = yp[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W)
        return x_out, y_out
