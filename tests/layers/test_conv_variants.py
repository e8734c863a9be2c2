"""convolab.layers' convolution variants against independent references: SciPy's convolve2d/correlate2d for
true convolution, and nn.Conv2d with the composed kernel for the separable convolutions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.signal import convolve2d, correlate2d

from convolab.layers import SeparableConv2d, SpatiallySeparableConv2d, TrueConv2d


def test_true_conv_is_scipys_convolve2d_and_conv2d_is_correlate2d():
    rng = np.random.default_rng(0)
    x, k = rng.standard_normal((7, 9)), rng.standard_normal((3, 4))
    true, cc = TrueConv2d(1, 1, (3, 4), bias=False).double(), torch.nn.Conv2d(1, 1, (3, 4), bias=False).double()
    with torch.no_grad():
        true.weight.copy_(torch.tensor(k).reshape(1, 1, 3, 4))
        cc.weight.copy_(torch.tensor(k).reshape(1, 1, 3, 4))
    xt = torch.tensor(x).reshape(1, 1, 7, 9)
    np.testing.assert_allclose(true(xt)[0, 0].detach().numpy(), convolve2d(x, k, mode="valid"), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(cc(xt)[0, 0].detach().numpy(), correlate2d(x, k, mode="valid"), rtol=1e-13, atol=1e-13)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.integers(1, 2), st.integers(0, 2),
       st.sampled_from(["zeros", "reflect", "replicate", "circular"]))
def test_true_conv_with_w_is_conv2d_with_flipped_w(groups, k, stride, dilation, padding, mode):
    """Forward, dx and dW: TrueConv2d(W) equals Conv2d(flip(W)), with dL/dW equal to flip(dL/dW_cc)."""
    torch.manual_seed(k * 10 + stride)
    cfg = dict(in_channels=2 * groups, out_channels=groups, kernel_size=k, stride=stride, padding=padding,
               dilation=dilation, groups=groups, padding_mode=mode)
    true, cc = TrueConv2d(**cfg).double(), torch.nn.Conv2d(**cfg).double()
    with torch.no_grad():
        cc.weight.copy_(torch.flip(true.weight, (-2, -1)))
        cc.bias.copy_(true.bias)
    size = max(dilation * (k - 1) + 1, padding + 1) + 3
    x = torch.randn(2, 2 * groups, size, size + 1, dtype=torch.float64, requires_grad=True)
    y_true, y_cc = true(x), cc(x)
    torch.testing.assert_close(y_true, y_cc, rtol=0, atol=1e-13)
    dy = torch.randn_like(y_true)
    dx_true, dw_true = torch.autograd.grad(y_true, (x, true.weight), dy)
    dx_cc, dw_cc = torch.autograd.grad(y_cc, (x, cc.weight), dy)
    torch.testing.assert_close(dx_true, dx_cc, rtol=0, atol=1e-13)
    torch.testing.assert_close(dw_true, torch.flip(dw_cc, (-2, -1)), rtol=0, atol=1e-13)


def _separable_kernel(m: SeparableConv2d) -> torch.Tensor:
    """The full (C_out, C_in, kh, kw) kernel: W[o, c] = sum_m P[o, c*dm + m] D[c*dm + m]."""
    d = m.depthwise.weight[:, 0]                                   # (C_in*dm, kh, kw)
    p = m.pointwise.weight[:, :, 0, 0]                             # (C_out, C_in*dm)
    cin = m.depthwise.in_channels
    return torch.einsum("ocm,cmij->ocij", p.reshape(p.shape[0], cin, -1), d.reshape(cin, -1, *d.shape[1:]))


@settings(max_examples=30, deadline=None, derandomize=True)
@given(st.integers(1, 4), st.integers(1, 5), st.integers(1, 3), st.integers(1, 4), st.integers(1, 3),
       st.integers(0, 2), st.integers(1, 2), st.booleans())
def test_separable_equals_conv2d_with_the_composed_kernel(cin, cout, dm, k, stride, padding, dilation, bias):
    torch.manual_seed(cin * 100 + cout * 10 + k)
    m = SeparableConv2d(cin, cout, k, stride, padding, dilation, bias=bias, depth_multiplier=dm).double()
    x = torch.randn(2, cin, dilation * (k - 1) + 4, dilation * (k - 1) + 6, dtype=torch.float64)
    want = F.conv2d(x, _separable_kernel(m), m.pointwise.bias, stride, padding, dilation)
    torch.testing.assert_close(m(x), want, rtol=1e-12, atol=1e-12)
    n_params = cin * dm * k * k + cin * dm * cout + (cout if bias else 0)
    assert sum(p.numel() for p in m.parameters()) == n_params
    assert m.depthwise.bias is None and m.depthwise.groups == cin


@settings(max_examples=30, deadline=None, derandomize=True)
@given(st.integers(1, 3), st.integers(1, 3), st.one_of(st.none(), st.integers(1, 3)), st.integers(1, 4),
       st.integers(1, 4), st.integers(1, 3), st.integers(1, 3), st.integers(0, 2), st.integers(0, 2),
       st.integers(1, 2))
def test_spatially_separable_equals_conv2d_with_the_outer_product_kernel(cin, cout, mid, kh, kw, sh, sw, ph, pw,
                                                                         dilation):
    """With zero padding, vertical then horizontal is one conv with W[o, c, i, j] = sum_m H[o, m, j] V[m, c, i]."""
    torch.manual_seed(cin + 7 * cout + 49 * kh)
    m = SpatiallySeparableConv2d(cin, cout, (kh, kw), (sh, sw), (ph, pw), dilation, mid_channels=mid).double()
    v, h = m.vertical.weight[:, :, :, 0], m.horizontal.weight[:, :, 0, :]  # (mid, C_in, kh), (C_out, mid, kw)
    full = torch.einsum("omj,mci->ocij", h, v)
    x = torch.randn(2, cin, dilation * (kh - 1) + 3, dilation * (kw - 1) + 5, dtype=torch.float64)
    want = F.conv2d(x, full, m.horizontal.bias, (sh, sw), (ph, pw), dilation)
    torch.testing.assert_close(m(x), want, rtol=1e-12, atol=1e-12)
    assert m.vertical.out_channels == (cout if mid is None else mid)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("cls", [SeparableConv2d, SpatiallySeparableConv2d])
@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_same_padding_keeps_the_size_in_every_mode(cls, mode):
    m = cls(3, 5, kernel_size=4, padding="same", padding_mode=mode, dilation=2)
    assert m(torch.randn(2, 3, 9, 10)).shape == (2, 5, 9, 10)


def test_plain_keyword_constructors_and_bad_arguments():
    """The network-spec grammar passes ints, strings and booleans; mistakes are one-line ValueErrors."""
    SeparableConv2d(in_channels=3, out_channels=8, kernel_size=3, stride=2, padding=1, dilation=1, bias=False,
                    padding_mode="reflect", depth_multiplier=2)
    SpatiallySeparableConv2d(in_channels=3, out_channels=8, kernel_size=5, padding=2, mid_channels=4)
    with pytest.raises(ValueError, match="depth_multiplier must be >= 1"):
        SeparableConv2d(3, 8, depth_multiplier=0)
    with pytest.raises(ValueError, match="mid_channels must be >= 1"):
        SpatiallySeparableConv2d(3, 8, mid_channels=0)
    with pytest.raises(ValueError, match="padding_mode"):
        SeparableConv2d(3, 8, padding_mode="mirror")
