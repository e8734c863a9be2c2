"""Learning-rate schedules: every value against ``torch.optim.lr_scheduler`` stepped per batch, and closed forms."""

from __future__ import annotations

import math

import pytest
import torch
from torch.optim import lr_scheduler as tls

import convolab
from convolab.train import TrainConfig
from convolab.train.schedule import SCHEDULES, LRSchedule

LR, SPE, EPOCHS = 0.1, 7, 6  # steps per epoch, epochs
T = SPE * EPOCHS


def torch_rates(make, steps: int = T, lr: float = LR) -> list[float]:
    """The rates a torch scheduler gives, read before each of ``steps`` optimizer steps."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = make(opt)
    rates = []
    for _ in range(steps):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return rates


def ours(name: str, **kwargs) -> list[float]:
    schedule = LRSchedule(name, LR, total_steps=T, steps_per_epoch=SPE, **kwargs)
    return [schedule(t) for t in range(T)]


CASES = {
    "constant": (dict(), lambda o: tls.LambdaLR(o, lambda t: 1.0)),
    "step": (dict(decay_epochs=2, gamma=0.5), lambda o: tls.StepLR(o, step_size=2 * SPE, gamma=0.5)),
    "step-default": (dict(), lambda o: tls.StepLR(o, step_size=EPOCHS // 3 * SPE, gamma=0.1)),
    "multistep": (dict(milestones=[1.5, 4], gamma=0.3),
                  lambda o: tls.MultiStepLR(o, milestones=[round(1.5 * SPE), 4 * SPE], gamma=0.3)),
    "multistep-default": (dict(), lambda o: tls.MultiStepLR(o, milestones=[T // 2, round(T * 3 / 4)])),
    "cosine": (dict(min_lr=0.001), lambda o: tls.CosineAnnealingLR(o, T_max=T, eta_min=0.001)),
    "onecycle": (dict(pct_start=0.25),
                 lambda o: tls.OneCycleLR(o, max_lr=LR, total_steps=T, pct_start=0.25, cycle_momentum=False)),
    "cyclic": (dict(cycle_epochs=2, min_lr=0.01),
               lambda o: tls.CyclicLR(o, base_lr=0.01, max_lr=LR, step_size_up=SPE, cycle_momentum=False)),
    "cyclic-default": (dict(), lambda o: tls.CyclicLR(o, base_lr=LR / 10, max_lr=LR, step_size_up=2 * SPE,
                                                      cycle_momentum=False)),
    "sgdr": (dict(restart_epochs=1, restart_mult=2, min_lr=0.002),
             lambda o: tls.CosineAnnealingWarmRestarts(o, T_0=SPE, T_mult=2, eta_min=0.002)),
}


@pytest.mark.parametrize("case", CASES)
def test_matches_torch(case):
    kwargs, make = CASES[case]
    name = case.split("-")[0]
    assert ours(name, **kwargs) == pytest.approx(torch_rates(make), rel=1e-9, abs=1e-12)


def test_every_schedule_is_compared_with_torch():
    assert {c.split("-")[0] for c in CASES} == set(SCHEDULES)


@pytest.mark.parametrize("name,make", [
    ("cosine", lambda o, w: tls.CosineAnnealingLR(o, T_max=T)),
    ("step", lambda o, w: tls.StepLR(o, step_size=2 * SPE, gamma=0.5)),
])
def test_warmup_matches_torch_chained_linear_warmup(name, make):
    w = 10
    kwargs = dict(decay_epochs=2, gamma=0.5) if name == "step" else {}
    expected = torch_rates(lambda o: tls.ChainedScheduler(
        [tls.LinearLR(o, start_factor=1 / (w + 1), total_iters=w), make(o, w)]))
    assert ours(name, warmup_steps=w, **kwargs) == pytest.approx(expected, rel=1e-9)


def test_closed_forms():
    cos = LRSchedule("cosine", LR, total_steps=100, steps_per_epoch=10, min_lr=0.02)
    assert cos(0) == LR and cos(50) == pytest.approx((LR + 0.02) / 2)
    one = LRSchedule("onecycle", LR, total_steps=100, steps_per_epoch=10, pct_start=0.3)
    assert one(0) == pytest.approx(LR / 25) and one(29) == pytest.approx(LR)
    assert one(99) == pytest.approx(LR / 25 / 1e4) and max(one(t) for t in range(100)) == pytest.approx(LR)
    cyc = LRSchedule("cyclic", LR, total_steps=100, steps_per_epoch=10, cycle_epochs=2, min_lr=0.0)
    assert [cyc(t) for t in (0, 5, 10, 15, 20)] == pytest.approx([0, LR / 2, LR, LR / 2, 0])
    sgdr = LRSchedule("sgdr", LR, total_steps=100, steps_per_epoch=10, restart_epochs=2, restart_mult=2)
    assert [sgdr(t) for t in (0, 10, 20, 40, 60)] == pytest.approx([LR, LR / 2, LR, LR / 2, LR])
    warm = LRSchedule("constant", LR, total_steps=100, steps_per_epoch=10, warmup_steps=4)
    assert [warm(t) for t in range(6)] == pytest.approx([LR / 5, 2 * LR / 5, 3 * LR / 5, 4 * LR / 5, LR, LR])
    assert math.isclose(LRSchedule("step", LR, 90, 10)(30), LR * 0.1)  # default period: a third of the run


def test_warmup_epochs_become_steps():
    schedule = TrainConfig(epochs=5, schedule="cosine", warmup_epochs=1.5).lr_schedule(steps_per_epoch=10)
    assert (schedule.warmup_steps, schedule.total_steps) == (15, 50)


@pytest.mark.parametrize("overrides,match", [
    (dict(schedule="onecycle", warmup_epochs=1), "onecycle has its own warmup"),
    (dict(schedule="cosine", warmup_epochs=5, epochs=5),
     r"^--warmup-epochs 5 must be shorter than the run \(--epochs 5\)$"),
    (dict(schedule="cosine", warmup_epochs=7.5, epochs=5), "^--warmup-epochs 7.5 must be shorter"),
    (dict(schedule="multistep", milestones=[2, 5], epochs=5), "^--milestones 5: past the last epoch of the run \\(5 "),
    (dict(schedule="multistep", milestones=[9], epochs=5), "^--milestones 9: past the last epoch"),
    (dict(schedule="step", decay_epochs=5, epochs=5), "^--decay-epochs 5: the run ends first \\(5 epochs\\)"),
    (dict(schedule="sgdr", restart_epochs=6, epochs=5), "^--restart-epochs 6: the run ends first .*--schedule cosine"),
    (dict(schedule="cosine", min_lr=0.5, lr=0.1), "--min-lr must be in"),
    (dict(schedule="sgdr", restart_mult=0), "--restart-mult must be an integer >= 1"),
    (dict(schedule="step", gamma=1.5), "--gamma must be in"),
    (dict(schedule="onecycle", pct_start=1.0), "--pct-start"),
    (dict(schedule="multistep", milestones=[0]), "--milestones"),
    (dict(schedule="warm"), "unknown schedule 'warm'; choose one of constant, step"),
    (dict(warmup_epochs=1, warmup_steps=5), "not both"),
])
def test_config_rejects(overrides, match):  # (before any data loads: validate() alone)
    with pytest.raises(ValueError, match=match) as info:
        TrainConfig(**overrides).validate()
    assert "\n" not in str(info.value)


# Which schedules read which option (the module docstring's table): any other schedule must refuse it
# rather than drop it silently.
OPTION_USERS = {
    "min_lr": (0.001, {"cosine", "cyclic", "sgdr"}),
    "gamma": (0.5, {"step", "multistep"}),
    "decay_epochs": (2, {"step"}),
    "milestones": ([2, 4], {"multistep"}),
    "pct_start": (0.25, {"onecycle"}),
    "cycle_epochs": (2, {"cyclic"}),
    "restart_epochs": (2, {"sgdr"}),
    "restart_mult": (2, {"sgdr"}),
}


@pytest.mark.parametrize("option", OPTION_USERS)
@pytest.mark.parametrize("name", SCHEDULES)
def test_an_option_the_schedule_does_not_read_is_refused(option, name):
    value, users = OPTION_USERS[option]
    make = lambda: LRSchedule(name, LR, total_steps=T, steps_per_epoch=SPE, **{option: value})  # noqa: E731
    if name in users:
        assert make()(T - 1) >= 0  # accepted
        return
    flag = "--" + option.replace("_", "-")
    with pytest.raises(ValueError, match=f"^{flag} belongs to --schedule .*--schedule {name} does not use it") as info:
        make()
    assert sorted(str(info.value).split("--schedule ")[1].split("; ")[0].split(" or ")) == sorted(users)


def test_cli_refuses_an_option_of_another_schedule(tmp_path, capsys):
    from convolab.cli import main

    code = main(["train", "--data", "digits", "--schedule", "step", "--milestones", "3", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--milestones belongs to --schedule multistep" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("overrides", [dict(schedule="multistep", milestones=[4.9], epochs=5),
                                       dict(schedule="step", decay_epochs=4, epochs=5),
                                       dict(schedule="sgdr", restart_epochs=4, epochs=5),
                                       dict(schedule="step", epochs=1), dict(schedule="multistep", epochs=1),
                                       dict(schedule="sgdr", epochs=1)])
def test_points_inside_the_run_and_the_defaults_are_accepted(overrides):
    TrainConfig(**overrides).validate()


def test_warmup_steps_are_checked_against_the_real_steps_per_epoch():
    # validate() knows no dataset yet: it must not quote a made-up epoch length (it said 1,000 steps)
    TrainConfig(schedule="cosine", epochs=1, warmup_steps=5000).validate()
    with pytest.raises(ValueError, match=r"^the warmup \(--warmup-steps/--warmup-epochs: 5000 steps\) must be shorter "
                                         r"than the run \(422 steps: 1 epoch\(s\) of 422 steps\)$"):
        TrainConfig(schedule="cosine", epochs=1, warmup_steps=5000).lr_schedule(steps_per_epoch=422)


def test_warmup_steps_past_the_run_are_refused_once_the_data_says_how_long_it_is(digits_config, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"must be shorter than the run \(\d+ steps: 1 epoch\(s\) of \d+ steps\)"):
        convolab.train(digits_config(out, epochs=1, warmup_steps=5000))
    assert not out.exists()
