"""Uniform quantization from scratch: scales and zero points, fake quantization, and an integer-only
forward for ``Conv2d`` and ``Linear`` (int32 accumulation, fixed-point requantization).

Written by hand for teaching (issue 18): every formula is in a docstring, and the integer forward
uses only integer operations after the input is quantized, so a C implementation can reproduce it
bit for bit.

**The tutorials' formula.** A real value ``x`` is represented by an integer ``q`` through a scale
``s > 0`` and an integer zero point ``z``::

    q = clamp(round(x / s) + z, q_min, q_max)      (round: half to even, as np.rint)
    x ~ s * (q - z)                                (dequantize)

*Asymmetric* (unsigned, ``q in [0, 2^b - 1]``): the range ``[lo, hi]`` is the data's
``[min, max]`` widened to contain 0 (so that 0, the padding and ReLU's floor, is exact)::

    s = (hi - lo) / (2^b - 1),    z = clamp(-round(lo / s), 0, 2^b - 1)

*Symmetric* (signed, "narrow" range ``q in [-(2^(b-1) - 1), 2^(b-1) - 1]``, as TFLite's int8
weights: the code ``-2^(b-1)`` is left unused so that the range is symmetric and ``-q`` never
overflows)::

    s = max|x| / (2^(b-1) - 1),    z = 0

*One bit* (symmetric): binarised values ``q = sign(x) in {-1, +1}`` (``sign(0) = +1``) with
``s = mean|x|``, the scale that minimises ``||x - s * sign(x)||^2`` (XNOR-Net's alpha, the
tutorials' binary networks).

*Per channel* (``axis=k``): the same formulas with min, max and mean taken over every axis but
``k``, one ``(s, z)`` per channel. *Zero range*: a tensor (or channel) whose widened range is empty
(all zeros; a constant ``c != 0`` has range ``[min(c, 0), max(c, 0)]``, not empty) gets ``s = 1``,
so it quantizes to ``z`` and dequantizes exactly to 0 -- a scale is never 0.

**Integer forward** (:class:`Int8Linear`, :class:`Int8Conv2d`): weights per output channel,
symmetric int8 (``[-127, 127]``, ``s_w[o]``); activations (input and output) per tensor,
asymmetric uint8 (``[0, 255]``, ``s_x, z_x`` and ``s_y, z_y``), as PyTorch's x86 backends
(quint8 activations) do. With ``Q_x = q_x - z_x`` (zero padding of the float input is padding of
``q_x`` with ``z_x``, i.e. ``Q_x = 0``)::

    acc[m, o] = sum_k Q_x[m, k] * q_w[o, k] + q_b[o]             (int32; q_b = round(b / (s_x s_w[o])))
    q_y[m, o] = clamp(z_y + requant(acc[m, o], M[o]), 0, 255),    M[o] = s_x s_w[o] / s_y

``M = M0 * 2^(shift - 31)`` with ``M0`` an int32 in ``[2^30, 2^31)`` (:func:`quantize_multiplier`),
and ``requant`` is gemmlowp's / TFLite's reference ``MultiplyByQuantizedMultiplier`` (the
"double rounding" version, not ``TFLITE_SINGLE_ROUNDING``)::

    a = acc * 2^max(shift, 0)
    h = SaturatingRoundingDoublingHighMul(a, M0) = floor((a * M0 + 2^30) / 2^31)
        (gemmlowp adds the nudge 2^30 or 1 - 2^30 and divides truncating toward zero; both give this:
         a * M0 / 2^31 rounded to nearest, ties toward +infinity)
    requant = RoundingDivideByPOT(h, max(-shift, 0))
        = h / 2^n rounded to nearest, ties away from zero

The only floating-point steps are the quantization of the input (``x / s_x`` in float64, then
``np.rint``) and the dequantization of the output; everything between is exact integer arithmetic.
"""

from __future__ import annotations

import copy
import math

import numpy as np

from convolab.glass.conv import Conv2d
from convolab.glass.im2col import pad_nhwc, patches
from convolab.glass.linear import Linear

__all__ = ["qrange", "quant_params", "quantize", "dequantize", "fake_quantize", "binarize",
           "quantize_multiplier", "multiply_by_quantized_multiplier", "fake_quant_forward", "error_vs_bits",
           "Int8Linear", "Int8Conv2d", "int8_layer"]

INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1


def _check_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 8:
        raise ValueError(f"bits must be an integer from 1 to 8; got {bits!r}")
    return int(bits)


def qrange(bits: int, signed: bool) -> tuple[int, int]:
    """Integer range ``(q_min, q_max)``: signed ``(-(2^(b-1) - 1), 2^(b-1) - 1)`` (narrow, symmetric;
    ``(-1, 1)`` at 1 bit, whose codes are only -1 and +1), unsigned ``(0, 2^b - 1)``."""
    bits = _check_bits(bits)
    if signed:
        return (-1, 1) if bits == 1 else (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1)
    return 0, 2 ** bits - 1


def _reduce_axes(x: np.ndarray, axis: int | None) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(x.ndim))
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis {axis} is out of range for a tensor of {x.ndim} dimensions")
    axis %= x.ndim
    return tuple(a for a in range(x.ndim) if a != axis)


def _as_float64(x: np.ndarray, what: str = "x") -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        raise ValueError(f"cannot quantize an empty {what}")
    if not np.isfinite(x).all():
        raise ValueError(f"{what} has non-finite values (inf or nan); quantization needs a finite range")
    return x


def quant_params(x: np.ndarray, bits: int, symmetric: bool, axis: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero point of ``x`` from its range (the module docstring gives the formulas).

    Args:
        x: the tensor to quantize (any float array).
        bits: 1 to 8.
        symmetric: True: signed narrow range, ``z = 0``, ``s = max|x| / (2^(b-1) - 1)`` (``mean|x|`` at 1 bit);
            False: unsigned ``[0, 2^b - 1]``, ``s = (hi - lo) / (2^b - 1)``, ``z = -round(lo / s)``.
        axis: None for one (s, z) per tensor; an axis for one per channel along it.

    Returns:
        ``(scale, zero_point)``: float64 and int64 arrays, 0-d per tensor, shape ``(x.shape[axis],)`` per channel.
        A zero range gives ``scale = 1``.
    """
    bits = _check_bits(bits)
    x = _as_float64(x)
    axes = _reduce_axes(x, axis)
    qmin, qmax = qrange(bits, symmetric)
    if symmetric:
        scale = np.abs(x).mean(axis=axes) if bits == 1 else np.abs(x).max(axis=axes) / qmax
        zero_point = np.zeros(scale.shape, dtype=np.int64)
    else:
        lo = np.minimum(x.min(axis=axes), 0.0)
        hi = np.maximum(x.max(axis=axes), 0.0)
        scale = (hi - lo) / (qmax - qmin)
    scale = np.where(scale > 0, scale, 1.0)                       # zero range: s = 1, never 0
    if not symmetric:
        zero_point = np.clip(qmin - np.rint(lo / scale), qmin, qmax).astype(np.int64)
    return scale, zero_point


def _broadcast(p: np.ndarray, x: np.ndarray, axis: int | None, name: str) -> np.ndarray:
    """Per-channel parameters (C,) reshaped to broadcast against ``x`` along ``axis``."""
    p = np.asarray(p)
    if axis is None:
        if p.ndim != 0 and p.size != 1:
            raise ValueError(f"{name} must be a scalar for per-tensor quantization (axis=None); got shape {p.shape}")
        return p.reshape(())
    axis %= x.ndim
    if p.shape != (x.shape[axis],):
        raise ValueError(f"{name} must have shape ({x.shape[axis]},) for axis {axis}; got {p.shape}")
    shape = [1] * x.ndim
    shape[axis] = x.shape[axis]
    return p.reshape(shape)


def _check_qargs(x, scale, zero_point, bits, signed, axis):
    bits = _check_bits(bits)
    s = _broadcast(np.asarray(scale, dtype=np.float64), x, axis, "scale")
    if not (np.isfinite(s).all() and (s > 0).all()):
        raise ValueError("scale must be finite and > 0")
    z = _broadcast(np.asarray(zero_point), x, axis, "zero_point")
    if z.dtype.kind not in "iu" and not np.array_equal(z, np.rint(z)):
        raise ValueError("zero_point must be an integer")
    z = z.astype(np.int64)
    qmin, qmax = qrange(bits, signed)
    if ((z < qmin) | (z > qmax)).any():
        raise ValueError(f"zero_point must lie in [{qmin}, {qmax}] for {bits} bits")
    if signed and (z != 0).any():
        raise ValueError("signed (symmetric) quantization needs zero_point 0")
    return bits, s, z, qmin, qmax


def quantize(x: np.ndarray, scale, zero_point, bits: int, signed: bool, axis: int | None = None) -> np.ndarray:
    """``q = clamp(rint(x / s) + z, q_min, q_max)`` (half to even); at 1 bit signed, ``q = sign(x)``, ``sign(0) = +1``.

    ``x / s`` is computed in float64. Returns int8 (signed) or uint8 (unsigned) integers.
    """
    x = _as_float64(x)
    bits, s, z, qmin, qmax = _check_qargs(x, scale, zero_point, bits, signed, axis)
    if signed and bits == 1:
        q = np.where(x >= 0, 1, -1)
    else:
        q = np.clip(np.rint(x / s) + z, qmin, qmax)
    return q.astype(np.int8 if signed else np.uint8)


def dequantize(q: np.ndarray, scale, zero_point, axis: int | None = None) -> np.ndarray:
    """``x = s * (q - z)`` in float64."""
    q = np.asarray(q)
    s = _broadcast(np.asarray(scale, dtype=np.float64), q, axis, "scale")
    z = _broadcast(np.asarray(zero_point, dtype=np.int64), q, axis, "zero_point")
    return s * (q.astype(np.int64) - z)


def fake_quantize(x: np.ndarray, scale, zero_point, bits: int, signed: bool, axis: int | None = None) -> np.ndarray:
    """``dequantize(quantize(x))``: the float values the quantized tensor stands for (float64)."""
    return dequantize(quantize(x, scale, zero_point, bits, signed, axis), scale, zero_point, axis)


def binarize(w: np.ndarray, axis: int | None = None) -> np.ndarray:
    """One-bit weights ``sign(w) * mean|w|`` (per tensor, or per channel along ``axis``), float64."""
    scale, zero_point = quant_params(w, 1, symmetric=True, axis=axis)
    return fake_quantize(w, scale, zero_point, 1, signed=True, axis=axis)


# -- fake-quantized forward and the error-vs-bits curve -------------------------------------------

def _check_layer(layer) -> None:
    if type(layer) not in (Conv2d, Linear):
        raise ValueError(f"quantization supports glass Conv2d and Linear layers; got {type(layer).__name__} "
                         f"({getattr(layer, 'label', '?')})")


def _float64_twin(layer: Conv2d | Linear, weight: np.ndarray | None = None) -> Conv2d | Linear:
    """A shallow copy of ``layer`` with its own float64 parameters (``weight`` replaced when given), so that
    running it leaves ``layer`` (and its parents: a deep copy would copy the whole model) untouched."""
    twin = copy.copy(layer)
    twin.params = {k: np.asarray(v, dtype=np.float64) for k, v in layer.params.items()}
    twin.grads = {k: np.zeros_like(v) for k, v in twin.params.items()}
    if weight is not None:
        twin.params["weight"] = np.asarray(weight, dtype=np.float64)
    return twin


def fake_quant_forward(layer: Conv2d | Linear, x: np.ndarray, bits: int, calibration: np.ndarray | None = None
                       ) -> np.ndarray:
    """The layer's float64 forward with fake-quantized weights and input.

    Weights: per output channel (axis 0), symmetric (binarised at 1 bit). Input: per tensor, asymmetric,
    parameters from ``calibration`` (``x`` itself by default). The bias stays float. ``layer`` is not modified.
    """
    _check_layer(layer)
    bits = _check_bits(bits)
    w = layer.params["weight"]
    ws, wz = quant_params(w, bits, symmetric=True, axis=0)
    xs, xz = quant_params(x if calibration is None else calibration, bits, symmetric=False)
    qlayer = _float64_twin(layer, fake_quantize(w, ws, wz, bits, signed=True, axis=0))
    return qlayer.forward(fake_quantize(x, xs, xz, bits, signed=False))


def error_vs_bits(layer: Conv2d | Linear, x: np.ndarray, bits=range(1, 9)) -> dict[int, float]:
    """``{b: max|y_b - y| / max|y|}``: normwise relative error of the fake-quantized forward at ``b`` bits
    against the float64 forward -- the tutorials' error-against-bits curve."""
    _check_layer(layer)
    ref = _float64_twin(layer).forward(np.asarray(x, dtype=np.float64))
    denom = float(np.abs(ref).max()) or 1.0
    return {int(b): float(np.abs(fake_quant_forward(layer, x, b) - ref).max() / denom) for b in bits}


# -- fixed-point requantization (gemmlowp / TFLite reference) --------------------------------------

def quantize_multiplier(m: float) -> tuple[int, int]:
    """A positive real multiplier as ``(M0, shift)`` with ``m ~ M0 * 2^(shift - 31)``, ``M0`` in ``[2^30, 2^31)``.

    ``m = f * 2^shift`` with ``f`` in ``[0.5, 1)`` (``math.frexp``), ``M0 = round(f * 2^31)``, ties away from zero
    (``std::round``, as TFLite); ``f * 2^31 + 0.5`` is exact in a double below 2^31. If that rounds up to
    ``2^31``, ``M0 = 2^30`` and ``shift += 1`` (TFLite's QuantizeMultiplier).
    """
    m = float(m)
    if not (math.isfinite(m) and m > 0):
        raise ValueError(f"a requantization multiplier must be finite and > 0; got {m}")
    f, shift = math.frexp(m)
    m0 = math.floor(f * 2 ** 31 + 0.5)
    if m0 == 2 ** 31:
        m0, shift = 2 ** 30, shift + 1
    if not -31 <= shift <= 30:
        raise ValueError(f"requantization multiplier {m:g} is out of the fixed-point range (2^-31 .. 2^30)")
    return int(m0), int(shift)


def multiply_by_quantized_multiplier(acc: np.ndarray, m0, shift) -> np.ndarray:
    """gemmlowp's ``RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(acc * 2^left, M0), right)``, in int64.

    ``left = max(shift, 0)``, ``right = max(-shift, 0)``; ``m0`` and ``shift`` broadcast against ``acc``
    (per output channel on the last axis). The module docstring states the rounding of each step.
    """
    a = np.asarray(acc, dtype=np.int64)
    m0 = np.asarray(m0, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    a = a << np.maximum(shift, 0)
    if ((a < INT32_MIN) | (a > INT32_MAX)).any():
        raise ValueError("requantization: the accumulator shifted left by the multiplier's exponent overflows int32")
    # SaturatingRoundingDoublingHighMul: M0 >= 2^30 > 0, so gemmlowp's one saturating case (both INT32_MIN)
    # cannot occur. The nudge, then division truncating toward zero, exactly as the C code.
    ab = a * m0                                                    # |ab| < 2^62: exact in int64
    t = ab + np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    high = np.where(t >= 0, t >> 31, -((-t) >> 31))              # C's truncating division by 2^31
    # RoundingDivideByPOT: remainder against a threshold, ties away from zero.
    right = np.maximum(-shift, 0)
    mask = (np.int64(1) << right) - 1
    remainder = high & mask
    threshold = (mask >> 1) + (high < 0)
    return (high >> right) + (remainder > threshold)


# -- integer-only layers ---------------------------------------------------------------------------

class _Int8Layer:
    """Shared part of :class:`Int8Linear` and :class:`Int8Conv2d`: the quantized parameters and the
    requantization. Built by ``from_float``; subclasses give ``_gemm(Q_x) -> int64 accumulator``."""

    def __init__(self, layer, calibration: np.ndarray):
        _check_layer(layer)
        calibration = _as_float64(calibration, "calibration input")
        w = np.asarray(layer.params["weight"], dtype=np.float64)
        o = w.shape[0]
        # (O, ...) int8, symmetric per output channel
        self.weight_scale, _ = quant_params(w, 8, symmetric=True, axis=0)
        self.weight_q = quantize(w, self.weight_scale, np.zeros(o, np.int64), 8, signed=True, axis=0)
        self.input_scale, self.input_zero_point = (float(v) if i == 0 else int(v) for i, v in
                                                   enumerate(quant_params(calibration, 8, symmetric=False)))
        y = _float64_twin(layer).forward(calibration)
        self.output_scale, self.output_zero_point = (float(v) if i == 0 else int(v) for i, v in
                                                     enumerate(quant_params(y, 8, symmetric=False)))
        acc_scale = self.input_scale * self.weight_scale                  # (O,) s_x * s_w[o]
        if "bias" in layer.params:
            qb = np.rint(np.asarray(layer.params["bias"], dtype=np.float64) / acc_scale)
            if (np.abs(qb) > INT32_MAX).any():
                raise ValueError(f"{layer.label}: the bias does not fit int32 at scale s_x * s_w")
            self.bias_q = qb.astype(np.int32)
        else:
            self.bias_q = np.zeros(o, dtype=np.int32)
        # Static bound: |Q_x| <= 255, |q_w| <= 127, so K * 255 * 127 + max|q_b| bounds every int32 partial sum.
        k = int(np.prod(w.shape[1:]))
        if k * 255 * 127 + int(np.abs(self.bias_q.astype(np.int64)).max()) > INT32_MAX:
            raise ValueError(f"{layer.label}: {k} products per output can overflow the int32 accumulator")
        pairs = [quantize_multiplier(m) for m in acc_scale / self.output_scale]
        self.multiplier = np.array([p[0] for p in pairs], dtype=np.int64)  # (O,) M0
        self.shift = np.array([p[1] for p in pairs], dtype=np.int64)       # (O,)

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """Float input -> uint8 with the calibrated ``(s_x, z_x)``."""
        return quantize(x, self.input_scale, self.input_zero_point, 8, signed=False)

    def dequantize_output(self, q: np.ndarray) -> np.ndarray:
        """uint8 output -> float64 ``s_y * (q - z_y)``."""
        return dequantize(q, self.output_scale, self.output_zero_point)

    def _check_qinput(self, qx: np.ndarray) -> np.ndarray:
        qx = np.asarray(qx)
        if qx.dtype != np.uint8:
            raise ValueError(f"the integer forward takes a uint8 input (quantize_input gives one); got {qx.dtype}")
        return qx.astype(np.int64) - self.input_zero_point              # Q_x = q_x - z_x

    def _requantize(self, acc: np.ndarray) -> np.ndarray:
        """int32 accumulator (..., O) -> uint8 output."""
        q = self.output_zero_point + multiply_by_quantized_multiplier(acc, self.multiplier, self.shift)
        return np.clip(q, 0, 255).astype(np.uint8)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Float input -> quantize -> integer forward -> dequantized float64 output."""
        return self.dequantize_output(self.forward_int(self.quantize_input(x)))


class Int8Linear(_Int8Layer):
    """Integer-only ``Linear``: uint8 (*, in) -> uint8 (*, out). See the module docstring for the arithmetic."""

    def __init__(self, layer: Linear, calibration: np.ndarray):
        super().__init__(layer, calibration)
        self.in_features, self.out_features = layer.in_features, layer.out_features

    def accumulate(self, qx: np.ndarray) -> np.ndarray:
        """uint8 (*, in) -> int32 accumulator (*, out): ``sum_k (q_x - z_x) q_w[o, k] + q_b[o]``."""
        xz = self._check_qinput(qx)
        if xz.ndim < 1 or xz.shape[-1] != self.in_features:
            raise ValueError(f"Int8Linear: expected input of shape (*, {self.in_features}), got {xz.shape}")
        acc = xz.reshape(-1, self.in_features) @ self.weight_q.astype(np.int64).T + self.bias_q   # (M, out) int64
        return acc.astype(np.int32).reshape(*xz.shape[:-1], self.out_features)  # fits: bounded in __init__

    def forward_int(self, qx: np.ndarray) -> np.ndarray:
        """uint8 (*, in) -> uint8 (*, out)."""
        return self._requantize(self.accumulate(qx))


class Int8Conv2d(_Int8Layer):
    """Integer-only ``Conv2d`` (zero padding, stride, dilation, groups): uint8 (N, C, H, W) -> uint8
    (N, O, Ho, Wo). The accumulator is an im2col GEMM (``convolab.glass.im2col``) in int64."""

    def __init__(self, layer: Conv2d, calibration: np.ndarray):
        super().__init__(layer, calibration)
        self.in_channels, self.out_channels, self.groups = layer.in_channels, layer.out_channels, layer.groups
        self.kernel_size, self.stride, self.dilation = layer.kernel_size, layer.stride, layer.dilation
        self._pad, self._extra = layer._pad, layer._extra
        self._output_size = layer.output_size

    def accumulate(self, qx: np.ndarray) -> np.ndarray:
        """uint8 (N, C, H, W) -> int32 accumulator (N, O, Ho, Wo)."""
        xz = self._check_qinput(qx)
        if xz.ndim != 4 or xz.shape[1] != self.in_channels:
            raise ValueError(f"Int8Conv2d: expected input of shape (N, {self.in_channels}, H, W), got {xz.shape}")
        n, c, h, w = xz.shape
        ho, wo = self._output_size(h, w)
        if ho < 1 or wo < 1:
            raise ValueError(f"Int8Conv2d: input of shape {xz.shape} is smaller than the kernel's reach")
        (kh, kw), g, o = self.kernel_size, self.groups, self.out_channels
        m, cg, og = n * ho * wo, c // g, o // g
        xp = pad_nhwc(xz, self._pad, self._extra)              # (N, Hp, Wp, C); padding Q_x = 0 is q_x = z_x
        view = patches(xp, self.kernel_size, self.stride, self.dilation, (ho, wo))   # (N, Ho, Wo, kh, kw, C)
        wq = self.weight_q.astype(np.int64)                                          # (O, C/g, kh, kw)
        cols = view.reshape(n, ho, wo, kh, kw, g, cg).transpose(5, 0, 1, 2, 3, 4, 6).reshape(g, m, kh * kw * cg)
        wmat = wq.reshape(g, og, cg, kh, kw).transpose(0, 3, 4, 2, 1).reshape(g, kh * kw * cg, og)
        acc = (cols @ wmat).transpose(1, 0, 2).reshape(m, o) + self.bias_q            # (M, O) int64
        return acc.astype(np.int32).reshape(n, ho, wo, o).transpose(0, 3, 1, 2)       # fits: bounded in __init__

    def forward_int(self, qx: np.ndarray) -> np.ndarray:
        """uint8 (N, C, H, W) -> uint8 (N, O, Ho, Wo)."""
        acc = self.accumulate(qx).transpose(0, 2, 3, 1)                              # (N, Ho, Wo, O)
        return np.ascontiguousarray(self._requantize(acc).transpose(0, 3, 1, 2))


def int8_layer(layer: Conv2d | Linear, calibration: np.ndarray) -> Int8Conv2d | Int8Linear:
    """The integer-only version of a glass ``Conv2d`` or ``Linear``, calibrated on ``calibration`` (the input
    range gives ``(s_x, z_x)``, the float layer's output on it ``(s_y, z_y)``). Other layers: ValueError."""
    _check_layer(layer)
    return Int8Conv2d(layer, calibration) if isinstance(layer, Conv2d) else Int8Linear(layer, calibration)
