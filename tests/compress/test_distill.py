"""Knowledge distillation: the loss against torch's kl_div written out, the teacher's place in the step (same
augmented batch, no gradient), and a short distillation on digits that reloads."""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import convolab
from convolab.compress.distill import DistillStep, distill, distill_control, distillation_loss, soft_loss
from convolab.train.loop import Trainer


def _reference(s, t, y, temperature, alpha):
    """Hinton et al.'s loss through torch's own KL divergence (log-probability target) and cross-entropy."""
    kl = F.kl_div((s / temperature).log_softmax(1), (t / temperature).log_softmax(1), log_target=True,
                  reduction="batchmean")
    return alpha * temperature ** 2 * kl + (1 - alpha) * F.cross_entropy(s, y)


@pytest.mark.parametrize("temperature,alpha", [(4.0, 0.9), (1.0, 0.5), (2.5, 0.0), (10.0, 1.0)])
def test_loss_equals_kl_div_reference(temperature, alpha):
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(16, 10, generator=g) * 3, torch.randn(16, 10, generator=g) * 3
    y = torch.randint(0, 10, (16,), generator=g)
    got = distillation_loss(s, t, F.cross_entropy(s, y), temperature=temperature, alpha=alpha)
    assert torch.allclose(got, _reference(s, t, y, temperature, alpha), rtol=1e-5, atol=1e-6)


def test_soft_loss_by_hand_on_two_classes():
    # one sample, two classes: teacher probabilities (q, 1-q), student (p, 1-p) at T = 2
    s, t = torch.tensor([[1.0, -1.0]]), torch.tensor([[2.0, 0.0]])
    q, p = 1 / (1 + math.exp(-1.0)), 1 / (1 + math.exp(-1.0))  # (2-0)/2 = 1 and (1+1)/2 = 1: equal, KL = 0
    assert q == p and abs(float(soft_loss(s, t, 2.0))) < 1e-7
    t = torch.tensor([[0.0, 2.0]])  # teacher now (1-q, q) with q = sigmoid(1)
    expected = (1 - q) * math.log((1 - q) / p) + q * math.log(q / (1 - p))
    assert math.isclose(float(soft_loss(s, t, 2.0)), expected, rel_tol=1e-6)


def test_teacher_sees_the_augmented_batch_and_gets_no_gradient(tmp_path, digits_run, digits_config):
    teacher = convolab.load_run(digits_run.run_dir).model
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    rule = functools.partial(DistillStep, teacher=teacher, temperature=4.0, alpha=0.9)
    trainer = Trainer(digits_config(tmp_path / "run", epochs=1, rotate=20.0, cutout=0.3, plots=False,
                                     precision="32"), step_rule=rule)
    trainer._setup()
    seen = {}
    teacher.register_forward_pre_hook(lambda m, a: seen.__setitem__("teacher", a[0].clone()))
    trainer.model.register_forward_pre_hook(lambda m, a: seen.__setitem__("student", a[0].clone()))
    x, y = next(iter(trainer.train_loader))
    step = trainer.step
    step.zero_grad()
    stats, loss, n = step.micro_batch(x, y, 1.0, True)
    assert not torch.equal(seen["student"], x)  # augmented ...
    assert torch.equal(seen["teacher"], seen["student"])  # ... and the teacher saw that very batch
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.model.parameters())
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    # the step's loss is the formula on the two networks' outputs for that batch (digits' recipe: plain CE)
    xa = seen["student"]
    with torch.no_grad():
        expected = _reference(trainer.model(xa), teacher(xa), y, 4.0, 0.9)
    assert torch.allclose(loss, expected, rtol=1e-5) and n == len(y)
    assert step.take(loss, {})
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())


def test_short_distillation_runs_reloads_and_records_the_teacher(tmp_path, digits_run):
    result = distill(digits_run.run_dir, "tutorial_cnn", tmp_path / "student", temperature=3.0, alpha=0.7, epochs=1,
                     seed=1, progress=False, plots=False)
    run = convolab.load_run(result.run_dir)
    assert run.build["kind"] == "registry" and run.build["name"] == "tutorial_cnn"
    record = run.config["distill"]
    assert record["temperature"] == 3.0 and record["alpha"] == 0.7
    assert record["teacher"] == str(digits_run.run_dir.resolve())
    assert run.config["config"]["batch_size"] == 64 and run.config["config"]["optimizer"] == "adam"  # the recipe
    assert 0.0 <= result.summary["test_accuracy"] <= 1.0 and result.summary["steps"] > 0
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(run.model(x), result.model.eval()(x), atol=1e-6)


@pytest.mark.slow
def test_alpha_zero_is_the_control_exactly(tmp_path, digits_run):
    """With alpha = 0 only the label term is left: the run must equal the control (same recipe, seed and steps)."""
    kw = dict(epochs=1, seed=2, progress=False, plots=False, checkpoints=False)
    a = distill(digits_run.run_dir, "tutorial_cnn", tmp_path / "a", alpha=0.0, **kw)
    b = distill_control(digits_run.run_dir, "tutorial_cnn", tmp_path / "b", **kw)
    assert a.summary["steps"] == b.summary["steps"]
    wa, wb = load_file(str(a.run_dir / "model.safetensors")), load_file(str(b.run_dir / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wb)
    c = distill(digits_run.run_dir, "tutorial_cnn", tmp_path / "c", alpha=0.9, **kw)  # the teacher changes the weights
    wc = load_file(str(c.run_dir / "model.safetensors"))
    assert not all(torch.equal(wc[k], wb[k]) for k in wb)
    assert "distill_control" in convolab.load_run(b.run_dir).config


@pytest.mark.parametrize("kw,match", [(dict(temperature=0.0), "temperature"), (dict(alpha=1.5), "alpha"),
                                      (dict(bogus=1), "unknown training setting")])
def test_bad_settings_are_one_line(tmp_path, digits_run, kw, match):
    with pytest.raises(ValueError, match=match):
        distill(digits_run.run_dir, "tutorial_cnn", tmp_path / "x", epochs=1, progress=False, **kw)


def test_a_student_given_as_a_module_reloads(tmp_path, digits_run):
    student = convolab.create_model("mlp", num_classes=10, in_chans=1, input_size=(8, 8), widths=[16])
    result = distill(digits_run.run_dir, student, tmp_path / "s", epochs=1, progress=False, plots=False,
                     checkpoints=False)
    run = convolab.load_run(result.run_dir)
    assert run.build["kind"] == "registry" and run.build["name"] == "mlp"
    assert list(run.build["kwargs"]["widths"]) == [16]
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(run.model(x), student.eval()(x))
