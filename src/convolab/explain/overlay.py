"""Attribution maps as pictures: the image, the map, and the map over the image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from convolab.plotting import plt, save_figure

__all__ = ["heatmap", "overlay_figure", "save_overlay"]


def heatmap(attribution: torch.Tensor) -> tuple[np.ndarray, bool]:
    """``[H, W]`` or ``[C, H, W]`` -> (an ``[H, W]`` map to draw, whether it is signed).

    Pixel attributions are summed over channels; integrated gradients and CAM keep their sign
    (drawn with a diverging colormap), Grad-CAM, saliency and occlusion maps are drawn as they are.
    """
    a = attribution.detach().float().cpu()
    if a.dim() == 3:
        a = a.sum(0)
    a = a.numpy()
    return a, bool((a < 0).any() and (a > 0).any())


def overlay_figure(image: np.ndarray, attribution: torch.Tensor, title: str):
    """Three panels: the image (uint8 ``(C, H, W)``), the map, the map over the image."""
    img = image.transpose(1, 2, 0)
    gray = img.shape[-1] == 1
    shown = img[..., 0] if gray else img
    a, signed = heatmap(attribution)
    fig, axes = plt.subplots(1, 3, figsize=(8.4, 2.9), layout="constrained")
    axes[0].imshow(shown, cmap="gray" if gray else None, vmin=0, vmax=255)
    axes[0].set_title("input", fontsize=9)
    if signed:
        lim = float(np.abs(a).max()) or 1.0
        im = axes[1].imshow(a, cmap="RdBu_r", vmin=-lim, vmax=lim)
    else:
        im = axes[1].imshow(a, cmap="jet")
    axes[1].set_title("attribution", fontsize=9)
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.04, format="%.2g")
    axes[2].imshow(shown, cmap="gray" if gray else None, vmin=0, vmax=255)
    # Colour where the map is strong, transparent where it is weak: the image stays readable.
    strength = np.abs(a) if signed else a - a.min()
    strength = strength / (float(strength.max()) or 1.0)
    rgba = plt.get_cmap("jet")(strength)
    rgba[..., 3] = 0.75 * strength
    axes[2].imshow(rgba)
    axes[2].set_title("overlay", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    return fig


def save_overlay(image: np.ndarray, attribution: torch.Tensor, title: str, path: str | Path) -> Path:
    return save_figure(overlay_figure(image, attribution, title), path)
