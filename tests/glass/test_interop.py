"""from_torch / to_torch on the supported models: same outputs, same gradients, weights one to one."""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from convolab import glass
from convolab.models import create_model, densenet

from ._helpers import rel_err

MODELS = [
    ("tutorial_cnn", dict(num_classes=10, in_chans=1, input_size=28)),
    ("lenet5", dict(num_classes=10, in_chans=1, input_size=28)),
    ("lenet5_classic", dict(num_classes=7, in_chans=1, input_size=32)),
    ("mnist_cnn", dict(num_classes=10, in_chans=1, input_size=28)),
    ("resnet20", dict(num_classes=10, in_chans=3, input_size=8)),
    ("resnet20", dict(num_classes=10, in_chans=3, input_size=8, shortcut="B")),
]


def _errors(model: torch.nn.Module, g: glass.Module, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Relative errors of logits, loss gradient w.r.t. the input, and every parameter gradient."""
    xt = torch.tensor(x, requires_grad=True)
    logits = model(xt)
    F.cross_entropy(logits, torch.tensor(y)).backward()
    crit = glass.CrossEntropyLoss()
    out = g.forward(x)
    crit.forward(out, y)
    dx = g.backward(crit.backward())
    errors = {"logits": rel_err(out, logits.detach().numpy()), "dx": rel_err(dx, xt.grad.numpy())}
    torch_params = dict(model.named_parameters())
    for name, _, grad in g.named_parameters():
        errors[name] = rel_err(grad, torch_params[name].grad.numpy())
    return errors


def _kink_margin(model: torch.nn.Module, x: np.ndarray) -> float:
    """Smallest |input| of any ReLU relative to that input's standard deviation (in float64)."""
    margins = []
    hooks = [m.register_forward_pre_hook(lambda _m, args: margins.append(float(args[0].abs().min() / args[0].std())))
             for m in model.modules() if isinstance(m, torch.nn.ReLU)]  # pre-hook: the ReLUs work in place
    try:
        with torch.no_grad():
            model.double()(torch.tensor(x, dtype=torch.float64))
    finally:
        for h in hooks:
            h.remove()
    return min(margins, default=float("inf"))


@functools.cache
def _case(name: str, kwargs: tuple) -> tuple[dict, np.ndarray]:
    """The model's initial weights (seed 0, dropout off) and an input none of whose ReLU inputs lies within
    1e-5 standard deviations of 0; cached per model, shared by the train/eval and float32/float64 cases.

    float32 rounding moves a network's activations by ~1e-7 of their scale; an activation closer
    than that to a ReLU's kink can land on different sides in two correct float32 implementations,
    and its whole gradient then differs. Keeping 1e-5 away (x100 margin) makes the float32
    comparison a test of the arithmetic, not of which side of 0 a rounding error falls on.
    """
    kwargs = dict(kwargs)
    torch.manual_seed(0)
    model = create_model(name, **kwargs)
    state = copy.deepcopy(model.state_dict())
    shape = (4, kwargs["in_chans"], kwargs["input_size"], kwargs["input_size"])
    for seed in range(20):
        x = np.random.default_rng(seed).standard_normal(shape)
        if _kink_margin(model, x) > 1e-5:
            return state, x
    raise AssertionError("no input 1e-5 away from every ReLU kink in 20 tries")


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-6), (torch.float32, 1e-4)], ids=["float64", "float32"])
@pytest.mark.parametrize("name, kwargs", MODELS, ids=lambda v: v if isinstance(v, str) else v.get("shortcut", ""))
def test_same_outputs_and_gradients(name, kwargs, dtype, tol):
    state, x = _case(name, tuple(sorted(kwargs.items())))
    model = create_model(name, **kwargs)
    model.load_state_dict(state)
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):  # the engines draw different masks: compare without dropout
            m.p = 0.0
    model = model.to(dtype)
    y = np.random.default_rng(0).integers(0, kwargs["num_classes"], 4)
    for training in (True, False):  # batch statistics and dropout, then running statistics
        model.zero_grad()
        g = glass.from_torch(model.train(training))
        assert g.training == training
        errors = _errors(model, g, x.astype(np.float64 if dtype == torch.float64 else np.float32), y)
        assert max(errors.values()) <= tol, (training, errors)


@pytest.mark.slow
def test_densenet_from_torch():
    torch.manual_seed(1)
    model = create_model("densenet121", num_classes=5, in_chans=3, input_size=8).double()
    g = glass.from_torch(model)
    # Batch 4: the last block sees 1x1 maps, and BatchNorm over 2 values is degenerate (see test_norm.py).
    x = np.random.default_rng(1).standard_normal((4, 3, 8, 8))
    errors = _errors(model, g, x, np.array([0, 4, 1, 2]))
    assert max(errors.values()) <= 1e-6, errors


def test_weights_are_copied_one_to_one_and_back():
    torch.manual_seed(2)
    model = create_model("resnet20", num_classes=10, in_chans=3, input_size=32)
    g = glass.from_torch(model)
    state = model.state_dict()
    assert list(g.state_dict()) == list(state)
    for k, v in g.state_dict().items():
        np.testing.assert_array_equal(v, state[k].numpy())
    for _, p, _ in g.named_parameters():
        p += 0.5
    back = glass.to_torch(g)  # the name and arguments recorded by create_model
    assert type(back) is type(model)
    for k, v in back.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), g.state_dict()[k])
    into = create_model("resnet20", num_classes=10, in_chans=3, input_size=32)
    assert glass.to_torch(g, into=into) is into


def test_unsupported_module_is_named():
    with torch.device("meta"):  # structure only: nothing is copied before the check fails
        model = create_model("se_resnet18", num_classes=10, in_chans=3, input_size=32)
    with pytest.raises(ValueError, match=r"no equivalent of convolab\.layers\.squeeze_excite\.SqueezeExcite "
                                         r"at 'layer1\.0\.se'"):
        glass.from_torch(model)
    with pytest.raises(ValueError, match=r"no equivalent of torch\.nn\.modules\.activation\.PReLU at '1'"):
        glass.from_torch(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.PReLU()))  # GroupNorm converts now
    with pytest.raises(ValueError, match="SqueezeExcite"):
        glass.check_convertible(model)
    glass.check_convertible(create_model("tutorial_cnn", num_classes=10, in_chans=1, input_size=28))


def test_to_torch_reports_shape_mismatches():
    g = glass.from_torch(create_model("tutorial_cnn", num_classes=10, in_chans=1, input_size=28))
    with pytest.raises(ValueError, match=r"to_torch: classifier\.fc2\.weight: the torch model expects shape "
                                         r"\(5, 128\), the glass model has \(10, 128\)"):
        glass.to_torch(g, "tutorial_cnn", num_classes=5, in_chans=1, input_size=28)
    with pytest.raises(ValueError, match="does not fit"):
        glass.to_torch(g, "lenet5", num_classes=10, in_chans=1, input_size=28)
    with pytest.raises(ValueError, match="pass the convolab model name"):
        glass.to_torch(glass.Sequential(glass.Linear(2, 2)))


def test_a_dense_block_alone():
    ref = densenet.DenseBlock(2, 3, growth_rate=2)
    assert [k for k, _, _ in glass.from_torch(ref).named_parameters()] == [k for k, _ in ref.named_parameters()]
