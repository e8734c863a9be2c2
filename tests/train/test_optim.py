"""``create_optimizer``: names map to torch's optimizers; weight decay skips biases and norm layers by default."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from convolab.train import create_optimizer
from convolab.train.optim import OPTIMIZERS, param_groups


@pytest.mark.parametrize("name,cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam),
                                      ("adamw", torch.optim.AdamW), ("rmsprop", torch.optim.RMSprop)])
def test_names(name, cls):
    model = nn.Linear(3, 2)
    opt = create_optimizer(model, name, lr=0.01, momentum=0.5, weight_decay=0.0)
    assert type(opt) is cls
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
