"""``Conv2d``: 2-D convolution (cross-correlation, as in every framework) with its backward pass."""

from __future__ import annotations

import math

import numpy as np

from convolab.glass.im2col import col2im, conv_output_size, gather_offsets, pad_nhwc, pair, patches, to_nchw
from convolab.glass.module import Module, check_float_input
from convolab.glass.precision import matmul, sum_rows
from convolab.glass.rng import get_generator

__all__ = ["Conv2d"]


class Conv2d(Module):
    """2-D convolution over (N, C_in, H, W) images, torch's ``nn.Conv2d``.

    Parameters: ``weight`` (C_out, C_in / groups, kh, kw), ``bias`` (C_out,) when ``bias=True``.
    Initialised as torch does: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with ``fan_in = C_in/groups * kh * kw``.

    Forward, for output channel ``o`` in group ``g`` (input channels ``c`` of that group), with ``xp``
    the zero-padded input::

        y[n, o, u, v] = b[o] + sum_{c, i, j} W[o, c, i, j] * xp[n, g*C_in/groups + c, u*s + i*d, v*s + j*d]

    ``H_out = floor((H + 2p - d(kh - 1) - 1) / s) + 1`` (the same for W).

    Backward, given ``dy = dL/dy`` (N, C_out, H_out, W_out)::

        dL/db[o]          = sum_{n,u,v} dy[n, o, u, v]
        dL/dW[o, c, i, j] = sum_{n,u,v} dy[n, o, u, v] * xp[n, c', u*s + i*d, v*s + j*d]
        dL/dxp[n, c', y, x] = sum over every (o, i, j, u, v) with y = u*s + i*d, x = v*s + j*d of dy * W

    Computed as matrix products over the im2col matrix (see ``convolab.glass.im2col``):
    ``Y = cols @ Wmat``, ``dWmat = cols^T @ dY``, ``dcols = dY @ Wmat^T`` and col2im.

    Args:
        in_channels, out_channels: C_in and C_out (both divisible by ``groups``).
        kernel_size, stride, dilation: int or (h, w).
        padding: int, (h, w), ``"valid"`` (0) or ``"same"`` (output size = input size; stride 1 only,
            the odd extra row/column goes at the bottom/right, as in torch).
        groups: split channels into groups convolved separately (``groups == in_channels``: depthwise).
        bias: learn an additive bias per output channel.
        padding_mode: only ``"zeros"``.
        dtype: parameter dtype (float32 by default).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] | str = 0,
                 dilation: int | tuple[int, int] = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", dtype=np.float32):
        super().__init__()
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2d: in_channels ({in_channels}) and out_channels ({out_channels}) must be "
                             f"divisible by groups ({groups})")
        if padding_mode != "zeros":
            raise ValueError(f"Conv2d: only padding_mode='zeros' is implemented; got {padding_mode!r}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride")
        self.dilation = pair(dilation, "dilation")
        if min(self.kernel_size + self.stride + self.dilation) < 1:
            raise ValueError("Conv2d: kernel_size, stride and dilation must be >= 1")
        self.padding: tuple[int, int] | str
        if padding == "valid":
            padding = 0
        if padding == "same":
            if self.stride != (1, 1):
                raise ValueError("Conv2d: padding='same' needs stride 1 (as in torch)")
            total = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size)]
            self._pad = (total[0] // 2, total[1] // 2)                               # top, left
            self._extra = (total[0] - 2 * self._pad[0], total[1] - 2 * self._pad[1])  # bottom/right surplus
            self.padding = "same"
        else:
            self._pad, self._extra = pair(padding, "padding"), (0, 0)
            if min(self._pad) < 0:
                raise ValueError(f"Conv2d: padding must be >= 0; got {padding!r}")
            self.padding = self._pad
        self.padding_mode = padding_mode
        kh, kw = self.kernel_size
        fan_in = in_channels // groups * kh * kw
        bound = 1.0 / math.sqrt(fan_in)
        rng = get_generator()
        self._new_param("weight", rng.uniform(-bound, bound, (out_channels, in_channels // groups, kh, kw))
                        .astype(dtype))
        if bias:
            self._new_param("bias", rng.uniform(-bound, bound, out_channels).astype(dtype))
        self._cache: tuple | None = None

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        return s + ("" if "bias" in self.params else ", bias=False")

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        """(H_out, W_out) for an (H, W) input."""
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        return (conv_output_size(h + self._extra[0], kh, sh, self._pad[0], dh),
                conv_output_size(w + self._extra[1], kw, sw, self._pad[1], dw))

    def forward(self, x: np.ndarray) -> np.ndarray:
        """(N, C_in, H, W) -> (N, C_out, H_out, W_out) (channels-last in memory)."""
        x = check_float_input(self, x)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{self.label}: expected input of shape (N, {self.in_channels}, H, W), got {x.shape}")
        n, c, h, w = x.shape
        ho, wo = self.output_size(h, w)
        (kh, kw), g, o = self.kernel_size, self.groups, self.out_channels
        if ho < 1 or wo < 1:
            reach = tuple(d * (k - 1) + 1 for d, k in zip(self.dilation, self.kernel_size))
            raise ValueError(f"{self.label}: input of shape {x.shape} is smaller than the kernel's reach "
                             f"{reach[0]}x{reach[1]} after padding {self.padding}")
        m, cg, og = n * ho * wo, c // g, o // g
        xp = pad_nhwc(x, self._pad, self._extra)                                  # (N, Hp, Wp, C)
        view = patches(xp, self.kernel_size, self.stride, self.dilation, (ho, wo))  # (N, Ho, Wo, kh, kw, C), no copy
        weight = self._param("weight", x.dtype)                                  # (O, C/g, kh, kw)
        if g == 1:
            if c == 1:  # one input channel (a grayscale image): rows of length 1 would make the copy crawl,
                # so gather by kernel offset, (kh*kw, M) with long runs, and hand BLAS its transpose.
                cols = gather_offsets(xp, self.kernel_size, self.stride, self.dilation, (ho, wo)).reshape(-1, m).T
            else:
                cols = view.reshape(m, kh * kw * c)                               # the one gather copy
            wmat = weight.transpose(2, 3, 1, 0).reshape(kh * kw * c, o)           # rows ordered (i, j, c) like cols
            out = matmul(cols, wmat)                                              # (M, O)
        else:  # one GEMM per group, batched: channels c = g * cg + cc
            cols = (view.reshape(n, ho, wo, kh, kw, g, cg).transpose(5, 0, 1, 2, 3, 4, 6)
                    .reshape(g, m, kh * kw * cg))                                 # (G, M, kh*kw*cg)
            wmat = weight.reshape(g, og, cg, kh, kw).transpose(0, 3, 4, 2, 1).reshape(g, kh * kw * cg, og)
            out = matmul(cols, wmat).transpose(1, 0, 2).reshape(m, o)            # (G, M, og) -> (M, O)
        if "bias" in self.params:
            out += self._param("bias", x.dtype)
        self._cache = (xp.shape, cols, weight, (h, w), (ho, wo))
        return self._remember_output(out.reshape(n, ho, wo, o).transpose(0, 3, 1, 2))  # (N, O, Ho, Wo) view

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        """dL/dy (N, C_out, H_out, W_out) -> dL/dx (N, C_in, H, W) (None if not ``input_grad``); adds dL/dW and
        dL/db into ``grads``."""
        dout = self._check_dout(dout)
        padded_shape, cols, weight, (h, w), (ho, wo) = self._cache
        (kh, kw), g, o = self.kernel_size, self.groups, self.out_channels
        n, c = padded_shape[0], self.in_channels
        m, cg, og = n * ho * wo, c // g, o // g
        dy = np.ascontiguousarray(dout.transpose(0, 2, 3, 1)).reshape(m, o)      # (M, O); free if channels-last
        if "bias" in self.params:
            self._accumulate("bias", sum_rows(dy))                                 # sum over (N, H, W)
        if g == 1:
            dwmat = matmul(cols.T, dy)                                            # (kh*kw*C, O)
            self._accumulate("weight", dwmat.reshape(kh, kw, c, o).transpose(3, 2, 0, 1))
            if not self.input_grad:
                return None
            # dcols grouped by kernel offset: for offset (i, j), dy (M, O) @ W[:, :, i, j] (O, C)
            w_by_offset = weight.transpose(2, 3, 0, 1).reshape(kh * kw, o, c)      # (kh*kw, O, C)
            dpatches = matmul(dy, w_by_offset)                                     # (kh*kw, M, C)
        else:
            dyg = dy.reshape(m, g, og).transpose(1, 0, 2)                          # (G, M, og)
            dwmat = matmul(cols.transpose(0, 2, 1), dyg)                           # (G, kh*kw*cg, og)
            self._accumulate("weight", dwmat.reshape(g, kh, kw, cg, og).transpose(0, 4, 3, 1, 2).reshape(o, cg, kh, kw))
            if not self.input_grad:
                return None
            w_by_offset = weight.reshape(g, og, cg, kh, kw).transpose(3, 4, 0, 1, 2).reshape(kh * kw, g, og, cg)
            dpatches = matmul(dyg, w_by_offset)                                    # (kh*kw, G, M, cg)
            dpatches = dpatches.transpose(0, 2, 1, 3).reshape(kh * kw, m, c)      # (kh*kw, M, C)
        dxp = col2im(dpatches.reshape(kh, kw, n, ho, wo, c), padded_shape, self.stride, self.dilation)
        return to_nchw(dxp, self._pad, (h, w))                                    # (N, C, H, W) view
