"""Pooling: ``MaxPool2d``, ``AvgPool2d``, ``AdaptiveAvgPool2d``, global max/average, fractional max
(Graham 2014) and stochastic (Zeiler & Fergus 2013) pooling, with their backward passes.

Max and average pooling walk the ``kh*kw`` kernel offsets instead of the output pixels: the input
is first regrouped by offset (``gather_offsets``: one contiguous (N, H_out, W_out, C) block per
offset), every step is then one vectorised operation on whole contiguous blocks, and the backward
pass scatters the per-offset gradients back with col2im (see ``convolab.glass.im2col``).
"""

from __future__ import annotations

import random

import numpy as np

from convolab.glass.im2col import col2im, conv_output_size, gather_offsets, pad_nhwc, pair, to_nchw
from convolab.glass.module import Module, check_float_input
from convolab.glass.precision import accumulate_dtype
from convolab.glass.rng import get_generator

__all__ = ["MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "GlobalAvgPool2d", "GlobalMaxPool2d",
           "FractionalMaxPool2d", "StochasticPool2d", "fractional_boundaries", "fractional_eval_samples",
           "fractional_output_size", "fractional_sizes"]


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


class _GlobalPool2d(Module):
    """What the global poolings share: the (N, C, H, W) check and the optional flatten to (N, C)."""

    def __init__(self, flatten: bool = False):
        super().__init__()
        self.flatten = bool(flatten)
        self._cache: tuple | None = None

    def extra_repr(self) -> str:
        return "flatten=True" if self.flatten else ""

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = check_float_input(self, x)
        if x.ndim != 4:
            raise ValueError(f"{self.label}: expected input of shape (N, C, H, W), got {x.shape}")
        return x

    def _shape(self, out: np.ndarray) -> np.ndarray:
        """(N, C) -> (N, C) or (N, C, 1, 1)."""
        return self._remember_output(out if self.flatten else out[:, :, None, None])


class GlobalAvgPool2d(_GlobalPool2d):
    """Mean over the whole map: ``y[n, c] = (1 / HW) sum_{h,w} x[n, c, h, w]`` (Lin et al., 2014, "Network In Network").

    Output (N, C, 1, 1), or (N, C) with ``flatten=True``. Backward: ``dL/dx[n, c, h, w] = dy[n, c] / (H*W)``.
    """

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self._check(x)
        self._cache = x.shape
        return self._shape(x.mean(axis=(2, 3), dtype=accumulate_dtype(x.dtype)).astype(x.dtype, copy=False))

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dout = self._check_dout(dout)
        n, c, h, w = self._cache
        share = (dout.reshape(n, c, 1, 1) / (h * w)).astype(dout.dtype, copy=False)
        return np.broadcast_to(share, (n, c, h, w)).copy()


class GlobalMaxPool2d(_GlobalPool2d):
    """Max over the whole map: ``y[n, c] = max_{h,w} x[n, c, h, w]``.

    Output (N, C, 1, 1), or (N, C) with ``flatten=True``. Backward: ``dy[n, c]`` goes to the maximum
    (the first one, row by row, on ties -- torch's ``adaptive_max_pool2d``), zero elsewhere.
    """

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self._check(x)
        n, c, h, w = x.shape
        flat = x.reshape(n, c, h * w)
        arg = flat.argmax(axis=2)                                                  # (N, C), first maximum
        self._cache = (x.shape, arg)
        return self._shape(np.take_along_axis(flat, arg[:, :, None], axis=2)[:, :, 0])

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dout = self._check_dout(dout)
        (n, c, h, w), arg = self._cache
        dx = np.zeros((n, c, h * w), dtype=dout.dtype)
        np.put_along_axis(dx, arg[:, :, None], dout.reshape(n, c, 1), axis=2)
        return dx.reshape(n, c, h, w)


def fractional_eval_samples(seed: int, length: int) -> list[float]:
    """The fixed uniform numbers fractional max pooling uses in evaluation: ``length`` draws of Python's
    ``random.Random(seed)`` (Mersenne Twister), identical on every platform and in both engines."""
    rng = random.Random(seed)
    return [rng.random() for _ in range(length)]


def fractional_output_size(size: int, output_size: int | None, output_ratio: float | None) -> int:
    """One axis' output length: ``output_size``, or ``int(size * output_ratio)`` (torch's rounding)."""
    return int(output_size) if output_size is not None else int(size * output_ratio)


class FractionalSettings:
    """The settings of fractional max pooling and what follows from them alone, shared by this engine's layer and
    ``convolab.layers.FractionalMaxPool2d`` (the torch one): the checked arguments, ``extra_repr`` and the output
    size. A subclass calls :meth:`_configure` from its ``__init__``, after its base class's."""

    SEQUENCES = ("pseudo_random", "random")

    def _configure(self, output_size, output_ratio, kernel_size, sequence: str, overlapping: bool, seed: int) -> None:
        self.output_size, self.output_ratio = fractional_sizes(output_size, output_ratio)
        self.kernel_size = None if kernel_size is None else pair(kernel_size, "kernel_size")
        if sequence not in self.SEQUENCES:
            raise ValueError(f"FractionalMaxPool2d: sequence must be 'pseudo_random' or 'random'; got {sequence!r}")
        if self.kernel_size is not None and (sequence != "pseudo_random" or overlapping):
            raise ValueError("FractionalMaxPool2d: kernel_size selects torch's fixed windows at pseudo-random "
                             "starts; sequence='random' and overlapping=True apply to Graham's regions "
                             "(kernel_size=None)")
        if self.kernel_size is not None and min(self.kernel_size) < 1:
            raise ValueError(f"FractionalMaxPool2d: kernel_size must be >= 1; got {kernel_size!r}")
        self.sequence, self.overlapping, self.seed = sequence, bool(overlapping), int(seed)

    def extra_repr(self) -> str:
        size = f"output_size={self.output_size}" if self.output_size else f"output_ratio={self.output_ratio}"
        kernel = f", kernel_size={self.kernel_size}" if self.kernel_size else ""
        return f"{size}{kernel}, sequence={self.sequence!r}, overlapping={self.overlapping}, seed={self.seed}"

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        """(H_out, W_out) for an (H, W) input; a ``ValueError`` when the regions do not fit."""
        sizes = self.output_size or (None, None)
        ratios = self.output_ratio or (None, None)
        out = tuple(fractional_output_size(n, s, r) for n, s, r in zip((h, w), sizes, ratios))
        for n, o, k in zip((h, w), out, self.kernel_size or (1, 1)):
            if o < 1 or o + k - 1 > n:
                label = getattr(self, "label", type(self).__name__)
                raise ValueError(f"{label}: an output of {out[0]}x{out[1]} does not fit an input of {h}x{w}"
                                 + (f" with {k}x{k} windows" if self.kernel_size else "")
                                 + " (need 1 <= output <= input - kernel + 1)")
        return out  # type: ignore[return-value]


class FractionalMaxPool2d(FractionalSettings, Module):
    """Fractional max pooling (Graham, 2014, "Fractional Max-Pooling"): max over regions whose sizes
    are ``floor(alpha)`` or ``ceil(alpha)``, ``alpha = H_in / H_out`` (1 < alpha < 2 reduces the map by a
    non-integer factor such as sqrt(2)). Per axis, boundaries ``0 = a_0 < a_1 < ... < a_n = H_in``:

    * ``sequence="pseudo_random"``: ``a_i = ceil(alpha (i + u)) - ceil(alpha u)``, ``u`` uniform in [0, 1);
    * ``sequence="random"``: the increments ``a_i - a_{i-1}`` are the ``H_in mod H_out`` values
      ``ceil(alpha)`` and the others ``floor(alpha)``, in a random order (the permutation that sorts
      uniform keys ``k_1 .. k_n``);

    and regions ``[a_{i-1}, a_i - 1]`` (disjoint, ``overlapping=False``) or ``[a_{i-1}, a_i]``
    (``overlapping=True``, the last one clipped to the map). Region ``(i, j)`` is rows i x columns j:
    ``y[n, c, i, j] = max_{(h, w) in P_ij} x[n, c, h, w]``.

    ``kernel_size=k`` instead pools fixed ``k x k`` windows at torch's pseudo-random starts
    (``nn.FractionalMaxPool2d``): ``s_i = int((i + u) alpha') - int(u alpha')`` with
    ``alpha' = (H_in - k) / (H_out - 1)`` computed in the input's dtype, and ``s_{n-1} = H_in - k``.

    Randomness: every (n, c) plane draws its own sample in training, from the glass generator:
    ``u`` of shape (N, C, 2) ([u_W, u_H], torch's ``_random_samples`` layout), or keys of shape
    (N, C, 2, max(H_out, W_out)) for ``sequence="random"``. In evaluation all planes share the fixed
    sample ``fractional_eval_samples(seed, ...)`` (deterministic; torch's ``convolab.layers`` version
    uses the same). Setting ``samples`` (an array of those shapes) fixes the sample in both modes.

    Backward: ``dy[n, c, i, j]`` goes to the region's maximum (the first one, row by row, on ties).

    Args:
        output_size: (H_out, W_out) or one int; or ``output_ratio``: ``H_out = int(H_in * ratio)``.
        kernel_size: ``None`` (Graham's regions) or torch's fixed window.
        sequence: ``"pseudo_random"`` or ``"random"`` (Graham's regions only).
        overlapping: Graham's overlapping regions.
        seed: the evaluation sample's seed.
    """

    def __init__(self, output_size: int | tuple[int, int] | None = None,
                 output_ratio: float | tuple[float, float] | None = None,
                 kernel_size: int | tuple[int, int] | None = None, sequence: str = "pseudo_random",
                 overlapping: bool = False, seed: int = 0):
        super().__init__()
        self._configure(output_size, output_ratio, kernel_size, sequence, overlapping, seed)
        self.samples: np.ndarray | None = None
        self._cache: tuple | None = None

    def _sample(self, n: int, c: int, length: int) -> np.ndarray:
        """The uniform sample: set ``samples``, a fresh draw (training), or the fixed one (evaluation)."""
        shape = (2,) if self.sequence == "pseudo_random" else (2, length)
        if self.samples is not None:
            samples = np.asarray(self.samples, dtype=np.float64)
            if samples.shape[2:] != shape or samples.shape[:2] not in ((n, c), (1, 1)):
                raise ValueError(f"{self.label}: samples must have shape {(n, c, *shape)}; got {samples.shape}")
            return samples
        if self.training:
            return get_generator().random((n, c, *shape))
        return np.array(fractional_eval_samples(self.seed, int(np.prod(shape)))).reshape(1, 1, *shape)

    def _regions(self, size: int, out: int, samples: np.ndarray, axis: int, dtype: np.dtype) -> np.ndarray:
        """Row (axis 0) or column (axis 1) indices of every region, (P1, P2, out, kmax); a shorter region
        repeats its last index (harmless to a max: the first maximum is a genuine element)."""
        if self.kernel_size is not None:
            k = self.kernel_size[axis]
            u = samples[..., 1 - axis].astype(dtype)[..., None]                   # torch: [..., 0] is W, 1 is H
            starts = np.full((*u.shape[:2], out), size - k, dtype=np.int64)
            if out > 1:
                alpha = dtype.type(size - k) / dtype.type(out - 1)
                i = np.arange(out - 1, dtype=dtype)
                starts[..., :-1] = ((i + u) * alpha).astype(np.int64) - (u * alpha).astype(np.int64)
            return starts[..., None] + np.arange(k)
        bounds = fractional_boundaries(size, out, self.sequence, samples[:, :, 1 - axis])  # (P1, P2, out + 1)
        start, end = bounds[..., :-1], bounds[..., 1:]
        if self.overlapping:
            end = np.minimum(end + 1, size)
        length = end - start
        return start[..., None] + np.minimum(np.arange(length.max()), length[..., None] - 1)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """(N, C, H, W) -> (N, C, H_out, W_out)."""
        x = check_float_input(self, x)
        if x.ndim != 4:
            raise ValueError(f"{self.label}: expected input of shape (N, C, H, W), got {x.shape}")
        n, c, h, w = x.shape
        oh, ow = self.out_size(h, w)
        samples = self._sample(n, c, max(oh, ow))
        dtype = x.dtype if x.dtype != np.float16 else np.dtype(np.float32)
        rows = self._regions(h, oh, samples, 0, dtype)                             # (P, P, oh, kh)
        cols = self._regions(w, ow, samples, 1, dtype)                             # (P, P, ow, kw)
        kh, kw = rows.shape[-1], cols.shape[-1]
        plane = (np.arange(n)[:, None] * c + np.arange(c)[None, :]) * h            # (N, C): first row of the plane
        flat_rows = (plane[:, :, None, None] + rows) * w                           # (N, C, oh, kh)
        flat = flat_rows[:, :, :, None, :, None] + cols[:, :, None, :, None, :]    # (N, C, oh, ow, kh, kw)
        flat = flat.reshape(n, c, oh, ow, kh * kw)
        values = x.reshape(-1)[flat]                                               # (N, C, oh, ow, kh*kw)
        arg = values.argmax(axis=-1)[..., None]                                    # first maximum (or NaN)
        chosen = np.take_along_axis(flat, arg, axis=-1)[..., 0]                    # (N, C, oh, ow) flat index
        self._cache = (x.shape, chosen)
        return self._remember_output(np.take_along_axis(values, arg, axis=-1)[..., 0])

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """dL/dy (N, C, H_out, W_out) -> dL/dx (N, C, H, W)."""
        dout = self._check_dout(dout)
        shape, chosen = self._cache
        dx = np.bincount(chosen.reshape(-1), weights=dout.reshape(-1).astype(np.float64), minlength=int(np.prod(shape)))
        return dx.astype(dout.dtype, copy=False).reshape(shape)


def fractional_sizes(output_size, output_ratio) -> tuple[tuple | None, tuple | None]:
    """FractionalMaxPool2d's size arguments checked (exactly one of ``output_size`` and ``output_ratio``) and
    returned as pairs: ``(output_size, None)`` or ``(None, output_ratio)``."""
    if (output_size is None) == (output_ratio is None):
        raise ValueError("FractionalMaxPool2d: give exactly one of output_size and output_ratio")
    if output_size is not None:
        size = pair(output_size, "output_size")
        if min(size) < 1:
            raise ValueError(f"FractionalMaxPool2d: output_size must be >= 1; got {output_size!r}")
        return size, None
    ratio = (float(output_ratio),) * 2 if isinstance(output_ratio, (int, float)) else tuple(map(float, output_ratio))
    if len(ratio) != 2 or not all(0 < r < 1 for r in ratio):
        raise ValueError(f"FractionalMaxPool2d: output_ratio must be in (0, 1); got {output_ratio!r}")
    return None, ratio


def fractional_boundaries(size: int, out: int, sequence: str, samples: np.ndarray) -> np.ndarray:
    """Graham's region boundaries ``0 = a_0 < ... < a_out = size`` along one axis, one sequence per sample.

    Args:
        samples: ``u`` (..., ) for ``"pseudo_random"``; keys (..., L >= out) for ``"random"``.

    Returns:
        (..., out + 1) int64: ``a_i = ceil(alpha (i + u)) - ceil(alpha u)`` with ``alpha = size / out``, or
        the cumulative sums of the increments ``floor(alpha)``/``ceil(alpha)`` ordered by ``argsort(keys)``.
    """
    if sequence == "pseudo_random":
        alpha = size / out
        u = np.asarray(samples, dtype=np.float64)[..., None]
        i = np.arange(out + 1)
        bounds = np.ceil(alpha * (i + u)).astype(np.int64) - np.ceil(alpha * u).astype(np.int64)
        bounds[..., -1] = size  # exact already; pinned against rounding in alpha * (out + u)
        return bounds
    q, r = divmod(size, out)
    steps = np.where(np.arange(out) < out - r, q, q + 1)                         # sorted: q ... q, q+1 ... q+1
    order = np.argsort(np.asarray(samples)[..., :out], axis=-1, kind="stable")
    increments = steps[order]
    zero = np.zeros((*increments.shape[:-1], 1), dtype=np.int64)
    return np.concatenate([zero, np.cumsum(increments, axis=-1)], axis=-1)


class StochasticPool2d(Module):
    """Stochastic pooling (Zeiler & Fergus, 2013): in training, one activation per window sampled with
    probability ``p_i = a_i / sum_j a_j``; in evaluation the probability-weighted average.

    Meant for non-negative activations (after a ReLU); the weights are ``w_i = max(a_i, 0)``, so a negative
    value is never sampled. For a window ``R`` (``kernel_size`` x ``kernel_size`` at ``stride``, no padding,
    ``H_out = floor((H - k) / s) + 1``) with ``S = sum_{i in R} w_i``:

    * training: ``y = a_t``, ``t`` the first index with ``cumsum(w)_t > r S`` for ``r`` uniform in [0, 1)
      (inverse-CDF sampling, window offsets in row-major order); ``y = 0`` when ``S = 0``.
      Backward: ``dL/da_t = dy``, zero for the rest of the window.
    * evaluation: ``y = sum_i w_i a_i / S = sum_i w_i^2 / S`` (0 when ``S = 0``).
      Backward: ``dy/da_i = [a_i > 0] (2 a_i - y) / S``.

    ``samples`` (an (N, C, H_out, W_out) array of the uniforms ``r``) fixes the draw; ``None`` draws from
    the glass generator. ``last_index`` holds the sampled window offset of the last training forward.
    """

    def __init__(self, kernel_size: int | tuple[int, int] = 2, stride: int | tuple[int, int] | None = None):
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(kernel_size if stride is None else stride, "stride")
        if min(self.kernel_size + self.stride) < 1:
            raise ValueError("StochasticPool2d: kernel_size and stride must be >= 1")
        self.samples: np.ndarray | None = None
        self.last_index: np.ndarray | None = None
        self._cache: tuple | None = None

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"

    def forward(self, x: np.ndarray) -> np.ndarray:
        """(N, C, H, W) -> (N, C, H_out, W_out)."""
        x = check_float_input(self, x)
        if x.ndim != 4:
            raise ValueError(f"{self.label}: expected input of shape (N, C, H, W), got {x.shape}")
        n, c, h, w = x.shape
        (ho, wo) = (conv_output_size(h, self.kernel_size[0], self.stride[0], 0),
                    conv_output_size(w, self.kernel_size[1], self.stride[1], 0))
        if ho < 1 or wo < 1:
            raise ValueError(f"{self.label}: input of shape {x.shape} is smaller than the {self.kernel_size} window")
        xp = pad_nhwc(x, (0, 0))                                                   # (N, H, W, C)
        windows = gather_offsets(xp, self.kernel_size, self.stride, (1, 1), (ho, wo))  # (K, N, Ho, Wo, C)
        weights = np.maximum(windows, 0)
        total = weights.sum(axis=0)                                                # (N, Ho, Wo, C): S
        alive = total > 0
        if self.training:
            if self.samples is not None:
                r = np.asarray(self.samples, dtype=np.float64)
                if r.shape != (n, c, ho, wo):
                    raise ValueError(f"{self.label}: samples must have shape {(n, c, ho, wo)}; got {r.shape}")
            else:
                r = get_generator().random((n, c, ho, wo))
            r = r.transpose(0, 2, 3, 1).astype(x.dtype)                            # (N, Ho, Wo, C)
            index = (np.cumsum(weights, axis=0) <= r * total).sum(axis=0)
            index = np.minimum(index, len(windows) - 1)                            # (N, Ho, Wo, C) window offset
            out = np.where(alive, np.take_along_axis(windows, index[None], axis=0)[0], 0).astype(x.dtype)
            self.last_index = index.transpose(0, 3, 1, 2)
            self._cache = (True, xp.shape, index, alive, None, None)
        else:
            safe = np.where(alive, total, 1)
            out = (weights * weights).sum(axis=0) / safe                           # 0 where S = 0
            self._cache = (False, xp.shape, windows, weights, out, safe)
        return self._remember_output(out.transpose(0, 3, 1, 2))

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """dL/dy (N, C, H_out, W_out) -> dL/dx (N, C, H, W)."""
        dout = self._check_dout(dout)
        training, padded_shape = self._cache[:2]
        dy = dout.transpose(0, 2, 3, 1)                                            # (N, Ho, Wo, C)
        kh, kw = self.kernel_size
        if training:
            index, alive = self._cache[2:4]
            offsets = np.arange(kh * kw).reshape(-1, 1, 1, 1, 1)
            dwindows = ((index == offsets) & alive) * dy                           # (K, N, Ho, Wo, C)
        else:
            windows, weights, out, safe = self._cache[2:]
            dwindows = (windows > 0) * (2 * weights - out) / safe * dy
        dxp = col2im(dwindows.astype(dout.dtype, copy=False).reshape(kh, kw, *dy.shape), padded_shape,
                     self.stride, (1, 1))
        return to_nchw(dxp, (0, 0), padded_shape[1:3])
