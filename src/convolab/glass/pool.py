"""Pooling: ``MaxPool2d``, ``AvgPool2d`` and ``AdaptiveAvgPool2d`` with their backward passes.

Max and average pooling walk the ``kh*kw`` kernel offsets instead of the output pixels: the input
is first regrouped by offset (``gather_offsets``: one contiguous (N, H_out, W_out, C) block per
offset), every step is then one vectorised operation on whole contiguous blocks, and the backward
pass scatters the per-offset gradients back with col2im (see ``convolab.glass.im2col``).
"""

from __future__ import annotations

import numpy as np

from convolab.glass.im2col import col2im, conv_output_size, gather_offsets, pad_nhwc, pair, to_nchw
from convolab.glass.module import Module, check_float_input
from convolab.glass.precision import accumulate_dtype

__all__ = ["MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d"]


class _Pool2d(Module):
    """What max and average pooling share: window geometry, shape checks, padding to the windows."""

    def __init__(self, kernel_size, stride, padding, dilation, ceil_mode):
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(kernel_size if stride is None else stride, "stride")
        self.padding = pair(padding, "padding")
        self.dilation = pair(dilation, "dilation")
        self.ceil_mode = bool(ceil_mode)
        if min(self.kernel_size + self.stride + self.dilation) < 1:
            raise ValueError(f"{type(self).__name__}: kernel_size, stride and dilation must be >= 1")
        if any(p < 0 or p > k // 2 for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(f"{type(self).__name__}: padding must be between 0 and half the kernel size "
                             f"(torch's rule); got padding={self.padding}, kernel_size={self.kernel_size}")
        self._cache: tuple | None = None

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
                + (f", dilation={self.dilation}" if self.dilation != (1, 1) else "")
                + (", ceil_mode=True" if self.ceil_mode else ""))

    def _geometry(self, x: np.ndarray) -> tuple[tuple[int, int], tuple[int, int]]:
        """Check a 4-D input; return (H_out, W_out) and the extra bottom/right padding ``ceil_mode`` needs."""
        if x.ndim != 4:
            raise ValueError(f"{self.label}: expected input of shape (N, C, H, W), got {x.shape}")
        out, extra = [], []
        for size, k, s, p, d in zip(x.shape[2:], self.kernel_size, self.stride, self.padding, self.dilation):
            o = conv_output_size(size, k, s, p, d, self.ceil_mode)
            if o < 1:
                raise ValueError(f"{self.label}: input of shape {x.shape} is smaller than the {self.kernel_size} "
                                 f"window after padding {self.padding}")
            out.append(o)
            extra.append(max(0, (o - 1) * s + d * (k - 1) + 1 - (size + 2 * p)))  # partial last window
        return (out[0], out[1]), (extra[0], extra[1])

    def _windows(self, x: np.ndarray, out_size: tuple[int, int], extra: tuple[int, int], value: float) -> tuple:
        """Pad (with ``value``) and regroup by kernel offset: ((kh*kw, N, Ho, Wo, C) blocks, padded shape)."""
        xp = pad_nhwc(x, self.padding, extra, value=value)                         # (N, Hp, Wp, C)
        return gather_offsets(xp, self.kernel_size, self.stride, self.dilation, out_size), xp.shape

    def _scatter(self, dwindows: np.ndarray, padded_shape: tuple, size: tuple[int, int]) -> np.ndarray:
        """col2im of per-offset gradients (kh*kw, N, Ho, Wo, C) -> dL/dx (N, C, H, W)."""
        kh, kw = self.kernel_size
        dxp = col2im(dwindows.reshape(kh, kw, *dwindows.shape[1:]), padded_shape, self.stride, self.dilation)
        return to_nchw(dxp, self.padding, size)


class MaxPool2d(_Pool2d):
    """Max over each window, torch's ``nn.MaxPool2d`` (padding with -inf, optional dilation and ceil_mode).

    Forward: ``y[n, c, u, v] = max_{i,j} xp[n, c, u*s + i*d, v*s + j*d]``.

    Backward: the gradient flows only to the element that was the maximum (the first one in the
    window, row by row, on ties -- torch's choice; a NaN in the window makes the output NaN)::

        dL/dx[n, c, argmax(n, c, u, v)] += dy[n, c, u, v]

    Forward keeps the argmax as a small integer per output (its kernel offset), and backward adds
    ``dy`` where the offset matches, one strided slice per kernel offset.
    """

    def __init__(self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None,
                 padding: int | tuple[int, int] = 0, dilation: int | tuple[int, int] = 1,
                 return_indices: bool = False, ceil_mode: bool = False):
        super().__init__(kernel_size, stride, padding, dilation, ceil_mode)
        if return_indices:
            raise ValueError("MaxPool2d: return_indices=True is not implemented in convolab.glass")

    def forward(self, x: np.ndarray) -> np.ndarray:
        """(N, C, H, W) -> (N, C, H_out, W_out)."""
        x = check_float_input(self, x)
        (ho, wo), extra = self._geometry(x)
        windows, padded_shape = self._windows(x, (ho, wo), extra, -np.inf)         # (kh*kw, N, Ho, Wo, C)
        best = windows[0].copy()                                                   # (N, Ho, Wo, C)
        arg = np.zeros(best.shape, dtype=np.uint8 if len(windows) <= 255 else np.int32)  # winning offset
        for t in range(1, len(windows)):
            take = windows[t] > best          # strictly greater: the first maximum wins ties
            arg *= ~take                      # arg = t where take (arithmetic: NumPy's masked stores are slow)
            arg += take.astype(arg.dtype) * arg.dtype.type(t)
            np.maximum(best, windows[t], out=best)  # (a NaN propagates to the output)
        self._cache = (padded_shape, arg, x.shape[2:])
        return self._remember_output(best.transpose(0, 3, 1, 2))

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """dL/dy (N, C, H_out, W_out) -> dL/dx (N, C, H, W)."""
        dout = self._check_dout(dout)
        padded_shape, arg, size = self._cache
        dy = dout.transpose(0, 2, 3, 1)                                            # (N, Ho, Wo, C)
        kh, kw = self.kernel_size
        offsets = np.arange(kh * kw, dtype=arg.dtype).reshape(-1, 1, 1, 1, 1)
        dwindows = (arg == offsets) * dy                       # (kh*kw, N, Ho, Wo, C): dy where the offset won
        return self._scatter(dwindows.astype(dout.dtype, copy=False), padded_shape, size)


class AvgPool2d(_Pool2d):
    """Mean over each window, torch's ``nn.AvgPool2d``.

    Forward: ``y[n, c, u, v] = (1 / D[u, v]) * sum_{i,j} xp[n, c, u*s + i, v*s + j]`` (zero padding),
    where the divisor ``D`` is ``kh*kw`` -- or, as in torch, the number of window elements inside the
    padded input (``count_include_pad=True``) or inside the input itself (``False``) where a
    ``ceil_mode`` window hangs over the edge; ``divisor_override`` replaces it.

    Backward: every element of a window receives an equal share::

        dL/dxp[n, c, u*s + i, v*s + j] += dy[n, c, u, v] / D[u, v]
    """

    def __init__(self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None,
                 padding: int | tuple[int, int] = 0, ceil_mode: bool = False, count_include_pad: bool = True,
                 divisor_override: int | None = None):
        super().__init__(kernel_size, stride, padding, 1, ceil_mode)
        if divisor_override is not None and divisor_override < 1:
            raise ValueError(f"AvgPool2d: divisor_override must be >= 1; got {divisor_override}")
        self.count_include_pad = bool(count_include_pad)
        self.divisor_override = divisor_override

    def _divisor(self, size: tuple[int, int], out_size: tuple[int, int]) -> np.ndarray | float:
        """D as a scalar or an (H_out, W_out, 1) map: the window is separable, so D = rows(u) * cols(v)."""
        if self.divisor_override is not None:
            return float(self.divisor_override)
        counts = []
        for n, k, s, p, o in zip(size, self.kernel_size, self.stride, self.padding, out_size):
            start = np.arange(o) * s                                               # window start, padded coords
            lo, hi = (0, n + 2 * p) if self.count_include_pad else (p, p + n)
            counts.append(np.clip(np.minimum(start + k, hi) - np.maximum(start, lo), 0, None))
        return (counts[0][:, None] * counts[1][None, :])[:, :, None].astype(np.float64)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """(N, C, H, W) -> (N, C, H_out, W_out)."""
        x = check_float_input(self, x)
        (ho, wo), extra = self._geometry(x)
        windows, padded_shape = self._windows(x, (ho, wo), extra, 0.0)           # (kh*kw, N, Ho, Wo, C)
        total = windows.sum(axis=0, dtype=accumulate_dtype(x.dtype))              # (N, Ho, Wo, C)
        divisor = self._divisor(x.shape[2:], (ho, wo))
        if isinstance(divisor, np.ndarray):
            divisor = divisor.astype(total.dtype)
        out = (total / divisor).astype(x.dtype, copy=False)
        self._cache = (padded_shape, divisor, x.shape[2:])
        return self._remember_output(out.transpose(0, 3, 1, 2))

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """dL/dy (N, C, H_out, W_out) -> dL/dx (N, C, H, W)."""
        dout = self._check_dout(dout)
        padded_shape, divisor, size = self._cache
        share = (dout.transpose(0, 2, 3, 1) / divisor).astype(dout.dtype, copy=False)  # (N, Ho, Wo, C)
        kh, kw = self.kernel_size
        return self._scatter(np.broadcast_to(share, (kh * kw, *share.shape)), padded_shape, size)


class AdaptiveAvgPool2d(Module):
    """Average over a grid of ``output_size`` bins, torch's ``nn.AdaptiveAvgPool2d``.

    Bin ``(a, b)`` covers rows ``floor(a*H/oh) .. ceil((a+1)*H/oh) - 1`` (columns likewise), so bins
    may overlap by one when the size does not divide. ``output_size=1`` is global average pooling:
    ``y[n, c] = mean_{h,w} x[n, c, h, w]``, ``dL/dx[n, c, h, w] = dy[n, c] / (H*W)``.
    """

    def __init__(self, output_size: int | tuple[int | None, int | None]):
        super().__init__()
        if isinstance(output_size, (int, np.integer)):
            output_size = (int(output_size), int(output_size))
        self.output_size = tuple(output_size)
        if len(self.output_size) != 2 or any(s is not None and s < 1 for s in self.output_size):
            raise ValueError(f"AdaptiveAvgPool2d: output_size must be >= 1 (or None); got {output_size!r}")
        self._cache: tuple | None = None

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"

    @staticmethod
    def _bins(size: int, out: int) -> list[tuple[int, int]]:
        return [((a * size) // out, -((-(a + 1) * size) // out)) for a in range(out)]

    def forward(self, x: np.ndarray) -> np.ndarray:
        """(N, C, H, W) -> (N, C, oh, ow)."""
        x = check_float_input(self, x)
        if x.ndim != 4:
            raise ValueError(f"{self.label}: expected input of shape (N, C, H, W), got {x.shape}")
        n, c, h, w = x.shape
        oh, ow = (s if s is not None else d for s, d in zip(self.output_size, (h, w)))
        xt = x.transpose(0, 2, 3, 1)                                               # (N, H, W, C)
        acc = accumulate_dtype(x.dtype)
        rows, cols = self._bins(h, oh), self._bins(w, ow)
        if oh == ow == 1:
            out = xt.mean(axis=(1, 2), dtype=acc, keepdims=True)                  # (N, 1, 1, C)
        else:
            out = np.empty((n, oh, ow, c), dtype=acc)
            for a, (h0, h1) in enumerate(rows):
                for b, (w0, w1) in enumerate(cols):
                    out[:, a, b, :] = xt[:, h0:h1, w0:w1, :].mean(axis=(1, 2), dtype=acc)
        self._cache = (x.shape, rows, cols)
        return self._remember_output(out.astype(x.dtype, copy=False).transpose(0, 3, 1, 2))

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """dL/dy (N, C, oh, ow) -> dL/dx (N, C, H, W): each bin's gradient shared equally among its pixels."""
        dout = self._check_dout(dout)
        (n, c, h, w), rows, cols = self._cache
        dy = dout.transpose(0, 2, 3, 1)                                            # (N, oh, ow, C)
        if len(rows) == len(cols) == 1:
            dx = np.broadcast_to(dy / (h * w), (n, h, w, c)).astype(dout.dtype)
        else:
            dx = np.zeros((n, h, w, c), dtype=dout.dtype)
            for a, (h0, h1) in enumerate(rows):
                for b, (w0, w1) in enumerate(cols):
                    dx[:, h0:h1, w0:w1, :] += dy[:, a:a + 1, b:b + 1, :] / ((h1 - h0) * (w1 - w0))
        return dx.transpose(0, 3, 1, 2)
