"""``attribute``: each method against an independent computation, shapes, targets and errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convolab.explain import attribution as A
from convolab.explain.attribution import attribute, integrated_gradients_gap
from convolab.models import create_model


@pytest.fixture(scope="module")
def gap_model():
    """A global-average-pool + linear model (CIFAR ResNet-20), float64 so comparisons are tight."""
    torch.manual_seed(0)
    return create_model("resnet20", num_classes=5, in_chans=1, input_size=16).double().eval()


@pytest.fixture(scope="module")
def x():
    torch.manual_seed(1)
    return torch.randn(3, 1, 16, 16, dtype=torch.float64)


def _hooked(model, x, target, module):
    """Layer activations and their gradients, by plain autograd (the independent reference)."""
    store = {}
    h = module.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    out = model(x)
    h.remove()
    (g,) = torch.autograd.grad(out.gather(1, target[:, None]).sum(), store["a"])
    return store["a"].detach(), g


@pytest.mark.parametrize("method", A.METHODS)
def test_shapes(gap_model, x, method):
    maps = attribute(gap_model, x, method, window=8 if method == "occlusion" else None)
    assert maps.shape == ((3, 16, 16) if method in A.CAM_METHODS else (3, 1, 16, 16))
    assert torch.isfinite(maps).all()


def test_gradcam_equals_the_definition(gap_model, x):
    tgt = torch.tensor([0, 3, 4])
    module = dict(gap_model.named_modules())[gap_model.feature_info[-1]["module"]]
    a, g = _hooked(gap_model, x, tgt, module)
    ref = F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1))
    ref = F.interpolate(ref[:, None], size=(16, 16), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(attribute(gap_model, x, "gradcam", tgt), ref)


def test_gradcam_plus_plus_equals_the_paper_formula(gap_model, x):
    """Chattopadhyay et al. Eq. 19, written channel by channel."""
    tgt = torch.tensor([1, 1, 2])
    module = dict(gap_model.named_modules())[gap_model.feature_info[-1]["module"]]
    a, g = _hooked(gap_model, x, tgt, module)
    ref = torch.zeros(a.shape[0], *a.shape[2:], dtype=a.dtype)
    for n in range(a.shape[0]):
        for k in range(a.shape[1]):
            gk, ak = g[n, k], a[n, k]
            denom = 2 * gk**2 + ak.sum() * gk**3
            alpha = torch.where(denom != 0, gk**2 / denom, torch.zeros_like(gk))
            ref[n] += (alpha * F.relu(gk)).sum() * ak
    ref = F.interpolate(F.relu(ref)[:, None], size=(16, 16), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(attribute(gap_model, x, "gradcam++", tgt), ref)


def test_cam_equals_gradcam_up_to_scale(gap_model, x):
    from convolab.explain.sanity import cam_gradcam_agreement

    assert cam_gradcam_agreement(gap_model, x)["max_abs_difference"] < 1e-5


def test_cam_is_the_classifier_row_times_the_map(gap_model, x):
    tgt = torch.tensor([2, 0, 1])
    feats = gap_model.forward_features(x)
    w = gap_model.get_classifier().weight
    ref = torch.stack([(w[t][:, None, None] * f).sum(0) for t, f in zip(tgt, feats)])
    torch.testing.assert_close(A.cam(gap_model, x, tgt, upsample=False), ref.detach())


def test_cam_refuses_a_model_without_a_gap_head(x):
    model = create_model("tutorial_cnn", num_classes=5, in_chans=1, input_size=16).double().eval()
    with pytest.raises(ValueError, match="global-average-pool \\+ linear head.*use --method gradcam"):
        attribute(model, x, "cam")


def test_saliency_is_the_absolute_input_gradient(gap_model, x):
    tgt = torch.tensor([4, 4, 0])
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(gap_model(xr).gather(1, tgt[:, None]).sum(), xr)
    torch.testing.assert_close(attribute(gap_model, x, "saliency", tgt), g.abs())


def test_integrated_gradients_complete(gap_model, x):
    """Sundararajan et al., Prop. 1: the attributions sum to f(x) - f(baseline)."""
    tgt = torch.tensor([0, 1, 2])
    ig = attribute(gap_model, x, "integrated-gradients", tgt)
    assert integrated_gradients_gap(gap_model, x, ig, tgt).max() < 0.05


def test_occlusion_of_a_linear_model_is_weight_times_input():
    """f(x) = sum_i w_i x_i: hiding pixel i (baseline 0) lowers the logit by exactly w_i x_i."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 2, bias=False)).double().eval()
    x = torch.randn(2, 1, 6, 6, dtype=torch.float64)
    occ = attribute(model, x, "occlusion", 1, window=1)
    ref = model[1].weight[1].view(1, 1, 6, 6) * x
    torch.testing.assert_close(occ, ref)


def test_targets(gap_model, x):
    pred = gap_model(x).argmax(1)
    torch.testing.assert_close(attribute(gap_model, x, "gradcam"), attribute(gap_model, x, "gradcam", pred))
    one = attribute(gap_model, x, "saliency", 3)
    torch.testing.assert_close(one, attribute(gap_model, x, "saliency", torch.tensor([3, 3, 3])))
    with pytest.raises(ValueError, match="2 classes for 3 samples"):
        attribute(gap_model, x, "saliency", torch.tensor([1, 2]))


def test_errors(gap_model, x):
    with pytest.raises(ValueError, match="did you mean 'gradcam'"):
        attribute(gap_model, x, "gradcm")
    with pytest.raises(ValueError, match="unknown layer 'layer9'"):
        attribute(gap_model, x, "gradcam", layer="layer9")
    with pytest.raises(ValueError, match="eval mode"):
        attribute(create_model("resnet20", num_classes=5, in_chans=1, input_size=16), x.float(), "gradcam")
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        attribute(gap_model, x[0], "gradcam")


def test_any_layer_by_name(gap_model, x):
    maps = attribute(gap_model, x, "gradcam", layer="layer2")
    assert maps.shape == (3, 16, 16)
