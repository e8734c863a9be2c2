"""``BatchNorm2d`` (Ioffe & Szegedy, 2015) with running statistics and its backward pass."""

from __future__ import annotations

import numpy as np

from convolab.glass.module import Module, check_float_input
from convolab.glass.precision import accumulate_dtype

__all__ = ["BatchNorm2d"]


class BatchNorm2d(Module):
    """Per-channel normalisation over (N, H, W), torch's ``nn.BatchNorm2d``.

    Parameters ``weight`` (gamma) and ``bias`` (beta), both (C,), when ``affine``; buffers
    ``running_mean``, ``running_var`` (C,) and ``num_batches_tracked`` () when ``track_running_stats``.

    Forward, with ``M = N*H*W`` values per channel::

        training:   mu = mean(x),  var = mean((x - mu)^2)          (biased, used to normalise)
                    running_mean <- (1 - m) running_mean + m mu
                    running_var  <- (1 - m) running_var  + m var * M / (M - 1)   (unbiased)
        evaluation: mu, var = running_mean, running_var
        xhat = (x - mu) / sqrt(var + eps),   y = gamma * xhat + beta

    ``m`` is ``momentum``, or ``1 / num_batches_tracked`` (a cumulative average) when ``momentum=None``.

    Backward, given ``dy``; sums and means run over (N, H, W)::

        dL/dbeta  = sum(dy),   dL/dgamma = sum(dy * xhat)
        training:   dx = gamma / sqrt(var + eps) * (dy - mean(dy) - xhat * mean(dy * xhat))
        evaluation: dx = gamma / sqrt(var + eps) * dy      (mu and var are constants)

    The training formula is the full derivative through mu and var (both depend on every x).
    float16 inputs are normalised in float32 and the output rounded to float16 (``torch.autocast``'s
    choice: a float16 variance of many values is too coarse).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, dtype=np.float32):
        super().__init__()
        if num_features < 1:
            raise ValueError(f"BatchNorm2d: num_features must be >= 1; got {num_features}")
        self.num_features, self.eps, self.momentum = num_features, float(eps), momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self._new_param("weight", np.ones(num_features, dtype=dtype))
            self._new_param("bias", np.zeros(num_features, dtype=dtype))
        if track_running_stats:
            self.buffers["running_mean"] = np.zeros(num_features, dtype=dtype)
            self.buffers["running_var"] = np.ones(num_features, dtype=dtype)
            self.buffers["num_batches_tracked"] = np.zeros((), dtype=np.int64)
        self._cache: tuple | None = None

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")

    def forward(self, x: np.ndarray) -> np.ndarray:
        """(N, C, H, W) -> (N, C, H, W)."""
        x = check_float_input(self, x)
        if x.ndim != 4 or x.shape[1] != self.num_features:
            raise ValueError(f"{self.label}: expected input of shape (N, {self.num_features}, H, W), got {x.shape}")
        n, c, h, w = x.shape
        acc = accumulate_dtype(x.dtype)
        xf = x.transpose(0, 2, 3, 1).reshape(-1, c).astype(acc, copy=False)     # (M, C), free if channels-last
        batch_stats = self.training or not self.track_running_stats
        if batch_stats:
            m = xf.shape[0]
            if m < 2:
                raise ValueError(f"{self.label}: training needs more than 1 value per channel, got input {x.shape}")
            mu = xf.mean(axis=0)
            xc = xf - mu
            var = np.einsum("mc,mc->c", xc, xc) / m                                # biased variance
            if self.training and self.track_running_stats:
                self._update_running(mu, var * (m / (m - 1)))
        else:
            mu = self.buffers["running_mean"].astype(acc)
            var = self.buffers["running_var"].astype(acc)
            xc = xf - mu
        invstd = 1.0 / np.sqrt(var + self.eps)                                     # (C,)
        xhat = xc * invstd                                                          # (M, C)
        out = xhat
        if self.affine:
            out = xhat * self._param("weight", acc) + self._param("bias", acc)
        self._cache = (xhat, invstd, batch_stats, acc)
        out = out.astype(x.dtype, copy=False).reshape(n, h, w, c).transpose(0, 3, 1, 2)
        return self._remember_output(out)

    def _update_running(self, mu: np.ndarray, unbiased_var: np.ndarray) -> None:
        b = self.buffers
        b["num_batches_tracked"] += 1
        f = self.momentum if self.momentum is not None else 1.0 / float(b["num_batches_tracked"])
        b["running_mean"][...] = (1 - f) * b["running_mean"] + f * mu
        b["running_var"][...] = (1 - f) * b["running_var"] + f * unbiased_var

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """dL/dy (N, C, H, W) -> dL/dx (N, C, H, W); adds dL/dgamma and dL/dbeta into ``grads``."""
        dout = self._check_dout(dout)
        xhat, invstd, batch_stats, acc = self._cache
        n, c, h, w = dout.shape
        dy = dout.transpose(0, 2, 3, 1).reshape(-1, c).astype(acc, copy=False)  # (M, C)
        sum_dy = dy.sum(axis=0)
        sum_dy_xhat = np.einsum("mc,mc->c", dy, xhat)
        if self.affine:
            self._accumulate("bias", sum_dy)
            self._accumulate("weight", sum_dy_xhat)
            scale = self._param("weight", acc) * invstd                             # gamma / sqrt(var + eps)
        else:
            scale = invstd
        if batch_stats:
            m = dy.shape[0]
            dx = (dy - sum_dy / m - xhat * (sum_dy_xhat / m)) * scale
        else:
            dx = dy * scale
        return dx.astype(dout.dtype, copy=False).reshape(n, h, w, c).transpose(0, 3, 1, 2)
