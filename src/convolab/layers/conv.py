"""Convolution variants the tutorials compare: true convolution, depthwise-separable, spatially separable.

Each is a plain ``nn.Module`` whose constructor takes plain int/str/bool keyword arguments (the
network-spec grammar builds them by name). Submodule names (``depthwise``/``pointwise``,
``vertical``/``horizontal``) match ``convolab.glass.conv_variants``, so weights move between the
engines by name.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["TrueConv2d", "SeparableConv2d", "SpatiallySeparableConv2d"]

Size2 = int | tuple[int, int]


def _pair(value: Size2, name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints; got {value!r}")
    return value  # type: ignore[return-value]


class TrueConv2d(nn.Conv2d):
    """True 2-D convolution (kernel flipped in both spatial axes) beside ``nn.Conv2d``'s cross-correlation.

    ``nn.Conv2d`` computes ``y[u, v] = b + sum_{c,i,j} W[c, i, j] x[c, u*s + i*d, v*s + j*d]``; the
    convolution of signal processing runs the kernel backwards::

        y[n, o, u, v] = b[o] + sum_{c,i,j} W[o, c, i, j] * xp[n, c, u*s + (kh-1-i)*d, v*s + (kw-1-j)*d]

    so ``TrueConv2d`` with weight ``W`` equals ``nn.Conv2d`` with weight ``flip(W)`` (``forward`` is just
    that). As a learned layer it learns the same functions -- gradient descent finds the flipped kernel
    -- which is why every framework skips the flip; it matters for hand-written kernels only.
    Arguments, parameters (``weight``, ``bias``), padding modes and output size are ``nn.Conv2d``'s:
    ``H_out = floor((H + 2p - d(kh - 1) - 1) / s) + 1``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, torch.flip(self.weight, dims=(-2, -1)), self.bias)


class SeparableConv2d(nn.Module):
    """Depthwise-separable convolution (MobileNet, Xception): ``depthwise`` then ``pointwise``.

    * ``depthwise``: ``nn.Conv2d(C_in, C_in * depth_multiplier, k, stride, padding, dilation,
      groups=C_in, bias=False, padding_mode)`` -- each input channel filtered on its own;
    * ``pointwise``: ``nn.Conv2d(C_in * depth_multiplier, C_out, 1, bias=bias)`` -- the channels mixed.

    A bias on the depthwise part would be redundant (the pointwise map is linear, so it folds into the
    pointwise bias). Parameters ``C_in*m*kh*kw + C_in*m*C_out (+ C_out)`` against ``C_in*C_out*kh*kw
    (+ C_out)`` for a full convolution. Output size: ``H_out = floor((H + 2p - d(kh - 1) - 1) / s) + 1``.

    Args:
        in_channels, out_channels: C_in and C_out.
        kernel_size, stride, padding, dilation: as ``nn.Conv2d`` (padding may be ``"same"``/``"valid"``).
        bias: a bias on the pointwise convolution.
        padding_mode: ``zeros``, ``reflect``, ``replicate`` or ``circular`` (the depthwise convolution's).
        depth_multiplier: filters per input channel in the depthwise step.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Size2 = 3, stride: Size2 = 1,
                 padding: Size2 | str = 0, dilation: Size2 = 1, bias: bool = True, padding_mode: str = "zeros",
                 depth_multiplier: int = 1):
        super().__init__()
        if depth_multiplier < 1:
            raise ValueError(f"SeparableConv2d: depth_multiplier must be >= 1; got {depth_multiplier}")
        mid = in_channels * depth_multiplier
        self.depthwise = nn.Conv2d(in_channels, mid, kernel_size, stride, padding, dilation, groups=in_channels,
                                   bias=False, padding_mode=padding_mode)
        self.pointwise = nn.Conv2d(mid, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.depthwise(x)  # (N, C_in*m, H_out, W_out)
        return self.pointwise(x)  # (N, C_out, H_out, W_out)


class SpatiallySeparableConv2d(nn.Module):
    """A ``kh x 1`` convolution (``vertical``) then a ``1 x kw`` one (``horizontal``).

    With one channel in and out the pair is a rank-1 ``kh x kw`` kernel ``K = v h^T`` (Sobel:
    ``[1 2 1]^T [-1 0 1]``) in ``kh + kw`` weights instead of ``kh * kw``; with channels, ``vertical``
    maps ``C_in -> C_mid`` (``C_mid = C_out`` unless ``mid_channels`` is given) with the stride, padding
    and dilation along H and no bias, ``horizontal`` maps ``C_mid -> C_out`` along W with the bias. No
    non-linearity sits between them. Output size as one ``kh x kw`` convolution:
    ``H_out = floor((H + 2p_h - d_h(kh - 1) - 1) / s_h) + 1`` (W likewise).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Size2 = 3, stride: Size2 = 1,
                 padding: Size2 | str = 0, dilation: Size2 = 1, bias: bool = True, padding_mode: str = "zeros",
                 mid_channels: int | None = None):
        super().__init__()
        (kh, kw), (sh, sw) = _pair(kernel_size, "kernel_size"), _pair(stride, "stride")
        dh, dw = _pair(dilation, "dilation")
        if isinstance(padding, str):
            pv: Size2 | str = padding
            ph: Size2 | str = padding
        else:
            a, b = _pair(padding, "padding")
            pv, ph = (a, 0), (0, b)
        mid = out_channels if mid_channels is None else mid_channels
        if mid < 1:
            raise ValueError(f"SpatiallySeparableConv2d: mid_channels must be >= 1; got {mid}")
        self.vertical = nn.Conv2d(in_channels, mid, (kh, 1), (sh, 1), pv, (dh, 1), bias=False,
                                  padding_mode=padding_mode)
        self.horizontal = nn.Conv2d(mid, out_channels, (1, kw), (1, sw), ph, (1, dw), bias=bias,
                                    padding_mode=padding_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.vertical(x)  # (N, C_mid, H_out, W)
        return self.horizontal(x)  # (N, C_out, H_out, W_out)

