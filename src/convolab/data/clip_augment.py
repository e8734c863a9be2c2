"""Augmentation of whole clip batches (B, C, T, H, W) on the training device, the same for every frame of a clip.

A clip is one moment seen over time: a crop that moved between frames would add a motion that is not in the
video, so each clip draws one set of parameters and all its T frames get them (torchvision's video reference
transforms do the same, per clip). Two operations, as in :mod:`convolab.data.augment`:

* **random crop with padding**: each clip shifted by up to ``crop_pad`` pixels in each direction, the uncovered
  border black (``fill``);
* **horizontal flip** of half of the clips. Off by default, and off for ``moving-fashion`` in particular: a
  mirrored "move left" clip moves right (and a clockwise turn becomes anticlockwise), so flipping would teach
  wrong labels (:func:`flips_keep_class` says which datasets allow it).

Per-clip random numbers are drawn in one call from a ``torch.Generator`` on the device, whose state goes
into checkpoints (:meth:`ClipAugment.state_dict`), so a resumed run draws the same crops and flips.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

__all__ = ["ClipAugment", "flips_keep_class"]

log = logging.getLogger(__name__)

# Clip datasets whose classes change when mirrored (directions and senses of rotation are labels) ...
_NO_FLIP = {"moving-fashion"}
# ... and those where mirroring keeps the action (torchvision's video reference flips UCF101/HMDB51/Kinetics).
_FLIP = {"ucf101", "hmdb51"}


def flips_keep_class(dataset: str) -> bool | None:
    """Whether a mirrored clip keeps its class in ``dataset``: True, False, or None (unknown: a folder)."""
    name = str(dataset).lower()
    return True if name in _FLIP else False if name in _NO_FLIP else None


class ClipAugment:
    """Random crop with padding and horizontal flip of clip batches, identical across each clip's frames.

    Args:
        crop_pad: shift each clip by up to this many pixels (0: off).
        hflip: mirror half of the clips left-right (default off; never for moving-fashion, whose labels are
            directions).
        device: where batches live; the per-clip random numbers are drawn there.
        seed: seeds the device generator.
        fill: per-channel value of a black pixel in the batches' scale (``-mean / std`` for normalised
            clips); default 0.

    Raises:
        ValueError: a negative ``crop_pad``.
    """

    def __init__(self, crop_pad: int = 0, hflip: bool = False, device: torch.device | str = "cpu", seed: int = 0,
                 fill: torch.Tensor | None = None):
        if int(crop_pad) != crop_pad or crop_pad < 0:
            raise ValueError(f"crop_pad must be a whole number of pixels >= 0; got {crop_pad!r}")
        self.crop_pad = int(crop_pad)
        self.hflip = bool(hflip)
        self.device = torch.device(device)
        # (1, C, 1, 1, 1): broadcast over the batch, frames and pixels
        self.fill = None if fill is None else fill.to(self.device, torch.float32).view(1, -1, 1, 1, 1)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    @property
    def active(self) -> bool:
        """Whether anything is applied."""
        return self.crop_pad > 0 or self.hflip

    def describe(self) -> str:
        parts = [f"crop pad {self.crop_pad} (same for every frame)" if self.crop_pad else "",
                 "hflip" if self.hflip else ""]
        return ", ".join(p for p in parts if p) or "none"

    def state_dict(self) -> dict:
        return {"torch": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["torch"])

    def _uniform(self, *shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=self.generator, device=self.device)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment clips ``x`` (B, C, T, H, W) with labels ``y`` (B,); returns both (labels unchanged).

        Raises:
            ValueError: ``x`` is not 5-D, or ``crop_pad`` is not below the frame's shorter side.
        """
        if x.ndim != 5:
            raise ValueError(f"ClipAugment expects clips (B, C, T, H, W); got shape {tuple(x.shape)}")
        if self.crop_pad:
            x = self.translate(x, self.crop_pad)
        if self.hflip:
            flip = self._uniform(x.shape[0]) < 0.5  # (B,)
            x = torch.where(flip[:, None, None, None, None], x.flip(4), x)
        return x, y

    def translate(self, x: torch.Tensor, pad: int) -> torch.Tensor:
        """Shift each clip by one (dy, dx) in [-pad, pad]^2 for all its frames, black where nothing moved in."""
        b, c, t, h, w = x.shape
        if pad >= min(h, w):
            raise ValueError(f"crop_pad must be below the frames' shorter side ({min(h, w)}); got {pad}")
        fill = 0.0 if self.fill is None else self.fill
        padded = F.pad(x - fill, (pad, pad, pad, pad)) + fill  # (B, C, T, H + 2p, W + 2p), black border
        offsets = (self._uniform(b, 2) * (2 * pad + 1)).long().clamp_(max=2 * pad)  # top-left corner per clip
        rows = offsets[:, 0:1] + torch.arange(h, device=x.device)  # (B, H)
        cols = offsets[:, 1:2] + torch.arange(w, device=x.device)  # (B, W)
        batch = torch.arange(b, device=x.device)[:, None, None]
        # Advanced indexing over dims 0, 3, 4 puts them first: (B, H, W, C, T) -> back to (B, C, T, H, W).
        return padded[batch, :, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 4, 1, 2).contiguous()
