"""``create_optimizer``: names map to torch's optimizers; weight decay skips biases and norm layers by default."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest
import torch
from torch import nn

from convolab.train import create_optimizer
from convolab.train.optim import OPTIMIZERS, param_groups, without_dynamo_import


@pytest.mark.parametrize("name,cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam),
                                      ("adamw", torch.optim.AdamW), ("rmsprop", torch.optim.RMSprop)])
def test_names(name, cls):
    model = nn.Linear(3, 2)
    opt = create_optimizer(model, name, lr=0.01, momentum=0.5, weight_decay=0.0)
    assert type(opt).__bases__ == (cls,) and type(opt).__name__ == cls.__name__  # without_dynamo_import(cls)
    group = opt.param_groups[0]
    assert group["lr"] == 0.01
    assert group["weight_decay"] == 0.0  # AdamW's own default (0.01) must not sneak in
    assert len(group["params"]) == 2
    if name in ("sgd", "rmsprop"):
        assert group["momentum"] == 0.5
    assert set(OPTIMIZERS) == {"sgd", "adam", "adamw", "rmsprop"}


def test_frozen_parameters_are_left_out():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    model[0].requires_grad_(False)
    opt = create_optimizer(model, "adam", lr=1e-3)
    assert {id(p) for p in opt.param_groups[0]["params"]} == {id(p) for p in model[1].parameters()}


def test_unknown_name():
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'"):
        create_optimizer(nn.Linear(2, 2), "lbfgs", lr=0.1)


def test_nesterov_only_for_sgd_with_momentum():
    opt = create_optimizer(nn.Linear(2, 2), "sgd", lr=0.1, momentum=0.9, nesterov=True)
    assert opt.param_groups[0]["nesterov"] is True
    for name, momentum in (("adam", 0.9), ("sgd", 0.0)):
        with pytest.raises(ValueError, match="--nesterov needs --optimizer sgd with --momentum > 0"):
            create_optimizer(nn.Linear(2, 2), name, lr=0.1, momentum=momentum, nesterov=True)


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2), nn.LayerNorm(2))


def test_param_groups_by_name():
    model = _net()
    groups = param_groups(model, weight_decay=0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = sorted(names[id(p)] for p in groups[0]["params"])
    assert decayed == ["0.weight", "3.weight"], "only the conv and linear weight matrices"
    assert sorted(names[id(p)] for p in groups[1]["params"]) == ["0.bias", "1.bias", "1.weight", "3.bias",
                                                                  "4.bias", "4.weight"]
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert len(param_groups(model, weight_decay=0.1, decay_norm_and_bias=True)) == 1
    assert len(param_groups(model, weight_decay=0.0)) == 1


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop"])
@pytest.mark.parametrize("decay_all", [False, True])
def test_weight_decay_shrinks_exactly_the_decayed_parameters(name, decay_all):
    """With zero gradients the only update is the decay: p <- p (1 - lr wd) for sgd (L2 gradient wd p, no
    momentum history yet) and adamw (decoupled); for adam and rmsprop the L2 term goes through the adaptive
    scaling, so the closed form is p - lr sign(p) (Adam's first step is lr * g / |g|) and
    p - lr wd p / (sqrt((1 - alpha) (wd p)^2) + eps) for rmsprop."""
    torch.manual_seed(0)
    model = _net()
    lr, wd = 0.1, 0.5
    opt = create_optimizer(model, name, lr=lr, momentum=0.0, weight_decay=wd, decay_norm_and_bias=decay_all)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in model.named_parameters():
        decayed = decay_all or n in ("0.weight", "3.weight")
        b = before[n]
        if not decayed:
            expected = b
        elif name in ("sgd", "adamw"):
            expected = b * (1 - lr * wd)
        elif name == "adam":
            g = wd * b  # first Adam step: m = (1-b1) g, v = (1-b2) g^2, bias-corrected -> g / (|g| + eps)
            expected = b - lr * g / (g.abs() + 1e-8)
        else:
            g = wd * b
            expected = b - lr * g / ((0.01 * g * g).sqrt() + 1e-8)
        torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-6, msg=f"{name} {n}")


_CASES = [("sgd", torch.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)),
          ("adam", torch.optim.Adam, dict(lr=1e-2, weight_decay=1e-4)),
          ("adamw", torch.optim.AdamW, dict(lr=1e-2, weight_decay=0.05)),
          ("rmsprop", torch.optim.RMSprop, dict(lr=1e-3, momentum=0.5))]


def _small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))


def _train(opt, model, steps=5):
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(8, 1, 6, 6, generator=g), torch.randint(0, 3, (8,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize("name,cls,kwargs,fused", [(*c, fused) for c in _CASES for fused in (False, True)
                                                    if not (fused and c[0] == "rmsprop")])  # torch has no fused one
def test_the_dynamo_free_optimizer_steps_exactly_as_torchs(name, cls, kwargs, fused):
    """Bit for bit: the same parameters and state after five steps, and each one's state loads into the other."""
    extra = dict(fused=True) if fused else {}
    ours_model, stock_model = _small_net(), _small_net()
    ours = without_dynamo_import(cls)(ours_model.parameters(), **kwargs, **extra)
    stock = cls(stock_model.parameters(), **kwargs, **extra)
    _train(ours, ours_model)
    _train(stock, stock_model)
    for a, b in zip(ours_model.parameters(), stock_model.parameters(), strict=True):
        assert torch.equal(a, b)
    ours_state, stock_state = ours.state_dict(), stock.state_dict()
    assert ours_state["param_groups"] == stock_state["param_groups"]
    for i, per_param in stock_state["state"].items():
        for key, value in per_param.items():
            assert torch.equal(torch.as_tensor(ours_state["state"][i][key]), torch.as_tensor(value)), (i, key)
    stock.load_state_dict(ours_state)  # a checkpoint of either kind loads into the other
    ours.load_state_dict(stock_state)
    again = pickle.loads(pickle.dumps(ours))  # pickled by a name its module has (the class is made at run time)
    assert type(again) is type(ours) and repr(again) == repr(ours)


def test_a_process_that_trains_without_compiling_never_imports_dynamo():
    """create_optimizer's optimizers, stepped, zeroed, saved and loaded: torch._dynamo stays unloaded (it took
    2.2-3.2 s of every training process); a stock torch optimizer, for contrast, loads it."""
    code = """
import sys, torch
from torch import nn
from convolab.train import create_optimizer
for name in ("sgd", "adam", "adamw", "rmsprop"):
    model = nn.Linear(3, 2)
    opt = create_optimizer(model, name, lr=0.1, weight_decay=1e-4, nesterov=name == "sgd")
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    opt.zero_grad()
    opt.load_state_dict(opt.state_dict())
print("after convolab's", "torch._dynamo" in sys.modules)
opt = torch.optim.Adam(nn.Linear(3, 2).parameters())
print("after torch's", "torch._dynamo" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:2] == ["after convolab's False", "after torch's True"]


def test_once_dynamo_is_loaded_the_optimizer_goes_through_torchs_own_wrappers(monkeypatch):
    """With torch._dynamo loaded something may be compiling: the step then takes torch's path, graph break
    included."""
    import torch._dynamo

    breaks = []
    monkeypatch.setattr(torch._dynamo, "graph_break", lambda: breaks.append(1))
    model = nn.Linear(3, 2)
    opt = create_optimizer(model, "adam", lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    assert breaks  # torch's _use_grad_for_differentiable ran
    assert "torch._dynamo" in sys.modules
