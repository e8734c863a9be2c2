"""The tutorials' size formulas, as functions.

For one spatial dimension of size ``n_in``, a convolution or pooling window of size ``k`` with
padding ``p``, stride ``s`` and dilation ``d`` produces

    n_out = floor((n_in + 2p - d(k - 1) - 1) / s) + 1

(the formula in PyTorch's ``Conv2d`` documentation; with d = 1 it is the familiar
``(n_in + 2p - k) / s + 1``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

__all__ = ["conv_output_size", "pool_output_size", "receptive_field", "ReceptiveField"]


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


class ReceptiveField(NamedTuple):
    """Receptive field of a chain of layers, in input pixels."""

    size: int | float  # r: how many input pixels one output unit sees
    jump: int | float  # j: input pixels between two neighbouring output units (the effective stride)
    start: float  # centre of the first output unit's field (negative: it reaches into the padding)


def receptive_field(layers: Sequence[Sequence[int]]) -> ReceptiveField:
    """Receptive field of a chain of convolutions/poolings, by the tutorials' recursion.

    Each layer is ``(kernel, stride)``, ``(kernel, stride, dilation)`` or
    ``(kernel, stride, dilation, padding)``. Starting from one pixel (r_0 = 1, j_0 = 1, start_0 = 0):

        r_l = r_(l-1) + (k_l - 1) * d_l * j_(l-1)
        j_l = j_(l-1) * s_l
        start_l = start_(l-1) + ((k_l - 1) * d_l / 2 - p_l) * j_(l-1)

    Example: two 3x3 convolutions see as far as one 5x5, ``receptive_field([(3, 1), (3, 1)]).size == 5``.
    For networks with branches use ``convolab.analysis.summarize``, which follows every path.
    """
    r, j, start = 1, 1, 0.0
    for layer in layers:
        if not 2 <= len(layer) <= 4:
            raise ValueError(f"each layer is (kernel, stride[, dilation[, padding]]); got {tuple(layer)!r}")
        k, s, d, p = (*layer, 1, 0)[:4] if len(layer) == 2 else (*layer, 0)[:4] if len(layer) == 3 else tuple(layer)
        if k < 1 or s < 1 or d < 1 or p < 0:
            raise ValueError(f"invalid layer (kernel={k}, stride={s}, dilation={d}, padding={p})")
        start += ((k - 1) * d / 2 - p) * j
        r += (k - 1) * d * j
        j *= s
    return ReceptiveField(r, j, start)
