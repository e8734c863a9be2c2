"""``Dropout`` and ``Dropout2d`` (Srivastava et al., 2014; Tompson et al., 2015), inverted scaling."""

from __future__ import annotations

import numpy as np

from convolab.glass.module import Module, check_float_input
from convolab.glass.rng import get_generator

__all__ = ["Dropout", "Dropout2d"]


class _DropoutBase(Module):
    def __init__(self, p: float = 0.5, inplace: bool = False):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{type(self).__name__}: p must be in [0, 1]; got {p}")
        self.p, self.inplace = float(p), inplace
        self._mask: np.ndarray | None = None

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def _mask_shape(self, x: np.ndarray) -> tuple[int, ...]:
        return x.shape

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = check_float_input(self, x)
        if not self.training or self.p == 0.0:
            self._mask = None
            return self._remember_output(x)
        if self.p == 1.0:
            mask = np.zeros(self._mask_shape(x), dtype=x.dtype)
        else:  # keep with probability 1 - p, scaled by 1 / (1 - p) so that E[y] = x
            keep = get_generator().random(self._mask_shape(x), dtype=np.float32) >= self.p
            mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.p))
        self._mask = mask
        return self._remember_output(x * mask)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dout = self._check_dout(dout)
        return dout if self._mask is None else dout * self._mask


class Dropout(_DropoutBase):
    """Zero each element with probability ``p`` in training, scale the rest by ``1 / (1 - p)``.

    Forward: ``y = x * mask``, ``mask = [u >= p] / (1 - p)`` with ``u ~ U(0, 1)`` per element (any shape).
    Backward: ``dx = dy * mask`` (the same mask). In evaluation ``y = x``, ``dx = dy``.
    """


class Dropout2d(_DropoutBase):
    """Zero whole channels with probability ``p`` (one draw per (n, c)), scale the rest by ``1 / (1 - p)``.

    Input (N, C, H, W); the mask has shape (N, C, 1, 1) and broadcasts over the map. Backward uses
    the same mask. In evaluation ``y = x``.
    """

    def _mask_shape(self, x: np.ndarray) -> tuple[int, ...]:
        if x.ndim != 4:
            raise ValueError(f"{self.label}: expected input of shape (N, C, H, W), got {x.shape}")
        return (*x.shape[:2], 1, 1)
