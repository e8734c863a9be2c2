"""LeNet-5 (modern and 1998 forms): parameter counts by hand, padding of small inputs, d2l's layer order."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convolab.models import create_model

from ._helpers import n_params

LENETS = ["lenet5", "lenet5_classic"]


def lenet_params(in_chans: int, h: int, w: int, num_classes: int) -> int:
    """Count by hand; inputs below 32 are padded up to 32 (or 33), which leaves a 5x5 map for C5."""
    def side(n: int) -> int:
        n += 2 * max(0, math.ceil((32 - n) / 2))
        return ((n - 4) // 2 - 4) // 2

    conv1 = in_chans * 6 * 5 * 5 + 6
    conv2 = 6 * 16 * 5 * 5 + 16
    fc1 = 16 * side(h) * side(w) * 120 + 120
    fc2 = 120 * 84 + 84
    fc3 = 84 * num_classes + num_classes
    return conv1 + conv2 + fc1 + fc2 + fc3


@pytest.mark.parametrize("name", LENETS)
@pytest.mark.parametrize("size", [28, 32])
def test_params_at_28_and_32(name, size):
    # conv1 1*6*25+6, conv2 6*16*25+16, fc1 400*120+120, fc2 120*84+84, fc3 84*10+10
    by_hand = (1 * 6 * 25 + 6) + (6 * 16 * 25 + 16) + (400 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10)
    assert by_hand == 61_706
    assert n_params(create_model(name, num_classes=10, in_chans=1, input_size=size)) == 61_706


@pytest.mark.parametrize("name", LENETS)
@pytest.mark.parametrize("in_chans,h,w,k", [(3, 32, 32, 7), (1, 64, 64, 10), (3, 40, 28, 5), (1, 8, 8, 10)])
def test_params_formula(name, in_chans, h, w, k):
    model = create_model(name, num_classes=k, in_chans=in_chans, input_size=(h, w))
    assert n_params(model) == lenet_params(in_chans, h, w, k)


@pytest.mark.parametrize("name", LENETS)
def test_every_input_up_to_32_keeps_the_papers_layer_sizes(name):
    """Padding to 32 means there is no 'too small' input for LeNet-5: even 1x1 works (and keeps 61,706)."""
    for size in range(1, 33):
        model = create_model(name, num_classes=10, in_chans=1, input_size=size).eval()
        assert n_params(model) == 61_706, size
        with torch.no_grad():
            feats = model.forward_features(torch.zeros(1, 1, size, size))
        assert feats.shape == (1, 16, 5, 5), size


def test_padding_is_the_d2l_padding_at_28():
    model = create_model("lenet5", num_classes=10, in_chans=1, input_size=28)
    assert model.features.conv1.padding == (2, 2)
    assert create_model("lenet5", num_classes=10, in_chans=1, input_size=32).features.conv1.padding == (0, 0)


def test_classic_uses_tanh_and_average_pooling():
    classic = create_model("lenet5_classic", num_classes=10, in_chans=1, input_size=28)
    modern = create_model("lenet5", num_classes=10, in_chans=1, input_size=28)
    kinds = lambda m: {type(x) for x in m.modules()}  # noqa: E731
    assert {nn.Tanh, nn.AvgPool2d} <= kinds(classic) and not {nn.ReLU, nn.MaxPool2d} & kinds(classic)
    assert {nn.ReLU, nn.MaxPool2d} <= kinds(modern) and not {nn.Tanh, nn.AvgPool2d} & kinds(modern)


# -- reference: d2l's LeNet in its own order (conv -> activation -> pool) ------------------------
class D2LLeNet(nn.Module):
    """d2l.ai's LeNet written out: conv(pad) -> act -> pool -> conv -> act -> pool -> FC 120 -> FC 84 -> FC."""

    def __init__(self, in_chans: int, pad: int, flat: int, num_classes: int, act, pool):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 6, 5, padding=pad)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(flat, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)
        self.act, self.pool = act, pool

    def forward(self, x):
        x = self.pool(self.act(self.conv1(x)), 2)
        x = self.pool(self.act(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        return self.fc3(self.act(self.fc2(self.act(self.fc1(x)))))


NAMES = {"conv1": "features.conv1", "conv2": "features.conv2", "fc1": "classifier.fc1", "fc2": "classifier.fc2",
         "fc3": "classifier.fc3"}


@pytest.mark.parametrize("name,act,pool", [("lenet5", F.relu, F.max_pool2d),
                                           ("lenet5_classic", torch.tanh, F.avg_pool2d)])
@pytest.mark.parametrize("in_chans,size,pad,flat", [(1, 28, 2, 400), (3, 32, 0, 400), (1, 36, 0, 16 * 6 * 6)])
def test_matches_the_reference_order(name, act, pool, in_chans, size, pad, flat):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_chans=in_chans, input_size=size)
    ref = D2LLeNet(in_chans, pad, flat, 10, act, pool)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for ref_name, p in ref.named_parameters():
            layer, kind = ref_name.split(".")
            p.copy_(params[f"{NAMES[layer]}.{kind}"])
    assert n_params(ref) == n_params(model)

    x = torch.randn(16, in_chans, size, size)
    y = torch.arange(16) % 10
    results = []
    for net in (model, ref):
        xin = x.clone().requires_grad_(True)
        out = net(xin)
        F.cross_entropy(out, y).backward()
        results.append((out.detach(), xin.grad, {n: p.grad for n, p in net.named_parameters()}))
    (out_m, gx_m, g_m), (out_r, gx_r, g_r) = results
    torch.testing.assert_close(out_m, out_r, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gx_m, gx_r, rtol=1e-5, atol=1e-7)
    for ref_name, g in g_r.items():
        layer, kind = ref_name.split(".")
        assert g.abs().sum() > 0, ref_name
        torch.testing.assert_close(g_m[f"{NAMES[layer]}.{kind}"], g, rtol=1e-5, atol=1e-7)
