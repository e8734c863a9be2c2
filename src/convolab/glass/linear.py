"""``Linear`` (fully connected) and ``Flatten``."""

from __future__ import annotations

import math

import numpy as np

from convolab.glass.module import Module, check_float_input
from convolab.glass.precision import matmul, sum_rows
from convolab.glass.rng import get_generator

__all__ = ["Linear", "Flatten"]


class Linear(Module):
    """``y = x W^T + b``, torch's ``nn.Linear``.

    Parameters: ``weight`` (out_features, in_features), ``bias`` (out_features,); initialised
    ``U(-1/sqrt(in_features), 1/sqrt(in_features))`` as torch does. Input (*, in_features).

    Backward, with ``X`` and ``dY`` flattened to (M, in) and (M, out)::

        dL/dW = dY^T X        (out, in)
        dL/db = sum_m dY      (out,)
        dL/dX = dY W          (M, in)
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype=np.float32):
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(f"Linear: in_features and out_features must be >= 1; got {in_features}, {out_features}")
        self.in_features, self.out_features = in_features, out_features
        bound = 1.0 / math.sqrt(in_features)
        rng = get_generator()
        self._new_param("weight", rng.uniform(-bound, bound, (out_features, in_features)).astype(dtype))
        if bias:
            self._new_param("bias", rng.uniform(-bound, bound, out_features).astype(dtype))
        self._cache: tuple | None = None

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={'bias' in self.params}"

    def forward(self, x: np.ndarray) -> np.ndarray:
        """(*, in_features) -> (*, out_features)."""
        x = check_float_input(self, x)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"{self.label}: expected input of shape (*, {self.in_features}), got {x.shape}")
        x2 = x.reshape(-1, self.in_features)                                   # (M, in)
        weight = self._param("weight", x.dtype)
        out = matmul(x2, weight.T)                                              # (M, out)
        if "bias" in self.params:
            out += self._param("bias", x.dtype)
        self._cache = (x2, weight, x.shape)
        return self._remember_output(out.reshape(*x.shape[:-1], self.out_features))

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        """dL/dy (*, out_features) -> dL/dx (*, in_features) (None if not ``input_grad``); adds dL/dW and dL/db
        into ``grads``."""
        dout = self._check_dout(dout)
        x2, weight, shape = self._cache
        dy = dout.reshape(-1, self.out_features)                               # (M, out)
        self._accumulate("weight", matmul(dy.T, x2))
        if "bias" in self.params:
            self._accumulate("bias", sum_rows(dy))
        if not self.input_grad:
            return None
        return matmul(dy, weight).reshape(shape)


class Flatten(Module):
    """Merge dimensions ``start_dim .. end_dim`` into one, torch's ``nn.Flatten`` (default: all but the batch).

    ``(N, C, H, W) -> (N, C*H*W)`` in C order (channel-major, as torch: ``x[n, c, h, w]`` lands at
    ``c*H*W + h*W + w``). Backward reshapes the gradient back.
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim
        self._shape: tuple[int, ...] | None = None

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        nd = x.ndim
        start, end = self.start_dim % max(nd, 1), self.end_dim % max(nd, 1)
        if nd == 0 or start > end:
            raise ValueError(f"{self.label}: cannot flatten dims {self.start_dim}..{self.end_dim} of shape {x.shape}")
        self._shape = x.shape
        merged = int(np.prod(x.shape[start:end + 1]))
        return self._remember_output(x.reshape(*x.shape[:start], merged, *x.shape[end + 1:]))

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return self._check_dout(dout).reshape(self._shape)
