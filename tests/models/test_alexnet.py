"""AlexNet: torchvision parity (``alexnet``), the 2012 paper's network (``alexnet_lrn``), the small-input stem."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from convolab.models import create_model
from convolab.models._base import fitting_pools
from convolab.models.alexnet import _SMALLEST_NATIVE

from ._helpers import feature_maps, n_params

ALEXNETS = ["alexnet", "alexnet_lrn"]


# -- alexnet: torchvision parity ----------------------------------------------------------------------
def test_alexnet_matches_torchvision():
    torch.manual_seed(0)
    ref = torchvision.models.alexnet(weights=None).eval()
    model = create_model("alexnet", num_classes=1000, in_chans=3, input_size=None).eval()
    assert model.input_size == (224, 224)
    assert n_params(model) == n_params(ref) == 61_100_840
    model.load_state_dict(ref.state_dict(), strict=True)
    # 224 is the native size; 63 the smallest input the native layout takes (torchvision's min_size).
    for size in (224, 63):
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            torch.testing.assert_close(model(x), ref(x))


def test_native_layout_from_63_up_small_stem_below():
    assert _SMALLEST_NATIVE == torchvision.models.AlexNet_Weights.IMAGENET1K_V1.meta["min_size"][0] == 63
    with torch.device("meta"):
        native = create_model("alexnet", input_size=63)
        small = create_model("alexnet", input_size=62)
    assert (native.features[0].kernel_size, native.features[0].stride, native.features[0].padding) == \
        ((11, 11), (4, 4), (2, 2))
    assert (small.features[0].kernel_size, small.features[0].stride, small.features[0].padding) == \
        ((3, 3), (1, 1), (1, 1))


def test_small_alexnet_keeps_torchvisions_names_and_all_shapes_but_the_stem():
    with torch.device("meta"):
        ref = torchvision.models.alexnet(weights=None).state_dict()
        small = create_model("alexnet", input_size=8).state_dict()
    assert list(small) == list(ref)
    differ = [k for k in ref if ref[k].shape != small[k].shape]
    assert differ == ["features.0.weight"]
    assert small["features.0.weight"].shape == (64, 3, 3, 3)


@pytest.mark.parametrize("size,kept,sides", [
    # 3x3/2 pools on size-keeping convolutions: side -> (side - 3) // 2 + 1 while side >= 3.
    (32, [True, True, True], [32, 15, 7, 3]),
    (28, [True, True, True], [28, 13, 6, 2]),
    (8, [True, True, False], [8, 3, 1, 1]),
    (2, [False, False, False], [2, 2, 2, 2]),
])
def test_small_inputs_drop_the_pools_that_do_not_fit(size, kept, sides):
    assert fitting_pools((size, size), 3, kernel_size=3, stride=2) == kept
    for name in ALEXNETS:
        model = create_model(name, num_classes=7, in_chans=1, input_size=size).eval()
        pools = [m for m in model.features if isinstance(m, (nn.MaxPool2d, nn.Identity))]
        assert [isinstance(p, nn.MaxPool2d) for p in pools] == kept
        shapes, feats = feature_maps(model, torch.randn(1, 1, size, size))
        assert [s[-1] for s in shapes] == sides[:3]
        assert feats.shape == (1, 256, sides[3], sides[3])


@pytest.mark.parametrize("name", ALEXNETS)
def test_feature_info_at_224(name):
    model = create_model(name).eval()
    shapes, feats = feature_maps(model, torch.randn(1, 3, 224, 224))
    assert [i["reduction"] for i in model.feature_info] == [4, 8, 16]
    # (224 + 2*2 pad - 11) // 4 + 1 = 55; pools 3/2: 55 -> 27 -> 13 -> 6
    assert [s[-1] for s in shapes] == [55, 27, 13]
    assert [s[1] for s in shapes] == [i["num_chs"] for i in model.feature_info]
    assert feats.shape == (1, model.feature_info[-1]["num_chs"], 6, 6)


@pytest.mark.parametrize("name", ALEXNETS)
@pytest.mark.parametrize("size,chans", [(8, 1), (28, 1), (32, 3)])
def test_forward_on_small_inputs(name, size, chans):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_chans=chans, input_size=size)
    out = model(torch.randn(2, chans, size, size))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


# -- alexnet_lrn: the 2012 paper ----------------------------------------------------------------------
def test_alexnet_lrn_parameter_count():
    """The paper (abstract, section 3) says "60 million parameters"; the exact count of its network."""
    def conv(cin: int, cout: int, k: int, groups: int = 1) -> int:
        return cin // groups * cout * k * k + cout

    def fc(fin: int, fout: int) -> int:
        return fin * fout + fout

    grouped = (conv(3, 96, 11) + conv(96, 256, 5, 2) + conv(256, 384, 3) + conv(384, 384, 3, 2)
               + conv(384, 256, 3, 2) + fc(256 * 6 * 6, 4096) + fc(4096, 4096) + fc(4096, 1000))
    single = (conv(3, 96, 11) + conv(96, 256, 5) + conv(256, 384, 3) + conv(384, 384, 3) + conv(384, 256, 3)
              + fc(256 * 6 * 6, 4096) + fc(4096, 4096) + fc(4096, 1000))
    assert (grouped, single) == (60_965_224, 62_378_344)
    with torch.device("meta"):
        assert n_params(create_model("alexnet_lrn")) == grouped
        assert n_params(create_model("alexnet_lrn", groups=1)) == single
    # "60 million" is a round figure: the paper's own network is 1.6 % above it (not within 1 %).
    assert abs(grouped - 60e6) / 60e6 < 0.02


def _lrn_by_hand(a: torch.Tensor, n: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0):
    """b_c = a_c / (k + alpha / n * sum of a_j^2 over the n channels centred on c) ** beta (PyTorch/Caffe form)."""
    sq, chans = a.pow(2), a.shape[1]
    s = torch.stack([sq[:, max(0, c - n // 2):min(chans, c + n // 2 + 1)].sum(1) for c in range(chans)], 1)
    return a / (k + alpha / n * s) ** beta


def _two_gpu_conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """The paper's split: each half of the kernels sees only the half of the input maps on its GPU."""
    (x0, x1), (w0, w1), (b0, b1) = x.chunk(2, 1), conv.weight.chunk(2, 0), conv.bias.chunk(2, 0)
    return torch.cat([F.conv2d(x0, w0, b0, padding=conv.padding), F.conv2d(x1, w1, b1, padding=conv.padding)], 1)


def test_alexnet_lrn_matches_the_papers_layer_list():
    torch.manual_seed(0)
    model = create_model("alexnet_lrn").eval()
    f, c = model.features, model.classifier
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        h = F.relu(F.conv2d(x, f.conv1.weight, f.conv1.bias, stride=4, padding=2))
        assert h.shape[-1] == 55  # the paper's 55x55x96
        h = F.max_pool2d(_lrn_by_hand(h), 3, 2)                       # 27
        h = F.max_pool2d(_lrn_by_hand(F.relu(_two_gpu_conv(h, f.conv2))), 3, 2)  # 13
        h = F.relu(F.conv2d(h, f.conv3.weight, f.conv3.bias, padding=1))
        h = F.relu(_two_gpu_conv(h, f.conv4))
        h = F.max_pool2d(F.relu(_two_gpu_conv(h, f.conv5)), 3, 2)     # 6
        assert h.shape[1:] == (256, 6, 6)
        h = F.relu(F.linear(h.flatten(1), c.fc6.weight, c.fc6.bias))
        h = F.relu(F.linear(h, c.fc7.weight, c.fc7.bias))
        ref = F.linear(h, c.fc8.weight, c.fc8.bias)
        torch.testing.assert_close(model(x), ref, rtol=1e-4, atol=1e-5)


def test_alexnet_lrn_layer_order_and_dropout():
    with torch.device("meta"):
        model = create_model("alexnet_lrn", drop_rate=0.3)
    kinds = [type(m).__name__ for m in model.features]
    assert kinds == ["Conv2d", "ReLU", "LocalResponseNorm", "MaxPool2d"] * 2 + ["Conv2d", "ReLU"] * 3 + ["MaxPool2d"]
    assert list(dict(model.classifier.named_children())) == ["fc6", "relu6", "drop6", "fc7", "relu7", "drop7", "fc8"]
    assert [m.p for m in model.classifier if isinstance(m, nn.Dropout)] == [0.3, 0.3]
    assert model.features.norm1.size == 5 and model.features.norm1.k == 2.0


def test_dropout_rate_reaches_torchvision_layout():
    with torch.device("meta"):
        model = create_model("alexnet", drop_rate=0.2)
    assert [m.p for m in model.classifier if isinstance(m, nn.Dropout)] == [0.2, 0.2]


@pytest.mark.parametrize("name", ALEXNETS)
@pytest.mark.parametrize("rate", [-0.1, 1.0])
def test_bad_drop_rate_is_a_value_error(name, rate):
    with pytest.raises(ValueError, match="drop_rate"):
        create_model(name, drop_rate=rate)


@pytest.mark.parametrize("groups", [0, 3])
def test_bad_groups_is_a_value_error(groups):
    with pytest.raises(ValueError, match="groups"):
        create_model("alexnet_lrn", groups=groups)
