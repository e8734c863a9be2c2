"""``create_optimizer``: the names map to torch's optimizers with the recipe's settings."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from convolab.train import create_optimizer


@pytest.mark.parametrize("name,cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam),
                                      ("adamw", torch.optim.AdamW)])
def test_names(name, cls):
    model = nn.Linear(3, 2)
    opt = create_optimizer(model, name, lr=0.01, momentum=0.5, weight_decay=0.0)
    assert type(opt) is cls
    group = opt.param_groups[0]
    assert group["lr"] == 0.01
    assert group["weight_decay"] == 0.0  # AdamW's own default (0.01) must not sneak in
    assert len(group["params"]) == 2
    if name == "sgd":
        assert group["momentum"] == 0.5


def test_frozen_parameters_are_left_out():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    model[0].requires_grad_(False)
    opt = create_optimizer(model, "adam", lr=1e-3)
    assert {id(p) for p in opt.param_groups[0]["params"]} == {id(p) for p in model[1].parameters()}


def test_unknown_name():
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'"):
        create_optimizer(nn.Linear(2, 2), "lbfgs", lr=0.1)
