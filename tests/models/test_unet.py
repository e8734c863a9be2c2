"""U-Net (Ronneberger et al., MICCAI 2015) with padded convolutions.

References: the paper's Figure 1 counted layer by layer (by hand below), which gives 31,030,658
parameters at 1 input channel and 2 classes: the total Keras reports for straight ports of the
paper's (unpadded) network, and the count of the tf_unet authors' code at 5 levels and 64 features;
padding adds no parameters. Behaviour: output size = input size for even and odd sizes, the
expanding path's padding and concatenation order, the paper's initialisation, and a tiny U-Net
learning a per-pixel rule that a spatial shift would break.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convolab.models import create_model
from convolab.models.unet import Up

from ._helpers import n_params

PAPER_PARAMS = 31_030_658  # in_chans=1, num_classes=2, base 64, depth 4, no BatchNorm

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (tests/models/conftest.py)


def unet_params(in_chans: int, num_classes: int, base: int = 64, depth: int = 4, batch_norm: bool = False) -> int:
    """By hand: two 3x3 convolutions per level (bias, or BatchNorm's 2 per channel), 2x2 up-convolutions
    with bias, the final 1x1 convolution."""
    def conv3(cin: int, cout: int) -> int:
        return cin * cout * 9 + (2 * cout if batch_norm else cout)

    widths = [base * 2 ** i for i in range(depth + 1)]
    total = conv3(in_chans, widths[0]) + conv3(widths[0], widths[0])
    for i in range(depth):  # contracting path
        total += conv3(widths[i], widths[i + 1]) + conv3(widths[i + 1], widths[i + 1])
    for i in range(depth):  # expanding path: up-convolution to half the channels, then two convolutions
        total += widths[i + 1] * widths[i] * 4 + widths[i]
        total += conv3(widths[i + 1], widths[i]) + conv3(widths[i], widths[i])
    return total + widths[0] * num_classes + num_classes


def test_parameter_count_is_the_papers():
    with torch.device("meta"):
        model = create_model("unet", num_classes=2, in_chans=1)
    assert unet_params(1, 2) == PAPER_PARAMS
    assert n_params(model) == PAPER_PARAMS
    assert abs(n_params(model) - 31.0e6) / 31.0e6 < 0.01  # "31.0 M", the figure usually quoted
    # Two convolutions per level, channels doubling from 64 to 1024 at the bottom of the U.
    assert [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)][:10:2] == [64, 128, 256, 512, 1024]


@pytest.mark.parametrize("kwargs", [dict(base_channels=8), dict(base_channels=8, depth=2), dict(batch_norm=True),
                                    dict(base_channels=16, depth=5, batch_norm=True)])
def test_parameter_count_by_hand_for_other_settings(kwargs):
    with torch.device("meta"):
        model = create_model("unet", num_classes=5, in_chans=3, **kwargs)
    assert n_params(model) == unet_params(3, 5, kwargs.get("base_channels", 64), kwargs.get("depth", 4),
                                          kwargs.get("batch_norm", False))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    # With BatchNorm the convolutions lose their bias (the norm's shift replaces it).
    assert all((m.bias is None) == kwargs.get("batch_norm", False) for m in convs)


@pytest.mark.parametrize("size", [(16, 16), (28, 28), (29, 31), (33, 47), (100, 17)])
def test_logits_have_the_input_size(size):
    torch.manual_seed(0)
    model = create_model("unet", num_classes=3, in_chans=2, input_size=size, base_channels=4).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 2, *size))
    assert out.shape == (2, 3, *size)
    assert torch.isfinite(out).all()


def test_up_block_pads_the_short_map_and_puts_the_skip_first():
    torch.manual_seed(0)
    up = Up(8, 4)
    x, skip = torch.randn(1, 8, 3, 3), torch.randn(1, 4, 7, 7)  # 7 -> max-pool -> 3 -> up-convolution -> 6
    seen = {}
    up.conv.register_forward_hook(lambda _m, inp, _out: seen.__setitem__("in", inp[0]))
    with torch.no_grad():
        out = up(x, skip)
        upsampled = up.upconv(x)                                 # (1, 4, 6, 6)
    assert out.shape == (1, 4, 7, 7)
    cat = seen["in"]
    assert torch.equal(cat[:, :4], skip)
    # diff 1: nothing on the top/left, one zero row and column at the bottom/right.
    assert torch.equal(cat[:, 4:, :6, :6], upsampled)
    assert not cat[:, 4:, 6, :].any() and not cat[:, 4:, :, 6].any()
    # A longer up-sampled map (an odd skip cropped the other way) is cropped to the skip: negative padding.
    with torch.no_grad():
        assert up(torch.randn(1, 8, 4, 4), skip).shape == (1, 4, 7, 7)


def test_too_small_an_input_is_refused_with_the_smallest_that_works():
    with pytest.raises(ValueError, match="smallest input that works is 16x16"):
        create_model("unet", num_classes=2, input_size=15)
    with pytest.raises(ValueError, match="smallest input that works is 4x4"):
        create_model("unet", num_classes=2, input_size=3, depth=2)
    assert create_model("unet", num_classes=2, in_chans=1, input_size=4, depth=2, base_channels=2)(
        torch.randn(1, 1, 4, 4)).shape == (1, 2, 4, 4)


@pytest.mark.parametrize("kwargs,match", [(dict(base_channels=0), "base_channels"), (dict(depth=0), "depth"),
                                          (dict(drop_rate=1.0), "drop_rate"), (dict(drop_rate=-0.1), "drop_rate"),
                                          (dict(bilinear=True), "bilinear")])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_model("unet", num_classes=2, input_size=32, **kwargs)


def test_dropout_sits_at_the_bottom_of_the_u():
    torch.manual_seed(0)
    model = create_model("unet", num_classes=2, in_chans=1, input_size=32, base_channels=4, drop_rate=0.5)
    seen = []
    model.drop.register_forward_hook(lambda _m, inp, _out: seen.append(inp[0].shape))
    x = torch.randn(2, 1, 32, 32)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    assert seen[0] == (2, 64, 2, 2)  # 4 * 2**4 channels at 32 / 16
    assert create_model("unet", num_classes=2).drop.p == 0.0


def test_initialisation_is_the_papers():
    """Gaussian, std sqrt(2 / N), N the inputs of one unit (k * k * C_in; C_in for the up-convolutions)."""
    torch.manual_seed(0)
    model = create_model("unet", num_classes=2, in_chans=1, base_channels=16)
    conv = model.down[3][1][1][0]                               # 3x3, 256 -> 256
    upconv = model.up[0].upconv                                  # 2x2 stride 2, 256 -> 128
    for m, fan_in in ((conv, 256 * 9), (upconv, 256)):
        assert m.weight.mean().abs() < 0.1 * math.sqrt(2 / fan_in)
        assert m.weight.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.02)
        assert not m.bias.any()


def test_a_tiny_unet_learns_a_per_pixel_rule_on_odd_sized_images():
    """Label = whether the pixel is positive: learnable only if the logits stay aligned with the input."""
    torch.manual_seed(0)
    model = create_model("unet", num_classes=2, in_chans=1, input_size=(17, 19), base_channels=4, depth=2)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    x = torch.randn(16, 1, 17, 19)
    y = (x[:, 0] > 0).long()
    model.train()
    for _ in range(60):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy > 0.9  # a map shifted by one pixel would score about 0.5 (the pixels are independent)
