"""convolab.layers' poolings against torch's own ops and float64 loop references (the loops are reused by
tests/glass/test_pool_variants.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from convolab.glass.pool import fractional_boundaries, fractional_eval_samples
from convolab.layers import FractionalMaxPool2d, GlobalAvgPool2d, GlobalMaxPool2d, StochasticPool2d

# -- float64 loop references ---------------------------------------------------------------------------


def graham_bounds_loop(size: int, out: int, u: float) -> list[int]:
    """Graham's pseudo-random boundaries a_i = ceil(alpha (i + u)) - ceil(alpha u), alpha = size / out."""
    alpha = size / out
    return [math.ceil(alpha * (i + u)) - math.ceil(alpha * u) for i in range(out)] + [size]


def random_bounds_loop(size: int, out: int, keys) -> list[int]:
    """Increments: (out - size % out) of size // out, then size % out of size // out + 1, taken in key order."""
    q, r = divmod(size, out)
    steps = [q] * (out - r) + [q + 1] * r
    bounds = [0]
    for i in sorted(range(out), key=lambda i: (keys[i], i)):
        bounds.append(bounds[-1] + steps[i])
    return bounds


def torch_starts_loop(size: int, out: int, k: int, u: float, dtype=np.float64) -> list[int]:
    """nn.FractionalMaxPool2d's window starts, in ``dtype`` arithmetic like torch's kernel."""
    if out == 1:
        return [size - k]
    alpha = dtype(size - k) / dtype(out - 1)
    u = dtype(u)
    return [int((dtype(i) + u) * alpha) - int(u * alpha) for i in range(out - 1)] + [size - k]


def regions_loop(size, out, sample, kernel_size=None, sequence="pseudo_random", overlapping=False,
                 dtype=np.float64) -> list[range]:
    """The pooled index ranges along one axis for one plane's sample (u, or keys for the random sequence)."""
    if kernel_size is not None:
        return [range(s, s + kernel_size) for s in torch_starts_loop(size, out, kernel_size, sample, dtype)]
    a = graham_bounds_loop(size, out, sample) if sequence == "pseudo_random" else random_bounds_loop(size, out, sample)
    return [range(a[i], min(a[i + 1] + (1 if overlapping else 0), size)) for i in range(out)]


def fractional_loop(x: np.ndarray, dy: np.ndarray, samples: np.ndarray, out, **kw):
    """Fractional max pooling and its gradient by loops; ``samples`` (N or 1, C or 1, 2[, L]), [..., 0] is W."""
    n, c, h, w = x.shape
    y, dx = np.zeros((n, c, *out)), np.zeros_like(x)
    kernel = kw.pop("kernel_size", None) or (None, None)
    for b in range(n):
        for ch in range(c):
            s = samples[b if samples.shape[0] > 1 else 0, ch if samples.shape[1] > 1 else 0]
            rows = regions_loop(h, out[0], s[1], kernel[0], **kw)
            cols = regions_loop(w, out[1], s[0], kernel[1], **kw)
            for i, rr in enumerate(rows):
                for j, cc in enumerate(cols):
                    best = None
                    for r in rr:           # row by row: the first maximum wins ties
                        for q in cc:
                            if best is None or x[b, ch, r, q] > x[b, ch, best[0], best[1]]:
                                best = (r, q)
                    y[b, ch, i, j] = x[b, ch, best[0], best[1]]
                    dx[b, ch, best[0], best[1]] += dy[b, ch, i, j]
    return y, dx


def stochastic_loop(x: np.ndarray, dy: np.ndarray, kernel, stride, r: np.ndarray | None):
    """Stochastic pooling by loops: sampling by inverse CDF with uniforms ``r`` (training) or, with ``r=None``,
    the probability-weighted average (evaluation); returns (y, dx, sampled offsets)."""
    (kh, kw), (sh, sw) = kernel, stride
    n, c, h, w = x.shape
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    y, dx, index = np.zeros((n, c, ho, wo)), np.zeros_like(x), np.zeros((n, c, ho, wo), dtype=np.int64)
    for b in range(n):
        for ch in range(c):
            for u in range(ho):
                for v in range(wo):
                    pos = [(u * sh + i, v * sw + j) for i in range(kh) for j in range(kw)]
                    a = [x[b, ch, p, q] for p, q in pos]
                    wts = [max(t, 0.0) for t in a]
                    total = 0.0
                    for t in wts:
                        total += t
                    if r is not None:
                        cum, pick = 0.0, len(a) - 1
                        for t, wt in enumerate(wts):
                            cum += wt
                            if cum > r[b, ch, u, v] * total:
                                pick = t
                                break
                        index[b, ch, u, v] = pick
                        if total > 0:
                            y[b, ch, u, v] = a[pick]
                            dx[b, ch, pos[pick][0], pos[pick][1]] += dy[b, ch, u, v]
                    elif total > 0:
                        out = sum(t * t for t in wts) / total
                        y[b, ch, u, v] = out
                        for (p, q), t in zip(pos, a):
                            if t > 0:
                                dx[b, ch, p, q] += dy[b, ch, u, v] * (2 * t - out) / total
    return y, dx, index


def rel(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = np.abs(want).max()
    return float(np.abs(got - want).max() / scale) if scale > 0 else float(np.abs(got - want).max())


def distinct(shape, seed) -> np.ndarray:
    """Distinct values in [-0.5, 0.5): no ties, so "the" maximum is unambiguous."""
    return np.random.default_rng(seed).permutation(int(np.prod(shape))).reshape(shape) / np.prod(shape) - 0.5


def run(layer, x: np.ndarray, dy: np.ndarray, dtype=torch.float64):
    xt = torch.tensor(x, dtype=dtype, requires_grad=True)
    y = layer(xt)
    y.backward(torch.tensor(dy, dtype=dtype))
    return y.detach().numpy(), xt.grad.numpy()


# -- global pooling -------------------------------------------------------------------------------------


@pytest.mark.parametrize("flatten", [False, True])
def test_global_pools_are_mean_and_max(flatten):
    x = distinct((3, 4, 5, 6), 0)
    dy = np.random.default_rng(1).standard_normal((3, 4) if flatten else (3, 4, 1, 1))
    y, dx = run(GlobalAvgPool2d(flatten), x, dy)
    assert rel(y.reshape(3, 4), x.mean(axis=(2, 3))) < 1e-15
    assert rel(dx, np.broadcast_to(dy.reshape(3, 4, 1, 1) / 30, x.shape)) < 1e-15
    y, dx = run(GlobalMaxPool2d(flatten), x, dy)
    assert rel(y.reshape(3, 4), x.max(axis=(2, 3))) == 0
    want = (x == x.max(axis=(2, 3), keepdims=True)) * dy.reshape(3, 4, 1, 1)
    assert rel(dx, want) == 0
    assert y.shape == dy.shape


# -- fractional max pooling ----------------------------------------------------------------------------


@st.composite
def torch_fmp_configs(draw):
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    size = (draw(st.integers(k[0], 12)), draw(st.integers(k[1], 12)))
    out = (draw(st.integers(1, size[0] - k[0] + 1)), draw(st.integers(1, size[1] - k[1] + 1)))
    return k, out, (draw(st.integers(1, 3)), draw(st.integers(1, 3)), *size)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@settings(max_examples=30, deadline=None, derandomize=True)
@given(torch_fmp_configs())
def test_fixed_windows_are_torchs_fractional_max_pool(dtype, config):
    """kernel_size=k: the same windows as nn.FractionalMaxPool2d for the same _random_samples."""
    k, out, shape = config
    x = distinct(shape, 2)
    samples = torch.rand(shape[0], shape[1], 2, dtype=dtype, generator=torch.Generator().manual_seed(3))
    dy = np.random.default_rng(4).standard_normal((*shape[:2], *out))
    ours = FractionalMaxPool2d(output_size=out, kernel_size=k)
    ours.samples = samples
    ref = torch.nn.FractionalMaxPool2d(k, output_size=out, _random_samples=samples)
    y, dx = run(ours, x, dy, dtype)
    y_ref, dx_ref = run(ref, x, dy, dtype)
    assert rel(y, y_ref) == 0 and rel(dx, dx_ref) == 0, (k, out, shape)


@st.composite
def graham_configs(draw):
    size = (draw(st.integers(2, 13)), draw(st.integers(2, 13)))
    out = (draw(st.integers(1, size[0])), draw(st.integers(1, size[1])))
    sequence = draw(st.sampled_from(["pseudo_random", "random"]))
    return out, sequence, draw(st.booleans()), (draw(st.integers(1, 2)), draw(st.integers(1, 3)), *size)


def graham_samples(shape, out, sequence, seed) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((*shape[:2], 2) if sequence == "pseudo_random" else (*shape[:2], 2, max(out)))


@settings(max_examples=30, deadline=None, derandomize=True)
@given(graham_configs())
def test_graham_regions_match_the_loop_reference(config):
    out, sequence, overlapping, shape = config
    x, dy = distinct(shape, 5), np.random.default_rng(6).standard_normal((*shape[:2], *out))
    samples = graham_samples(shape, out, sequence, 7)
    layer = FractionalMaxPool2d(output_size=out, sequence=sequence, overlapping=overlapping)
    layer.samples = torch.tensor(samples)
    y, dx = run(layer, x, dy)
    y_ref, dx_ref = fractional_loop(x, dy, samples, out, sequence=sequence, overlapping=overlapping)
    assert rel(y, y_ref) == 0 and rel(dx, dx_ref) == 0, config


@pytest.mark.parametrize("size, out", [(10, 7), (25, 18), (9, 9), (12, 5), (32, 22)])
@pytest.mark.parametrize("sequence", ["pseudo_random", "random"])
def test_graham_increments_are_floor_and_ceil_of_alpha(size, out, sequence):
    """a_0 = 0, a_n = size, every increment floor(alpha) or ceil(alpha), (size mod out) of them ceil(alpha):
    the loop reference and glass' vectorised ``fractional_boundaries`` alike, and both agree."""
    rng = np.random.default_rng(size * out)
    samples = rng.random(200) if sequence == "pseudo_random" else rng.random((200, out))
    vectorised = fractional_boundaries(size, out, sequence, samples)
    for sample, fast in zip(samples, vectorised):
        bounds = (graham_bounds_loop if sequence == "pseudo_random" else random_bounds_loop)(size, out, sample)
        np.testing.assert_array_equal(fast, bounds)
        steps = np.diff(bounds)
        assert bounds[0] == 0 and bounds[-1] == size
        assert set(steps) <= {size // out, -(-size // out)}
        assert (steps == size // out + 1).sum() == size % out


def test_graham_pseudo_random_sequence_by_hand():
    # alpha = 10/7; u = 0: ceil(10 i / 7) for i = 0..7
    assert graham_bounds_loop(10, 7, 0.0) == [0, 2, 3, 5, 6, 8, 9, 10]
    layer = FractionalMaxPool2d(output_size=(1, 7))
    layer.samples = torch.zeros(1, 1, 2, dtype=torch.float64)
    x = torch.arange(10.0, dtype=torch.float64).reshape(1, 1, 1, 10)
    assert layer(x).flatten().tolist() == [1, 2, 4, 5, 7, 8, 9]  # the last element of each region [0,1] [2] ...
    layer.overlapping = True  # [0,2] [2,3] [3,5] ... [9]
    assert layer(x).flatten().tolist() == [2, 3, 5, 6, 8, 9, 9]


def test_eval_is_deterministic_and_uses_the_seeded_sample():
    x = distinct((2, 3, 11, 9), 8)
    layer = FractionalMaxPool2d(output_ratio=0.7, seed=5).eval()
    y1, y2 = layer(torch.tensor(x)), layer(torch.tensor(x))
    assert torch.equal(y1, y2)
    u = np.array(fractional_eval_samples(5, 2)).reshape(1, 1, 2)
    y_ref, _ = fractional_loop(x, np.zeros((2, 3, 7, 6)), u, (7, 6))
    assert rel(y1.numpy(), y_ref) == 0
    other = FractionalMaxPool2d(output_ratio=0.7, seed=6).eval()(torch.tensor(x))
    assert not torch.equal(y1, other)  # the seed matters


def test_training_draws_a_sequence_per_plane_from_torchs_generator():
    x = torch.tensor(distinct((4, 8, 12, 12), 9))
    layer = FractionalMaxPool2d(output_size=8)
    torch.manual_seed(0)
    a = layer(x)
    torch.manual_seed(0)
    assert torch.equal(a, layer(x))  # reproducible from the global seed
    assert not torch.equal(a, layer(x))  # and fresh on each call
    same = torch.tensor(distinct((1, 1, 12, 12), 10)).expand(4, 8, 12, 12)
    planes = layer(same).reshape(32, -1)
    assert len({tuple(p.tolist()) for p in planes}) > 1  # planes pool over different regions


# -- stochastic pooling ---------------------------------------------------------------------------------


@st.composite
def stochastic_configs(draw):
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(k[0], 9)), draw(st.integers(k[1], 9)))
    return k, s, shape


def relu_input(shape, seed) -> np.ndarray:
    """A ReLU's output: about half exact zeros (whole windows of them too), the rest positive."""
    x = np.maximum(np.random.default_rng(seed).standard_normal(shape), 0)
    x[..., :2, :2] = 0
    return x


@settings(max_examples=30, deadline=None, derandomize=True)
@given(stochastic_configs(), st.booleans())
def test_stochastic_matches_the_loop_reference(config, training):
    k, s, shape = config
    x = relu_input(shape, 11)
    layer = StochasticPool2d(k, s).train(training)
    ho, wo = (shape[2] - k[0]) // s[0] + 1, (shape[3] - k[1]) // s[1] + 1
    r = np.random.default_rng(12).random((*shape[:2], ho, wo)) if training else None
    layer.samples = None if r is None else torch.tensor(r)
    dy = np.random.default_rng(13).standard_normal((*shape[:2], ho, wo))
    y, dx = run(layer, x, dy)
    y_ref, dx_ref, index = stochastic_loop(x, dy, k, s, r)
    assert rel(y, y_ref) <= 1e-14 and rel(dx, dx_ref) <= 1e-14, config
    if training:
        np.testing.assert_array_equal(layer.last_index.numpy(), index)


def test_stochastic_samples_with_probability_proportional_to_activation():
    """4000 draws from the window [1, 2, 3, 4]: each offset picked about p = a / 10 of the time (5 sigma)."""
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64).expand(4000, 1, 2, 2)
    layer = StochasticPool2d(2)
    torch.manual_seed(0)
    y = layer(x).flatten()
    p = np.array([0.1, 0.2, 0.3, 0.4])
    counts = np.array([(y == v).sum().item() for v in (1.0, 2.0, 3.0, 4.0)])
    assert counts.sum() == 4000
    assert np.all(np.abs(counts - 4000 * p) <= 5 * np.sqrt(4000 * p * (1 - p))), counts


def test_stochastic_edge_cases_by_hand():
    x = torch.tensor([[[[0.0, 0.0, 1.0, 3.0], [0.0, 0.0, 0.0, 0.0]]]], dtype=torch.float64, requires_grad=True)
    layer = StochasticPool2d(2).eval()
    y = layer(x)
    assert y.flatten().tolist() == [0.0, (1 + 9) / 4]  # all-zero window: 0; (1^2 + 3^2) / (1 + 3)
    y.sum().backward()
    # d/da of sum a^2 / sum a at (1, 3): (2a - 2.5) / 4
    assert x.grad.flatten().tolist() == [0, 0, -0.125, 0.875, 0, 0, 0, 0]
    layer.train()
    layer.samples = torch.tensor([[[[0.5, 0.3]]]])  # 0.3 * 4 = 1.2 > cumsum 1 -> the second non-zero (3.0)
    assert layer(x).flatten().tolist() == [0.0, 3.0]
    assert layer.last_index.flatten().tolist()[1] == 1  # window [[1, 3], [0, 0]], row-major offset of the 3


def test_bad_arguments_are_one_line_value_errors():
    with pytest.raises(ValueError, match="exactly one of output_size and output_ratio"):
        FractionalMaxPool2d()
    with pytest.raises(ValueError, match=r"output_ratio must be in \(0, 1\)"):
        FractionalMaxPool2d(output_ratio=1.5)
    with pytest.raises(ValueError, match="kernel_size selects torch's fixed windows"):
        FractionalMaxPool2d(output_size=3, kernel_size=2, sequence="random")
    with pytest.raises(ValueError, match="sequence must be"):
        FractionalMaxPool2d(output_size=3, sequence="shuffled")
    with pytest.raises(ValueError, match="does not fit an input of 4x4"):
        FractionalMaxPool2d(output_size=5)(torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="smaller than the"):
        StochasticPool2d(3)(torch.zeros(1, 1, 2, 5))
    with pytest.raises(ValueError, match=r"expected input of shape \(N, C, H, W\)"):
        GlobalMaxPool2d()(torch.zeros(2, 3))


def test_constructors_take_plain_keywords():
    """What the network-spec grammar passes: ints, floats, strings and booleans."""
    FractionalMaxPool2d(output_ratio=0.7, sequence="random", overlapping=True, seed=3)
    FractionalMaxPool2d(output_size=5, kernel_size=2)
    StochasticPool2d(kernel_size=3, stride=2)
    GlobalAvgPool2d(flatten=True)
