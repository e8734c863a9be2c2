"""``attribute``: which pixels (or regions) made the model predict a class.

Methods and where they come from:

==========================  ==========================================================  ============
method                      what it computes                                            source
==========================  ==========================================================  ============
``cam``                     sum_k w[c, k] A_k of the last feature map, for models       by hand
                            whose head is global average pooling + one linear layer
                            (Zhou et al. 2016)
``gradcam``                 ReLU(sum_k alpha_k A_k), alpha_k = spatial mean of dy_c/dA_k captum
                            (Selvaraju et al. 2017)                                      LayerGradCam
``gradcam++``               alpha weighted by second/third-order terms                  by hand (not
                            (Chattopadhyay et al. 2018, Eq. 19 with exp(y_c))           in captum)
``saliency``                |dy_c/dx| (Simonyan et al. 2014)                            captum
``smoothgrad``              saliency averaged over noisy copies (Smilkov et al. 2017)   captum
``integrated-gradients``    (x - x') * integral of dy_c/dx along x' -> x                captum
                            (Sundararajan et al. 2017)
``occlusion``               drop in y_c when a patch is replaced by the baseline        captum
                            (Zeiler & Fergus 2014)
==========================  ==========================================================  ============

The CAM family returns ``[N, H, W]`` at the input's resolution (bilinear upsampling of the layer's
map); pixel methods return ``[N, C, H, W]``. ``y_c`` is the logit of the target class. The default
layer is the model's last ``feature_info`` stage (the map ``forward_features`` returns), so no method
needs per-model code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from convolab.explain.layers import check_map_layer, resolve_layer

__all__ = ["METHODS", "CAM_METHODS", "attribute", "check_method", "default_target", "integrated_gradients_gap",
           "check_cam_head"]

CAM_METHODS = ("cam", "gradcam", "gradcam++")
PIXEL_METHODS = ("saliency", "smoothgrad", "integrated-gradients", "occlusion")
METHODS = CAM_METHODS + PIXEL_METHODS
IG_STEPS = 64  # integrated gradients: Gauss-Legendre points (completeness gap < 5 % on the tutorial CNNs)


def check_method(method: str) -> None:
    """ValueError naming the attribution methods unless ``method`` is one of them."""
    if method not in METHODS:
        from convolab.errors import UnknownNameError

        raise UnknownNameError("method", method, METHODS, hint="methods: " + ", ".join(METHODS))


def default_target(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The predicted class of each sample."""
    with torch.no_grad():
        return model(x).argmax(1)


def _targets(model: nn.Module, x: torch.Tensor, target) -> torch.Tensor:
    if target is None:
        return default_target(model, x)
    if isinstance(target, int):
        return torch.full((len(x),), target, dtype=torch.long, device=x.device)
    target = torch.as_tensor(target, dtype=torch.long, device=x.device).flatten()
    if len(target) == 1:
        return target.expand(len(x))
    if len(target) != len(x):
        raise ValueError(f"target holds {len(target)} classes for {len(x)} samples; give one, or one per sample")
    return target


def attribute(model: nn.Module, x: torch.Tensor, method: str, target: int | torch.Tensor | None = None,
              layer: str | None = None, *, baseline: torch.Tensor | float = 0.0, steps: int = IG_STEPS,
              samples: int = 16, noise: float = 0.15, window: int | None = None) -> torch.Tensor:
    """Attribution maps for a batch of (normalized) inputs.

    Args:
        model: a classifier in eval mode (its parameters are not changed).
        x: ``[N, C, H, W]`` inputs as the model sees them (``Run.preprocess`` makes them).
        method: one of ``METHODS``.
        target: class index, or one per sample; default: the predicted class.
        layer: module name for the CAM family; default: the last ``feature_info`` stage.
        baseline: integrated gradients' and occlusion's reference input (a tensor like ``x`` or a
            value; ``0`` is the dataset's mean image in normalized space).
        steps: integrated gradients' integration points.
        samples, noise: SmoothGrad's noisy copies and their standard deviation (relative to the
            input's range).
        window: occlusion patch side (default: a seventh of the image side, at least 2).

    Returns:
        ``[N, H, W]`` for the CAM family, ``[N, C, H, W]`` for pixel attributions.
    """
    check_method(method)
    if x.dim() != 4:
        raise ValueError(f"expected a batch of images [N, C, H, W]; got shape {tuple(x.shape)}")
    if model.training:
        raise ValueError("put the model in eval mode (model.eval()) before attributing")
    tgt = _targets(model, x, target)
    if method == "cam":
        return cam(model, x, tgt)
    if method in ("gradcam", "gradcam++"):
        name, module = resolve_layer(model, layer)
        check_map_layer(model, name, x, method)
        maps = _gradcam(model, x, tgt, module, plus=method == "gradcam++")
        return _upsample(maps, x.shape[-2:])
    if isinstance(baseline, (int, float)):
        baseline = torch.full_like(x, float(baseline))
    x = x.detach().clone().requires_grad_(True)  # captum differentiates with respect to it
    if method == "saliency":
        from captum.attr import Saliency

        return Saliency(model).attribute(x, target=tgt, abs=True).detach()
    if method == "smoothgrad":
        from captum.attr import NoiseTunnel, Saliency

        spread = float(x.detach().max() - x.detach().min()) or 1.0
        return NoiseTunnel(Saliency(model)).attribute(x, nt_type="smoothgrad", nt_samples=samples,
                                                      stdevs=noise * spread, target=tgt, abs=True).detach()
    if method == "integrated-gradients":
        from captum.attr import IntegratedGradients

        return IntegratedGradients(model).attribute(x, baselines=baseline, target=tgt, n_steps=steps,
                                                    method="gausslegendre").detach()
    from captum.attr import Occlusion

    side = window or max(2, min(x.shape[-2:]) // 7)
    stride = max(1, side // 2)
    # several patch positions per forward pass (same result, 7x faster on a batch of 32); bounded for memory
    per_eval = max(1, min(16, 256 // len(x)))
    occ = Occlusion(model).attribute(x, sliding_window_shapes=(x.shape[1], side, side),
                                     strides=(x.shape[1], stride, stride), baselines=baseline, target=tgt,
                                     perturbations_per_eval=per_eval)
    return occ.detach().to(x.dtype)  # captum accumulates in float32


def _gradcam(model: nn.Module, x: torch.Tensor, tgt: torch.Tensor, module: nn.Module, plus: bool) -> torch.Tensor:
    if not plus:
        from captum.attr import LayerGradCam

        maps = LayerGradCam(model, module).attribute(x, target=tgt, relu_attributions=True)
        return maps.detach()[:, 0]
    # Grad-CAM++ by hand (captum has none). With S = exp(y_c) the higher derivatives reduce to powers
    # of the first: alpha = g^2 / (2 g^2 + sum_ab A_ab g^3), weights w_k = sum_ij alpha_kij ReLU(g_kij).
    acts, grads = _activations_and_gradients(model, x, tgt, module)  # (N, K, h, w) each
    g2, g3 = grads.pow(2), grads.pow(3)
    denom = 2 * g2 + acts.sum(dim=(2, 3), keepdim=True) * g3
    alpha = torch.where(denom != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)), 0.0)
    weights = (alpha * F.relu(grads)).sum(dim=(2, 3), keepdim=True)  # (N, K, 1, 1)
    return F.relu((weights * acts).sum(1)).detach()


def _activations_and_gradients(model, x, tgt, module) -> tuple[torch.Tensor, torch.Tensor]:
    store: dict[str, torch.Tensor] = {}

    def hook(_, __, out):
        out.retain_grad()
        store["a"] = out

    handle = module.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = model(x.detach().requires_grad_(True))
            logits.gather(1, tgt[:, None]).sum().backward()
    finally:
        handle.remove()
    a = store["a"]
    return a.detach(), a.grad.detach()


def check_cam_head(model: nn.Module, feats: torch.Tensor) -> nn.Linear:
    """The linear layer of a global-average-pool + linear head, or ValueError saying what works instead.

    Checked numerically, not by name: ``forward_head(A)`` must equal ``W mean(A) + b``.
    """
    why = None
    fc = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(fc, nn.Linear):
        why = "its classifier is not one linear layer"
    elif feats.dim() != 4 or fc.in_features != feats.shape[1]:
        why = (f"its classifier reads {getattr(fc, 'in_features', '?')} features, not the "
               f"{feats.shape[1] if feats.dim() > 1 else '?'} channels of the last feature map")
    else:
        with torch.no_grad():
            head = model.forward_head(feats)
            gap = fc(feats.mean(dim=(2, 3)))
        if head.shape != gap.shape or not torch.allclose(head, gap, rtol=1e-4, atol=1e-5):
            why = "its head is not global average pooling followed by the linear classifier"
    if why:
        raise ValueError(f"cam needs a global-average-pool + linear head, and {type(model).__name__} has none "
                         f"({why}); use --method gradcam, which works with any head")
    return fc


def cam(model: nn.Module, x: torch.Tensor, tgt: torch.Tensor, upsample: bool = True) -> torch.Tensor:
    """Class activation maps (Zhou et al. 2016): sum_k w[c, k] A_k (signed), upsampled to the input, ``[N, H, W]``."""
    if not hasattr(model, "forward_features"):
        raise ValueError("cam needs a model with forward_features (the convolab model contract); use gradcam")
    with torch.no_grad():
        feats = model.forward_features(x)  # (N, K, h, w)
        fc = check_cam_head(model, feats)
        w = fc.weight[tgt]  # (N, K)
        maps = torch.einsum("nk,nkhw->nhw", w, feats)
    return _upsample(maps, x.shape[-2:]) if upsample else maps


def _upsample(maps: torch.Tensor, size) -> torch.Tensor:
    """``[N, h, w]`` -> ``[N, H, W]`` by bilinear interpolation (a ``[N, H, W]`` map is returned as is)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


def integrated_gradients_gap(model: nn.Module, x: torch.Tensor, attributions: torch.Tensor,
                             target: torch.Tensor | int | None = None,
                             baseline: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Completeness of integrated gradients, per sample: |sum(attr) - (y_c(x) - y_c(x'))| / |y_c(x) - y_c(x')|."""
    tgt = _targets(model, x, target)
    if isinstance(baseline, (int, float)):
        baseline = torch.full_like(x, float(baseline))
    with torch.no_grad():
        fx = model(x).gather(1, tgt[:, None])[:, 0]
        fb = model(baseline).gather(1, tgt[:, None])[:, 0]
    total = attributions.flatten(1).sum(1)
    return (total - (fx - fb)).abs() / (fx - fb).abs().clamp_min(1e-12)
