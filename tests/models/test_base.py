"""The shared model surface (``ConvClassifier``), checked on every registered model.

forward + backward at three input shapes, and the contract the trainer, analysis and
explanation code rely on: ``forward_features`` / ``forward_head`` / ``get_classifier`` /
``reset_classifier`` / ``feature_info``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convolab.models import create_model, get_model_entry, list_models

BIG = 30_000_000  # models above this many parameters (at their usual configuration) run in the slow suite


def _params_at_default(name: str) -> int:
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = create_model(name, **get_model_entry(name).default_cfg)
    return sum(p.numel() for p in model.parameters())


MODELS = [pytest.param(n, marks=pytest.mark.slow) if _params_at_default(n) > BIG else n for n in list_models()]
SHAPES = [pytest.param(28, 1, id="28x28x1"), pytest.param(32, 3, id="32x32x3"), pytest.param(8, 1, id="8x8x1")]
NUM_CLASSES = 7


def _lenet_padded(h: int) -> int:
    """LeNet-5 pads inputs below 32 by ceil((32 - h) / 2) on each side (the module docstring)."""
    return h + 2 * max(0, math.ceil((32 - h) / 2))


# The spatial side of each feature_info map for a square input of side h, derived by hand from the
# layer lists (conv k3 pad 1 keeps the size, k3 unpadded takes 2 off, k5 unpadded takes 4 off,
# 2x2 pooling floors the half).
EXPECTED_MAP_SIDES = {
    "tutorial_cnn": lambda h: [h // 2, h // 2 // 2],
    "mnist_cnn": lambda h: [h - 2, (h - 4) // 2],
    "lenet5": lambda h: [(_lenet_padded(h) - 4) // 2, ((_lenet_padded(h) - 4) // 2 - 4) // 2],
    "lenet5_classic": lambda h: [(_lenet_padded(h) - 4) // 2, ((_lenet_padded(h) - 4) // 2 - 4) // 2],
}


def test_registry_holds_the_four_tutorial_models():
    assert {"tutorial_cnn", "mnist_cnn", "lenet5", "lenet5_classic"} <= set(EXPECTED_MAP_SIDES) <= set(list_models())


@pytest.mark.parametrize("size,chans", SHAPES)
@pytest.mark.parametrize("name", MODELS)
def test_forward_backward_every_parameter_gets_a_gradient(name, size, chans):
    torch.manual_seed(0)
    model = create_model(name, num_classes=NUM_CLASSES, in_chans=chans, input_size=size)
    model.train()
    x = torch.randn(8, chans, size, size)
    y = torch.arange(8) % NUM_CLASSES
    out = model(x)
    assert out.shape == (8, NUM_CLASSES)
    assert out.dtype == torch.float32
    F.cross_entropy(out, y).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: {pname} got no gradient"
        assert p.grad.shape == p.shape
        assert torch.isfinite(p.grad).all(), f"{name}: {pname} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name}: {pname} has an all-zero gradient"


@pytest.mark.parametrize("size,chans", SHAPES)
@pytest.mark.parametrize("name", MODELS)
def test_classifier_contract(name, size, chans):
    torch.manual_seed(0)
    model = create_model(name, num_classes=NUM_CLASSES, in_chans=chans, input_size=size).eval()
    assert (model.num_classes, model.in_chans, tuple(model.input_size)) == (NUM_CLASSES, chans, (size, size))
    x = torch.randn(3, chans, size, size)
    with torch.no_grad():
        logits = model(x)
        feats = model.forward_features(x)
        kept = feats.clone()
        head = model.forward_head(feats)
        pre = model.forward_head(feats, pre_logits=True)
    assert feats.dim() == 4 and feats.shape[0] == 3, "forward_features must return an unpooled (N, C, H, W) map"
    assert torch.equal(feats, kept), "forward_head must not modify the feature map it is given (inplace ReLU?)"
    assert torch.equal(head, logits)
    fc = model.get_classifier()
    assert isinstance(fc, nn.Linear)
    assert fc.out_features == NUM_CLASSES
    assert pre.shape == (3, fc.in_features)
    torch.testing.assert_close(fc(pre), logits, rtol=0, atol=0)

    model.reset_classifier(5)
    assert model.num_classes == 5
    assert model.get_classifier().out_features == 5
    assert model.get_classifier().in_features == fc.in_features
    with torch.no_grad():
        assert model(x).shape == (3, 5)
        # The layers before the classifier are untouched by the reset.
        assert torch.equal(model.forward_head(model.forward_features(x), pre_logits=True), pre)


@pytest.mark.parametrize("size,chans", SHAPES)
@pytest.mark.parametrize("name", MODELS)
def test_feature_info_modules_give_maps_of_the_stated_channels_and_stride(name, size, chans):
    torch.manual_seed(0)
    model = create_model(name, num_classes=NUM_CLASSES, in_chans=chans, input_size=size).eval()
    modules = dict(model.named_modules())
    info = model.feature_info
    assert info, f"{name} has no feature_info"
    assert all(set(i) >= {"module", "num_chs", "reduction"} for i in info)
    for i in info:
        assert i["module"] in modules, f"{name}: feature_info names {i['module']!r}, not a submodule"
    reductions = [i["reduction"] for i in info]
    assert reductions == sorted(reductions), "feature_info goes from shallow to deep"

    def maps_for(side: int) -> list[torch.Tensor]:
        captured: dict[str, torch.Tensor] = {}
        hooks = [modules[i["module"]].register_forward_hook(
            lambda _m, _inp, out, key=i["module"]: captured.__setitem__(key, out.detach().clone())) for i in info]
        try:
            with torch.no_grad():
                model.forward_features(torch.randn(2, chans, side, side))
        finally:
            for h in hooks:
                h.remove()
        return [captured[i["module"]] for i in info]

    maps = maps_for(size)
    # A model without hand-derived sizes here still gets the channel and stride checks.
    expected_sides = EXPECTED_MAP_SIDES[name](size) if name in EXPECTED_MAP_SIDES else [None] * len(info)
    for i, fmap, side in zip(info, maps, expected_sides):
        assert fmap.dim() == 4 and fmap.shape[:2] == (2, i["num_chs"]), f"{name}: {i['module']}"
        if side is not None:
            assert tuple(fmap.shape[2:]) == (side, side), f"{name}: {i['module']} at {size}x{size}"
        if name == "tutorial_cnn":  # padded convolutions: the map is exactly input // reduction
            assert fmap.shape[2] == size // i["reduction"]
    # `reduction` is the cumulative stride (timm's meaning): widening the input by `reduction` pixels
    # widens that map by exactly one, by 2 * reduction by exactly two. Unpadded convolutions
    # (mnist_cnn, lenet5) make the map smaller than input / reduction, not the stride different.
    for k in (1, 2):
        wider = maps_for(size + k * max(reductions))
        for i, fmap, fwide in zip(info, maps, wider):
            step = k * max(reductions) // i["reduction"]
            assert fwide.shape[2] - fmap.shape[2] == step, f"{name}: {i['module']} stride is not {i['reduction']}"
