"""The learning-rate range test: the ramp, the smoothing, the stop rule and the suggestion against closed
forms, the state it must leave untouched, and ``convolab lr-find``."""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image
from tests.cli.test_cli import assert_one_line_error, cli
from torch import nn

from convolab.train.lr_finder import RULE, lr_range_test, ramp_rates


def _regression(seed: int = 0):
    """A linear least-squares problem: its loss falls for small rates and diverges above 2 / L."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 8, generator=g)
    y = x @ torch.randn(8, 1, generator=g)
    model = nn.Linear(8, 1)
    batches = [(x[i:i + 32], y[i:i + 32]) for i in range(0, 256, 32)]
    return model, batches, lambda b: ((model(b[0]) - b[1]) ** 2).mean()


def test_ramp_smoothing_stop_and_suggestion():
    model, batches, step = _regression()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    r = lr_range_test(model, opt, batches, step, start_lr=1e-4, end_lr=100.0, num_steps=60, beta=0.7)
    ratio = (100.0 / 1e-4) ** (1 / 59)
    assert r.lrs == pytest.approx([1e-4 * ratio ** i for i in range(len(r.lrs))], rel=1e-12)
    avg, expected = 0.0, []
    for i, loss in enumerate(r.losses):  # bias-corrected exponential moving average
        avg = 0.7 * avg + 0.3 * loss
        expected.append(avg / (1 - 0.7 ** (i + 1)))
    assert r.smoothed == pytest.approx(expected, rel=1e-12)
    assert r.diverged and len(r.lrs) < 60, "SGD on a quadratic diverges well below lr 100"
    # it stops at the first step whose smoothed loss exceeds 4x the lowest one so far
    s = r.smoothed
    assert s[-1] > 4 * min(s) and all(s[i] <= 4 * min(s[:i + 1]) for i in range(len(s) - 1))
    i_min = r.smoothed.index(min(r.smoothed))
    assert (r.min_loss_lr, r.suggested_lr, r.rule) == (r.lrs[i_min], r.lrs[i_min] / 10, RULE)
    assert r.lrs[0] <= r.steepest_lr <= r.min_loss_lr


def test_model_optimizer_and_generators_are_restored():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.5), nn.Linear(16, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.randn(64, 8), torch.randn(64, 1)
    ((model(x) - y) ** 2).mean().backward()
    opt.step()  # an optimizer with state (Adam's moments and step count)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    moments = {k: {n: t.clone() for n, t in s.items()} for k, s in opt.state_dict()["state"].items()}
    model.eval()
    rng = torch.get_rng_state()
    lr_range_test(model, opt, [(x, y)], lambda b: ((model(b[0]) - b[1]) ** 2).mean(), num_steps=20)
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    state = opt.state_dict()
    assert all(torch.equal(t, moments[k][n]) for k, s in state["state"].items() for n, t in s.items())
    assert state["param_groups"][0]["lr"] == 1e-3
    assert not model.training, "the mode is restored too"
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("kwargs,match", [(dict(start_lr=1.0, end_lr=0.1), "--start-lr must be > 0 and below"),
                                          (dict(num_steps=3), "--num-steps must be >= 5"),
                                          (dict(diverge=1.0), "--diverge must be > 1")])
def test_bad_settings(kwargs, match):
    model, batches, step = _regression()
    with pytest.raises(ValueError, match=match):
        lr_range_test(model, torch.optim.SGD(model.parameters(), lr=0.1), batches, step, **kwargs)


def test_cli_lr_find_json_and_plot(tmp_path, capsys):
    out = tmp_path / "lrf"
    code, stdout, err = cli(["lr-find", "--data", "digits", "--device", "cpu", "--quiet", "--out", out,
                             "--num-steps", "40", "--optimizer", "sgd", "--json"], capsys)
    assert code == 0, err
    printed = json.loads(stdout)
    assert printed["rule"] == RULE and printed["run_dir"] == str(out)
    saved = json.loads((out / "lr_find.json").read_text())
    assert saved["suggested_lr"] == printed["suggested_lr"] == saved["min_loss_lr"] / 10
    assert 1e-4 < printed["suggested_lr"] < 1.0, "SGD on digits: a usable rate is found"
    assert math.isclose(saved["lrs"][0], 1e-7) and len(saved["lrs"]) == printed["steps"] <= 40
    with Image.open(out / "plots" / "lr_find.png") as img:
        assert img.format == "PNG" and img.width > 100
    assert json.loads((out / "config.json").read_text())["kind"] == "lr-find"
    code, _, err = cli(["lr-find", "--data", "digits", "--quiet", "--out", out], capsys)
    assert_one_line_error(code, err, "already exists")
    code, _, err = cli(["lr-find", "--data", "digits", "--quiet", "--out", tmp_path / "b", "--start-lr", "1",
                        "--end-lr", "0.5"], capsys)
    assert_one_line_error(code, err, "--start-lr must be > 0 and below --end-lr")
    assert not (tmp_path / "b").exists(), "a bad setting leaves no run directory behind"


@pytest.mark.parametrize("flags,match", [(["--num-steps", "2"], "--num-steps must be >= 5"),
                                         (["--start-lr", "0.1", "--end-lr", "0.01"], "--start-lr must be > 0 and")])
def test_cli_refuses_bad_settings_before_loading_data(flags, match, tmp_path, capsys, monkeypatch):
    from convolab.train import loop as trainer_module

    monkeypatch.setattr(trainer_module, "load_dataset", lambda *a, **k: pytest.fail("data loaded for a bad setting"))
    code, _, err = cli(["lr-find", "--data", "digits", "--quiet", "--out", tmp_path / "r", *flags], capsys)
    assert_one_line_error(code, err, match)
    assert not (tmp_path / "r").exists()


# -- the linear ramp (--ramp linear) ------------------------------------------------------------------------------
def test_ramp_rates_by_formula():
    linear = ramp_rates(0.01, 0.5, 8, "linear")
    assert linear == pytest.approx([0.01 + 0.07 * i for i in range(8)], rel=1e-12)
    assert (linear[0], linear[-1]) == (0.01, pytest.approx(0.5, rel=1e-15))
    assert all(b - a == pytest.approx(0.07, rel=1e-9) for a, b in zip(linear, linear[1:]))  # evenly spaced
    exponential = ramp_rates(1e-4, 1.0, 5)
    assert exponential == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1, 1.0], rel=1e-12)  # a decade a step


def test_linear_ramp_in_the_range_test():
    model, batches, step = _regression()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    r = lr_range_test(model, opt, batches, step, start_lr=1e-3, end_lr=2.0, num_steps=50, beta=0.7, ramp="linear")
    assert r.lrs == pytest.approx([1e-3 + (2.0 - 1e-3) * i / 49 for i in range(len(r.lrs))], rel=1e-12)
    assert r.diverged and len(r.lrs) < 50, "plain SGD on the quadratic diverges below lr 2"
    i_min = r.smoothed.index(min(r.smoothed))
    assert (r.min_loss_lr, r.suggested_lr) == (r.lrs[i_min], r.lrs[i_min] / 10)
    # the steepest descent against log(lr), by central differences over the uneven log steps, worked out here
    slopes = {i: (r.smoothed[i + 1] - r.smoothed[i - 1]) / math.log(r.lrs[i + 1] / r.lrs[i - 1])
              for i in range(1, i_min)}
    assert r.steepest_lr == (r.lrs[min(slopes, key=slopes.get)] if slopes else r.min_loss_lr)
    assert r.settings["ramp"] == "linear"
    with pytest.raises(ValueError, match="unknown --ramp 'cubic'; choose one of exponential, linear"):
        lr_range_test(model, opt, batches, step, ramp="cubic")


def test_cli_lr_find_linear_ramp(tmp_path, capsys):
    """--ramp linear with its own default range (1e-4 to 0.1): the rates, the suggestion and the plot."""
    out = tmp_path / "lrf"
    code, stdout, err = cli(["lr-find", "--data", "digits", "--device", "cpu", "--quiet", "--out", out, "--ramp",
                             "linear", "--num-steps", "30", "--json"], capsys)
    assert code == 0, err
    printed = json.loads(stdout)
    saved = json.loads((out / "lr_find.json").read_text())
    n = len(saved["lrs"])
    assert saved["lrs"] == pytest.approx([1e-4 + (0.1 - 1e-4) * i / 29 for i in range(n)], rel=1e-12)
    assert saved["settings"]["ramp"] == "linear" and (saved["settings"]["start_lr"], saved["settings"]["end_lr"]) == (
        1e-4, 0.1)
    assert saved["suggested_lr"] == printed["suggested_lr"] == saved["min_loss_lr"] / 10
    with Image.open(out / "plots" / "lr_find.png") as img:
        assert img.format == "PNG" and img.width > 100
    code, _, err = cli(["lr-find", "--data", "digits", "--quiet", "--ramp", "cubic"], capsys)
    assert code == 2 and "invalid choice: 'cubic'" in err


def test_before_step_adds_l1_between_backward_and_step():
    """``before_step`` (lr-find's --l1) acts between the backward pass and the step: plain SGD by hand, each step
    w <- w - lr_i (grad + lambda sign(w)), gives the test's losses."""
    from convolab.train.optim import add_l1_gradient

    model, batches, step = _regression(2)
    lam = 0.05
    w, b = model.weight.detach().clone(), model.bias.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    r = lr_range_test(model, opt, batches, step, start_lr=1e-3, end_lr=0.1, num_steps=6, beta=0.0,
                      before_step=lambda: add_l1_gradient([model.weight], lam))
    expected = []
    for i, lr in enumerate(r.lrs):
        x, y = batches[i % len(batches)]
        w_, b_ = w.clone().requires_grad_(), b.clone().requires_grad_()
        loss = ((x @ w_.T + b_ - y) ** 2).mean()
        expected.append(loss.item())
        gw, gb = torch.autograd.grad(loss, (w_, b_))
        w, b = w - lr * (gw + lam * w.sign()), b - lr * gb
    assert r.losses == pytest.approx(expected, rel=1e-5)


def test_cli_lr_find_honours_l1(tmp_path, capsys):
    losses = {}
    for name, extra in (("plain", []), ("l1", ["--l1", "0.05"])):
        out = tmp_path / name
        code, _, err = cli(["lr-find", "--data", "digits", "--model", "perceptron", "--device", "cpu", "--quiet",
                            "--out", out, "--num-steps", "20", "--optimizer", "sgd", "--start-lr", "0.05", "--end-lr",
                            "1", *extra], capsys)
        assert code == 0, err
        losses[name] = json.loads((out / "lr_find.json").read_text())["losses"]
    assert losses["plain"][0] == losses["l1"][0], "the same first batch, before any step"
    assert losses["plain"][1:5] != losses["l1"][1:5]
