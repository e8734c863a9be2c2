"""SE-ResNets (Hu, Shen & Sun, CVPR 2018): ResNet's classes with squeeze-and-excitation on each branch.

References: the paper's SE-ResNet-50 parameter count (28.09 M, about 2.5 M above ResNet-50's
25.6 M, section "Model and Computational Complexity"), a by-hand count of the SE blocks, and
torchvision's ResNets for every weight outside the SE blocks.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from convolab.layers import SqueezeExcite
from convolab.models import create_model
from convolab.models.resnet import BasicBlock, Bottleneck, ResNet

from ._helpers import n_params

SE_RESNETS = {"se_resnet18": "resnet18", "se_resnet34": "resnet34", "se_resnet50": "resnet50"}


def blocks(model: ResNet) -> list[nn.Module]:
    return [b for s in model.stage_names for b in getattr(model, s)]


def se_params(model: ResNet) -> int:
    """By hand: each block's SE is C -> C/16 -> C with biases: 2 * C * C/16 + C/16 + C."""
    total = 0
    for b in blocks(model):
        c = b.bn3.num_features if isinstance(b, Bottleneck) else b.bn2.num_features
        total += 2 * c * (c // 16) + c // 16 + c
    return total


def test_se_resnet50_parameter_count_is_the_papers():
    model = create_model("se_resnet50")
    count = n_params(model)
    assert count == 28_088_024
    assert abs(count - 28.09e6) / 28.09e6 < 0.01  # Hu et al.: 28.09 M
    assert count - n_params(torchvision.models.resnet50(weights=None)) == se_params(model)  # about 2.5 M


@pytest.mark.parametrize("name", SE_RESNETS)
def test_an_se_block_on_every_branch_and_torchvision_names_elsewhere(name):
    model = create_model(name)
    assert isinstance(model, ResNet)  # resnet.py's classes, not a copy
    for b in blocks(model):
        assert isinstance(b, (BasicBlock, Bottleneck))
        assert isinstance(b.se, SqueezeExcite)
        channels = b.se.fc1.in_channels
        assert b.se.fc1.out_channels == channels // 16 and b.se.fc2.out_channels == channels
    # Apart from the SE blocks, the state dict is torchvision's ResNet's: its weights load and only `se` keys are left.
    ref = getattr(torchvision.models, SE_RESNETS[name])(weights=None)
    result = model.load_state_dict(ref.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys and all(".se." in k for k in result.missing_keys)
    assert n_params(model) - n_params(ref) == se_params(model)


@pytest.mark.parametrize("name", ["se_resnet18", "se_resnet50"])
def test_se_rescales_the_branch_before_the_addition(name):
    """With the SE gate shut (sigmoid -> 0), a block without downsample reduces to relu(x + 0) = x for x >= 0."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, input_size=16).eval()
    block = model.layer1[1]
    assert block.downsample is None
    with torch.no_grad():
        block.se.fc2.weight.zero_()
        block.se.fc2.bias.fill_(-1e4)
        x = torch.rand(2, block.se.fc2.out_channels, 5, 5)  # a previous block's output is non-negative
        torch.testing.assert_close(block(x), x, rtol=0, atol=0)
        # Gate fully open (sigmoid -> 1): the block equals the plain ResNet block with the same weights.
        block.se.fc2.bias.fill_(1e4)
        plain = copy.deepcopy(block)
        plain.se = None
        torch.testing.assert_close(block(x), plain(x))


@pytest.mark.parametrize("name", SE_RESNETS)
def test_forward_small_input_seven_classes(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_chans=1, input_size=8).train()
    assert model.small_stem and isinstance(model.maxpool, nn.Identity)
    out = model(torch.randn(2, 1, 8, 8))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


@pytest.mark.parametrize("size,reductions", [(32, [1, 1, 2, 4, 8]), (64, [2, 4, 8, 16, 32])])
def test_feature_info_matches_forward_features(size, reductions):
    model = create_model("se_resnet50", num_classes=7, input_size=size).eval()
    assert [i["reduction"] for i in model.feature_info] == reductions
    assert [i["num_chs"] for i in model.feature_info] == [64, 256, 512, 1024, 2048]
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 3, size, size))
    assert feats.shape == (1, 2048, size // reductions[-1], size // reductions[-1])
    assert model.get_classifier().in_features == feats.shape[1]


def test_grad_checkpointing_keeps_outputs_and_gradients():
    torch.manual_seed(0)
    model = create_model("se_resnet18", num_classes=7, input_size=12).train()
    ckpt = copy.deepcopy(model)
    ckpt.set_grad_checkpointing()
    x, y = torch.randn(4, 3, 12, 12), torch.arange(4)
    outs, grads = [], []
    for m in (model, ckpt):
        out = m(x)
        F.cross_entropy(out, y).backward()
        outs.append(out.detach())
        grads.append({k: p.grad for k, p in m.named_parameters()})
    torch.testing.assert_close(outs[1], outs[0])
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], msg=k)


def test_bad_drop_rate():
    with pytest.raises(ValueError, match="drop_rate"):
        create_model("se_resnet18", drop_rate=-0.5)
