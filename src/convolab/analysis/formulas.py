"""The tutorials' size formulas, as functions.

For one spatial dimension of size ``n_in``, a convolution or pooling window of size ``k`` with
padding ``p``, stride ``s`` and dilation ``d`` produces

    n_out = floor((n_in + 2p - d(k - 1) - 1) / s) + 1

(the formula in PyTorch's ``Conv2d`` documentation; with d = 1 it is the familiar
``(n_in + 2p - k) / s + 1``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from convolab.models._sizes import conv_output_size, pool_output_size

__all__ = ["conv_output_size", "pool_output_size", "receptive_field", "ReceptiveField"]


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
