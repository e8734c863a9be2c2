"""The report's own figures: drawn once while the report's data is gathered, kept as PNG bytes.

The figures shared with training and explanation (curves, confusion matrix, prediction grid, per-class IoU, masks,
kernels, feature maps) come from ``convolab.plotting``, ``convolab.explain`` and the tasks (``iou_figure`` is
re-exported here from ``convolab.plotting``); this module holds the few that only the report draws, and
:func:`png`, which turns any of them into the bytes the page embeds.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from convolab.plotting import iou_figure, plt

__all__ = ["Figure", "png", "iou_figure", "metric_curve_figure", "examples_figure", "gradcam_figure",
           "randomization_figure"]


@dataclass
class Figure:
    """A drawn figure as PNG bytes (the page embeds it; nothing is drawn while rendering)."""

    png: bytes
    caption: str = ""


def png(fig, caption: str = "") -> Figure:
    """A matplotlib figure -> :class:`Figure` (PNG at 100 dpi, cropped to its content); the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return Figure(buf.getvalue(), caption)


def metric_curve_figure(rows: Sequence[dict], key: str, label: str):
    """One validation figure per epoch (``key`` of the metrics rows, e.g. ``val_mean_iou``)."""
    epochs = [r["epoch"] for r in rows]
    ys = [np.nan if r.get(key) is None else r[key] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, ys, "-s", markersize=4, color="C1", label=f"{label} (end of epoch)")
    ax.set_xlabel("epoch")
    ax.set_ylabel(label)
    ax.set_title(f"{label} per epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if len(epochs) <= 20:
        ax.set_xticks(epochs)
    return fig


def _show_image(ax, image: torch.Tensor) -> None:
    a = image.numpy().transpose(1, 2, 0)  # (C, H, W) uint8 -> (H, W, C)
    ax.imshow(a[..., 0] if a.shape[-1] == 1 else a, cmap="gray", vmin=0, vmax=255)
    ax.set_axis_off()


def examples_figure(images: torch.Tensor):
    """A row of uint8 images (n, C, H, W), small, no captions (the examples of a confused pair)."""
    fig, axes = plt.subplots(1, len(images), figsize=(1.1 * len(images), 1.3), squeeze=False)
    for ax, im in zip(axes[0], images):
        _show_image(ax, im)
    return fig


def gradcam_figure(images: torch.Tensor, maps: torch.Tensor, captions: Sequence[str], right: Sequence[bool]):
    """Grad-CAM maps (n, H, W) over their images (n, C, H, W), each titled (green right, red wrong)."""
    fig, axes = plt.subplots(1, len(images), figsize=(1.6 * len(images), 2.0), squeeze=False)
    for ax, image, m, cap, ok in zip(axes[0], images, maps, captions, right):
        _show_image(ax, image)
        s = m.detach().float().cpu().numpy()
        s = s - s.min()
        s = s / (s.max() or 1.0)
        rgba = plt.get_cmap("jet")(s)
        rgba[..., 3] = 0.7 * s  # transparent where the map is low: the image shows through
        ax.imshow(rgba)
        ax.set_title(cap, fontsize=7, color="#1b7f3b" if ok else "#b00020")
    return fig


def randomization_figure(maps: Sequence[tuple[str, torch.Tensor, torch.Tensor]]):
    """Per method, a row of pixel-importance maps of the trained model and one of the re-initialised model."""
    fig, axes = plt.subplots(len(maps) * 2, 4, figsize=(6.4, 3.3 * len(maps)), squeeze=False)
    for k, (method, trained, rand) in enumerate(maps):
        for row in (2 * k, 2 * k + 1):
            for ax in axes[row]:
                ax.set_axis_off()
        for j in range(min(4, len(trained))):
            for row, shown, tag in ((2 * k, trained, "trained"), (2 * k + 1, rand, "random weights, first seed")):
                axes[row, j].imshow(shown[j].detach().cpu().numpy(), cmap="jet")
                if j == 0:
                    axes[row, j].set_title(f"{method}, {tag}", fontsize=8, loc="left")
    return fig
