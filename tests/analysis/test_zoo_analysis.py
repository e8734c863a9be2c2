"""Every registered model through the analysis: shapes against a real forward, MACs against torch's
flop counter (exactly), parameters against ``model.parameters()``. Receptive fields are measured
for one model of each kind of graph in test_verify.py (the impulse runs in float64)."""

from __future__ import annotations

import pytest
from tests.zoo import BIG, big_model_marks, params_at_default

from convolab.analysis import summarize
from convolab.models import list_models
from convolab.models._registry import get_model_entry


def _input(name: str) -> tuple[int, ...]:
    kind = get_model_entry(name).input_kind
    return (3, 8, 32, 32) if kind == "clip" else (3, 32, 32)


# One model of each family in the fast suite; the other variants (deeper, wider) with the slow tests.
FAST = {"tutorial_cnn", "mnist_cnn", "lenet5", "lenet5_classic", "alexnet", "vgg11", "nin", "googlenet", "resnet18",
        "resnet20", "se_resnet18", "densenet121", "mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small",
        "shufflenet_v1", "shufflenet_v2_x0_5", "efficientnet_b0", "convnext_tiny"}
# Above BIG (tests/zoo.py): only the smallest of a family in CI, the deeper and wider ones in make test-full.
MODELS = [n if n in FAST and params_at_default(n) <= BIG
          else pytest.param(n, marks=big_model_marks(n) or (pytest.mark.slow,)) for n in list_models()]


@pytest.mark.parametrize("name", MODELS)
def test_every_model_matches_execution(name):
    s = summarize(name, _input(name), num_classes=7, verify=True, rf_rows="none")
    v = s.verification
    assert v.ok, "\n".join(v.mismatches)
    assert v.analytic_macs == v.flop_counter_macs > 0
    assert v.shapes_checked >= 3
    assert s.totals()["params"] == sum(p.numel() for p in _model(name).parameters())
    assert s.totals()["receptive_field"] is not None
    assert not s.trace.uncounted, s.trace.uncounted


def _model(name):
    from convolab.models import create_model

    return create_model(name, num_classes=7, input_size=_input(name)[-2:])
