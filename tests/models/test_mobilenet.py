"""MobileNet v1/v2/v3: torchvision parity, the paper's counts for v1, the small-input rule, checkpointing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from convolab.models import create_model
from convolab.models._base import adapt_strides, feature_info_from_strides

from ._helpers import n_params, randomize_norms

TORCHVISION = ["mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large"]
ALL = ["mobilenet_v1", *TORCHVISION]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (tests/models/conftest.py)


# -- torchvision parity ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", TORCHVISION)
def test_parity_with_torchvision(name):
    torch.manual_seed(0)
    ref = getattr(torchvision.models, name)(weights=None).eval()
    randomize_norms(ref)
    model = create_model(name, num_classes=1000, in_chans=3, input_size=None).eval()
    assert n_params(model) == n_params(ref)
    model.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x))


@pytest.mark.parametrize("name,width", [("mobilenet_v2", 0.5), ("mobilenet_v3_large", 0.75)])
def test_width_multiplier_matches_torchvision(name, width):
    ref = getattr(torchvision.models, name)(weights=None, width_mult=width)
    model = create_model(name, width_mult=width)
    assert n_params(model) == n_params(ref)
    model.load_state_dict(ref.state_dict(), strict=True)


def test_reference_parameter_counts():
    # torchvision's weight metadata (num_params) for the same architectures
    expected = {"mobilenet_v2": 3_504_872, "mobilenet_v3_small": 2_542_856, "mobilenet_v3_large": 5_483_032}
    for name, count in expected.items():
        assert n_params(create_model(name)) == count


# -- MobileNet v1: no torchvision model; the paper's figures --------------------------------------
def test_v1_parameters_within_one_percent_of_the_paper():
    # Howard et al. 2017, Table 8 (and Table 6, width 1.0): 1.0 MobileNet-224 has 4.2 million parameters.
    count = n_params(create_model("mobilenet_v1"))
    assert abs(count - 4.2e6) / 4.2e6 < 0.01
    # By hand: stem conv 3x3x3x32 + BN; per unit dw 9*cin + BN, pw cin*cout + BN; FC 1024x1000 + bias.
    chans = [32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]
    by_hand = 27 * 32 + 2 * 32
    for cin, cout in zip(chans, chans[1:]):
        by_hand += 9 * cin + 2 * cin + cin * cout + 2 * cout
    by_hand += 1024 * 1000 + 1000
    assert count == by_hand == 4_231_976


def test_v1_multiply_adds_match_the_paper():
    # Table 8: 569 million mult-adds at 224x224 (convolutions and the FC layer).
    model = create_model("mobilenet_v1").eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 3, 224, 224))
    macs = counter.get_total_flops() / 2
    assert abs(macs - 569e6) / 569e6 < 0.01


def test_v1_layout():
    model = create_model("mobilenet_v1")
    assert len(model.features) == 14
    strides = [model.features[0][0].stride[0]] + [b.dw[0].stride[0] for b in model.features[1:]]
    assert strides == [2, 1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
    assert all(b.dw[0].groups == b.dw[0].in_channels for b in model.features[1:])  # depthwise


# -- small inputs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("side,total", [(224, 32), (128, 32), (97, 32), (96, 16), (49, 16), (48, 8), (32, 8),
                                        (28, 8), (25, 8), (24, 4), (13, 4), (12, 2), (8, 2), (7, 2), (6, 1),
                                        (1, 1)])
def test_adapt_strides_rule(side, total):
    native = [2, 1, 2, 1, 1, 2, 2, 1, 2, 1]
    strides = adapt_strides(native, (side, side + 50))  # the smaller side decides
    prod = 1
    for s in strides:
        prod *= s
    assert prod == total
    # The removed strides are the earliest ones (the last log2(total) stride-2 layers stay); nothing else changes.
    sites = [i for i, s in enumerate(native) if s == 2]
    kept = sites[len(sites) - (total.bit_length() - 1):]
    assert strides == [2 if i in kept else 1 for i in range(len(native))]


def test_feature_info_from_strides():
    info = feature_info_from_strides([("a", 8, 2), ("b", 8, 1), ("c", 16, 2), ("d", 32, 1)])
    assert info == [dict(module="b", num_chs=8, reduction=2), dict(module="d", num_chs=32, reduction=4)]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("side,chans,reduction,last", [(8, 1, 2, 4), (28, 1, 8, 4), (32, 3, 8, 4)])
def test_small_inputs(name, side, chans, reduction, last):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_chans=chans, input_size=side).eval()
    with torch.no_grad():
        feats = model.forward_features(torch.randn(2, chans, side, side))
        out = model.forward_head(feats)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    # feature_info agrees with forward_features; same-padded convolutions: last side = ceil(side / reduction)
    assert feats.shape[1] == model.feature_info[-1]["num_chs"] == model.num_features
    assert model.feature_info[-1]["reduction"] == reduction
    assert feats.shape[2:] == (last, last)


@pytest.mark.parametrize("name", ALL)
def test_native_size_keeps_the_native_layout(name):
    # 97x97 is the smallest input the rule leaves at stride 32 (the papers evaluate 128-224).
    for size in (None, 128, 97):
        model = create_model(name, input_size=size)
        assert model.input_size == ((224, 224) if size is None else (size, size))
        assert model.feature_info[-1]["reduction"] == 32
        assert model.feature_info[-1]["num_chs"] == model.num_features


# -- grad checkpointing ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_grad_checkpointing_keeps_outputs_and_gradients(name):
    torch.manual_seed(0)
    plain = create_model(name, num_classes=7, in_chans=1, input_size=8, drop_rate=0.0).train()
    ckpt = create_model(name, num_classes=7, in_chans=1, input_size=8, drop_rate=0.0).train()
    ckpt.load_state_dict(plain.state_dict())
    ckpt.set_grad_checkpointing(True)
    x = torch.randn(4, 1, 8, 8)
    y = torch.arange(4)
    outs = []
    for model in (plain, ckpt):
        out = model(x)
        F.cross_entropy(out, y).backward()
        outs.append(out.detach())
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    grads = dict(ckpt.named_parameters())
    for pname, p in plain.named_parameters():
        torch.testing.assert_close(grads[pname].grad, p.grad, rtol=1e-5, atol=1e-6, msg=pname)


# -- arguments ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_bad_arguments_raise_value_error(name):
    with pytest.raises(ValueError, match="drop_rate"):
        create_model(name, drop_rate=-0.1)
    with pytest.raises(ValueError, match="drop_rate"):
        create_model(name, drop_rate=1.0)
    with pytest.raises(ValueError, match="width_mult"):
        create_model(name, width_mult=0)


@pytest.mark.parametrize("name", ALL)
def test_drop_rate_sets_the_classifier_dropout(name):
    model = create_model(name, num_classes=7, input_size=32, drop_rate=0.3)
    assert [m.p for m in model.classifier if isinstance(m, nn.Dropout)] == [0.3]


def test_v2_residuals_and_linear_bottleneck():
    model = create_model("mobilenet_v2")
    blocks = list(model.features[1:18])
    # Shortcut exactly where stride is 1 and the width is unchanged (Table 2: 10 of the 17 blocks).
    assert sum(b.use_res_connect for b in blocks) == 10
    # The projection (last two entries of conv) is a bare conv + BN: no activation after it.
    assert all(isinstance(b.conv[-1], nn.BatchNorm2d) and isinstance(b.conv[-2], nn.Conv2d) for b in blocks)
