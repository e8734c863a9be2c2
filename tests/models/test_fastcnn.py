"""fastcnn and fastcnn_wide: parameter counts by hand, a functional re-implementation as reference, sizes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from convolab.models import create_model

from ._helpers import n_params

pytestmark = pytest.mark.usefixtures("one_thread")


def fastcnn_params(in_chans: int, num_classes: int, widths=(32, 64, 128), stem: int = 24) -> int:
    conv_bn = lambda cin, cout: cin * cout * 9 + 2 * cout  # noqa: E731  (bias-free conv + BN scale and shift)
    total = conv_bn(in_chans, stem)
    for cin, cout in zip((stem, *widths[:-1]), widths):
        total += conv_bn(cin, cout) + conv_bn(cout, cout)
    return total + widths[-1] * num_classes + num_classes


def test_params_at_28x28_by_hand():
    # stem 1*24*9 + 48; block1 24*32*9 + 64 + 32*32*9 + 64; block2 32*64*9 + 128 + 64*64*9 + 128;
    # block3 64*128*9 + 256 + 128*128*9 + 256; fc 128*10 + 10
    by_hand = (216 + 48) + (6912 + 64 + 9216 + 64) + (18432 + 128 + 36864 + 128) + (73728 + 256 + 147456 + 256) \
        + 1290
    assert by_hand == 295_058
    assert n_params(create_model("fastcnn", num_classes=10, in_chans=1, input_size=28)) == 295_058


@pytest.mark.parametrize("in_chans,side,k", [(1, 28, 10), (3, 32, 100), (3, 8, 2), (1, 45, 7)])
def test_params_formula_does_not_depend_on_the_input_size(in_chans, side, k):
    assert n_params(create_model("fastcnn", num_classes=k, in_chans=in_chans, input_size=side)) == \
        fastcnn_params(in_chans, k)
    assert n_params(create_model("fastcnn_wide", num_classes=k, in_chans=in_chans, input_size=side)) == \
        fastcnn_params(in_chans, k, widths=(64, 128, 256), stem=48)


def test_multiply_adds_at_28x28_as_the_docstring_states():
    """17.8 M for fastcnn (the module docstring and README), four times that for the wide one: torch's counter."""
    def macs(name):
        with FlopCounterMode(display=False) as counter:
            create_model(name, num_classes=10, in_chans=1, input_size=28).eval()(torch.zeros(1, 1, 28, 28))
        return counter.get_total_flops() / 2

    # by hand: each 3x3 conv costs cin*cout*9 per output pixel; fc 128*10
    by_hand = (1 * 24 * 9 * 28 * 28 + 24 * 32 * 9 * 28 * 28 + 32 * 32 * 9 * 14 * 14 + 32 * 64 * 9 * 14 * 14
               + 64 * 64 * 9 * 7 * 7 + 64 * 128 * 9 * 7 * 7 + 128 * 128 * 9 * 3 * 3 + 128 * 10)
    assert macs("fastcnn") == by_hand
    assert round(by_hand / 1e6, 1) == 17.8
    assert 3.9 < macs("fastcnn_wide") / by_hand < 4.1


def reference_forward(model, x: torch.Tensor, training: bool) -> torch.Tensor:
    """The same network written with functional ops only, reading the model's parameters by name."""
    p = dict(model.named_parameters())
    b = dict(model.named_buffers())

    def bn(h, name):
        return F.batch_norm(h, b[f"{name}.running_mean"].clone(), b[f"{name}.running_var"].clone(),
                            p[f"{name}.weight"], p[f"{name}.bias"], training=training, momentum=0.1, eps=1e-5)

    h = F.relu(bn(F.conv2d(x, p["features.stem.weight"], padding=1), "features.stem_bn"))
    for i in (1, 2, 3):
        pre = f"features.block{i}"
        h = F.max_pool2d(F.conv2d(h, p[f"{pre}.conv1.weight"], padding=1), 2)
        h = F.relu(bn(h, f"{pre}.bn1"))
        h = F.relu(bn(F.conv2d(h, p[f"{pre}.conv2.weight"], padding=1), f"{pre}.bn2"))
    h = h.amax(dim=(2, 3))
    return F.linear(h, p["classifier.fc.weight"], p["classifier.fc.bias"])


@pytest.mark.parametrize("name,chans,side", [("fastcnn", 1, 28), ("fastcnn", 3, 32), ("fastcnn_wide", 1, 28),
                                             ("fastcnn", 1, 8), ("fastcnn", 2, 19)])
@pytest.mark.parametrize("training", [False, True])
def test_matches_a_functional_reimplementation(name, chans, side, training):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_chans=chans, input_size=side)
    with torch.no_grad():  # non-trivial BatchNorm statistics and affine parameters
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
    model.train(training)
    x = torch.randn(4, chans, side, side)
    expected = reference_forward(model, x, training)
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
    assert expected.shape == (4, 7)


def test_feature_maps_halve_per_block():
    model = create_model("fastcnn", num_classes=10, in_chans=1, input_size=28).eval()
    x = torch.randn(2, 1, 28, 28)
    assert model.forward_features(x).shape == (2, 128, 3, 3)
    assert [(f["num_chs"], f["reduction"]) for f in model.feature_info] == [(24, 1), (32, 2), (64, 4), (128, 8)]


def test_inputs_below_8x8_are_refused_with_the_smallest_size():
    with pytest.raises(ValueError, match=r"7x7 input is too small.*smallest input that works is 8x8"):
        create_model("fastcnn", num_classes=10, in_chans=1, input_size=7)


@pytest.mark.parametrize("kwargs", [dict(widths=(32, 64)), dict(widths=(32, 0, 128)), dict(stem_chs=0),
                                    dict(widths="abc"), dict(widths=(32, 64.5, 128))])
def test_bad_widths_are_refused(kwargs):
    with pytest.raises(ValueError, match="fastcnn takes three positive widths"):
        create_model("fastcnn", num_classes=10, in_chans=1, input_size=28, **kwargs)
