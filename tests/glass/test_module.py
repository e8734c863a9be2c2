"""The layer contract: params/grads, accumulation, zero_grad, modes, dtypes, state dicts, error messages."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

from convolab import glass


def _model() -> glass.Sequential:
    glass.manual_seed(0)
    return glass.Sequential(OrderedDict(
        features=glass.Sequential(OrderedDict(conv1=glass.Conv2d(1, 4, 3), bn1=glass.BatchNorm2d(4),
                                              relu1=glass.ReLU(), pool1=glass.MaxPool2d(2))),
        classifier=glass.Sequential(OrderedDict(flatten=glass.Flatten(), drop=glass.Dropout(0.5),
                                                fc=glass.Linear(4 * 3 * 3, 3))),
    ))


def _step(model, x, dtype=np.float32):
    out = model.forward(x.astype(dtype))
    model.backward(np.ones_like(out))
    return out


def test_params_and_grads_have_the_same_keys_and_torch_names():
    model = _model()
    for m in model.modules():
        assert m.params.keys() == m.grads.keys()
        for k in m.params:
            assert m.params[k].shape == m.grads[k].shape
    assert list(model.state_dict()) == [
        "features.conv1.weight", "features.conv1.bias", "features.bn1.weight", "features.bn1.bias",
        "features.bn1.running_mean", "features.bn1.running_var", "features.bn1.num_batches_tracked",
        "classifier.fc.weight", "classifier.fc.bias"]
    assert model.num_parameters() == 4 * 9 + 4 + 4 + 4 + 36 * 3 + 3


def test_gradients_accumulate_until_zero_grad():
    model = _model().eval()  # deterministic: no dropout, running statistics
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8))
    _step(model, x)
    once = {k: g.copy() for k, _, g in model.named_parameters()}
    _step(model, x)
    for k, _, g in model.named_parameters():
        np.testing.assert_allclose(g, 2 * once[k], rtol=1e-6, atol=1e-7)
    model.zero_grad()
    assert all(not g.any() for _, g in model.parameters())


def test_training_mode_by_default_and_switches_recursively():
    model = _model()
    assert all(m.training for m in model.modules())
    assert model.eval() is model and not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_dtype_follows_the_input(dtype):
    model = _model()
    x = np.random.default_rng(1).standard_normal((2, 1, 8, 8)).astype(dtype)
    out = model.forward(x)
    dx = model.backward(np.ones_like(out))
    assert out.dtype == dtype and dx.dtype == dtype
    assert all(p.dtype == np.float32 and g.dtype == np.float32 for p, g in model.parameters())  # master copies


def test_to_casts_everything_floating():
    model = _model().to(np.float64)
    assert all(p.dtype == np.float64 == g.dtype for p, g in model.parameters())
    assert model.state_dict()["features.bn1.running_var"].dtype == np.float64
    assert model.state_dict()["features.bn1.num_batches_tracked"].dtype == np.int64
    with pytest.raises(ValueError, match="dtype must be"):
        model.to(np.int32)


def test_load_state_dict_copies_in_place_and_checks_shapes():
    a, b = _model(), _model()
    weight = b.features.conv1.params["weight"]
    state = {k: v + 1 if v.dtype.kind == "f" else v for k, v in a.state_dict().items()}
    b.load_state_dict(state)
    assert b.features.conv1.params["weight"] is weight
    np.testing.assert_array_equal(weight, state["features.conv1.weight"])
    bad = dict(state, **{"classifier.fc.weight": np.zeros((3, 35))})
    with pytest.raises(ValueError, match=r"classifier.fc.weight: expected shape \(3, 36\), got \(3, 35\)"):
        b.load_state_dict(bad)
    with pytest.raises(ValueError, match=r"missing \['classifier.fc.bias'\]"):
        b.load_state_dict({k: v for k, v in state.items() if k != "classifier.fc.bias"})


def test_backward_checks_the_gradient_shape_and_order():
    model = _model()
    with pytest.raises(RuntimeError, match=r"Linear 'classifier.fc': backward\(\) called before forward\(\)"):
        model.backward(np.ones((2, 3)))
    model.forward(np.zeros((2, 1, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"Linear 'classifier.fc': backward expected a gradient of shape \(2, 3\) "
                                         r"\(the forward output\), got \(2, 4\)"):
        model.backward(np.ones((2, 4), np.float32))


def test_sequential_indexing_and_repr():
    model = glass.Sequential(glass.Linear(2, 3), glass.ReLU())
    assert isinstance(model[0], glass.Linear) and isinstance(model["1"], glass.ReLU) and len(model) == 2
    assert "(0): Linear(in_features=2, out_features=3, bias=True)" in repr(model)
    with pytest.raises(ValueError, match="not a glass Module"):
        glass.Sequential(glass.ReLU(), lambda x: x)
