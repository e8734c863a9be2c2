"""Resizing batches on the device, and a model that resizes what it is given (``convolab train --input-size``).

``--image-size`` resizes the files of an image folder once, at decode time, on the CPU (PIL, bilinear, antialiased:
:func:`convolab.data.images.image_to_array`); named datasets keep their size there. ``--input-size HxW`` is for
fine-tuning a checkpoint trained at another size (torchvision's ImageNet ResNet-18 at 224x224) on small images:
the data stays at its own size in memory (28x28 Fashion-MNIST: 47 MB, where 60,000 images at 224x224 would take
3 GB), the model is built at HxW so its stem is the checkpoint's, and every batch is resized to HxW on the device
as the model's first operation. Because the resize hangs off the model (a forward pre-hook recorded in the run's
model arguments as ``resize_inputs``), every tool that feeds a run's model its data at the data's size —
evaluation, ``load_run(...).predict``, explain, report — resizes the same way without knowing about it.

The resize is bilinear (``align_corners=False``, pixel centres as PIL's) and antialiased when it shrinks, the rule
the clip decoder uses (:mod:`convolab.data.clips`). Bilinear weights sum to 1, so resizing commutes with the
per-channel normalisation ``(x / 255 - mean) / std`` that comes before it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["resize_images", "InputResize", "attach_input_resize"]


def resize_images(x: torch.Tensor, size: tuple[int, int] | list[int]) -> torch.Tensor:
    """(N, C, h, w) float -> (N, C, H, W): bilinear, antialiased when shrinking; unchanged when already HxW.

    Raises:
        ValueError: ``x`` is not a 4-d float batch.
    """
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"expected a float batch (N, C, H, W) to resize; got {x.dtype} {tuple(x.shape)}")
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)


class InputResize:
    """A forward pre-hook: the model's input (its first argument) is resized to ``size`` (H, W) on its device."""

    def __init__(self, size: tuple[int, int] | list[int]):
        self.size = (int(size[0]), int(size[1]))

    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        x, *rest = args
        return (resize_images(x, self.size), *rest)


def attach_input_resize(model: nn.Module, size: tuple[int, int] | list[int]) -> nn.Module:
    """Make ``model`` resize every input batch to ``size`` (H, W) before its first layer; returns ``model``.

    Raises:
        ValueError: ``size`` is not two positive sides.
    """
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"input resize needs (H, W) with positive sides; got {size!r}")
    model.register_forward_pre_hook(InputResize(size))
    return model
