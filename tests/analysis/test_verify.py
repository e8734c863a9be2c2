"""The analysis against execution, on randomly generated small networks with branches.

hypothesis draws chains of convolutions (any kernel, stride, padding, dilation, groups), pools,
residual blocks (stride 1 and 2), Inception-style concatenations, squeeze-excitation gates,
transposed convolutions and upsampling; ``verify`` must then find the analytic shapes, MACs and
every layer's receptive field equal to a real forward, torch's flop counter and gradient impulses.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

from convolab.analysis import InputTooSmallError, summarize, trace_model, verify
from convolab.analysis.verify import positive_averaging_copy

C = 4  # channels everywhere: small, so each example runs in milliseconds


class Residual(nn.Module):
    def __init__(self, k: int, d: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(C, C, k, stride=stride, padding=d * (k - 1) // 2, dilation=d)
        self.conv2 = nn.Conv2d(C, C, 3, padding=1)
        self.shortcut = nn.Conv2d(C, C, 1, stride=stride) if stride > 1 else nn.Identity()

    def forward(self, x):
        shortcut = self.shortcut(x)
        return self.conv2(F.relu(self.conv1(x))) + shortcut


class Concat(nn.Module):
    """Two branches with different windows, both keeping the size, concatenated (Inception)."""

    def __init__(self, k1: int, k2: int):
        super().__init__()
        self.a = nn.Conv2d(C, C, k1, padding=k1 // 2)
        self.b = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(C, C, k2, padding=k2 // 2))
        self.proj = nn.Conv2d(2 * C, C, 1)

    def forward(self, x):
        return self.proj(torch.cat([self.a(x), self.b(x)], 1))


class Gate(nn.Module):
    """Squeeze-excitation: a global path multiplies the map."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Conv2d(C, C, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.fc(F.adaptive_avg_pool2d(x, 1)))


class Upsample(nn.Module):
    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode

    def forward(self, x):
        return F.interpolate(x, scale_factor=2, mode=self.mode)


@st.composite
def layers(draw):
    kind = draw(st.sampled_from(["conv", "conv", "pool", "avgpool", "residual", "concat", "gate", "tconv",
                                 "upsample"]))
    if kind == "conv":
        k = draw(st.integers(1, 5))
        d = draw(st.integers(1, 2))
        return nn.Conv2d(C, C, k, stride=draw(st.integers(1, 2)), padding=draw(st.integers(0, d * (k - 1) // 2)),
                         dilation=d, groups=draw(st.sampled_from([1, 2, 4])))
    if kind == "pool":
        k = draw(st.integers(2, 3))
        return nn.MaxPool2d(k, stride=draw(st.integers(1, 2)), padding=draw(st.integers(0, k // 2)),
                            ceil_mode=draw(st.booleans()))
    if kind == "avgpool":
        return nn.AvgPool2d(2, 2)
    if kind == "residual":
        return Residual(draw(st.sampled_from([1, 3, 5])), draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    if kind == "concat":
        return Concat(draw(st.sampled_from([1, 3])), draw(st.sampled_from([3, 5])))
    if kind == "gate":
        return Gate()
    if kind == "tconv":
        return nn.ConvTranspose2d(C, C, 2, stride=2)
    return Upsample(draw(st.sampled_from(["nearest", "bilinear"])))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(layers(), min_size=1, max_size=6), st.integers(12, 28), st.integers(12, 28))
def test_random_networks_match_execution(blocks, h, w):
    model = nn.Sequential(*blocks).eval()
    try:
        analytic, _ = trace_model(positive_free_meta(model), (C, h, w))
    except InputTooSmallError:
        assume(False)
    result = verify(model, analytic, rf_rows="all")
    assert result.ok, "\n".join(result.mismatches)
    assert result.rf_checked > 0


def positive_free_meta(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).to("meta")


def test_a_wrong_analytic_field_is_caught():
    """The impulse measurement is independent: corrupt one analytic field and verify must say so."""
    model = nn.Sequential(nn.Conv2d(C, C, 3, padding=1), nn.MaxPool2d(2), nn.Conv2d(C, C, 3, padding=1)).eval()
    analytic, _ = trace_model(positive_free_meta(model), (C, 16, 16))
    analytic.rows[-1].info.rf[0].hi[0] += 1  # claim unit 0 sees one more row
    result = verify(model, analytic, rf_rows="all")
    assert not result.ok
    assert any("receptive field: 2, unit 0 of axis 0" in m for m in result.mismatches)


def test_a_wrong_mac_count_is_caught():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 5)).eval()
    analytic, _ = trace_model(positive_free_meta(model), (3, 8, 8))
    analytic.rows[0].macs += 1
    result = verify(model, analytic)
    assert any(m.startswith("MACs: 0:") for m in result.mismatches)
    assert any(m.startswith("MACs: total") for m in result.mismatches)


def test_positive_copy_keeps_every_unit_alive():
    """The measuring copy: positive averaging weights, identity BatchNorm, float64; the original untouched."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    before = [p.clone() for p in model.parameters()]
    probe = positive_averaging_copy(model)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    conv = probe[0].weight
    assert conv.dtype == torch.float64 and (conv > 0).all()
    torch.testing.assert_close(conv.flatten(1).sum(1), torch.ones(4, dtype=torch.float64))
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    assert (probe[:3](x) > 0).all()  # no ReLU unit dies


@pytest.mark.parametrize("name,size", [
    ("tutorial_cnn", 28), ("lenet5", 32), ("resnet18", 32), ("googlenet", 32), ("se_resnet18", 32),
    ("shufflenet_v2_x0_5", 32), ("mobilenet_v3_small", 32),
    pytest.param("convnext_tiny", 64, marks=pytest.mark.slow), pytest.param("densenet121", 48, marks=pytest.mark.slow),
    pytest.param("efficientnet_b0", 64, marks=pytest.mark.slow), pytest.param("resnet50", 96, marks=pytest.mark.slow),
])
def test_zoo_models_match_execution(name, size):
    """Residual, Inception, dense, shuffle, squeeze-excitation and NHWC (ConvNeXt) graphs, verified."""
    s = summarize(name, (3, size, size), num_classes=7, verify=True)
    assert s.verification.ok, "\n".join(s.verification.mismatches)
    assert s.verification.shapes_checked == len([r for r in s.trace.rows if r.type != "-"])
    assert s.verification.analytic_macs == s.verification.flop_counter_macs


def test_saturating_activations_do_not_hide_dependencies():
    """Residual sums grow past ReLU6's and sigmoid's flat parts in the measuring copy; fields still match."""
    model = nn.Sequential(*[Residual(3, 1, 1) for _ in range(6)], nn.ReLU6(), nn.Conv2d(C, C, 3, padding=1),
                          nn.Sigmoid(), nn.Conv2d(C, C, 3, padding=1)).eval()
    analytic, _ = trace_model(positive_free_meta(model), (C, 20, 20))
    result = verify(model, analytic, rf_rows="all")
    assert result.ok, "\n".join(result.mismatches)
