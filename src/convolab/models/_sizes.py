"""Output sizes of convolution and pooling windows, along one dimension: the formula the models use to size their
heads, and :mod:`convolab.analysis.formulas` teaches (it re-exports these; they live here, below analysis in
DESIGN.md's layers, because the models need them).

    n_out = floor((n_in + 2p - d(k - 1) - 1) / s) + 1

(the formula in PyTorch's ``Conv2d`` documentation).
"""

from __future__ import annotations

import math

__all__ = ["conv_output_size", "pool_output_size"]


def conv_output_size(
    n_in: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1, ceil_mode: bool = False
) -> int:
    """Output length of a convolution along one dimension.

    Args:
        n_in: input length (height or width).
        kernel_size: k, the window length.
        stride: s.
        padding: p, zeros added on each side.
        dilation: d, spacing between window taps.
        ceil_mode: round up instead of down (pooling's ``ceil_mode``).

    Returns:
        ``floor((n_in + 2p - d(k-1) - 1) / s) + 1``. May be <= 0 when the window does not fit;
        callers decide whether that is an error.
    """
    if kernel_size < 1 or stride < 1 or dilation < 1 or padding < 0:
        raise ValueError(f"invalid window: kernel_size={kernel_size}, stride={stride}, padding={padding}, "
                         f"dilation={dilation}")
    span = n_in + 2 * padding - dilation * (kernel_size - 1) - 1
    if ceil_mode:
        out = math.ceil(span / stride) + 1
        # PyTorch: the last window must start inside the input or the left padding.
        if (out - 1) * stride >= n_in + padding:
            out -= 1
        return out
    return span // stride + 1


def pool_output_size(
    n_in: int, kernel_size: int, stride: int | None = None, padding: int = 0, dilation: int = 1,
    ceil_mode: bool = False,
) -> int:
    """Output length of a pooling layer along one dimension (stride defaults to the kernel size)."""
    return conv_output_size(n_in, kernel_size, kernel_size if stride is None else stride, padding, dilation, ceil_mode)
