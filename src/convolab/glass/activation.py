"""Element-wise activations and (log-)softmax, each with its local derivative.

Each layer stores the smallest thing its backward needs (the output, or the input) and computes
``dx = dy * f'(x)``. NumPy's element-wise functions keep the memory order of their input, so a
channels-last activation stays channels-last.

``inplace`` is accepted for torch's signatures; the NumPy versions always return a new array (the
backward pass needs the input or the output intact).
"""

from __future__ import annotations

import numpy as np

from convolab.glass.module import Module, check_float_input
from convolab.glass.precision import accumulate_dtype

__all__ = ["ReLU", "LeakyReLU", "ELU", "Sigmoid", "Tanh", "SiLU", "Softmax", "LogSoftmax"]


class _Elementwise(Module):
    """An activation: ``_saved`` holds what its backward needs from the forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self._saved: np.ndarray | None = None


class ReLU(_Elementwise):
    """``y = max(x, 0)``; ``dx = dy * [y > 0]`` (torch's convention: zero gradient at x = 0)."""

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = inplace

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = check_float_input(self, x)
        out = np.maximum(x, 0)
        self._saved = out
        return self._remember_output(out)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dout = self._check_dout(dout)
        return dout * (self._saved > 0)


class LeakyReLU(_Elementwise):
    """``y = x`` for x > 0, ``negative_slope * x`` otherwise; ``dx = dy`` or ``negative_slope * dy``."""

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False):
        super().__init__()
        self.negative_slope, self.inplace = float(negative_slope), inplace

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = check_float_input(self, x)
        positive = x > 0
        self._saved = positive
        return self._remember_output(np.where(positive, x, x * self.negative_slope))

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dout = self._check_dout(dout)
        return np.where(self._saved, dout, dout * self.negative_slope)


class ELU(_Elementwise):
    """``y = x`` for x > 0, ``alpha * (exp(x) - 1)`` otherwise (Clevert et al., 2016).

    ``dx = dy`` for x > 0, ``dy * alpha * exp(x) = dy * (y + alpha)`` otherwise.
    """

    def __init__(self, alpha: float = 1.0, inplace: bool = False):
        super().__init__()
        self.alpha, self.inplace = float(alpha), inplace

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = check_float_input(self, x)
        positive = x > 0
        out = np.where(positive, x, self.alpha * np.expm1(np.minimum(x, 0)))  # min: no overflow in the unused branch
        self._saved = (positive, out)
        return self._remember_output(out)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dout = self._check_dout(dout)
        positive, out = self._saved
        return np.where(positive, dout, dout * (out + self.alpha))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` as ``(1 + tanh(x/2)) / 2``: no overflow for large |x|."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class Sigmoid(_Elementwise):
    """``y = 1 / (1 + exp(-x))``; ``dx = dy * y * (1 - y)``."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = check_float_input(self, x)
        out = _sigmoid(x)
        self._saved = out
        return self._remember_output(out)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dout = self._check_dout(dout)
        y = self._saved
        return dout * y * (1 - y)


class Tanh(_Elementwise):
    """``y = tanh(x)``; ``dx = dy * (1 - y^2)``."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = check_float_input(self, x)
        out = np.tanh(x)
        self._saved = out
        return self._remember_output(out)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dout = self._check_dout(dout)
        y = self._saved
        return dout * (1 - y * y)


class SiLU(_Elementwise):
    """``y = x * sigmoid(x)`` (swish); ``dx = dy * s * (1 + x * (1 - s))`` with ``s = sigmoid(x)``."""

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = inplace

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = check_float_input(self, x)
        s = _sigmoid(x)
        self._saved = (x, s)
        return self._remember_output(x * s)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dout = self._check_dout(dout)
        x, s = self._saved
        return dout * s * (1 + x * (1 - s))


class Softmax(_Elementwise):
    """``y_i = exp(x_i - max x) / sum_j exp(x_j - max x)`` along ``dim``.

    Backward (the Jacobian ``diag(y) - y y^T`` applied to ``dy``): ``dx = y * (dy - sum_j dy_j y_j)``.
    float16 inputs are computed in float32 and rounded at the end.
    """

    def __init__(self, dim: int = -1):
        super().__init__()
        self.dim = dim

    def extra_repr(self) -> str:
        return f"dim={self.dim}"

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = check_float_input(self, x)
        xf = x.astype(accumulate_dtype(x.dtype), copy=False)
        e = np.exp(xf - xf.max(axis=self.dim, keepdims=True))
        y = e / e.sum(axis=self.dim, keepdims=True)
        self._saved = y
        return self._remember_output(y.astype(x.dtype, copy=False))

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dout = self._check_dout(dout)
        y = self._saved
        dx = y * (dout - (dout * y).sum(axis=self.dim, keepdims=True))
        return dx.astype(dout.dtype, copy=False)


class LogSoftmax(_Elementwise):
    """``y_i = x_i - log sum_j exp(x_j)`` along ``dim`` (shifted by the max for stability).

    Backward: ``dx = dy - softmax(x) * sum_j dy_j``.
    """

    def __init__(self, dim: int = -1):
        super().__init__()
        self.dim = dim

    def extra_repr(self) -> str:
        return f"dim={self.dim}"

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = check_float_input(self, x)
        xf = x.astype(accumulate_dtype(x.dtype), copy=False)
        shifted = xf - xf.max(axis=self.dim, keepdims=True)
        y = shifted - np.log(np.exp(shifted).sum(axis=self.dim, keepdims=True))
        self._saved = y
        return self._remember_output(y.astype(x.dtype, copy=False))

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dout = self._check_dout(dout)
        dx = dout - np.exp(self._saved) * dout.sum(axis=self.dim, keepdims=True, dtype=self._saved.dtype)
        return dx.astype(dout.dtype, copy=False)
