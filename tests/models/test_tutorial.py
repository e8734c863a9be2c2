"""tutorial_cnn and mnist_cnn: parameter counts by hand, the tutorials' layer order as reference, small inputs."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convolab.models import create_model

from ._helpers import n_params


# -- parameter counts ----------------------------------------------------------------------------
def tutorial_cnn_params(in_chans: int, h: int, w: int, num_classes: int) -> int:
    conv1 = in_chans * 16 * 3 * 3 + 16
    conv2 = 16 * 32 * 3 * 3 + 32
    fc1 = 32 * (h // 4) * (w // 4) * 128 + 128
    fc2 = 128 * num_classes + num_classes
    return conv1 + conv2 + fc1 + fc2


def mnist_cnn_params(in_chans: int, h: int, w: int, num_classes: int) -> int:
    conv1 = in_chans * 32 * 3 * 3 + 32
    conv2 = 32 * 64 * 3 * 3 + 64
    fc1 = 64 * ((h - 4) // 2) * ((w - 4) // 2) * 128 + 128
    fc2 = 128 * num_classes + num_classes
    return conv1 + conv2 + fc1 + fc2


def test_tutorial_cnn_params_at_28x28():
    # conv1 1*16*9+16, conv2 16*32*9+32, fc1 1568*128+128, fc2 128*10+10
    by_hand = (1 * 16 * 9 + 16) + (16 * 32 * 9 + 32) + (1568 * 128 + 128) + (128 * 10 + 10)
    assert by_hand == 206_922
    assert n_params(create_model("tutorial_cnn", num_classes=10, in_chans=1, input_size=28)) == 206_922


def test_mnist_cnn_params_at_28x28():
    # conv1 1*32*9+32, conv2 32*64*9+64, fc1 (64*12*12)*128+128, fc2 128*10+10
    by_hand = (1 * 32 * 9 + 32) + (32 * 64 * 9 + 64) + (64 * 12 * 12 * 128 + 128) + (128 * 10 + 10)
    assert by_hand == 1_199_882
    assert n_params(create_model("mnist_cnn", num_classes=10, in_chans=1, input_size=28)) == 1_199_882


@pytest.mark.parametrize("in_chans,h,w,k", [(1, 28, 28, 10), (3, 32, 32, 7), (1, 8, 8, 10), (3, 30, 17, 4),
                                            (1, 4, 4, 2)])
def test_tutorial_cnn_params_formula(in_chans, h, w, k):
    model = create_model("tutorial_cnn", num_classes=k, in_chans=in_chans, input_size=(h, w))
    assert n_params(model) == tutorial_cnn_params(in_chans, h, w, k)


@pytest.mark.parametrize("in_chans,h,w,k", [(1, 28, 28, 10), (3, 32, 32, 7), (1, 8, 8, 10), (3, 30, 17, 4),
                                            (1, 6, 6, 2)])
def test_mnist_cnn_params_formula(in_chans, h, w, k):
    model = create_model("mnist_cnn", num_classes=k, in_chans=in_chans, input_size=(h, w))
    assert n_params(model) == mnist_cnn_params(in_chans, h, w, k)


# -- the tutorials' layer order as an independent reference --------------------------------------
class TutorialNet(nn.Module):
    """The tutorials' first CNN in their own order: conv -> ReLU -> pool, twice, then two FC layers."""

    def __init__(self, in_chans: int, h: int, w: int, num_classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * (h // 4) * (w // 4), 128)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


class PyTorchExampleNet(nn.Module):
    """pytorch/examples mnist/main.py's Net: conv, ReLU, conv, ReLU, max-pool, dropout, FC, ReLU, dropout, FC."""

    def __init__(self, in_chans: int, h: int, w: int, num_classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(64 * ((h - 4) // 2) * ((w - 4) // 2), 128)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = torch.flatten(self.dropout1(x), 1)
        x = self.dropout2(F.relu(self.fc1(x)))
        return self.fc2(x)


# reference attribute -> convolab parameter prefix
TUTORIAL_NAMES = {"conv1": "features.conv1", "conv2": "features.conv2", "fc1": "classifier.fc1",
                  "fc2": "classifier.fc2"}


def copy_weights(ref: nn.Module, model: nn.Module, names: dict[str, str]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for ref_name, p in ref.named_parameters():
            layer, kind = ref_name.split(".")
            p.copy_(params[f"{names[layer]}.{kind}"])
    assert n_params(ref) == n_params(model)


def assert_same_outputs_and_gradients(model, ref, names, x, y, seed=None):
    """Forward and backward through both; outputs, input gradients and every weight gradient agree."""
    grads = []
    for net in (model, ref):
        xin = x.clone().requires_grad_(True)
        if seed is not None:
            torch.manual_seed(seed)  # the same dropout masks in both (same draws, same order)
        out = net(xin)
        F.cross_entropy(out, y).backward()
        grads.append((out.detach(), xin.grad, {n: p.grad for n, p in net.named_parameters()}))
    (out_m, gx_m, g_m), (out_r, gx_r, g_r) = grads
    torch.testing.assert_close(out_m, out_r, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gx_m, gx_r, rtol=1e-5, atol=1e-7)
    assert gx_m.abs().sum() > 0
    for ref_name, g in g_r.items():
        layer, kind = ref_name.split(".")
        mine = g_m[f"{names[layer]}.{kind}"]
        assert g.abs().sum() > 0, ref_name
        torch.testing.assert_close(mine, g, rtol=1e-5, atol=1e-7, msg=lambda m, n=ref_name: f"{n}: {m}")


@pytest.mark.parametrize("in_chans,h,w", [(1, 28, 28), (3, 32, 32), (1, 8, 8), (1, 13, 11)])
def test_tutorial_cnn_pool_before_relu_matches_the_tutorial_order(in_chans, h, w):
    torch.manual_seed(0)
    model = create_model("tutorial_cnn", num_classes=10, in_chans=in_chans, input_size=(h, w))
    ref = TutorialNet(in_chans, h, w, 10)
    copy_weights(ref, model, TUTORIAL_NAMES)
    x = torch.randn(16, in_chans, h, w)
    y = torch.arange(16) % 10
    assert_same_outputs_and_gradients(model, ref, TUTORIAL_NAMES, x, y)


@pytest.mark.parametrize("train_mode", [False, True], ids=["eval", "train-dropout"])
@pytest.mark.parametrize("in_chans,h,w", [(1, 28, 28), (3, 32, 32), (1, 9, 12)])
def test_mnist_cnn_pool_before_relu_matches_the_pytorch_example(in_chans, h, w, train_mode):
    torch.manual_seed(0)
    model = create_model("mnist_cnn", num_classes=10, in_chans=in_chans, input_size=(h, w))
    ref = PyTorchExampleNet(in_chans, h, w, 10)
    copy_weights(ref, model, TUTORIAL_NAMES)
    model.train(train_mode)
    ref.train(train_mode)
    x = torch.randn(16, in_chans, h, w)
    y = torch.arange(16) % 10
    assert_same_outputs_and_gradients(model, ref, TUTORIAL_NAMES, x, y, seed=123 if train_mode else None)


def test_mnist_cnn_dropout_rates_are_configurable():
    model = create_model("mnist_cnn", num_classes=10, in_chans=1, input_size=28, drop_rate=0.3,
                         feature_drop_rate=0.1)
    rates = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
    assert rates == [0.1, 0.3]


# -- inputs too small ----------------------------------------------------------------------------
@pytest.mark.parametrize("name,too_small,smallest", [
    ("tutorial_cnn", 3, 4),  # two 2x2 pools need 4 pixels
    ("mnist_cnn", 5, 6),  # two unpadded 3x3 convs take 4 off, the pool needs 2 left
])
def test_too_small_input_names_the_smallest_that_works(name, too_small, smallest):
    with pytest.raises(ValueError) as info:
        create_model(name, num_classes=10, in_chans=1, input_size=too_small)
    msg = str(info.value)
    assert name in msg
    assert f"{too_small}x{too_small}" in msg
    found = re.search(r"smallest input that works is (\d+)x(\d+)", msg)
    assert found and found.groups() == (str(smallest), str(smallest)), msg
    # The size it names does work, forward and all.
    model = create_model(name, num_classes=10, in_chans=1, input_size=smallest).eval()
    assert model(torch.zeros(2, 1, smallest, smallest)).shape == (2, 10)


@pytest.mark.parametrize("name,size", [("tutorial_cnn", (28, 3)), ("tutorial_cnn", (2, 40)), ("mnist_cnn", (40, 5))])
def test_too_small_in_one_dimension(name, size):
    with pytest.raises(ValueError, match=f"{size[0]}x{size[1]} input is too small"):
        create_model(name, num_classes=10, in_chans=1, input_size=size)
