"""Uniform quantization (convolab.glass.quant) against hand-computed values, the formulas written out
again here, and a float64 / Python-int simulation of the integer forward (bit for bit)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from convolab import glass
from convolab.glass import quant

# -- quantizer math ---------------------------------------------------------------------------------

def test_hand_computed_params_and_rounding():
    scale, zp = quant.quant_params(np.array([-1.0, 0.0, 3.0]), 8, symmetric=False)
    assert scale == pytest.approx(4 / 255, rel=1e-15) and zp == 64                # round(255 / 4 = 63.75)
    scale, zp = quant.quant_params(np.array([-1.0, 0.0, 3.0]), 8, symmetric=True)
    assert scale == pytest.approx(3 / 127, rel=1e-15) and zp == 0
    # s = 0.25, z = 10, 4 bits unsigned: rint(-20) + 10 -> clamp 0; rint(2.5) = 2 (half to even); rint(3.5) = 4;
    # clamp 15 (binary fractions, so that the ties are exact)
    q = quant.quantize(np.array([-5.0, 0.0, 0.625, 0.875, 100.0]), 0.25, 10, 4, signed=False)
    assert q.dtype == np.uint8 and q.tolist() == [0, 10, 12, 14, 15]
    q = quant.quantize(np.array([-9.0, -0.25, 0.25, 9.0]), 0.5, 0, 3, signed=True)  # range -3..3 (narrow)
    assert q.dtype == np.int8 and q.tolist() == [-3, 0, 0, 3]
    assert quant.qrange(8, True) == (-127, 127) and quant.qrange(8, False) == (0, 255)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits", range(2, 9))
def test_round_trip_error_at_most_half_a_step(bits, symmetric):
    x = np.random.default_rng(bits).standard_normal(500) * 3 + 0.5
    scale, zp = quant.quant_params(x, bits, symmetric)
    if symmetric:
        assert zp == 0
    xq = quant.fake_quantize(x, scale, zp, bits, signed=symmetric)
    assert np.abs(xq - x).max() <= scale / 2 * (1 + 1e-12)
    qmin, qmax = quant.qrange(bits, symmetric)
    # outside the representable range [s (q_min - z), s (q_max - z)]: clamped to the ends
    outside = np.array([scale * (qmin - zp - 10), scale * (qmax - zp + 10)])
    q = quant.quantize(outside, scale, zp, bits, signed=symmetric)
    assert q.tolist() == [qmin, qmax]


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits", [1, 3, 8])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_per_channel_equals_per_tensor_channel_by_channel(axis, bits, symmetric):
    if bits == 1 and not symmetric:
        bits = 2
    x = np.random.default_rng(0).standard_normal((4, 5, 3)) * np.arange(1, 6)[None, :, None]
    scale, zp = quant.quant_params(x, bits, symmetric, axis=axis)
    assert scale.shape == zp.shape == (x.shape[axis],)
    q = quant.quantize(x, scale, zp, bits, signed=symmetric, axis=axis)
    for ch in range(x.shape[axis]):
        xc = np.take(x, ch, axis=axis)
        s, z = quant.quant_params(xc, bits, symmetric)
        # max and min are exact; the mean of 1 bit may differ in the last bit with the summation order
        assert s == pytest.approx(scale[ch], rel=1e-14 if bits == 1 else 0) and z == zp[ch]
        np.testing.assert_array_equal(np.take(q, ch, axis=axis), quant.quantize(xc, s, z, bits, signed=symmetric))


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_fake_quantize_matches_torch(bits, symmetric):
    x = np.random.default_rng(bits).standard_normal((6, 50)).astype(np.float32) * np.arange(1, 7)[:, None]
    qmin, qmax = quant.qrange(bits, symmetric)
    xt = torch.tensor(x)
    scale, zp = quant.quant_params(x, bits, symmetric)
    want = torch.fake_quantize_per_tensor_affine(xt, float(scale), int(zp), qmin, qmax).numpy()
    np.testing.assert_allclose(quant.fake_quantize(x, scale, zp, bits, signed=symmetric), want, rtol=0, atol=1e-5)
    scale, zp = quant.quant_params(x, bits, symmetric, axis=0)
    want = torch.fake_quantize_per_channel_affine(xt, torch.tensor(scale, dtype=torch.float32),
                                                  torch.tensor(zp, dtype=torch.int32), 0, qmin, qmax).numpy()
    got = quant.fake_quantize(x, scale, zp, bits, signed=symmetric, axis=0)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(x).max())  # a wrong rounding is a whole step


def test_one_bit_is_sign_times_mean_abs():
    w = np.random.default_rng(1).standard_normal((6, 3, 3, 3))
    want = np.sign(w) * np.abs(w).reshape(6, -1).mean(axis=1)[:, None, None, None]
    np.testing.assert_allclose(quant.binarize(w, axis=0), want, rtol=1e-15, atol=0)
    np.testing.assert_allclose(quant.binarize(w), np.sign(w) * np.abs(w).mean(), rtol=1e-15, atol=0)
    q = quant.quantize(np.array([-0.1, 0.0, 2.0]), 1.0, 0, 1, signed=True)
    assert q.tolist() == [-1, 1, 1]                                                   # sign(0) = +1


def test_zero_range_gets_scale_one():
    for symmetric in (True, False):
        scale, zp = quant.quant_params(np.zeros(7), 8, symmetric)
        assert scale == 1.0 and zp == 0
        assert np.array_equal(quant.fake_quantize(np.zeros(7), scale, zp, 8, signed=symmetric), np.zeros(7))
    scale, zp = quant.quant_params(np.zeros((2, 3)), 4, True, axis=0)                 # per channel, all zero
    assert scale.tolist() == [1.0, 1.0]
    # a constant c != 0: the range widened to [0, c] is not empty, and c is represented exactly
    scale, zp = quant.quant_params(np.full(5, 3.0), 8, symmetric=False)
    assert zp == 0 and scale == pytest.approx(3 / 255)
    assert quant.fake_quantize(np.full(5, 3.0), scale, zp, 8, signed=False) == pytest.approx(np.full(5, 3.0))


@pytest.mark.parametrize("call, match", [
    (lambda: quant.quant_params(np.ones(3), 0, True), "bits must be an integer from 1 to 8; got 0"),
    (lambda: quant.quant_params(np.ones(3), 9, False), "bits must be an integer from 1 to 8; got 9"),
    (lambda: quant.quantize(np.ones(3), 0.1, 0, 2.5, False), "bits must be an integer from 1 to 8; got 2.5"),
    (lambda: quant.quantize(np.ones(3), 0.0, 0, 8, False), "scale must be finite and > 0"),
    (lambda: quant.quantize(np.ones(3), 0.1, 3, 8, True), "signed .* needs zero_point 0"),
    (lambda: quant.quantize(np.ones(3), 0.1, 300, 8, False), r"zero_point must lie in \[0, 255\]"),
    (lambda: quant.quant_params(np.array([1.0, np.inf]), 8, False), "non-finite"),
    (lambda: quant.quant_params(np.ones((2, 3)), 8, False, axis=2), "axis 2 is out of range"),
    (lambda: quant.quantize(np.ones((2, 3)), np.ones(2), np.zeros(2), 8, False, axis=1), r"shape \(3,\)"),
    (lambda: quant.int8_layer(glass.ReLU(), np.ones((1, 3))), "supports glass Conv2d and Linear layers; got ReLU"),
    (lambda: quant.quantize_multiplier(0.0), "must be finite and > 0"),
])
def test_bad_input_one_line(call, match):
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


# -- fake-quantized forward: the error-against-bits curve ---------------------------------------------

def _random_layers(seed: int):
    glass.manual_seed(seed)
    rng = np.random.default_rng(seed)
    return [(glass.Conv2d(3, 8, 3, padding=1), rng.standard_normal((4, 3, 10, 10))),
            (glass.Conv2d(4, 6, 3, stride=2, groups=2, bias=False), np.abs(rng.standard_normal((2, 4, 9, 9)))),
            (glass.Linear(40, 10), rng.standard_normal((16, 40)))]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_error_shrinks_as_bits_grow(seed):
    for layer, x in _random_layers(seed):
        before = {k: v.copy() for k, v in layer.params.items()}
        errors = quant.error_vs_bits(layer, x, bits=range(1, 9))
        curve = [errors[b] for b in range(2, 9)]
        # each extra bit halves the step; the error falls at least 25 % per bit over 2..8 (about 2x in practice)
        assert all(b < 0.75 * a for a, b in zip(curve, curve[1:])), curve
        assert errors[8] < 0.02 and errors[1] > errors[8], errors
        assert all(np.array_equal(layer.params[k], v) for k, v in before.items())    # layer left untouched


# -- integer forward: bit for bit against a float64 / Python-int simulation --------------------------

def _round_half_up(r: Fraction) -> int:
    return math.floor(r + Fraction(1, 2))


def _round_half_away(r: Fraction) -> int:
    return int(math.copysign(math.floor(abs(r) + Fraction(1, 2)), r))


def _c_div(a: int, b: int) -> int:
    """C's integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def _gemmlowp(acc: int, m0: int, shift: int) -> int:
    """MultiplyByQuantizedMultiplier transliterated from gemmlowp/TFLite's C++ with Python ints."""
    a = acc * (1 << max(shift, 0))
    ab = a * m0
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    high = _c_div(ab + nudge, 1 << 31)
    exponent = max(-shift, 0)
    mask = (1 << exponent) - 1
    remainder, threshold = high & mask, (mask >> 1) + (1 if high < 0 else 0)
    return (high >> exponent) + (1 if remainder > threshold else 0)


def _requant_by_definition(acc: int, m: float) -> int:
    """From the definitions: M = M0 2^(shift - 31), M0 in [2^30, 2^31) rounded half away; the high product
    rounded half up, then the division by 2^-shift rounded half away from zero."""
    exact = Fraction(m)
    shift = 0
    while exact * Fraction(2) ** (-shift) >= 1:
        shift += 1
    while exact * Fraction(2) ** (-shift) < Fraction(1, 2):
        shift -= 1
    m0 = _round_half_away(exact * Fraction(2) ** (31 - shift))
    if m0 == 2 ** 31:
        m0, shift = 2 ** 30, shift + 1
    a = acc * 2 ** max(shift, 0)
    high = _round_half_up(Fraction(a * m0, 2 ** 31))
    return _round_half_away(Fraction(high, 2 ** max(-shift, 0)))


def test_requantization_rounding_on_ties():
    # M0 = 2^30 makes a * M0 / 2^31 = a / 2: every odd accumulator is a tie
    for shift in range(-4, 3):
        acc = np.arange(-64, 65)
        got = quant.multiply_by_quantized_multiplier(acc, 2 ** 30, shift)
        want = [_gemmlowp(int(a), 2 ** 30, shift) for a in acc]
        assert got.tolist() == want
        assert want == [_requant_by_definition(int(a), 2.0 ** (shift - 1)) for a in acc]
    assert _gemmlowp(-1, 2 ** 30, 0) == 0 and _gemmlowp(1, 2 ** 30, 0) == 1             # -0.5 -> 0, 0.5 -> 1
    assert _gemmlowp(-3, 2 ** 30, -1) == -1 and _gemmlowp(-2, 2 ** 30, -1) == -1        # -0.5 -> -1 (away)


def test_quantize_multiplier_reconstructs():
    rng = np.random.default_rng(3)
    for m in np.concatenate([10.0 ** rng.uniform(-9, 2, 200), [0.5, 1.0, 1 - 2.0 ** -40]]):
        m0, shift = quant.quantize_multiplier(m)
        assert 2 ** 30 <= m0 < 2 ** 31
        assert abs(m0 * 2.0 ** (shift - 31) - m) <= m * 2.0 ** -31


def _conv_configs():
    rng = np.random.default_rng(2026)
    configs = []
    for i in range(28):
        g = [1, 1, 2, 3][i % 4]
        c, o = g * int(rng.integers(1, 4)), g * int(rng.integers(1, 4))
        k = int(rng.integers(1, 4))
        kw = dict(stride=int(rng.integers(1, 3)), dilation=int(rng.integers(1, 3)), groups=g,
                  bias=bool(i % 3), padding="same" if i % 7 == 6 else int(rng.integers(0, 2)))
        if kw["padding"] == "same":
            kw["stride"] = 1
        configs.append(("conv", (c, o, (k, int(rng.integers(1, 4)))), kw, (int(rng.integers(1, 3)), c, 7, 8)))
    for i in range(8):
        fin, fout = int(rng.integers(1, 30)), int(rng.integers(1, 12))
        configs.append(("linear", (fin, fout), dict(bias=i % 2 == 0), (int(rng.integers(1, 6)), fin)))
    return configs


def _reference_int8(layer, calib: np.ndarray, x: np.ndarray):
    """The integer forward simulated from its definitions: float64 arithmetic on integers (exact: every
    value stays far below 2^53), explicit loops over kernel offsets, Python ints for the requantization."""
    # input: per tensor, asymmetric uint8, range widened to contain 0
    lo, hi = min(calib.min(), 0.0), max(calib.max(), 0.0)
    s_x = (hi - lo) / 255 if hi > lo else 1.0
    z_x = min(max(round(-lo / s_x), 0), 255)
    qx = np.vectorize(lambda v: min(max(round(v / s_x) + z_x, 0), 255))(x).astype(np.float64)
    # weights: per output channel, symmetric narrow int8
    w = layer.params["weight"].astype(np.float64)
    o = w.shape[0]
    s_w = np.array([np.abs(w[j]).max() / 127 or 1.0 for j in range(o)])
    qw = np.stack([np.vectorize(lambda v, s=s_w[j]: min(max(round(v / s), -127), 127))(w[j]) for j in range(o)])
    qb = ([round(float(b) / (s_x * s_w[j])) for j, b in enumerate(layer.params["bias"])]
          if "bias" in layer.params else [0] * o)
    # output scale from the float layer's output on the calibration input (float64: the weights are cast to it)
    y = layer.forward(calib)
    ylo, yhi = min(y.min(), 0.0), max(y.max(), 0.0)
    s_y = (yhi - ylo) / 255 if yhi > ylo else 1.0
    z_y = min(max(round(-ylo / s_y), 0), 255)
    xz = qx - z_x                                                  # Q_x, float64 holding integers
    if isinstance(layer, glass.Linear):
        acc = xz.reshape(-1, layer.in_features) @ qw.T + np.array(qb, dtype=np.float64)   # (M, O)
        chan_axis = -1
    else:
        (kh, kw), (sh, sw), (dh, dw), g = layer.kernel_size, layer.stride, layer.dilation, layer.groups
        (ph, pw), (eh, ew) = layer._pad, layer._extra
        n, c, h, wd = x.shape
        xpad = np.zeros((n, c, h + 2 * ph + eh, wd + 2 * pw + ew))
        xpad[:, :, ph:ph + h, pw:pw + wd] = xz
        ho, wo = (xpad.shape[2] - dh * (kh - 1) - 1) // sh + 1, (xpad.shape[3] - dw * (kw - 1) - 1) // sw + 1
        acc = np.zeros((n, o, ho, wo))
        cg, og = c // g, o // g
        for oc in range(o):
            grp = oc // og
            for ci in range(cg):
                for i in range(kh):
                    for j in range(kw):
                        window = xpad[:, grp * cg + ci, i * dh:i * dh + sh * (ho - 1) + 1:sh,
                                      j * dw:j * dw + sw * (wo - 1) + 1:sw]
                        acc[:, oc] += qw[oc, ci, i, j] * window
            acc[:, oc] += qb[oc]
        chan_axis = 1
    assert np.abs(acc).max() < 2 ** 31
    ms = [s_x * s_w[j] / s_y for j in range(o)]
    chan = np.moveaxis(acc, chan_axis, -1)
    out = np.empty(chan.shape, dtype=np.int64)
    for idx in np.ndindex(chan.shape):
        out[idx] = min(max(z_y + _requant_by_definition(int(chan[idx]), ms[idx[-1]]), 0), 255)
    return qx, acc, np.moveaxis(out, -1, chan_axis), (s_y, z_y)


def test_int8_forward_matches_integer_simulation_bit_for_bit():
    configs = _conv_configs()
    assert len(configs) >= 30
    rng = np.random.default_rng(7)
    for idx, (kind, args, kwargs, shape) in enumerate(configs):
        glass.manual_seed(idx)
        layer = glass.Conv2d(*args, **kwargs) if kind == "conv" else glass.Linear(*args, **kwargs)
        calib = rng.standard_normal(shape) * rng.uniform(0.5, 3) + rng.uniform(-1, 1)
        if idx % 5 == 0:
            calib = np.maximum(calib, 0)                          # post-ReLU input: z_x = 0
        x = calib if idx % 2 else rng.standard_normal(shape) * 1.5   # odd: unseen inputs (clamping)
        qlayer = quant.int8_layer(layer, calib)
        qx_ref, acc_ref, qy_ref, (s_y, z_y) = _reference_int8(layer, calib, x)
        qx = qlayer.quantize_input(x)
        assert np.array_equal(qx, qx_ref), idx
        acc = qlayer.accumulate(qx)
        assert acc.dtype == np.int32 and np.array_equal(acc, acc_ref), idx
        qy = qlayer.forward_int(qx)
        assert qy.dtype == np.uint8 and np.array_equal(qy, qy_ref), (idx, kind, args, kwargs)
        assert qlayer.output_scale == s_y and qlayer.output_zero_point == z_y


def test_int8_forward_close_to_float():
    # stated bound: normwise relative error (max |y_int8 - y| / max |y|) below 3 % at 8 bits
    for seed in range(3):
        for layer, x in _random_layers(seed):
            want = layer.forward(x)                                                   # float64
            got = quant.int8_layer(layer, x).forward(x)
            assert np.abs(got - want).max() / np.abs(want).max() < 0.03


def test_int8_rejects_float_input_and_wrong_shape():
    glass.manual_seed(0)
    qlayer = quant.int8_layer(glass.Linear(4, 2), np.ones((3, 4)))
    with pytest.raises(ValueError, match="takes a uint8 input"):
        qlayer.forward_int(np.ones((3, 4)))
    with pytest.raises(ValueError, match=r"expected input of shape \(\*, 4\)"):
        qlayer.forward_int(np.ones((3, 5), dtype=np.uint8))


def test_zero_calibration_input_gives_zero_point_output():
    glass.manual_seed(0)
    layer = glass.Conv2d(2, 3, 3, bias=False)
    qlayer = quant.int8_layer(layer, np.zeros((1, 2, 5, 5)))
    assert qlayer.input_scale == 1.0 and qlayer.output_scale == 1.0
    assert np.array_equal(qlayer.forward(np.zeros((1, 2, 5, 5))), np.zeros((1, 3, 3, 3)))
