"""Network in Network: the parameter count derived by hand, d2l's layout with its 1x1-conv + GAP head, small inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convolab.models import create_model

from ._helpers import n_params


def nin_params(in_chans: int, num_classes: int, stem_kernel: int) -> int:
    """By hand: each mlpconv block is a kxk conv plus 1x1 convs (weights + biases)."""
    def conv(cin: int, cout: int, k: int) -> int:
        return cin * cout * k * k + cout

    return (conv(in_chans, 96, stem_kernel) + 2 * conv(96, 96, 1)
            + conv(96, 256, 5) + 2 * conv(256, 256, 1)
            + conv(256, 384, 3) + 2 * conv(384, 384, 1)
            + conv(384, num_classes, 3) + 2 * conv(num_classes, num_classes, 1))  # the last 1x1 is `fc`


def test_parameter_count():
    # No torchvision reference: the figure is derived from d2l.ai's NiN (section 8.3) at 1000 classes.
    assert nin_params(3, 1000, 11) == 7_439_608
    with torch.device("meta"):
        assert n_params(create_model("nin")) == 7_439_608
        assert n_params(create_model("nin", num_classes=10, in_chans=1, input_size=28)) == nin_params(1, 10, 3)


def _d2l_forward(model: nn.Module, x: torch.Tensor, stem: dict, pools: list[bool]) -> torch.Tensor:
    """d2l's NiN written with functional ops on the model's weights, the head in the paper's order:
    the last 1x1 convolution on the map, then global average pooling (no ReLU after it)."""
    p = dict(model.named_parameters())

    def unit(h, name, **kw):
        return F.relu(F.conv2d(h, p[f"features.{name}.0.weight"], p[f"features.{name}.0.bias"], **kw))

    def block(h, b, n_1x1=2, **kw):
        h = unit(h, f"block{b}.0", **kw)
        for i in range(1, n_1x1 + 1):
            h = unit(h, f"block{b}.{i}")
        return h

    def pool(h, keep):
        return F.max_pool2d(h, 3, 2) if keep else h

    h = pool(block(x, 1, **stem), pools[0])
    h = pool(block(h, 2, padding=2), pools[1])
    h = pool(block(h, 3, padding=1), pools[2])
    h = block(h, 4, n_1x1=1, padding=1)
    fc = model.classifier.fc
    h = F.conv2d(h, fc.weight[:, :, None, None], fc.bias)  # the paper's final 1x1 conv: (N, num_classes, H, W)
    return h.mean((2, 3))                                   # global average pooling


@pytest.mark.parametrize("size,chans,num_classes,stem,pools", [
    (224, 3, 1000, dict(stride=4), [True] * 3),                       # native: 54 -> 26 -> 12 -> 5
    (28, 1, 10, dict(padding=1), [True] * 3),                         # small: 28 -> 13 -> 6 -> 2
    (8, 1, 7, dict(padding=1), [True, True, False]),                  # small: 8 -> 3 -> 1, third pool dropped
])
def test_gap_then_linear_equals_the_papers_1x1_conv_then_gap(size, chans, num_classes, stem, pools):
    torch.manual_seed(0)
    model = create_model("nin", num_classes=num_classes, in_chans=chans, input_size=size).eval()
    x = torch.randn(2, chans, size, size)
    with torch.no_grad():
        torch.testing.assert_close(model(x), _d2l_forward(model, x, stem, pools), rtol=1e-4, atol=1e-5)


def test_native_from_67_up_small_stem_below():
    with torch.device("meta"):
        native = create_model("nin", input_size=67)
        small = create_model("nin", input_size=66)
    def stem(m: nn.Module) -> nn.Conv2d:
        return m.features.block1[0][0]

    assert (stem(native).kernel_size, stem(native).stride, stem(native).padding) == ((11, 11), (4, 4), (0, 0))
    assert (stem(small).kernel_size, stem(small).stride, stem(small).padding) == ((3, 3), (1, 1), (1, 1))
    with torch.device("meta"):  # 67: (67 - 11) // 4 + 1 = 15 -> 7 -> 3 -> 1
        assert native.forward_features(torch.empty(1, 3, 67, 67)).shape[-1] == 1


@pytest.mark.parametrize("size,sides,reductions", [
    (224, [54, 26, 12, 5], [4, 8, 16, 32]),
    (32, [32, 15, 7, 3], [1, 2, 4, 8]),
    (8, [8, 3, 1, 1], [1, 2, 4, 4]),
])
def test_feature_info_matches_the_maps(size, sides, reductions):
    model = create_model("nin", num_classes=7, in_chans=1, input_size=size).eval()
    modules, got = dict(model.named_modules()), {}
    hooks = [modules[i["module"]].register_forward_hook(
        lambda _m, _i, out, key=i["module"]: got.__setitem__(key, out.shape)) for i in model.feature_info]
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 1, size, size))
    for h in hooks:
        h.remove()
    shapes = [got[i["module"]] for i in model.feature_info]
    assert [s[-1] for s in shapes] == sides
    assert [s[1] for s in shapes] == [i["num_chs"] for i in model.feature_info] == [96, 256, 384, 7]
    assert [i["reduction"] for i in model.feature_info] == reductions
    assert feats.shape == (1, 7, sides[-1], sides[-1])


@pytest.mark.parametrize("size,chans", [(8, 1), (28, 1), (32, 3)])
def test_forward_on_small_inputs(size, chans):
    torch.manual_seed(0)
    model = create_model("nin", num_classes=7, in_chans=chans, input_size=size)
    out = model(torch.randn(2, chans, size, size))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


def test_dropout_sits_before_the_last_block():
    with torch.device("meta"):
        model = create_model("nin", drop_rate=0.3)
    names = list(dict(model.features.named_children()))
    assert names == ["block1", "pool1", "block2", "pool2", "block3", "pool3", "drop", "block4"]
    assert model.features.drop.p == 0.3
    assert isinstance(model.get_classifier(), nn.Linear) and model.get_classifier().in_features == 1000
    for rate in (-0.1, 1.0):
        with pytest.raises(ValueError, match="drop_rate"):
            create_model("nin", drop_rate=rate)
