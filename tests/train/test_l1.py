"""``--l1 LAMBDA``: the gradient it adds is autograd's of ``LAMBDA * sum |w|`` over weight decay's parameters, the
optimizer step gets it, and it measurably shrinks the weights of a run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import convolab
from convolab.atomic import read_jsonl
from convolab.runs.session import make_trainer
from convolab.train.callbacks import Callback
from convolab.train.loop import Trainer
from convolab.train.optim import add_l1_gradient, is_decayed, l1_parameters, param_groups


def _tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def _loss(model: nn.Module) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(5, 1, 8, 8, generator=g), torch.randint(3, (5,), generator=g)
    return nn.functional.cross_entropy(model(x), y)


@pytest.mark.parametrize("decay_norm_and_bias", [False, True])
def test_the_added_gradient_is_autograds_of_the_penalty(decay_norm_and_bias):
    lam = 0.03
    ours, ref = _tiny(), _tiny()
    with torch.no_grad():
        ours[0].weight[0, 0, 0, 0] = ref[0].weight[0, 0, 0, 0] = 0.0  # |w| at 0: the subgradient 0, as autograd's
    _loss(ours).backward()
    add_l1_gradient(l1_parameters(ours, decay_norm_and_bias), lam)
    penalised = [p for n, p in ref.named_parameters() if decay_norm_and_bias or (p.ndim > 1 and "bias" not in n)]
    (_loss(ref) + lam * sum(p.abs().sum() for p in penalised)).backward()
    for (name, a), b in zip(ours.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-7, msg=name)
    assert ours[0].weight.grad[0, 0, 0, 0] == ref[0].weight.grad[0, 0, 0, 0]
    names = {n for n, p in ours.named_parameters() if any(p is q for q in l1_parameters(ours, decay_norm_and_bias))}
    assert names == ({"0.weight", "0.bias", "1.weight", "1.bias", "4.weight", "4.bias"} if decay_norm_and_bias
                     else {"0.weight", "4.weight"})


def test_l1_takes_weight_decays_grouping():
    model = _tiny()
    decayed = param_groups(model, weight_decay=1e-4)[0]["params"]
    assert [id(p) for p in l1_parameters(model)] == [id(p) for p in decayed]
    assert all(is_decayed(n, p) == any(p is q for q in decayed) for n, p in model.named_parameters())
    model[0].weight.requires_grad_(False)  # a frozen layer gets no penalty
    assert [id(p) for p in l1_parameters(model)] == [id(model[4].weight)]


class FirstStep(Callback):
    """Keeps the weights before and after the first optimizer step, then stops the run."""

    def setup(self, trainer):
        self.before = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}

    def on_optimizer_step(self, trainer):
        self.after = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        raise StopIteration


def _first_step(digits_config, out, **overrides) -> FirstStep:
    config = digits_config(out, optimizer="sgd", momentum=0.0, lr=0.5, precision="32", plots=False,
                           checkpoints=False, epochs=1, **overrides)
    cb = FirstStep()
    with pytest.raises(StopIteration):
        make_trainer(config, callbacks=[cb]).fit()
    return cb


def test_the_optimizer_step_gets_the_l1_gradient(digits_config, tmp_path):
    """Plain SGD, one step from the same weights on the same batch: the step with --l1 moves each weight by a further
    -lr * lambda * sign(w) and leaves biases and BatchNorm as the step without."""
    lam, lr = 1e-3, 0.5
    plain = _first_step(digits_config, tmp_path / "plain")
    l1 = _first_step(digits_config, tmp_path / "l1", l1=lam)
    for k, w0 in plain.before.items():
        assert torch.equal(w0, l1.before[k])
        if not w0.is_floating_point():
            continue
        expected = -lr * lam * w0.sign() if w0.ndim > 1 else torch.zeros_like(w0)
        torch.testing.assert_close(l1.after[k] - plain.after[k], expected, rtol=0, atol=2e-7, msg=k)
    assert any(w.ndim > 1 for w in plain.before.values())


def _weight_l1(model: nn.Module) -> float:
    return float(sum(p.detach().abs().sum() for n, p in model.named_parameters() if is_decayed(n, p)))


@pytest.mark.slow
def test_a_run_with_l1_has_smaller_weights(digits_config, tmp_path):
    """tutorial_cnn on digits, 3 epochs of Adam, with and without --l1 1e-3: the sum of |w| over the weights is
    measured (1317 without, 608 with, test accuracy 0.911 and 0.891, on a busy 2-core CPU), and the accuracy stays
    far above chance."""
    results = {}
    for lam in (0.0, 1e-3):
        config = digits_config(tmp_path / f"l1-{lam}", epochs=3, lr=3e-3, l1=lam, plots=False, checkpoints=False)
        results[lam] = make_trainer(config).fit()
    plain, l1 = (_weight_l1(results[lam].model) for lam in (0.0, 1e-3))
    assert l1 < 0.7 * plain, (plain, l1)
    assert results[1e-3].summary["test_accuracy"] > 0.5


def test_l1_on_the_deferred_path_is_the_per_step_path(digits_config, tmp_path, monkeypatch):
    """GPUs take the step with the finiteness check on the device (take_deferred): switched on here, on the CPU,
    the --l1 run is the same step for step and weight for weight as with the host check."""
    recipe = dict(model="perceptron", lr=3e-2, epochs=1, plots=False, checkpoints=False)
    runs = {}
    for deferred in (False, True):
        monkeypatch.setattr(Trainer, "_use_deferred_nan_check", lambda self, on=deferred: on)
        runs[deferred] = convolab.train(digits_config(tmp_path / str(deferred), l1=1e-3, **recipe))
    assert read_jsonl(runs[True].run_dir / "steps.jsonl") == read_jsonl(runs[False].run_dir / "steps.jsonl")
    weights = {k: v for k, v in runs[True].model.state_dict().items()}
    assert all(torch.equal(v, weights[k]) for k, v in runs[False].model.state_dict().items())
    plain = convolab.train(digits_config(tmp_path / "plain", **recipe)).model.state_dict()
    assert any(not torch.equal(v, weights[k]) for k, v in plain.items()), "--l1 changed the run"
