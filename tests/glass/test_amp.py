"""Mixed precision: the loss scaler's rules, float16 compute with float32 master weights, a real fp16 run."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from convolab import glass
from convolab.glass.train import train_step

from ._helpers import rel_err


def _pairs(*grads):
    return [(np.zeros_like(g), g) for g in grads]


def test_overflow_halves_the_scale_and_skips_the_step(caplog):
    glass.manual_seed(0)
    model = glass.Linear(4, 3)
    opt = glass.SGD(model.parameters(), lr=0.1)
    scaler = glass.LossScaler(init_scale=1024.0, growth_interval=3)
    before = {k: p.copy() for k, p, _ in model.named_parameters()}
    model.grads["weight"][0, 0] = np.inf
    with caplog.at_level(logging.INFO, logger="convolab.glass.amp"):
        stepped = glass.train.optimizer_step(model, opt, scaler)
    assert not stepped and scaler.scale == 512.0
    for k, p, _ in model.named_parameters():
        np.testing.assert_array_equal(p, before[k])      # the weights were not touched
    assert "overflow at loss scale 1024; step skipped, scale -> 512" in caplog.text
    assert scaler.history == [(1, 1024.0, True)]


def test_scale_grows_after_growth_interval_clean_steps_and_unscales():
    scaler = glass.LossScaler(init_scale=8.0, growth_interval=3)
    g = np.full(3, 8.0)
    assert not scaler.unscale(_pairs(g))
    np.testing.assert_array_equal(g, 1.0)                # divided by the scale in place
    for _ in range(3):
        scaler.update(False)
    assert scaler.scale == 16.0 and scaler.clean_steps == 0
    scaler.update(False)
    scaler.update(True)                                  # an overflow resets the count
    scaler.update(False)
    scaler.update(False)
    assert scaler.scale == 8.0
    assert [s for _, s, _ in scaler.history] == [8.0, 8.0, 8.0, 16.0, 16.0, 8.0, 8.0]


def test_nan_counts_as_overflow():
    assert glass.LossScaler().unscale(_pairs(np.array([1.0, np.nan])))


def test_float16_forward_and_backward_with_float32_masters():
    glass.manual_seed(1)
    model = glass.Sequential(glass.Conv2d(1, 4, 3, padding=1, bias=False), glass.BatchNorm2d(4), glass.ReLU(),
                             glass.MaxPool2d(2), glass.Flatten(), glass.Linear(4 * 4 * 4, 5))
    x = np.random.default_rng(0).standard_normal((8, 1, 8, 8))
    out16 = model.forward(x.astype(np.float16))
    d16 = model.backward(np.ones(out16.shape, np.float16))
    g16 = {k: g.copy() for k, _, g in model.named_parameters()}
    model.zero_grad()
    out32 = model.forward(x.astype(np.float32))
    d32 = model.backward(np.ones(out32.shape, np.float32))
    assert out16.dtype == d16.dtype == np.float16
    assert rel_err(out16, out32) < 5e-3 and rel_err(d16, d32) < 5e-3   # float16 has 11 significant bits
    for k, _, g in model.named_parameters():
        assert g.dtype == np.float32 and rel_err(g16[k], g) < 5e-3, k


def test_small_gradients_underflow_without_scaling_and_survive_with_it():
    # A loss gradient of 1e-8 is below float16's smallest subnormal (6e-8): it flushes to zero
    # unless the loss is scaled first -- the reason loss scaling exists.
    glass.manual_seed(2)
    model = glass.Linear(3, 2)
    x = np.ones((1, 3), np.float16)
    for scale, expect_zero in ((1.0, True), (2.0 ** 16, False)):
        model.zero_grad()
        model.forward(x)
        model.backward(np.full((1, 2), 1e-8 * scale, np.float32).astype(np.float16))
        scaler = glass.LossScaler(init_scale=scale)
        scaler.unscale(model.parameters())
        assert (not model.grads["weight"].any()) == expect_zero
        if not expect_zero:
            np.testing.assert_allclose(model.grads["weight"], 1e-8, rtol=1e-3)


def test_mixed_precision_training_learns_and_adapts_the_scale():
    """A float16 run with dynamic loss scaling on a learnable problem: the loss falls like float32's."""
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((3, 1, 6, 6)) * 2
    labels = rng.integers(0, 3, 512)
    images = (centres[labels] + rng.standard_normal((512, 1, 6, 6))).astype(np.float32)
    final = {}
    for dtype in (np.float32, np.float16):
        glass.manual_seed(4)
        model = glass.Sequential(glass.Conv2d(1, 4, 3), glass.ReLU(), glass.Flatten(), glass.Linear(64, 3))
        opt = glass.Adam(model.parameters(), lr=1e-2)
        scaler = glass.LossScaler(init_scale=2.0 ** 24, growth_interval=10) if dtype == np.float16 else None
        crit = glass.CrossEntropyLoss()
        losses = [train_step(model, crit, opt, images[i:i + 32], labels[i:i + 32], dtype=dtype, scaler=scaler).loss
                  for _ in range(3) for i in range(0, 512, 32)]
        final[dtype] = np.mean(losses[-8:])
        if scaler is not None:
            scales = [s for _, s, _ in scaler.history]
            assert any(skipped for _, _, skipped in scaler.history)    # 2^24 is too large: it overflowed ...
            assert scaler.scale < 2.0 ** 24 and max(scales) == 2.0 ** 24  # ... and came down
            assert all(p.dtype == np.float32 and np.isfinite(p).all() for p, _ in model.parameters())
    assert final[np.float16] < 0.3 and final[np.float16] == pytest.approx(final[np.float32], abs=0.05)


def test_bad_arguments():
    with pytest.raises(ValueError, match="growth_factor > 1"):
        glass.LossScaler(growth_factor=1.0)
