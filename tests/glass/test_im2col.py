"""im2col's patch view and col2im: the gather read off directly, and col2im as its exact adjoint."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from convolab.glass.im2col import col2im, conv_output_size, pad_nhwc, patches


@st.composite
def geometries(draw):
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    d = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    p = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    size = tuple(draw(st.integers(max(1, dd * (kk - 1) + 1 - 2 * pp), 8)) for kk, dd, pp in zip(k, d, p))
    return k, s, d, p, (draw(st.integers(1, 2)), draw(st.integers(1, 3)), *size)


@settings(max_examples=50, deadline=None, derandomize=True)
@given(geometries())
def test_patch_view_is_the_window_under_each_output_pixel(geometry):
    k, s, d, p, shape = geometry
    x = np.random.default_rng(0).standard_normal(shape)
    out = tuple(conv_output_size(n, kk, ss, pp, dd) for n, kk, ss, pp, dd in zip(shape[2:], k, s, p, d))
    xp = pad_nhwc(x, p)
    view = patches(xp, k, s, d, out)
    assert view.shape == (shape[0], *out, *k, shape[1])
    padded = np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])))
    for u in range(out[0]):
        for v in range(out[1]):
            window = padded[:, :, u * s[0]:u * s[0] + d[0] * (k[0] - 1) + 1:d[0],
                            v * s[1]:v * s[1] + d[1] * (k[1] - 1) + 1:d[1]]       # (N, C, kh, kw)
            np.testing.assert_array_equal(view[:, u, v], window.transpose(0, 2, 3, 1))


@settings(max_examples=50, deadline=None, derandomize=True)
@given(geometries())
def test_col2im_is_the_adjoint_of_the_gather(geometry):
    # <patches(x), D> == <x, col2im(D)> for all x, D: col2im is exactly the transpose of im2col.
    k, s, d, p, shape = geometry
    rng = np.random.default_rng(1)
    out = tuple(conv_output_size(n, kk, ss, pp, dd) for n, kk, ss, pp, dd in zip(shape[2:], k, s, p, d))
    xp = pad_nhwc(rng.standard_normal(shape), p)
    dpatches = rng.standard_normal((*k, shape[0], *out, shape[1]))              # (kh, kw, N, Ho, Wo, C)
    lhs = np.sum(patches(xp, k, s, d, out) * dpatches.transpose(2, 3, 4, 0, 1, 5))
    rhs = np.sum(xp * col2im(dpatches, xp.shape, s, d))
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs))


def test_output_size_follows_torch():
    assert conv_output_size(28, 3, 1, 1) == 28
    assert conv_output_size(28, 2, 2, 0) == 14
    assert conv_output_size(5, 2, 2, 0) == 2 and conv_output_size(5, 2, 2, 0, ceil_mode=True) == 3
    assert conv_output_size(6, 3, 3, 1, ceil_mode=True) == 3  # the last window may start in the left padding...
    assert conv_output_size(3, 2, 2, 1, ceil_mode=True) == 2  # ...but not in the right padding alone
    assert conv_output_size(2, 3, 1, 0) == 0
