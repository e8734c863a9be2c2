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

__all__ = ["ReLU", "LeakyReLU", "ELU", "Sigmoid", "Tanh", "SiLU", "Swish", "GELU", "Softmax", "LogSoftmax"]


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


class Swish(_Elementwise):
    """``y = x * sigmoid(beta * x)`` (Ramachandran et al., 2017), ``convolab.layers.Swish``.

    With ``s = sigmoid(beta * x)``, ``ds/dx = beta * s * (1 - s)`` and ``ds/dbeta = x * s * (1 - s)``, so::

        dx    = dy * (s + beta * x * s * (1 - s))
        dbeta = sum(dy * x^2 * s * (1 - s))          (over every element: beta is one shared scalar)

    ``trainable=True`` registers ``beta`` as a parameter of shape ``()``; otherwise it is a constant.
    """

    def __init__(self, beta: float = 1.0, trainable: bool = False):
        super().__init__()
        beta = float(beta)
        if not np.isfinite(beta):
            raise ValueError(f"Swish: beta must be a finite number; got {beta}")
        self.trainable = bool(trainable)
        self.beta = beta
        if self.trainable:
            self._new_param("beta", np.array(beta, dtype=np.float32))

    def extra_repr(self) -> str:
        return f"beta={self._beta(np.dtype(np.float64)):g}, trainable={self.trainable}"

    def _beta(self, dtype: np.dtype) -> np.ndarray | float:
        return self._param("beta", dtype) if self.trainable else self.beta

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = check_float_input(self, x)
        beta = self._beta(x.dtype)
        s = _sigmoid(beta * x)
        self._saved = (x, s, beta)
        return self._remember_output((x * s).astype(x.dtype, copy=False))

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dout = self._check_dout(dout)
        x, s, beta = self._saved
        ds = s * (1 - s)                                   # sigmoid'(beta x)
        if self.trainable:
            acc = accumulate_dtype(dout.dtype)
            self._accumulate("beta", np.sum(dout * x * x * ds, dtype=acc))
        return (dout * (s + beta * x * ds)).astype(dout.dtype, copy=False)


_SQRT_2_OVER_PI = 0.7978845608028654  # sqrt(2 / pi)
_GELU_CUBIC = 0.044715


class GELU(_Elementwise):
    """Gaussian error linear unit (Hendrycks & Gimpel, 2016), torch's ``nn.GELU``.

    ``approximate="none"``: ``y = x * Phi(x)`` with ``Phi(x) = (1 + erf(x / sqrt(2))) / 2`` the standard
    normal CDF; ``dx = dy * (Phi(x) + x * phi(x))``, ``phi(x) = exp(-x^2 / 2) / sqrt(2 pi)``.

    ``approximate="tanh"``: ``y = x * (1 + t) / 2`` with ``t = tanh(u)``, ``u = sqrt(2/pi) (x + 0.044715 x^3)``;
    ``dx = dy * ((1 + t) / 2 + x / 2 * (1 - t^2) * sqrt(2/pi) (1 + 3 * 0.044715 x^2))``.

    NumPy has no ``erf``; the exact form takes it from SciPy (imported when first used), the tanh form
    needs NumPy only.
    """

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh'; got {approximate!r}")
        self.approximate = approximate

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = check_float_input(self, x)
        if self.approximate == "tanh":
            t = np.tanh(_SQRT_2_OVER_PI * (x + _GELU_CUBIC * x * x * x))
            self._saved = (x, t)
            out = 0.5 * x * (1 + t)
        else:
            from scipy.special import ndtr  # Phi(x), accurate in both tails (1 + erf cancels for x << 0)

            cdf = ndtr(x).astype(x.dtype, copy=False)
            self._saved = (x, cdf)
            out = x * cdf
        return self._remember_output(out.astype(x.dtype, copy=False))

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dout = self._check_dout(dout)
        x, saved = self._saved
        if self.approximate == "tanh":
            t = saved
            du = _SQRT_2_OVER_PI * (1 + 3 * _GELU_CUBIC * x * x)
            local = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du
        else:
            pdf = np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)
            local = saved + x * pdf
        return (dout * local).astype(dout.dtype, copy=False)

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
