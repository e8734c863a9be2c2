"""Normalisation layers with their backward passes: ``BatchNorm2d`` (Ioffe & Szegedy, 2015) with running
statistics, ``LayerNorm`` (Ba, Kiros & Hinton, 2016), ``GroupNorm`` (Wu & He, 2018) and ``GroupNorm1``, and
``LocalResponseNorm`` (Krizhevsky, Sutskever & Hinton, 2012).

LayerNorm and GroupNorm share one derivation. With ``xhat = (x - mu) / sqrt(var + eps)``, mu and the
biased var taken over a set S of K values, and ``g = dL/dxhat``::

    dL/dx = (g - mean_S(g) - xhat * mean_S(g * xhat)) / sqrt(var + eps)

(the first term is the direct path, the second the path through mu, the third the path through var);
see :func:`normalize` and :func:`normalize_backward`.
"""

from __future__ import annotations

import numpy as np

from convolab.glass.module import Module, check_float_input
from convolab.glass.precision import accumulate_dtype

__all__ = ["BatchNorm2d", "LayerNorm", "GroupNorm", "GroupNorm1", "LocalResponseNorm", "normalize",
           "normalize_backward"]


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


def normalize(x: np.ndarray, axes: tuple[int, ...], eps: float) -> tuple[np.ndarray, np.ndarray]:
    """``(xhat, invstd)``: ``x`` standardised over ``axes`` (biased variance), and ``1 / sqrt(var + eps)``
    with ``axes`` kept as size-1 dimensions."""
    mu = x.mean(axis=axes, keepdims=True)
    xc = x - mu
    invstd = 1.0 / np.sqrt((xc * xc).mean(axis=axes, keepdims=True) + eps)
    return xc * invstd, invstd


def normalize_backward(g: np.ndarray, xhat: np.ndarray, invstd: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """dL/dx from ``g = dL/dxhat`` for :func:`normalize` over ``axes``: the formula in the module docstring."""
    return (g - g.mean(axis=axes, keepdims=True) - xhat * (g * xhat).mean(axis=axes, keepdims=True)) * invstd


class LayerNorm(Module):
    """Normalisation of each sample over its last dimensions, torch's ``nn.LayerNorm``.

    ``normalized_shape`` names those dimensions' sizes: ``(C, H, W)`` normalises an image over all of
    its values, ``C`` the channels of an (N, *, C) tensor. Statistics are per sample and the same in
    training and evaluation (no running averages). Parameters ``weight`` (gamma) and ``bias`` (beta) of
    shape ``normalized_shape``, one per element, when ``elementwise_affine`` (``bias=False``: no beta)::

        y = xhat * gamma + beta,   xhat = (x - mean(x)) / sqrt(var(x) + eps)   (over the last dims)
        dL/dgamma = sum_batch(dy * xhat),   dL/dbeta = sum_batch(dy),   dL/dxhat = dy * gamma

    and dL/dx from dL/dxhat by the shared formula (module docstring). float16 inputs are normalised in
    float32 and the output rounded to float16.
    """

    def __init__(self, normalized_shape: int | tuple[int, ...], eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, dtype=np.float32):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) else tuple(normalized_shape)
        if not shape or any(int(d) != d or d < 1 for d in shape):
            raise ValueError(f"LayerNorm: normalized_shape must be sizes >= 1; got {normalized_shape!r}")
        self.normalized_shape = tuple(int(d) for d in shape)
        self.eps, self.elementwise_affine = float(eps), bool(elementwise_affine)
        if self.elementwise_affine:
            self._new_param("weight", np.ones(self.normalized_shape, dtype=dtype))
            if bias:
                self._new_param("bias", np.zeros(self.normalized_shape, dtype=dtype))
        self._cache: tuple | None = None

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"

    def forward(self, x: np.ndarray) -> np.ndarray:
        """(*, *normalized_shape) -> the same shape."""
        x = check_float_input(self, x)
        k = len(self.normalized_shape)
        if x.ndim < k or x.shape[x.ndim - k:] != self.normalized_shape:
            raise ValueError(f"{self.label}: expected input of shape (*, {', '.join(map(str, self.normalized_shape))})"
                             f", got {x.shape}")
        acc = accumulate_dtype(x.dtype)
        axes = tuple(range(x.ndim - k, x.ndim))
        xhat, invstd = normalize(x.astype(acc, copy=False), axes, self.eps)
        out = xhat
        if "weight" in self.params:
            out = xhat * self._param("weight", acc)
        if "bias" in self.params:
            out = out + self._param("bias", acc)
        self._cache = (xhat, invstd, axes, acc)
        return self._remember_output(out.astype(x.dtype, copy=False))

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """dL/dy -> dL/dx; adds dL/dgamma and dL/dbeta into ``grads``."""
        dout = self._check_dout(dout)
        xhat, invstd, axes, acc = self._cache
        dy = dout.astype(acc, copy=False)
        batch_axes = tuple(range(dy.ndim - len(axes)))
        if "bias" in self.params:
            self._accumulate("bias", dy.sum(axis=batch_axes))
        if "weight" in self.params:
            self._accumulate("weight", (dy * xhat).sum(axis=batch_axes))
            dy = dy * self._param("weight", acc)
        return normalize_backward(dy, xhat, invstd, axes).astype(dout.dtype, copy=False)


class GroupNorm(Module):
    """Normalisation over groups of channels, per sample, torch's ``nn.GroupNorm`` (Wu & He, 2018).

    The C channels of an (N, C, *) input are split into ``num_groups`` groups of C/G consecutive
    channels; each (sample, group) is standardised over its C/G * H * W values (biased variance, the
    same in training and evaluation), then each channel gets its own gain and bias (``weight``,
    ``bias``, shape (C,), when ``affine``)::

        y[n, c] = xhat[n, c] * gamma[c] + beta[c]
        dL/dgamma[c] = sum_{n, h, w} dy * xhat,   dL/dbeta[c] = sum_{n, h, w} dy,   dL/dxhat = dy * gamma[c]

    dL/dx from dL/dxhat by the shared formula (module docstring), per (sample, group). ``num_groups=1``
    is a LayerNorm over (C, H, W) with per-channel affine; ``num_groups=C`` is InstanceNorm with affine.
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True, dtype=np.float32):
        super().__init__()
        if num_groups < 1 or num_channels < 1 or num_channels % num_groups:
            raise ValueError(f"GroupNorm: num_channels ({num_channels}) must be divisible by num_groups "
                             f"({num_groups}), both >= 1")
        self.num_groups, self.num_channels, self.eps, self.affine = num_groups, num_channels, float(eps), bool(affine)
        if self.affine:
            self._new_param("weight", np.ones(num_channels, dtype=dtype))
            self._new_param("bias", np.zeros(num_channels, dtype=dtype))
        self._cache: tuple | None = None

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = check_float_input(self, x)
        if x.ndim < 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"{self.label}: expected input of shape (N, {self.num_channels}, *), got {x.shape}")
        return x

    def forward(self, x: np.ndarray) -> np.ndarray:
        """(N, C, *) -> (N, C, *)."""
        x = self._check(x)
        acc = accumulate_dtype(x.dtype)
        xg = x.astype(acc, copy=False).reshape(x.shape[0], self.num_groups, -1)  # (N, G, C/G * H * W)
        xhat, invstd = normalize(xg, (2,), self.eps)
        xhat = xhat.reshape(x.shape)                                               # (N, C, *)
        out = xhat
        if self.affine:
            bshape = (1, self.num_channels) + (1,) * (x.ndim - 2)
            out = xhat * self._param("weight", acc).reshape(bshape) + self._param("bias", acc).reshape(bshape)
        self._cache = (xhat, invstd, acc)
        return self._remember_output(out.astype(x.dtype, copy=False))

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """dL/dy (N, C, *) -> dL/dx (N, C, *); adds dL/dgamma and dL/dbeta into ``grads``."""
        dout = self._check_dout(dout)
        xhat, invstd, acc = self._cache
        dy = dout.astype(acc, copy=False)
        if self.affine:
            other = (0,) + tuple(range(2, dy.ndim))                                 # all but the channels
            self._accumulate("bias", dy.sum(axis=other))
            self._accumulate("weight", (dy * xhat).sum(axis=other))
            dy = dy * self._param("weight", acc).reshape((1, self.num_channels) + (1,) * (dy.ndim - 2))
        n = dy.shape[0]
        dx = normalize_backward(dy.reshape(n, self.num_groups, -1), xhat.reshape(n, self.num_groups, -1), invstd, (2,))
        return dx.reshape(dout.shape).astype(dout.dtype, copy=False)


class GroupNorm1(GroupNorm):
    """``GroupNorm(1, num_channels)``: LayerNorm over (C, H, W) with a per-channel gain and bias
    (``convolab.layers.GroupNorm1``, timm's name); buildable from the channel count alone."""

    def __init__(self, num_channels: int, eps: float = 1e-5, affine: bool = True, dtype=np.float32):
        super().__init__(1, num_channels, eps, affine, dtype)


def _channel_window_sum(a: np.ndarray, before: int, after: int) -> np.ndarray:
    """``out[:, c] = sum_{j = c - before}^{c + after} a[:, j]`` (channels outside 0..C-1 count as zero)."""
    c = a.shape[1]
    pad = [(0, 0)] * a.ndim
    pad[1] = (before, after)
    ap = np.pad(a, pad)
    out = ap[:, :c].copy()
    for t in range(1, before + after + 1):
        out += ap[:, t:t + c]
    return out


class LocalResponseNorm(Module):
    """Local response normalisation across channels (AlexNet, Krizhevsky et al. 2012), torch's
    ``nn.LocalResponseNorm``.

    For an (N, C, *) input, with a window of ``size`` channels around c (from ``c - size // 2`` to
    ``c + (size - 1) // 2``, channels outside the input count as zero)::

        D[n, c] = k + alpha / size * sum_{j in window(c)} x[n, j]^2
        y[n, c] = x[n, c] * D[n, c]^(-beta)

    torch (like Caffe) divides ``alpha`` by ``size``; the AlexNet paper's formula does not (its
    alpha = 1e-4 is torch's alpha = 5e-4 for size 5). No parameters. Backward: x[n, i] appears in its
    own numerator and in the sums D[n, c] of every c whose window holds i (c from ``i - (size - 1) // 2``
    to ``i + size // 2``)::

        dx[n, i] = dy[n, i] * D[n, i]^(-beta)
                   - 2 alpha beta / size * x[n, i] * sum_{c : i in window(c)} dy[n, c] x[n, c] D[n, c]^(-beta - 1)
    """

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
        super().__init__()
        if int(size) != size or size < 1:
            raise ValueError(f"LocalResponseNorm: size must be an integer >= 1; got {size!r}")
        self.size, self.alpha, self.beta, self.k = int(size), float(alpha), float(beta), float(k)
        self._cache: tuple | None = None

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"

    def forward(self, x: np.ndarray) -> np.ndarray:
        """(N, C, *) -> (N, C, *)."""
        x = check_float_input(self, x)
        if x.ndim < 3:
            raise ValueError(f"{self.label}: expected input of shape (N, C, *) with at least 3 dimensions, "
                             f"got {x.shape}")
        acc = accumulate_dtype(x.dtype)
        xf = x.astype(acc, copy=False)
        d = self.k + (self.alpha / self.size) * _channel_window_sum(xf * xf, self.size // 2, (self.size - 1) // 2)
        scale = d ** -self.beta                                                     # D^(-beta)
        self._cache = (xf, d, scale)
        return self._remember_output((xf * scale).astype(x.dtype, copy=False))

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """dL/dy (N, C, *) -> dL/dx (N, C, *)."""
        dout = self._check_dout(dout)
        xf, d, scale = self._cache
        dy = dout.astype(xf.dtype, copy=False)
        q = dy * xf * scale / d                                                     # dy x D^(-beta - 1)
        spread = _channel_window_sum(q, (self.size - 1) // 2, self.size // 2)       # over c whose window holds i
        dx = dy * scale - (2 * self.alpha * self.beta / self.size) * xf * spread
        return dx.astype(dout.dtype, copy=False)
