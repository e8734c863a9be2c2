"""Sanity checks: evidence that an attribution map says something about the model.

(a) ``parameter_randomization``: Adebayo et al., "Sanity Checks for Saliency Maps" (2018). A map
    that barely changes when the trained weights are replaced by fresh random ones explains the
    input, not the model. The rank correlation (Spearman) between the two maps should be low.
(b) ``ig_completeness``: integrated gradients' attributions sum to y_c(x) - y_c(baseline)
    (Sundararajan et al. 2017, Prop. 1); the relative gap measures the integration error.
(c) ``cam_gradcam_agreement``: for a global-average-pool + linear head, Grad-CAM's weights are the
    classifier's row divided by h*w, so the two maps agree up to a positive scale.
(d) ``deletion_insertion``: faithfulness (Petsiuk et al., RISE, 2018): delete the most important
    pixels first and the class probability should fall fast (low deletion area); insert them into
    the baseline first and it should rise fast (high insertion area). Random orderings are the
    reference.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from convolab.explain.attribution import (
    CAM_METHODS,
    IG_STEPS,
    _targets,
    _upsample,
    attribute,
    cam,
    integrated_gradients_gap,
)

__all__ = ["randomized_copy", "rank_correlation", "parameter_randomization", "ig_completeness",
           "cam_gradcam_agreement", "deletion_insertion", "pixel_importance"]


def randomized_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy with every layer re-initialized by its own ``reset_parameters`` (BatchNorm statistics too)."""
    clone = copy.deepcopy(model)
    torch.manual_seed(seed)
    for m in clone.modules():
        if hasattr(m, "reset_running_stats"):
            m.reset_running_stats()
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return clone.eval()


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Spearman rank correlation per sample of two batches of maps (a constant map correlates 0)."""
    from scipy.stats import spearmanr

    out = []
    for x, y in zip(a.flatten(1).double().cpu().numpy(), b.flatten(1).double().cpu().numpy()):
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            out.append(0.0)
            continue
        out.append(float(spearmanr(x, y).statistic))
    return np.array(out)


def pixel_importance(maps: torch.Tensor) -> torch.Tensor:
    """``[N, H, W]`` importance per pixel: CAM maps as they are, pixel attributions as sum_c |a_c|."""
    return maps if maps.dim() == 3 else maps.abs().sum(1)


def parameter_randomization(model: nn.Module, x: torch.Tensor, method: str, target=None, layer: str | None = None,
                            seed: int = 0, **kwargs) -> dict:
    """Maps of the trained model and of a randomized copy, and their rank correlation per sample."""
    tgt = _targets(model, x, target)
    trained = attribute(model, x, method, tgt, layer, **kwargs)
    random_model = randomized_copy(model, seed)
    randomized = attribute(random_model, x, method, tgt, layer, **kwargs)
    corr = rank_correlation(pixel_importance(trained), pixel_importance(randomized))
    return {"method": method, "correlation": corr.tolist(), "mean_correlation": float(corr.mean()),
            "trained": trained, "randomized": randomized}


def ig_completeness(model: nn.Module, x: torch.Tensor, target=None, steps: int = IG_STEPS,
                    baseline: torch.Tensor | float = 0.0) -> dict:
    """Integrated gradients and their completeness gap per sample (see the module docstring)."""
    tgt = _targets(model, x, target)
    attr = attribute(model, x, "integrated-gradients", tgt, baseline=baseline, steps=steps)
    gap = integrated_gradients_gap(model, x, attr, tgt, baseline)
    return {"steps": steps, "gap": gap.tolist(), "max_gap": float(gap.max()), "mean_gap": float(gap.mean()),
            "attributions": attr}


def cam_gradcam_agreement(model: nn.Module, x: torch.Tensor, target=None) -> dict:
    """Largest difference between CAM and Grad-CAM, each scaled to a maximum of 1 (ReLU applied to CAM)."""
    tgt = _targets(model, x, target)
    # ReLU at the feature map's resolution, then the same bilinear upsampling as Grad-CAM's
    c = _upsample(torch.relu(cam(model, x, tgt, upsample=False)), x.shape[-2:])
    g = attribute(model, x, "gradcam", tgt)

    def unit(m):
        return m / m.flatten(1).amax(1).clamp_min(1e-30)[:, None, None]

    diff = (unit(c) - unit(g)).abs().flatten(1).amax(1)
    return {"max_abs_difference": float(diff.max()), "per_sample": diff.tolist()}


@torch.no_grad()
def deletion_insertion(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, target=None, steps: int = 16,
                       baseline: float = 0.0, seed: int = 0) -> dict:
    """Areas under the deletion and insertion curves of the target's probability, against random orders.

    ``maps``: ``[N, H, W]`` or ``[N, C, H, W]`` attributions for ``x``. Pixels are removed (set to
    ``baseline`` in every channel) or inserted in order of importance, in ``steps`` equal chunks.
    """
    tgt = _targets(model, x, target)
    importance = pixel_importance(maps).flatten(1)  # (N, H*W)
    n, c, h, w = x.shape
    g = torch.Generator().manual_seed(seed)
    rand_order = torch.stack([torch.randperm(h * w, generator=g) for _ in range(n)]).to(x.device)
    order = importance.argsort(dim=1, descending=True)
    fractions = torch.linspace(0, 1, steps + 1)

    def curve(order: torch.Tensor, insert: bool) -> torch.Tensor:
        probs = []
        for f in fractions:
            k = int(round(float(f) * h * w))
            mask = torch.zeros(n, h * w, device=x.device, dtype=torch.bool)
            if k:
                mask.scatter_(1, order[:, :k], True)
            mask = mask.view(n, 1, h, w)
            if insert:
                img = torch.where(mask, x, torch.full_like(x, baseline))
            else:
                img = torch.where(mask, torch.full_like(x, baseline), x)
            probs.append(model(img).softmax(1).gather(1, tgt[:, None])[:, 0])
        p = torch.stack(probs, 1)  # (N, steps + 1)
        return torch.trapezoid(p, dx=1.0 / steps, dim=1)

    out = {"deletion_auc": curve(order, False), "insertion_auc": curve(order, True),
           "random_deletion_auc": curve(rand_order, False), "random_insertion_auc": curve(rand_order, True)}
    return {k: float(v.mean()) for k, v in out.items()}


def is_cam_method(method: str) -> bool:
    return method in CAM_METHODS
