"""models.rewrite: the exact rewrites for int8 speed compute what the original model computes.

The reference is the original module itself (torch's own convolution, ReLU, max-pool and flatten), on random
configurations and on zoo models with real Fashion-MNIST images."""

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from convolab.data import load_dataset
from convolab.data.loader import Normalizer
from convolab.models import create_model
from convolab.models.rewrite import (
    REWRITES,
    ChannelsLastFlatten,
    SpaceToDepthConvPool,
    inference_rewrites,
)


@pytest.fixture(scope="module")
def fashion():
    data = load_dataset("fashion-mnist")
    return Normalizer(data.mean, data.std)(data.test.images[:32])


@settings(max_examples=60, deadline=None)
@given(kh=st.integers(1, 6), kw=st.integers(1, 6), ph=st.integers(0, 3), pw=st.integers(0, 3),
       h=st.integers(2, 17), w=st.integers(2, 17), cin=st.integers(1, 3), cout=st.integers(1, 5),
       order=st.sampled_from(["pool", "relu-pool", "pool-relu"]), bias=st.booleans(), seed=st.integers(0, 99))
def test_space_to_depth_stem_equals_conv_relu_pool(kh, kw, ph, pw, h, w, cin, cout, order, bias, seed):
    ph, pw = min(ph, kh - 1), min(pw, kw - 1)
    if (h + 2 * ph - kh + 1) < 2 or (w + 2 * pw - kw + 1) < 2:
        return  # nothing left to pool
    torch.manual_seed(seed)
    conv = nn.Conv2d(cin, cout, (kh, kw), padding=(ph, pw), bias=bias)
    layers = {"pool": [nn.MaxPool2d(2)], "relu-pool": [nn.ReLU(), nn.MaxPool2d(2)],
              "pool-relu": [nn.MaxPool2d(2), nn.ReLU()]}[order]
    reference = nn.Sequential(conv, *layers)
    rewritten = SpaceToDepthConvPool(conv, relu=order != "pool")
    assert rewritten.conv.in_channels == 4 * cin and rewritten.conv.out_channels == 4 * cout
    x = torch.randn(2, cin, h, w)
    with torch.no_grad():
        want, got = reference(x), rewritten(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_stem_refuses_a_strided_convolution():
    with pytest.raises(ValueError, match="stride 1"):
        SpaceToDepthConvPool(nn.Conv2d(1, 4, 3, stride=2), relu=True)


def test_channels_last_flatten_is_a_permutation_of_the_features():
    x = torch.arange(2 * 3 * 2 * 2.0).view(2, 3, 2, 2)
    assert torch.equal(ChannelsLastFlatten()(x), x.permute(0, 2, 3, 1).reshape(2, -1))


@pytest.mark.parametrize("name, expected", [
    ("tutorial_cnn", ["relu-before-maxpool", "space-to-depth-stem", "channels-last-flatten"]),
    ("lenet5", ["relu-before-maxpool", "space-to-depth-stem", "channels-last-flatten"]),
    ("lenet5_classic", ["channels-last-flatten"]),
    ("mnist_cnn", ["relu-before-maxpool", "channels-last-flatten"]),
    ("vgg11", ["space-to-depth-stem"]),
    ("resnet20", []),
    ("mlp", []),  # its flatten sees one channel: channels-last order is the same order
])
def test_zoo_models_rewritten_give_the_same_logits(name, expected, fashion):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_chans=1, input_size=(28, 28)).eval()
    rewritten = copy.deepcopy(model)
    assert inference_rewrites(rewritten, fashion[:2]) == expected
    with torch.no_grad():
        want, got = model(fashion), rewritten(fashion)
    scale = want.abs().max().item()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5 * max(scale, 1))
    assert (got.argmax(1) == want.argmax(1)).all()
    if not expected:
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), rewritten.state_dict().values()))


def test_only_rebuilds_the_recorded_rewrites_and_refuses_what_does_not_fit(fashion):
    fresh = create_model("tutorial_cnn", num_classes=10, in_chans=1, input_size=(28, 28)).eval()
    assert inference_rewrites(fresh, fashion[:2], only=["relu-before-maxpool"]) == ["relu-before-maxpool"]
    assert not any(isinstance(m, SpaceToDepthConvPool) for m in fresh.modules())
    resnet = create_model("resnet20", num_classes=10, in_chans=1, input_size=(28, 28)).eval()
    with pytest.raises(ValueError, match="'space-to-depth-stem' does not fit"):
        inference_rewrites(resnet, fashion[:2], only=["space-to-depth-stem"])
    with pytest.raises(ValueError, match="unknown model rewrite 'fast'.*" + REWRITES[0]):
        inference_rewrites(fresh, fashion[:2], only=["fast"])


def test_exclude_keeps_the_stem(fashion):
    model = create_model("tutorial_cnn", num_classes=10, in_chans=1, input_size=(28, 28)).eval()
    done = inference_rewrites(model, fashion[:2], exclude=("space-to-depth-stem",))
    assert done == ["relu-before-maxpool", "channels-last-flatten"]
    assert isinstance(model.features.conv1, nn.Conv2d)
