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
``deconvnet``               dy_c/dx with each ReLU's backward replaced by ReLU(grad):   captum
                            the grad passes where it is positive, whatever the input    Deconvolution
                            (Zeiler & Fergus 2014)
``guided-backprop``         dy_c/dx with each ReLU's backward passing the grad where    captum
                            the input AND the grad are positive                          GuidedBackprop
                            (Springenberg et al. 2015)
==========================  ==========================================================  ============

The CAM family returns ``[N, H, W]`` at the input's resolution (bilinear upsampling of the layer's
map); pixel methods return ``[N, C, H, W]``. ``y_c`` is the logit of the target class. The default
layer is the model's last ``feature_info`` stage (the map ``forward_features`` returns), so no method
needs per-model code.

``deconvnet`` and ``guided-backprop`` change the backward pass of ReLUs, and captum can do that only
for ``nn.ReLU`` modules. Before attributing, one forward pass counts the ReLUs in the autograd graph
against the calls of ``nn.ReLU`` modules: a model that applies ReLU as a function (``F.relu``, as
``googlenet`` and ``shufflenet_v1`` do), has no ReLU (``efficientnet``: SiLU, ``mobilenet_v2``:
ReLU6), or mixes ReLUs with other activations (``mobilenet_v3``: Hardswish) is refused with one line,
because those gradients would pass unmodified and the map would be a hybrid with no name. Sigmoid
gates (squeeze-and-excitation) are allowed: the methods leave them alone by definition. Inplace ReLUs
are fine (captum runs each on a copy of its input). Each ReLU also gets its input as a fresh view:
captum hooks the gradient of the tensor a ReLU receives, and where that tensor feeds other layers too
(the shared nodes of a DARTS cell) the hook would see, and rectify, their gradients as well.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from convolab.explain.layers import check_map_layer, resolve_layer

__all__ = ["METHODS", "CAM_METHODS", "PIXEL_METHODS", "RELU_METHODS", "attribute", "check_method",
           "check_relu_network", "default_target", "integrated_gradients_gap", "check_cam_head"]

CAM_METHODS = ("cam", "gradcam", "gradcam++")
RELU_METHODS = ("deconvnet", "guided-backprop")  # pixel methods that modify the ReLUs' backward pass
PIXEL_METHODS = ("saliency", "smoothgrad", "integrated-gradients", "occlusion") + RELU_METHODS
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

    Raises:
        ValueError: an unknown method, a bad target or layer, a model in training mode; for
            ``deconvnet`` and ``guided-backprop`` a model whose nonlinearities are not all ``nn.ReLU``
            modules (see :func:`check_relu_network`).
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
    if method in RELU_METHODS:
        return _modified_relu(model, x, tgt, deconv=method == "deconvnet")
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


# Autograd nodes of elementwise activations that deconvnet / guided backprop would pass unmodified. Sigmoid and
# Hardsigmoid are left out on purpose: in these models they gate channels (squeeze-and-excitation), and the
# methods are defined as modifying the ReLUs only.
_OTHER_ACTIVATIONS = {"Hardtanh": "ReLU6/Hardtanh", "Gelu": "GELU", "Silu": "SiLU", "Hardswish": "Hardswish",
                      "Elu": "ELU/SELU", "Celu": "CELU", "LeakyRelu": "LeakyReLU", "Mish": "Mish",
                      "Softplus": "Softplus", "PreluKernel": "PReLU", "Tanh": "Tanh", "Threshold": "Threshold",
                      "RreluWithNoise": "RReLU"}  # autograd node name without "Backward<k>" -> the activation


def _autograd_nodes(output: torch.Tensor) -> dict[str, int]:
    """How many nodes of each operation (``Relu``, ``Conv``, ...) the autograd graph behind ``output`` holds."""
    counts: dict[str, int] = {}
    seen: set = set()
    stack = [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        name = re.sub(r"Backward\d*$", "", type(node).__name__)  # ReluBackward0 -> Relu
        counts[name] = counts.get(name, 0) + 1
        stack.extend(n for n, _ in node.next_functions)
    return counts


def check_relu_network(model: nn.Module, x: torch.Tensor, method: str = "guided-backprop") -> int:
    """The number of ReLUs in ``model``'s forward pass on ``x``, or ValueError if ``method`` cannot reach them all.

    ``deconvnet`` and ``guided-backprop`` (captum) override the backward of ``nn.ReLU`` modules only. One
    forward pass compares the ReLU nodes of the autograd graph with the calls of ``nn.ReLU`` modules, and
    looks for other activations: a ReLU applied as a function (``F.relu``), a model without ReLUs, or one
    that also uses ReLU6, GELU, SiLU, Hardswish ... would give a map whose gradients pass partly
    unmodified, so it is refused with one line naming what the model uses instead.
    """
    calls = 0

    def count(*_):
        nonlocal calls
        calls += 1

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        with torch.enable_grad():
            out = model(x.detach().requires_grad_(True))
    finally:
        for h in handles:
            h.remove()
    nodes = _autograd_nodes(out if torch.is_tensor(out) else out[0])
    relus = nodes.get("Relu", 0)
    others: dict[str, int] = {}
    for k, v in nodes.items():
        if k in _OTHER_ACTIVATIONS:
            others[_OTHER_ACTIVATIONS[k]] = others.get(_OTHER_ACTIVATIONS[k], 0) + v
    name = type(model).__name__
    used = ", ".join(f"{a} ({n}x)" for a, n in sorted(others.items(), key=lambda kv: -kv[1]))
    if relus == 0:
        raise ValueError(f"{method} changes how gradients pass through ReLUs, and {name} has none"
                         f"{' (it uses ' + used + ')' if used else ''}; use saliency or integrated-gradients")
    if calls < relus:
        raise ValueError(f"{method} needs every ReLU to be an nn.ReLU module (captum overrides their backward), and "
                         f"{name} applies {relus - calls} of its {relus} ReLUs as functions (F.relu, torch.relu), "
                         "whose gradients would pass unmodified; use saliency or gradcam")
    if others:
        raise ValueError(f"{method} is defined for ReLU networks, and {name} also uses {used}, whose gradients "
                         "would pass unmodified; use saliency or gradcam")
    return relus


def _fresh_input(_module: nn.Module, args: tuple) -> tuple:
    # captum hooks the gradient of the tensor a ReLU receives; a view of it that only this call uses keeps
    # other consumers' gradients (a DARTS node feeds several operations) out of that hook.
    return (args[0].view_as(args[0]), *args[1:])


def _modified_relu(model: nn.Module, x: torch.Tensor, tgt: torch.Tensor, deconv: bool) -> torch.Tensor:
    """Deconvnet or guided backprop through captum, after :func:`check_relu_network`."""
    import warnings

    from captum.attr import Deconvolution, GuidedBackprop

    check_relu_network(model, x[:1], "deconvnet" if deconv else "guided-backprop")
    handles = [m.register_forward_pre_hook(_fresh_input) for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        with warnings.catch_warnings():  # captum warns on every call that it sets (and removes) ReLU hooks
            warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU activations")
            maps = (Deconvolution if deconv else GuidedBackprop)(model).attribute(x, target=tgt)
    finally:
        for h in handles:
            h.remove()
    return maps.detach()


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
