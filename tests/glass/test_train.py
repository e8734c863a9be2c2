"""The NumPy training loop: a glass model trained step by step equals torch trained the same way."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from convolab import glass
from convolab.glass.train import evaluate, skip_input_grad, train_epoch, train_step
from convolab.models import create_model

from ._helpers import rel_err


def _batches(n=96, batch=32, seed=0):
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((n, 1, 28, 28)), rng.integers(0, 10, n)
    return [(x[i:i + batch], y[i:i + batch]) for i in range(0, n, batch)]


@pytest.mark.parametrize("make_opt", [
    (lambda p: glass.Adam(p, lr=1e-3), lambda p: torch.optim.Adam(p, lr=1e-3)),
    (lambda p: glass.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
], ids=["adam", "sgd-nesterov"])
def test_float64_training_equals_torch_step_by_step(make_opt):
    torch.manual_seed(0)
    model = create_model("lenet5", num_classes=10, in_chans=1, input_size=28).double()
    g = glass.from_torch(model)
    opt, topt = make_opt[0](g.parameters()), make_opt[1](model.parameters())
    crit = glass.CrossEntropyLoss(label_smoothing=0.1)
    for _ in range(3):
        for x, y in _batches():
            r = train_step(g, crit, opt, x, y, dtype=np.float64, max_grad_norm=5.0)
            loss = F.cross_entropy(model(torch.tensor(x)), torch.tensor(y), label_smoothing=0.1)
            topt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            topt.step()
            assert r.loss == pytest.approx(loss.item(), rel=1e-10)
    for name, p, _ in g.named_parameters():
        assert rel_err(p, dict(model.named_parameters())[name].detach().numpy()) < 1e-9, name


def test_skip_input_grad_keeps_the_parameter_gradients():
    glass.manual_seed(0)
    g = glass.from_torch(create_model("tutorial_cnn", num_classes=10, in_chans=1, input_size=28))
    x, y = _batches()[0]
    crit = glass.CrossEntropyLoss()
    crit.forward(g.forward(x.astype(np.float32)), y)
    g.backward(crit.backward())
    full = {k: gr.copy() for k, _, gr in g.named_parameters()}
    assert skip_input_grad(g) is g.features.conv1
    g.zero_grad()
    crit.forward(g.forward(x.astype(np.float32)), y)
    assert g.backward(crit.backward()) is None
    for k, _, gr in g.named_parameters():
        np.testing.assert_array_equal(gr, full[k])
    block_first = glass.Sequential(glass.BasicBlock(1, 1), glass.Flatten())
    assert skip_input_grad(block_first) is None and block_first[0].conv1.input_grad  # its input feeds the shortcut too


def test_train_epoch_and_evaluate_learn_a_separable_problem():
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((3, 1, 8, 8)) * 1.5
    labels = rng.integers(0, 3, 600)
    images = (centres[labels] + rng.standard_normal((600, 1, 8, 8))).astype(np.float32)
    batches = [(images[i:i + 50], labels[i:i + 50]) for i in range(0, 600, 50)]
    glass.manual_seed(2)
    model = glass.Sequential(glass.Conv2d(1, 4, 3), glass.ReLU(), glass.Flatten(), glass.Dropout(0.2),
                             glass.Linear(144, 3))
    opt, crit = glass.Adam(model.parameters(), lr=1e-2), glass.CrossEntropyLoss()
    before = evaluate(model, batches)
    losses = [train_epoch(model, crit, opt, batches)[0] for _ in range(5)]
    after = evaluate(model, batches, keep_predictions=True)
    assert losses[-1] < losses[0] / 3 and after.accuracy > 0.95 > before.accuracy
    assert model.training  # evaluate restores the mode
    assert after.predictions.shape == (600,) and np.allclose(after.probabilities.sum(1), 1, atol=1e-6)
    assert (after.predictions == after.probabilities.argmax(1)).all() and (after.labels == labels).all()
