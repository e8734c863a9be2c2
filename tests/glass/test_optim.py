"""Optimizers, StepLR and gradient clipping stepped side by side with torch's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convolab import glass

from ._helpers import rel_err

SHAPES = [(4, 3), (3,), (2, 2, 2)]


def _run(make_glass, make_torch, steps=12, groups=False):
    """Apply the same gradient sequence to glass and torch parameters; return both final parameter lists."""
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s) for s in SHAPES]
    grads = [np.zeros_like(p) for p in params]
    tparams = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    if groups:  # two groups: the second with its own learning rate and no weight decay
        opt = make_glass([{"params": list(zip(params[:2], grads[:2]))},
                          {"params": list(zip(params[2:], grads[2:])), "lr": 0.05, "weight_decay": 0.0}])
        topt = make_torch([{"params": tparams[:2]}, {"params": tparams[2:], "lr": 0.05, "weight_decay": 0.0}])
    else:
        opt, topt = make_glass(list(zip(params, grads))), make_torch(tparams)
    for _ in range(steps):
        for g, tp in zip(grads, tparams):
            g[...] = rng.standard_normal(g.shape)
            tp.grad = torch.tensor(g.copy())
        opt.step()
        topt.step()
    return params, [t.detach().numpy() for t in tparams]


CASES = {
    "sgd": (lambda p: glass.SGD(p, lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    "sgd-momentum-wd": (lambda p: glass.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01, dampening=0.1),
                        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01, dampening=0.1)),
    "sgd-nesterov": (lambda p: glass.SGD(p, lr=0.1, momentum=0.8, nesterov=True),
                     lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.8, nesterov=True)),
    "adam": (lambda p: glass.Adam(p, lr=0.01), lambda p: torch.optim.Adam(p, lr=0.01)),
    "adam-wd": (lambda p: glass.Adam(p, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
                lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    "adamw": (lambda p: glass.AdamW(p, lr=0.01, weight_decay=0.1),
              lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1)),
    "rmsprop": (lambda p: glass.RMSprop(p, lr=0.01), lambda p: torch.optim.RMSprop(p, lr=0.01)),
    "rmsprop-momentum-wd": (lambda p: glass.RMSprop(p, lr=0.01, momentum=0.9, weight_decay=0.01, alpha=0.9),
                            lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.9, weight_decay=0.01, alpha=0.9)),
}


@pytest.mark.parametrize("groups", [False, True])
@pytest.mark.parametrize("name", CASES)
def test_matches_torch(name, groups):
    got, want = _run(*CASES[name], groups=groups)
    for g, w in zip(got, want):
        assert rel_err(g, w) < 1e-12, name


def test_updates_the_model_in_place_and_zero_grad():
    glass.manual_seed(0)
    model = glass.Linear(3, 2)
    weight = model.params["weight"]
    before = weight.copy()
    opt = glass.SGD(model.parameters(), lr=0.5)
    model.forward(np.ones((1, 3), np.float32))
    model.backward(np.ones((1, 2), np.float32))
    opt.step()
    assert model.params["weight"] is weight
    np.testing.assert_allclose(weight, before - 0.5)
    opt.zero_grad()
    assert not any(g.any() for _, g in model.parameters())


def test_step_lr_matches_torch():
    p = torch.zeros(1, requires_grad=True)
    topt = torch.optim.SGD([p], lr=0.3)
    tsched = torch.optim.lr_scheduler.StepLR(topt, step_size=3, gamma=0.5)
    opt = glass.SGD([(np.zeros(1), np.zeros(1))], lr=0.3)
    sched = glass.StepLR(opt, step_size=3, gamma=0.5)
    for _ in range(10):
        topt.step()
        tsched.step()
        sched.step()
        assert sched.get_last_lr() == pytest.approx(tsched.get_last_lr(), rel=1e-15)


def test_clip_grad_norm_matches_torch():
    rng = np.random.default_rng(1)
    grads = [rng.standard_normal(s) * 3 for s in SHAPES]
    tparams = [torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in SHAPES]
    for t, g in zip(tparams, grads):
        t.grad = torch.tensor(g.copy())
    want = torch.nn.utils.clip_grad_norm_(tparams, 2.0)
    got = glass.clip_grad_norm([(np.zeros_like(g), g) for g in grads], 2.0)
    assert got == pytest.approx(float(want), rel=1e-12)
    for g, t in zip(grads, tparams):
        assert rel_err(g, t.grad.numpy()) < 1e-12


def test_bad_arguments():
    with pytest.raises(ValueError, match="Nesterov"):
        glass.SGD([], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="lr must be >= 0"):
        glass.Adam([], lr=-1)
    with pytest.raises(ValueError, match="gradient of shape"):
        glass.SGD([(np.zeros(3), np.zeros(2))])
