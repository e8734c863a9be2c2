"""Shared blocks, each against torchvision's own version of it or a hand-computed expectation."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from torchvision.models._utils import _make_divisible
from torchvision.ops import Conv2dNormActivation, SqueezeExcitation

from convolab.layers import ConvNormAct, DropPath, SqueezeExcite, checkpoint_call, checkpoint_seq, make_divisible


@pytest.mark.parametrize("value", [3, 8, 15.9, 16, 17, 24.5, 31, 100, 200.0, 1280 * 0.75, 37.3])
@pytest.mark.parametrize("divisor", [4, 8, 16])
def test_make_divisible_matches_torchvision(value, divisor):
    assert make_divisible(value, divisor) == _make_divisible(value, divisor)
    assert make_divisible(value, divisor) % divisor == 0


@pytest.mark.parametrize("k,stride,groups,dilation", [(3, 1, 1, 1), (3, 2, 1, 1), (1, 1, 1, 1), (5, 2, 4, 1),
                                                      (3, 1, 2, 2)])
def test_conv_norm_act_is_torchvisions_conv2d_norm_activation(k, stride, groups, dilation):
    torch.manual_seed(0)
    ours = ConvNormAct(8, 16, k, stride, groups=groups, dilation=dilation).eval()
    ref = Conv2dNormActivation(8, 16, k, stride, groups=groups, dilation=dilation).eval()
    ref.load_state_dict(ours.state_dict(), strict=True)  # same keys and shapes
    x = torch.randn(2, 8, 13, 13)
    torch.testing.assert_close(ours(x), ref(x))
    assert ours[0].bias is None  # BatchNorm follows: the conv's bias would be redundant


def test_conv_norm_act_without_norm_has_a_bias_and_no_activation_when_asked():
    m = ConvNormAct(3, 4, 3, norm_layer=None, act_layer=None)
    assert len(m) == 1 and m[0].bias is not None
    assert m(torch.randn(1, 3, 9, 9)).shape == (1, 4, 9, 9)  # "same" padding at stride 1



@pytest.mark.parametrize("k,stride,padding", [(3, 1, None), (3, 2, None), ((3, 7, 7), (1, 2, 2), (1, 3, 3)),
                                              (1, 2, None)])
def test_conv_norm_act_3d_is_conv3d_batchnorm3d_relu(k, stride, padding):
    """The 3-D form against the same layers written out (torchvision's video ResNet stem and blocks)."""
    torch.manual_seed(0)
    ours = ConvNormAct(3, 6, k, stride, padding, conv_layer=nn.Conv3d, norm_layer=nn.BatchNorm3d).eval()
    pad = padding if padding is not None else (k - 1) // 2
    ref = nn.Sequential(nn.Conv3d(3, 6, k, stride, pad, bias=False), nn.BatchNorm3d(6), nn.ReLU()).eval()
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 3, 5, 9, 9)
    torch.testing.assert_close(ours(x), ref(x))
    assert ours[0].padding == ref[0].padding

def test_squeeze_excite_is_torchvisions_squeeze_excitation():
    torch.manual_seed(0)
    ours = SqueezeExcite(32, 8, act_layer=nn.SiLU, gate_layer=nn.Hardsigmoid)
    ref = SqueezeExcitation(32, 8, activation=nn.SiLU, scale_activation=nn.Hardsigmoid)
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(3, 32, 7, 5)
    torch.testing.assert_close(ours(x), ref(x))


def test_squeeze_excite_by_hand():
    se = SqueezeExcite(2, 1)
    with torch.no_grad():
        se.fc1.weight.fill_(1.0)
        se.fc1.bias.zero_()
        se.fc2.weight.copy_(torch.tensor([[[[1.0]]], [[[-1.0]]]]))
        se.fc2.bias.zero_()
    x = torch.ones(1, 2, 2, 2)
    x[0, 1] *= 3  # channel means 1 and 3 -> squeeze relu(4) = 4 -> gates sigmoid(4), sigmoid(-4)
    out = se(x)
    s = torch.sigmoid(torch.tensor(4.0))
    torch.testing.assert_close(out[0, 0], torch.full((2, 2), float(s)))
    torch.testing.assert_close(out[0, 1], torch.full((2, 2), 3 * float(1 - s)))


def test_drop_path_is_identity_in_eval_and_unbiased_in_training():
    x = torch.ones(20000, 3, 2, 2)
    dp = DropPath(0.25)
    assert torch.equal(dp.eval()(x), x)
    y = dp.train()(x)
    per_sample = y.flatten(1)
    # Each sample is either all zero or all 1/keep.
    values = per_sample[:, 0].unique()
    assert len(values) == 2 and values[0] == 0 and values[1].item() == pytest.approx(1 / 0.75)
    assert torch.all(per_sample == per_sample[:, :1])
    assert y.mean().item() == pytest.approx(1.0, abs=0.02)
    assert (per_sample[:, 0] == 0).float().mean().item() == pytest.approx(0.25, abs=0.02)
    with pytest.raises(ValueError, match="drop_prob"):
        DropPath(1.0)


def test_checkpoint_seq_gives_the_same_outputs_and_gradients():
    torch.manual_seed(0)
    blocks = nn.Sequential(*[nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
                             for _ in range(3)])
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    ref = blocks(x)
    ref.square().sum().backward()
    ref_grads = [p.grad.clone() for p in blocks.parameters()] + [x.grad.clone()]
    blocks.zero_grad()
    x.grad = None
    # BatchNorm's running statistics see each block twice under checkpointing; compare in a copy.
    out = checkpoint_seq(blocks, x)
    torch.testing.assert_close(out, ref)
    out.square().sum().backward()
    for g, r in zip([p.grad for p in blocks.parameters()] + [x.grad], ref_grads):
        torch.testing.assert_close(g, r)
    with torch.no_grad():
        torch.testing.assert_close(checkpoint_seq(blocks, x), blocks(x))


def test_checkpoint_call_takes_several_inputs(monkeypatch):
    import convolab.layers.checkpoint as checkpoint_module

    calls = []
    monkeypatch.setattr(checkpoint_module, "checkpoint", lambda *a, **k: calls.append(1) or checkpoint(*a, **k))
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 2, 3, padding=1)

    def block(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # a U-Net decoder step: concatenate, convolve
        return conv(torch.cat([a, b], 1)).relu()

    a, b = torch.randn(1, 4, 6, 6, requires_grad=True), torch.randn(1, 2, 6, 6, requires_grad=True)
    block(a, b).sum().backward()
    expected = [t.grad.clone() for t in (a, b, conv.weight)]
    for t in (a, b, conv.weight):
        t.grad = None
    out = checkpoint_call(block, a, b)
    assert calls == [1]
    out.sum().backward()
    for got, want in zip((a.grad, b.grad, conv.weight.grad), expected):
        torch.testing.assert_close(got, want)
    with torch.no_grad():  # nothing to recompute without gradients: a plain call
        torch.testing.assert_close(checkpoint_call(block, a, b), block(a, b))
    assert calls == [1]
