"""im2col and col2im: convolution and pooling as one big matrix product and k*k strided additions.

**im2col.** A convolution's output pixel ``(n, y, x)`` is the dot product of the weights with the
``kh x kw x C`` patch of the (padded) input under the kernel. Lay all patches side by side as the
rows of a matrix ``cols`` of shape ``(N*Ho*Wo, kh*kw*C)`` and the whole convolution is one GEMM:
``cols @ W`` with ``W`` reshaped to ``(kh*kw*C, O)``.

The memory layout decides the speed. With the input in ``(N, H, W, C)`` order ("channels last") a
patch row of ``cols`` is ``kh`` runs of ``kw*C`` neighbouring values, and the patch *view*
(``patches`` below) is a plain strided view of the padded input: no copy until ``reshape`` gathers
it into ``cols`` in one pass. The GEMM's result ``(N*Ho*Wo, O)`` is again channels-last, so the
next layer gets its input without a transposed copy. (The textbook ``(C*kh*kw, N*Ho*Wo)`` layout
from NCHW needs a transposed copy on the way in and another on the way out.)

**col2im** is im2col's adjoint, the backward of the gather: each input pixel receives the sum of
the gradients of every patch that contained it. Rather than looping over pixels, loop over the
``kh*kw`` kernel offsets: offset ``(i, j)`` touches the input pixels
``(i*d + s*y, j*d + s*x)`` for all output positions ``(y, x)`` -- a strided slice -- so col2im is
``kh*kw`` vectorised additions of whole ``(N, Ho, Wo, C)`` arrays.

Sizes follow torch: ``Ho = floor((H + 2p - d(k-1) - 1) / s) + 1`` (``ceil`` in ``ceil_mode``).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import as_strided

__all__ = ["pair", "conv_output_size", "pad_nhwc", "patches", "gather_offsets", "offset_slices", "col2im",
           "to_nchw"]


def pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    """``3`` -> ``(3, 3)``; a pair is validated and returned as a tuple of ints."""
    if isinstance(value, (int, np.integer)):
        value = (int(value), int(value))
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints; got {value!r}")
    return value  # type: ignore[return-value]


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1,
                     ceil_mode: bool = False) -> int:
    """Output length of a sliding window (torch's formula); ``ceil_mode`` as in torch's pooling.

    In ``ceil_mode`` a last, partial window is kept only if it starts inside the input or its
    left padding (torch's rule), never in the right padding alone.
    """
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    if span < 0:
        return 0
    if not ceil_mode:
        return span // stride + 1
    out = math.ceil(span / stride) + 1
    if (out - 1) * stride >= size + padding:
        out -= 1
    return out


def pad_nhwc(x: np.ndarray, padding: tuple[int, int], extra: tuple[int, int] = (0, 0),
             value: float = 0.0) -> np.ndarray:
    """(N, C, H, W) -> zero- (or ``value``-) padded (N, H + 2ph + eh, W + 2pw + ew, C), channels-last, contiguous.

    ``extra`` adds rows/columns at the bottom/right only (the partial last window of ``ceil_mode``).
    An input that already is channels-last in memory and needs no padding is returned as a view.
    """
    n, c, h, w = x.shape
    (ph, pw), (eh, ew) = padding, extra
    xt = x.transpose(0, 2, 3, 1)                                   # (N, H, W, C), a view
    if ph == pw == eh == ew == 0:
        return np.ascontiguousarray(xt)                            # free when x is channels-last already
    xp = np.full((n, h + 2 * ph + eh, w + 2 * pw + ew, c), value, dtype=x.dtype)
    xp[:, ph:ph + h, pw:pw + w, :] = xt
    return xp


def patches(xp: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int],
            out_size: tuple[int, int]) -> np.ndarray:
    """Read-only view (N, Ho, Wo, kh, kw, C) of a padded channels-last input: ``[n, y, x, i, j, c] =
    xp[n, y*sh + i*dh, x*sw + j*dw, c]``. Nothing is copied; ``reshape(N*Ho*Wo, kh*kw*C)`` makes ``cols``.
    """
    n, _, _, c = xp.shape
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, stride, dilation, out_size
    bn, bh, bw, bc = xp.strides
    return as_strided(xp, shape=(n, ho, wo, kh, kw, c),
                      strides=(bn, sh * bh, sw * bw, dh * bh, dw * bw, bc), writeable=False)


def gather_offsets(xp: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int],
                   out_size: tuple[int, int]) -> np.ndarray:
    """The patch view regrouped by kernel offset, as a contiguous (kh*kw, N, Ho, Wo, C) array.

    Block ``t = i*kw + j`` holds what offset ``(i, j)`` sees at every output position. Each block is
    copied from one strided slice of ``xp``, whose contiguous runs are whole rows of ``Wo*C`` values
    at stride 1 (``C`` at larger strides); afterwards every operation on a block runs over contiguous
    memory. Pooling reduces over the blocks; a one-channel convolution uses the (kh*kw, M) matrix.
    """
    kh, kw = kernel
    view = patches(xp, kernel, stride, dilation, out_size)                      # (N, Ho, Wo, kh, kw, C)
    return np.ascontiguousarray(view.transpose(3, 4, 0, 1, 2, 5)).reshape(kh * kw, *view.shape[:3], xp.shape[3])


def offset_slices(i: int, j: int, stride: tuple[int, int], dilation: tuple[int, int],
                  out_size: tuple[int, int]) -> tuple[slice, slice]:
    """Rows and columns of the padded input that kernel offset ``(i, j)`` reads, one per output position."""
    (sh, sw), (dh, dw), (ho, wo) = stride, dilation, out_size
    return (slice(i * dh, i * dh + sh * (ho - 1) + 1, sh),
            slice(j * dw, j * dw + sw * (wo - 1) + 1, sw))


def col2im(dpatches: np.ndarray, padded_shape: tuple[int, int, int, int], stride: tuple[int, int],
           dilation: tuple[int, int]) -> np.ndarray:
    """Adjoint of :func:`patches`: sum patch gradients back onto the padded input.

    Args:
        dpatches: (kh, kw, N, Ho, Wo, C), the gradient of every patch element, grouped by kernel
            offset so that each offset's block is contiguous.
        padded_shape: (N, Hp, Wp, C) of the padded input.

    Returns:
        (N, Hp, Wp, C): ``dxp[n, y*sh + i*dh, x*sw + j*dw, c] += dpatches[i, j, n, y, x, c]``.
    """
    kh, kw, _, ho, wo, _ = dpatches.shape
    dxp = np.zeros(padded_shape, dtype=dpatches.dtype)
    # Windows that do not overlap (stride >= reach, as in 2x2/2 pooling) touch each pixel at most once:
    # assigning is then the same as adding onto the zeros, and skips reading dxp.
    disjoint = all(s >= d * (k - 1) + 1 for s, d, k in zip(stride, dilation, (kh, kw)))
    for i in range(kh):
        for j in range(kw):
            rows, cols = offset_slices(i, j, stride, dilation, (ho, wo))
            if disjoint:
                dxp[:, rows, cols, :] = dpatches[i, j]
            else:
                dxp[:, rows, cols, :] += dpatches[i, j]           # (N, Ho, Wo, C) strided add
    return dxp


def to_nchw(xp: np.ndarray, padding: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Crop the padding off a channels-last (N, Hp, Wp, C) array -> (N, C, H, W) view (channels-last memory)."""
    (ph, pw), (h, w) = padding, size
    return xp[:, ph:ph + h, pw:pw + w, :].transpose(0, 3, 1, 2)
