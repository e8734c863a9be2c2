"""Losses: ``CrossEntropyLoss`` (with label smoothing) and ``MSELoss``.

A loss ends the chain: ``forward(logits, target)`` returns the loss as a Python float and
``backward(grad=1.0)`` returns ``grad * dL/d(logits)``, the gradient that starts the model's backward
pass (``grad`` is where a loss scale enters in mixed precision). Both compute in at least float32.
"""

from __future__ import annotations

import numpy as np

from convolab.glass.precision import accumulate_dtype

__all__ = ["CrossEntropyLoss", "MSELoss"]

_REDUCTIONS = ("mean", "sum")


class _Loss:
    def __init__(self, reduction: str):
        if reduction not in _REDUCTIONS:
            raise ValueError(f"{type(self).__name__}: reduction must be 'mean' or 'sum'; got {reduction!r}")
        self.reduction = reduction
        self._cache: tuple | None = None

    def __call__(self, logits: np.ndarray, target: np.ndarray) -> float:
        return self.forward(logits, target)

    def forward(self, logits: np.ndarray, target: np.ndarray) -> float:
        raise NotImplementedError

    def backward(self, grad: float = 1.0) -> np.ndarray:
        raise NotImplementedError

    def _cached(self) -> tuple:
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}: backward() called before forward()")
        return self._cache


class CrossEntropyLoss(_Loss):
    """Softmax cross-entropy of logits (N, C) against class indices (N,) or class probabilities (N, C).

    With ``log p = log_softmax(z)`` and the target distribution ``q`` (one-hot for an index), label
    smoothing ``eps`` (Szegedy et al., 2016) mixes in the uniform distribution:
    ``q' = (1 - eps) q + eps / C``. Then::

        L_n = -sum_c q'_{n,c} log p_{n,c},     L = mean_n L_n  (or the sum)
        dL/dz_n = (p_n - q'_n) / N             (without the 1/N for ``reduction="sum"``)

    The gradient is the famous "prediction minus target": softmax and cross-entropy together have a
    far simpler derivative than either alone.
    """

    def __init__(self, reduction: str = "mean", label_smoothing: float = 0.0):
        super().__init__(reduction)
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"CrossEntropyLoss: label_smoothing must be in [0, 1]; got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits: np.ndarray, target: np.ndarray) -> float:
        logits, target = np.asarray(logits), np.asarray(target)
        if logits.ndim != 2:
            raise ValueError(f"CrossEntropyLoss: expected logits of shape (N, C), got {logits.shape}")
        n, c = logits.shape
        z = logits.astype(accumulate_dtype(logits.dtype), copy=False)
        shifted = z - z.max(axis=1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))  # (N, C)
        if target.dtype.kind in "iu":
            if target.shape != (n,):
                raise ValueError(f"CrossEntropyLoss: expected class indices of shape ({n},), got {target.shape}")
            if n and (target.min() < 0 or target.max() >= c):
                raise ValueError(f"CrossEntropyLoss: class indices must be in [0, {c}); got "
                                 f"{target.min()}..{target.max()}")
            q = np.zeros_like(z)
            q[np.arange(n), target] = 1.0
        elif target.dtype.kind == "f":
            if target.shape != logits.shape:
                raise ValueError(f"CrossEntropyLoss: expected class probabilities of shape {logits.shape}, "
                                 f"got {target.shape}")
            q = target.astype(z.dtype)
        else:
            raise ValueError(f"CrossEntropyLoss: target must be integer indices or float probabilities; "
                             f"got {target.dtype}")
        if self.label_smoothing:
            q = (1.0 - self.label_smoothing) * q + self.label_smoothing / c
        per_sample = -(q * log_p).sum(axis=1)                                  # (N,)
        self._cache = (np.exp(log_p), q, logits.dtype)
        return float(per_sample.mean() if self.reduction == "mean" else per_sample.sum())

    def backward(self, grad: float = 1.0) -> np.ndarray:
        """``grad * dL/d(logits)`` (N, C), in the logits' dtype."""
        p, q, dtype = self._cached()
        scale = grad / p.shape[0] if self.reduction == "mean" else grad
        return ((p - q) * scale).astype(dtype, copy=False)


class MSELoss(_Loss):
    """Mean squared error: ``L = mean((x - t)^2)`` (or the sum); ``dL/dx = 2 (x - t) / numel`` (no 1/numel for sum)."""

    def __init__(self, reduction: str = "mean"):
        super().__init__(reduction)

    def forward(self, input: np.ndarray, target: np.ndarray) -> float:  # noqa: A002 - torch's argument name
        x, t = np.asarray(input), np.asarray(target)
        if x.shape != t.shape:
            raise ValueError(f"MSELoss: input and target must have the same shape; got {x.shape} and {t.shape}")
        acc = accumulate_dtype(x.dtype)
        diff = x.astype(acc, copy=False) - t.astype(acc, copy=False)
        self._cache = (diff, x.dtype)
        sq = diff * diff
        return float(sq.mean() if self.reduction == "mean" else sq.sum())

    def backward(self, grad: float = 1.0) -> np.ndarray:
        """``grad * dL/d(input)``, in the input's dtype."""
        diff, dtype = self._cached()
        scale = 2.0 * grad / (diff.size if self.reduction == "mean" else 1)
        return (diff * scale).astype(dtype, copy=False)
