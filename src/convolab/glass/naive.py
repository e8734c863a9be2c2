"""The deliberately naive reference: convolution and pooling as the tutorials write them, with loops.

Every output pixel is computed on its own, by four nested loops (image, channel, row, column) and a
sum over the window. Slow -- hundreds of times slower than ``convolab.glass.conv`` -- but each line
is the textbook formula, so it serves as the readable reference the vectorised layers are tested
against. Inputs (N, C, H, W); ``stride``, ``padding``, ``dilation`` are ints or (h, w) pairs.
"""

from __future__ import annotations

import numpy as np

from convolab.glass.im2col import conv_output_size, pair

__all__ = ["conv2d", "conv2d_backward", "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward"]


def _window(i: int, j: int, kernel, stride, dilation) -> tuple[slice, slice]:
    """Rows and columns of the padded input under output pixel (i, j)."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    return (slice(i * sh, i * sh + dh * (kh - 1) + 1, dh), slice(j * sw, j * sw + dw * (kw - 1) + 1, dw))


def _pad(x: np.ndarray, padding: tuple[int, int], value: float = 0.0) -> np.ndarray:
    ph, pw = padding
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, stride=1, padding=0, dilation=1,
           groups: int = 1) -> np.ndarray:
    """``y[n, o, i, j] = b[o] + sum(window(n, group of o, i, j) * W[o])``, one output pixel at a time."""
    stride, padding, dilation = pair(stride, "stride"), pair(padding, "padding"), pair(dilation, "dilation")
    n_img, _, h, w = x.shape
    out_ch, cg, kh, kw = weight.shape
    og = out_ch // groups
    ho = conv_output_size(h, kh, stride[0], padding[0], dilation[0])
    wo = conv_output_size(w, kw, stride[1], padding[1], dilation[1])
    xp = _pad(x, padding)
    out = np.zeros((n_img, out_ch, ho, wo), dtype=x.dtype)
    for n in range(n_img):
        for o in range(out_ch):
            c0 = (o // og) * cg                                   # first input channel of o's group
            for i in range(ho):
                for j in range(wo):
                    rows, cols = _window(i, j, (kh, kw), stride, dilation)
                    out[n, o, i, j] = np.sum(xp[n, c0:c0 + cg, rows, cols] * weight[o])
                    if bias is not None:
                        out[n, o, i, j] += bias[o]
    return out


def conv2d_backward(dout: np.ndarray, x: np.ndarray, weight: np.ndarray, stride=1, padding=0, dilation=1,
                    groups: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dx, dW, db): each output pixel sends ``dout * W[o]`` to its window and ``dout * window`` to ``dW[o]``."""
    stride, padding, dilation = pair(stride, "stride"), pair(padding, "padding"), pair(dilation, "dilation")
    n_img, _, h, w = x.shape
    out_ch, cg, kh, kw = weight.shape
    og = out_ch // groups
    xp = _pad(x, padding)
    dxp, dw, db = np.zeros_like(xp), np.zeros_like(weight), np.zeros(out_ch, dtype=dout.dtype)
    for n in range(n_img):
        for o in range(out_ch):
            c0 = (o // og) * cg
            for i in range(dout.shape[2]):
                for j in range(dout.shape[3]):
                    rows, cols = _window(i, j, (kh, kw), stride, dilation)
                    g = dout[n, o, i, j]
                    dxp[n, c0:c0 + cg, rows, cols] += g * weight[o]
                    dw[o] += g * xp[n, c0:c0 + cg, rows, cols]
                    db[o] += g
    ph, pw = padding
    return dxp[:, :, ph:ph + h, pw:pw + w], dw, db


def max_pool2d(x: np.ndarray, kernel_size, stride=None, padding=0, dilation=1) -> np.ndarray:
    """``y[n, c, i, j] = max(window(n, c, i, j))`` (padding with -inf)."""
    kernel = pair(kernel_size, "kernel_size")
    stride, padding = pair(kernel_size if stride is None else stride, "stride"), pair(padding, "padding")
    dilation = pair(dilation, "dilation")
    n_img, ch, h, w = x.shape
    ho = conv_output_size(h, kernel[0], stride[0], padding[0], dilation[0])
    wo = conv_output_size(w, kernel[1], stride[1], padding[1], dilation[1])
    xp = _pad(x, padding, -np.inf)
    out = np.zeros((n_img, ch, ho, wo), dtype=x.dtype)
    for n in range(n_img):
        for c in range(ch):
            for i in range(ho):
                for j in range(wo):
                    rows, cols = _window(i, j, kernel, stride, dilation)
                    out[n, c, i, j] = np.max(xp[n, c, rows, cols])
    return out


def max_pool2d_backward(dout: np.ndarray, x: np.ndarray, kernel_size, stride=None, padding=0,
                        dilation=1) -> np.ndarray:
    """dx: each output pixel's gradient goes to the first maximum of its window."""
    kernel = pair(kernel_size, "kernel_size")
    stride, padding = pair(kernel_size if stride is None else stride, "stride"), pair(padding, "padding")
    dilation = pair(dilation, "dilation")
    n_img, ch, h, w = x.shape
    xp = _pad(x, padding, -np.inf)
    dxp = np.zeros_like(xp)
    for n in range(n_img):
        for c in range(ch):
            for i in range(dout.shape[2]):
                for j in range(dout.shape[3]):
                    rows, cols = _window(i, j, kernel, stride, dilation)
                    window = xp[n, c, rows, cols]
                    a, b = np.unravel_index(np.argmax(window), window.shape)  # argmax: the first maximum
                    dxp[n, c, rows, cols][a, b] += dout[n, c, i, j]        # a view: writes into dxp
    ph, pw = padding
    return dxp[:, :, ph:ph + h, pw:pw + w]


def avg_pool2d(x: np.ndarray, kernel_size, stride=None, padding=0, count_include_pad: bool = True) -> np.ndarray:
    """``y[n, c, i, j] = mean(window(n, c, i, j))`` (the zero padding counts unless ``count_include_pad=False``)."""
    kernel = pair(kernel_size, "kernel_size")
    stride, padding = pair(kernel_size if stride is None else stride, "stride"), pair(padding, "padding")
    n_img, ch, h, w = x.shape
    ho = conv_output_size(h, kernel[0], stride[0], padding[0])
    wo = conv_output_size(w, kernel[1], stride[1], padding[1])
    xp, inside = _pad(x, padding), _pad(np.ones((1, 1, h, w)), padding)
    out = np.zeros((n_img, ch, ho, wo), dtype=x.dtype)
    for n in range(n_img):
        for c in range(ch):
            for i in range(ho):
                for j in range(wo):
                    rows, cols = _window(i, j, kernel, stride, (1, 1))
                    count = kernel[0] * kernel[1] if count_include_pad else inside[0, 0, rows, cols].sum()
                    out[n, c, i, j] = xp[n, c, rows, cols].sum() / count
    return out


def avg_pool2d_backward(dout: np.ndarray, x: np.ndarray, kernel_size, stride=None, padding=0,
                        count_include_pad: bool = True) -> np.ndarray:
    """dx: each output pixel's gradient is shared equally by its window."""
    kernel = pair(kernel_size, "kernel_size")
    stride, padding = pair(kernel_size if stride is None else stride, "stride"), pair(padding, "padding")
    n_img, ch, h, w = x.shape
    dxp, inside = np.zeros_like(_pad(x, padding)), _pad(np.ones((1, 1, h, w)), padding)
    for n in range(n_img):
        for c in range(ch):
            for i in range(dout.shape[2]):
                for j in range(dout.shape[3]):
                    rows, cols = _window(i, j, kernel, stride, (1, 1))
                    count = kernel[0] * kernel[1] if count_include_pad else inside[0, 0, rows, cols].sum()
                    dxp[n, c, rows, cols] += dout[n, c, i, j] / count
    ph, pw = padding
    return dxp[:, :, ph:ph + h, pw:pw + w]
