"""Blocks with a branch: the residual add (ResNet) and the channel concatenation (DenseNet).

Both show the one rule autograd applies at a fork: a value used twice receives the *sum* of the
gradients coming back along each use. An addition ``y = a + b`` passes ``dy`` unchanged to both
``a`` and ``b``; a concatenation ``y = [a, b]`` hands each part its own slice of ``dy``.

Glass layers remember their last input for backward, so a layer used twice in one forward pass
(torch's ResNet calls its one ``relu`` twice) needs two instances here: ``relu`` and ``relu_out``.
Names and parameter shapes match ``convolab.models.resnet`` and ``convolab.models.densenet``.
"""

from __future__ import annotations

import numpy as np

from convolab.glass.activation import ReLU
from convolab.glass.conv import Conv2d
from convolab.glass.dropout import Dropout
from convolab.glass.module import Module, check_float_input
from convolab.glass.norm import BatchNorm2d

__all__ = ["BasicBlock", "ZeroPadShortcut", "DenseLayer", "DenseBlock", "concat_channels"]


class BasicBlock(Module):
    """ResNet's basic block (He et al., 2016): ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.

    ``conv1`` (3x3, stride ``stride``) and ``conv2`` (3x3) have no bias; ``downsample`` maps ``x`` to
    the branch's shape when the stride or width changes (``None``: the identity).

    Backward, with ``d = relu_out'(dy)``, the gradient at the sum::

        dx = branch.backward(d) + (d if downsample is None else downsample.backward(d))
    """

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1, downsample: Module | None = None):
        super().__init__()
        self.conv1 = Conv2d(in_channels, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = BatchNorm2d(planes)
        self.relu = ReLU()
        self.conv2 = Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = BatchNorm2d(planes)
        self.downsample = downsample
        self.relu_out = ReLU()  # torch reuses ``relu`` here; a glass layer remembers one input, so a second one
        self.stride = stride

    def forward(self, x: np.ndarray) -> np.ndarray:
        """(N, C_in, H, W) -> (N, planes, H/stride, W/stride)."""
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if out.shape != shortcut.shape:
            raise ValueError(f"{self.label}: the branch gives {out.shape} but the shortcut {shortcut.shape}; "
                             "a downsample module must match them")
        return self.relu_out(out + shortcut)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        d = self.relu_out.backward(dout)                     # dL/d(branch + shortcut), sent down both paths
        d_branch = self.conv1.backward(self.bn1.backward(self.relu.backward(self.conv2.backward(self.bn2.backward(d)))))
        d_shortcut = d if self.downsample is None else self.downsample.backward(d)
        return d_branch + d_shortcut                         # x fed both paths: the gradients add


class ZeroPadShortcut(Module):
    """The parameter-free "option A" shortcut of the CIFAR ResNets: subsample by ``stride``, then append
    ``out_channels - in_channels`` zero channels.

    Forward: ``y[:, :C_in] = x[:, :, ::s, ::s]``, ``y[:, C_in:] = 0``.
    Backward: ``dx[:, :, ::s, ::s] = dy[:, :C_in]``, zero elsewhere (the skipped pixels and the zero
    channels do not depend on x).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"ZeroPadShortcut cannot reduce channels ({in_channels} -> {out_channels})")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self._shape: tuple[int, ...] | None = None

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = check_float_input(self, x)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{self.label}: expected input of shape (N, {self.in_channels}, H, W), got {x.shape}")
        s = self.stride
        sub = x.transpose(0, 2, 3, 1)[:, ::s, ::s, :]                              # (N, H/s, W/s, C_in)
        out = np.zeros((*sub.shape[:3], self.out_channels), dtype=x.dtype)
        out[..., :self.in_channels] = sub
        self._shape = x.shape
        return self._remember_output(out.transpose(0, 3, 1, 2))

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dout = self._check_dout(dout)
        n, c, h, w = self._shape
        dx = np.zeros((n, h, w, c), dtype=dout.dtype)
        dx[:, ::self.stride, ::self.stride, :] = dout.transpose(0, 2, 3, 1)[..., :c]
        return dx.transpose(0, 3, 1, 2)


def concat_channels(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[a, b]`` along the channel axis of (N, C, H, W) arrays, built channels-last in memory."""
    return np.concatenate([a.transpose(0, 2, 3, 1), b.transpose(0, 2, 3, 1)], axis=3).transpose(0, 3, 1, 2)


class DenseLayer(Module):
    """DenseNet-BC layer (Huang et al., 2017): BN-ReLU-conv 1x1 (to ``bn_size * growth_rate``) ->
    BN-ReLU-conv 3x3 (to ``growth_rate``) -> dropout.

    Input: the concatenation of the block's input and every earlier layer's output (N, C_in, H, W);
    output: the ``growth_rate`` new maps (N, k, H, W).
    """

    def __init__(self, in_channels: int, growth_rate: int, bn_size: int = 4, drop_rate: float = 0.0):
        super().__init__()
        mid = bn_size * growth_rate
        self.norm1 = BatchNorm2d(in_channels)
        self.relu1 = ReLU()
        self.conv1 = Conv2d(in_channels, mid, kernel_size=1, bias=False)
        self.norm2 = BatchNorm2d(mid)
        self.relu2 = ReLU()
        self.conv2 = Conv2d(mid, growth_rate, kernel_size=3, padding=1, bias=False)
        self.drop = Dropout(drop_rate)
        self.growth_rate = growth_rate
        self._order = ("norm1", "relu1", "conv1", "norm2", "relu2", "conv2", "drop")

    def forward(self, x: np.ndarray) -> np.ndarray:
        for name in self._order:
            x = getattr(self, name).forward(x)
        return x

    def backward(self, dout: np.ndarray) -> np.ndarray:
        for name in reversed(self._order):
            dout = getattr(self, name).backward(dout)
        return dout


class DenseBlock(Module):
    """``num_layers`` dense layers (``denselayer1`` ...): (N, C, H, W) -> (N, C + num_layers * k, H, W).

    Forward: ``f_0 = x``, ``f_l = [f_{l-1}, layer_l(f_{l-1})]`` (concatenation), output ``f_L``.
    Backward, from the last layer down: split ``df_l`` into ``(d_prev, d_new)`` along the channels,
    then ``df_{l-1} = d_prev + layer_l.backward(d_new)`` -- ``f_{l-1}`` was used twice (kept in the
    concatenation and fed to the layer), so its gradient is the sum of both.
    """

    def __init__(self, num_layers: int, in_channels: int, growth_rate: int, bn_size: int = 4,
                 drop_rate: float = 0.0):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"DenseBlock: num_layers must be >= 1; got {num_layers}")
        for i in range(num_layers):
            self.add_module(f"denselayer{i + 1}", DenseLayer(in_channels + i * growth_rate, growth_rate, bn_size,
                                                             drop_rate))

    def forward(self, x: np.ndarray) -> np.ndarray:
        features = x
        for layer in self.children():
            features = concat_channels(features, layer.forward(features))        # (N, C + l*k, H, W)
        return features

    def backward(self, dout: np.ndarray) -> np.ndarray:
        d = dout
        for layer in reversed(list(self.children())):
            k = layer.growth_rate
            d_prev, d_new = d[:, :-k], d[:, -k:]
            d = d_prev + layer.backward(d_new)
        return d
