"""Attention blocks with their backward passes: squeeze-excitation, CBAM and the non-local block.

NumPy twins of ``convolab.layers.SqueezeExcite`` (Hu et al., 2018), ``convolab.layers.CBAM`` (Woo et al.,
2018) and ``convolab.layers.NonLocalBlock`` (Wang et al., 2018), with the same sub-module and parameter
names, so weights load both ways. Each is built from glass layers (``Conv2d``, ``Sigmoid``, ``Softmax``
...) whose own backward passes do the work; what is written here is the wiring -- and the rule at
every fork: an input used twice (gated *and* feeding its own gate, or feeding theta, phi and g)
receives the sum of the gradients along every use.

Two small operations recur and have no layer of their own:

* gating, ``y = x * gate`` with ``gate`` broadcast over some axes:
  ``dx = dy * gate``, ``dgate = sum over the broadcast axes of dy * x``;
* a max over some axes: the gradient goes to the position of the maximum (the first one on ties;
  torch's ``amax`` splits it among tied positions instead -- equal for inputs without ties).

A glass layer remembers one input for its backward, so where torch applies one module twice glass
keeps two instances (the non-local block's ``pool_phi`` and ``pool_g``), or runs the module once on a
batch that stacks both inputs (CBAM's shared MLP on the average- and max-pooled descriptors).
"""

from __future__ import annotations

import numpy as np

from convolab.glass.activation import ReLU, Sigmoid, Softmax
from convolab.glass.conv import Conv2d
from convolab.glass.module import Module, check_float_input
from convolab.glass.pool import AdaptiveAvgPool2d, MaxPool2d
from convolab.glass.precision import accumulate_dtype, matmul

__all__ = ["SqueezeExcite", "ChannelAttention", "SpatialAttention", "CBAM", "NonLocalBlock"]


def _check_map(module: Module, x: np.ndarray, channels: int) -> np.ndarray:
    x = check_float_input(module, x)
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(f"{module.label}: expected input of shape (N, {channels}, H, W), got {x.shape}")
    return x


def _check_positive(owner: str, **values: int) -> None:
    for name, value in values.items():
        if int(value) != value or value < 1:
            raise ValueError(f"{owner}: {name} must be an integer >= 1; got {value!r}")


def gate_backward(dout: np.ndarray, x: np.ndarray, gate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Backward of ``y = x * gate`` (``gate`` of size 1 on some of x's axes): ``(dx, dgate)``.

    ``dx = dy * gate`` (a new C-ordered array, safe to add into); ``dgate = sum(dy * x)`` over the axes
    where ``gate`` was broadcast, kept as size-1 axes.
    """
    axes = tuple(i for i, (g, n) in enumerate(zip(gate.shape, x.shape)) if g == 1 and n != 1)
    dgate = (dout * x).sum(axis=axes, keepdims=True, dtype=accumulate_dtype(dout.dtype)).astype(dout.dtype)
    return np.ascontiguousarray(dout * gate), dgate.reshape(gate.shape)


def _max_along(a: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """``(max, index)`` of ``a`` along ``axis``, both keeping it as a size-1 axis."""
    idx = np.expand_dims(a.argmax(axis=axis), axis)
    return np.take_along_axis(a, idx, axis), idx


def _max_along_backward(dx: np.ndarray, idx: np.ndarray, dmax: np.ndarray, axis: int) -> None:
    """Add the max's gradient ``dmax`` into ``dx`` (in place) at the arg-max positions ``idx``."""
    np.put_along_axis(dx, idx, np.take_along_axis(dx, idx, axis) + dmax, axis)


class SqueezeExcite(Module):
    """Squeeze-and-excitation (Hu, Shen & Sun, 2018), ``convolab.layers.SqueezeExcite``.

    Forward, (N, C, H, W): ``s = sigmoid(fc2(relu(fc1(avgpool(x)))))`` (N, C, 1, 1) with ``fc1``/``fc2``
    1x1 convolutions C -> ``squeeze_channels`` -> C; ``y = x * s``.

    Backward: x is used twice (scaled, and through the pool into its own scale)::

        dx = dy * s + avgpool'(fc1'(relu'(fc2'(sigmoid'(sum_{h,w} dy * x)))))

    ``activation`` and ``scale_activation`` may be replaced by other glass layers (``from_torch`` copies
    the torch block's choice).
    """

    def __init__(self, input_channels: int, squeeze_channels: int):
        super().__init__()
        _check_positive("SqueezeExcite", input_channels=input_channels, squeeze_channels=squeeze_channels)
        self.input_channels = input_channels
        self.avgpool = AdaptiveAvgPool2d(1)
        self.fc1 = Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = Conv2d(squeeze_channels, input_channels, 1)
        self.activation: Module = ReLU()
        self.scale_activation: Module = Sigmoid()
        self._cache: tuple | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """(N, C, H, W) -> (N, C, H, W)."""
        x = _check_map(self, x, self.input_channels)
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))  # (N, C, 1, 1)
        self._cache = (x, scale)
        return self._remember_output(x * scale)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dout = self._check_dout(dout)
        x, scale = self._cache
        dx, dscale = gate_backward(dout, x, scale)
        d = self.scale_activation.backward(dscale)
        d = self.avgpool.backward(self.fc1.backward(self.activation.backward(self.fc2.backward(d))))
        return dx + d


class ChannelAttention(Module):
    """CBAM's channel attention, ``convolab.layers.ChannelAttention``: ``y = x * Mc(x)``.

    Forward: ``a = mean_{h,w} x``, ``m = max_{h,w} x`` (N, C, 1, 1); ``Mc = sigmoid(MLP(a) + MLP(m))``
    with the shared ``MLP(d) = fc2(relu(fc1(d)))`` (C -> max(1, C // reduction) -> C). The MLP runs
    once, on ``[a; m]`` stacked along the batch (2N, C, 1, 1), so its weight gradients sum both uses.

    Backward, with ``dMc = sum_{h,w} dy * x`` and ``dh = sigmoid'(dMc)`` sent to both halves::

        [da; dm] = MLP'([dh; dh])
        dx = dy * Mc + da / (H W) (everywhere) + dm (at each map's arg-max)
    """

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        _check_positive("ChannelAttention", channels=channels, reduction=reduction)
        hidden = max(1, channels // reduction)
        self.channels, self.reduction = channels, reduction
        self.fc1 = Conv2d(channels, hidden, 1)
        self.act = ReLU()
        self.fc2 = Conv2d(hidden, channels, 1)
        self.gate = Sigmoid()
        self._cache: tuple | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """(N, C, H, W) -> (N, C, H, W)."""
        x = _check_map(self, x, self.channels)
        n, c, h, w = x.shape
        avg = x.mean(axis=(2, 3), keepdims=True, dtype=accumulate_dtype(x.dtype)).astype(x.dtype)  # (N, C, 1, 1)
        mx, idx = _max_along(x.reshape(n, c, h * w), 2)                            # (N, C, 1)
        desc = np.concatenate([avg, mx.reshape(n, c, 1, 1)], axis=0)               # (2N, C, 1, 1)
        both = self.fc2(self.act(self.fc1(desc)))                                  # (2N, C, 1, 1)
        gate = self.gate(both[:n] + both[n:])                                      # (N, C, 1, 1)
        self._cache = (x, gate, idx)
        return self._remember_output(x * gate)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dout = self._check_dout(dout)
        x, gate, idx = self._cache
        n, c, h, w = x.shape
        dx, dgate = gate_backward(dout, x, gate)
        ds = self.gate.backward(dgate)                                              # (N, C, 1, 1)
        ddesc = self.fc1.backward(self.act.backward(self.fc2.backward(np.concatenate([ds, ds], axis=0))))
        dx += ddesc[:n] / (h * w)                                                   # the mean: equal shares
        _max_along_backward(dx.reshape(n, c, h * w), idx, ddesc[n:].reshape(n, c, 1), 2)  # the max: its arg-max
        return dx


class SpatialAttention(Module):
    """CBAM's spatial attention, ``convolab.layers.SpatialAttention``: ``y = x * Ms(x)``.

    Forward: ``desc = [mean_c x; max_c x]`` (N, 2, H, W); ``Ms = sigmoid(conv(desc))`` (N, 1, H, W), with
    ``conv`` k x k, "same" padding, no bias.

    Backward, with ``ddesc = conv'(sigmoid'(sum_c dy * x))``::

        dx = dy * Ms + ddesc[:, 0] / C (every channel) + ddesc[:, 1] (at each pixel's arg-max channel)
    """

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        _check_positive("SpatialAttention", kernel_size=kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"SpatialAttention: kernel_size must be odd (same-size output); got {kernel_size}")
        self.kernel_size = kernel_size
        self.conv = Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.gate = Sigmoid()
        self._cache: tuple | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """(N, C, H, W) -> (N, C, H, W)."""
        x = check_float_input(self, x)
        if x.ndim != 4:
            raise ValueError(f"{self.label}: expected input of shape (N, C, H, W), got {x.shape}")
        avg = x.mean(axis=1, keepdims=True, dtype=accumulate_dtype(x.dtype)).astype(x.dtype)  # (N, 1, H, W)
        mx, idx = _max_along(x, 1)                                                  # (N, 1, H, W)
        gate = self.gate(self.conv(np.concatenate([avg, mx], axis=1)))              # (N, 1, H, W)
        self._cache = (x, gate, idx)
        return self._remember_output(x * gate)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dout = self._check_dout(dout)
        x, gate, idx = self._cache
        dx, dgate = gate_backward(dout, x, gate)
        ddesc = self.conv.backward(self.gate.backward(dgate))                      # (N, 2, H, W)
        dx += ddesc[:, :1] / x.shape[1]
        _max_along_backward(dx, idx, ddesc[:, 1:], 1)
        return dx


class CBAM(Module):
    """Convolutional Block Attention Module (Woo et al., 2018), ``convolab.layers.CBAM``.

    ``y = spatial(channel(x))``; backward runs the two in reverse: ``dx = channel'(spatial'(dy))``.
    """

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7):
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(kernel_size)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """(N, C, H, W) -> (N, C, H, W)."""
        return self._remember_output(self.spatial(self.channel(x)))

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return self.channel.backward(self.spatial.backward(self._check_dout(dout)))


class NonLocalBlock(Module):
    """Non-local block, embedded Gaussian (Wang et al., 2018), ``convolab.layers.NonLocalBlock``.

    Forward, with ``P = H W`` positions, ``M`` the positions of phi and g (``P``, or ``P / 4`` after the
    2x2 max pools of ``sub_sample``) and ``C_i = inter_channels``::

        T = theta(x)  as (N, P, C_i)      Ph = phi(x) as (N, C_i, M)      G = g(x) as (N, M, C_i)
        A = softmax(T @ Ph)  (N, P, M), over the last axis
        Y = A @ G            (N, P, C_i) -> y (N, C_i, H, W)
        z = w_z(y) + x

    Backward (matrix products: ``d(A @ B) -> dA = dC @ B^T, dB = A^T @ dC``)::

        dY = w_z'(dz)                       dA = dY @ G^T        dG = A^T @ dY
        dF = softmax'(dA)                   dT = dF @ Ph^T       dPh = T^T @ dF
        dx = dz + theta'(dT) + phi'(pool'(dPh)) + g'(pool'(dG))        (x feeds four paths)

    ``phi.bias`` gets a zero gradient (up to rounding): a bias b adds ``T_i . b`` to the whole row i of
    scores, a shift the softmax cancels. In the sums: ``dL/db = sum_{n,j} dPh[:, :, j] =
    sum_{n,i} T[n, i] * sum_j dF[n, i, j]``, and every row of the softmax's backward ``dF`` sums to zero.
    """

    def __init__(self, in_channels: int, inter_channels: int | None = None, sub_sample: bool = False,
                 zero_init: bool = True):
        super().__init__()
        if inter_channels is None:
            inter_channels = max(1, in_channels // 2)
        _check_positive("NonLocalBlock", in_channels=in_channels, inter_channels=inter_channels)
        self.in_channels, self.inter_channels, self.sub_sample = in_channels, inter_channels, bool(sub_sample)
        self.theta = Conv2d(in_channels, inter_channels, 1)
        self.phi = Conv2d(in_channels, inter_channels, 1)
        self.g = Conv2d(in_channels, inter_channels, 1)
        self.w_z = Conv2d(inter_channels, in_channels, 1)
        if zero_init:  # the block starts as the identity (see convolab.layers.NonLocalBlock)
            self.w_z.params["weight"][...] = 0
            self.w_z.params["bias"][...] = 0
        self.softmax = Softmax(dim=-1)
        if self.sub_sample:  # torch applies one pool twice; a glass layer remembers one input, so two
            self.pool_phi = MaxPool2d(2)
            self.pool_g = MaxPool2d(2)
        self._cache: tuple | None = None

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, inter_channels={self.inter_channels}, sub_sample={self.sub_sample}"

    def forward(self, x: np.ndarray) -> np.ndarray:
        """(N, C, H, W) -> (N, C, H, W)."""
        x = _check_map(self, x, self.in_channels)
        n, _, h, w = x.shape
        ci = self.inter_channels
        if self.sub_sample and (h < 2 or w < 2):
            raise ValueError(f"{self.label}: sub_sample needs maps of at least 2x2, got {h}x{w}")
        phi, g = self.phi(x), self.g(x)                                             # (N, C_i, H, W)
        if self.sub_sample:
            phi, g = self.pool_phi(phi), self.pool_g(g)                             # (N, C_i, H/2, W/2)
        pooled_shape = phi.shape
        t = self.theta(x).reshape(n, ci, h * w).transpose(0, 2, 1)                 # (N, P, C_i)
        ph = phi.reshape(n, ci, -1)                                                 # (N, C_i, M)
        gm = g.reshape(n, ci, -1).transpose(0, 2, 1)                                # (N, M, C_i)
        attn = self.softmax(matmul(t, ph))                                          # (N, P, M)
        y = matmul(attn, gm).transpose(0, 2, 1).reshape(n, ci, h, w)                # (N, C_i, H, W)
        self._cache = (t, ph, gm, attn, pooled_shape)
        return self._remember_output(self.w_z(y) + x)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dout = self._check_dout(dout)
        t, ph, gm, attn, pooled_shape = self._cache
        n, _, h, w = dout.shape
        ci = self.inter_channels
        dy = self.w_z.backward(dout).reshape(n, ci, h * w).transpose(0, 2, 1)      # (N, P, C_i)
        dattn = matmul(dy, gm.transpose(0, 2, 1))                                   # (N, P, M)
        dgm = matmul(attn.transpose(0, 2, 1), dy)                                   # (N, M, C_i)
        dscores = self.softmax.backward(dattn)                                      # (N, P, M)
        dt = matmul(dscores, ph.transpose(0, 2, 1))                                 # (N, P, C_i)
        dph = matmul(t.transpose(0, 2, 1), dscores)                                 # (N, C_i, M)
        dphi = dph.reshape(pooled_shape)
        dg = dgm.transpose(0, 2, 1).reshape(pooled_shape)
        if self.sub_sample:
            dphi, dg = self.pool_phi.backward(dphi), self.pool_g.backward(dg)       # (N, C_i, H, W)
        dx = dout + self.theta.backward(dt.transpose(0, 2, 1).reshape(n, ci, h, w))
        return dx + self.phi.backward(dphi) + self.g.backward(dg)
