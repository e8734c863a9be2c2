"""Convolution variants: padding modes, true convolution, depthwise-separable and spatially separable.

* ``PaddedConv2d``: ``Conv2d`` with torch's four padding modes (``zeros``, ``reflect``, ``replicate``,
  ``circular``); ``Conv2d`` itself pads with zeros only.
* ``TrueConv2d``: convolution in the mathematical sense (the kernel flipped in both spatial axes),
  beside the cross-correlation every framework calls "convolution".
* ``SeparableConv2d``: a depthwise convolution (one filter per input channel) then a 1x1 pointwise one.
* ``SpatiallySeparableConv2d``: a ``k x 1`` convolution then a ``1 x k`` one.

The composite layers keep torch's submodule names (``depthwise``/``pointwise``,
``vertical``/``horizontal``), so ``convolab.layers``' torch versions load by name.
"""

from __future__ import annotations

import numpy as np

from convolab.glass.conv import Conv2d
from convolab.glass.im2col import pair
from convolab.glass.module import Module, check_float_input

__all__ = ["PADDING_MODES", "pad_indices", "PaddedConv2d", "TrueConv2d", "SeparableConv2d",
           "SpatiallySeparableConv2d"]

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def pad_indices(size: int, before: int, after: int, mode: str) -> np.ndarray:
    """Source index of every position of a padded axis: ``padded[p] = x[idx[p]]`` (length before+size+after).

    ``reflect`` mirrors without repeating the edge (``[2 1 | 0 1 2 3 | 2 1]``), ``replicate`` repeats it
    (``[0 0 | 0 1 2 3 | 3 3]``), ``circular`` wraps around (``[2 3 | 0 1 2 3 | 0 1]``) -- torch's ``F.pad``.

    Raises:
        ValueError: ``reflect`` with a padding >= the size, or ``circular`` with a padding > the size
            (torch refuses both).
    """
    if mode == "reflect" and max(before, after) >= size:
        raise ValueError(f"padding_mode='reflect' needs padding < input size; got padding {max(before, after)} "
                         f"for a size of {size}")
    if mode == "circular" and max(before, after) > size:
        raise ValueError(f"padding_mode='circular' needs padding <= input size; got padding "
                         f"{max(before, after)} for a size of {size}")
    p = np.arange(-before, size + after)                                       # position in input coordinates
    if mode == "reflect":
        return np.abs(np.where(p >= size, 2 * (size - 1) - p, p))
    if mode == "replicate":
        return np.clip(p, 0, size - 1)
    if mode == "circular":
        return p % size
    raise ValueError(f"padding mode must be one of reflect, replicate, circular here; got {mode!r}")


class PaddedConv2d(Conv2d):
    """``Conv2d`` with torch's ``padding_mode``: ``zeros``, ``reflect``, ``replicate`` or ``circular``.

    For the non-zero modes the input is first padded by index (``pad_indices``: every padded pixel is a
    copy of an input pixel), then convolved without padding, as torch does. Backward is the adjoint of
    that copy: each padded pixel's gradient is added back onto the input pixel it was copied from::

        xp[n, c, y, x] = x[n, c, r(y), s(x)]     dL/dx[n, c, i, j] = sum_{y: r(y)=i, x: s(x)=j} dL/dxp[n, c, y, x]

    ``padding="same"`` puts the odd extra row/column at the bottom/right, as torch does. Arguments,
    parameters and output size are ``Conv2d``'s.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] | str = 0,
                 dilation: int | tuple[int, int] = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", dtype=np.float32):
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"{type(self).__name__}: padding_mode must be one of {', '.join(PADDING_MODES)}; "
                             f"got {padding_mode!r}")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         "zeros", dtype)
        self.padding_mode = padding_mode
        self._mode_pad: tuple[int, int, int, int] | None = None  # (top, bottom, left, right) for a non-zero mode
        if padding_mode != "zeros":
            (ph, pw), (eh, ew) = self._pad, self._extra
            self._mode_pad = (ph, ph + eh, pw, pw + ew)
            self._pad, self._extra = (0, 0), (0, 0)  # Conv2d pads nothing: forward pads by index first
        self._pad_index: tuple[np.ndarray, np.ndarray, tuple[int, int]] | None = None
        self._input_padded = False  # True while Conv2d.forward runs on the index-padded input

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.padding_mode == "zeros" else f", padding_mode={self.padding_mode!r}")

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        """(H_out, W_out) for an (H, W) input."""
        if self._mode_pad is not None and not self._input_padded:
            top, bottom, left, right = self._mode_pad
            h, w = h + top + bottom, w + left + right
        return super().output_size(h, w)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """(N, C_in, H, W) -> (N, C_out, H_out, W_out)."""
        if self._mode_pad is None:
            return super().forward(x)
        x = check_float_input(self, x)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{self.label}: expected input of shape (N, {self.in_channels}, H, W), got {x.shape}")
        top, bottom, left, right = self._mode_pad
        try:
            rows = pad_indices(x.shape[2], top, bottom, self.padding_mode)
            cols = pad_indices(x.shape[3], left, right, self.padding_mode)
        except ValueError as e:
            raise ValueError(f"{self.label}: input of shape {x.shape}: {e}") from None
        self._pad_index = (rows, cols, x.shape[2:])
        xp = x[:, :, rows[:, None], cols[None, :]]                                # (N, C, Hp, Wp)
        self._input_padded = True
        try:
            return super().forward(xp)
        finally:
            self._input_padded = False

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        """dL/dy -> dL/dx (None if not ``input_grad``); adds dL/dW and dL/db into ``grads``."""
        dxp = super().backward(dout)
        if self._mode_pad is None or dxp is None:
            return dxp
        rows, cols, (h, w) = self._pad_index
        n, c = dxp.shape[:2]
        dxr = np.zeros((n, c, h, dxp.shape[3]), dtype=dxp.dtype)
        np.add.at(dxr, (slice(None), slice(None), rows), dxp)                    # fold the padded rows back
        dx = np.zeros((n, c, h, w), dtype=dxp.dtype)
        np.add.at(dx, (slice(None), slice(None), slice(None), cols), dxr)        # then the padded columns
        return dx


class TrueConv2d(PaddedConv2d):
    """True 2-D convolution: the kernel flipped in both spatial axes, then cross-correlated.

    Every framework's "convolution" is a cross-correlation, ``y[u, v] = sum_{i,j} W[i, j] x[u + i, v + j]``.
    The convolution of signal processing flips the kernel::

        y[n, o, u, v] = b[o] + sum_{c, i, j} W[o, c, i, j] * xp[n, c, u*s + (kh-1-i)*d, v*s + (kw-1-j)*d]

    i.e. ``TrueConv2d`` with ``W`` computes exactly ``Conv2d`` with ``flip(W)``. As a *learned* layer it
    therefore learns the same functions: training simply finds the flipped kernel. The difference
    matters only when a kernel is given by hand (an edge detector, a blur is symmetric and unchanged).

    Written by hand for teaching: the parameter ``weight`` is stored unflipped (torch's names and
    shapes); the computation reads it flipped and the weight gradient is flipped back,
    ``dL/dW = flip(dL/dW_cc)`` (flipping is its own inverse and its own adjoint).
    """

    def _param(self, key: str, dtype: np.dtype) -> np.ndarray:
        p = super()._param(key, dtype)
        return p[:, :, ::-1, ::-1] if key == "weight" else p

    def _accumulate(self, key: str, grad: np.ndarray) -> None:
        super()._accumulate(key, grad[:, :, ::-1, ::-1] if key == "weight" else grad)


class SeparableConv2d(Module):
    """Depthwise-separable convolution (MobileNet, Xception): ``depthwise`` then ``pointwise``.

    * ``depthwise``: ``C_in -> C_in * depth_multiplier`` with groups ``C_in`` (each input channel gets its
      own ``k x k`` filters), stride, padding, dilation and padding mode as given, no bias;
    * ``pointwise``: a 1x1 convolution ``C_in * depth_multiplier -> C_out`` mixing the channels, with the
      bias (a depthwise bias would be redundant: the pointwise map is linear, so it folds into this one).

    Parameters: ``C_in*m*k*k + C_in*m*C_out (+ C_out)`` against ``C_in*C_out*k*k (+ C_out)`` for a full
    convolution; multiply-adds likewise. Output size: ``floor((H + 2p - d(k-1) - 1) / s) + 1``.
    Backward: the chain rule through the two (``dx = depthwise.backward(pointwise.backward(dy))``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int] = 3,
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] | str = 0,
                 dilation: int | tuple[int, int] = 1, bias: bool = True, padding_mode: str = "zeros",
                 depth_multiplier: int = 1, dtype=np.float32):
        super().__init__()
        if depth_multiplier < 1:
            raise ValueError(f"SeparableConv2d: depth_multiplier must be >= 1; got {depth_multiplier}")
        mid = in_channels * depth_multiplier
        self.depthwise = PaddedConv2d(in_channels, mid, kernel_size, stride, padding, dilation, groups=in_channels,
                                      bias=False, padding_mode=padding_mode, dtype=dtype)
        self.pointwise = Conv2d(mid, out_channels, 1, bias=bias, dtype=dtype)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """(N, C_in, H, W) -> (N, C_in*m, H_out, W_out) -> (N, C_out, H_out, W_out)."""
        return self._remember_output(self.pointwise.forward(self.depthwise.forward(x)))

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        dout = self._check_dout(dout)
        self.depthwise.input_grad = self.input_grad
        return self.depthwise.backward(self.pointwise.backward(dout))


class SpatiallySeparableConv2d(Module):
    """A ``kh x 1`` convolution (``vertical``) then a ``1 x kw`` one (``horizontal``).

    With one channel in and out this is a rank-1 kernel, ``K = v h^T`` (the Sobel kernel is
    ``[1 2 1]^T [-1 0 1]``): ``kh + kw`` weights instead of ``kh * kw``. With channels,
    ``vertical``: ``C_in -> C_mid`` (``C_mid = C_out`` unless given), stride/padding/dilation along H,
    no bias; ``horizontal``: ``C_mid -> C_out`` along W, with the bias. Output size as one
    ``kh x kw`` convolution: ``H_out = floor((H + 2p_h - d_h(kh-1) - 1) / s_h) + 1`` (W likewise).
    Backward: the chain rule through the two.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int] = 3,
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] | str = 0,
                 dilation: int | tuple[int, int] = 1, bias: bool = True, padding_mode: str = "zeros",
                 mid_channels: int | None = None, dtype=np.float32):
        super().__init__()
        (kh, kw), (sh, sw) = pair(kernel_size, "kernel_size"), pair(stride, "stride")
        dh, dw = pair(dilation, "dilation")
        if isinstance(padding, str):
            pv = ph = padding
        else:
            (a, b) = pair(padding, "padding")
            pv, ph = (a, 0), (0, b)
        mid = out_channels if mid_channels is None else mid_channels
        if mid < 1:
            raise ValueError(f"SpatiallySeparableConv2d: mid_channels must be >= 1; got {mid}")
        self.vertical = PaddedConv2d(in_channels, mid, (kh, 1), (sh, 1), pv, (dh, 1), bias=False,
                                     padding_mode=padding_mode, dtype=dtype)
        self.horizontal = PaddedConv2d(mid, out_channels, (1, kw), (1, sw), ph, (1, dw), bias=bias,
                                       padding_mode=padding_mode, dtype=dtype)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """(N, C_in, H, W) -> (N, C_mid, H_out, W) -> (N, C_out, H_out, W_out)."""
        return self._remember_output(self.horizontal.forward(self.vertical.forward(x)))

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        dout = self._check_dout(dout)
        self.vertical.input_grad = self.input_grad
        return self.vertical.backward(self.horizontal.backward(dout))
