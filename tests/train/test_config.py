"""``TrainConfig.validate``: every impossible setting is a one-line ``ValueError`` naming the option."""

from __future__ import annotations

import pytest

from convolab.runs.session import train
from convolab.train import OPTIMIZERS, TrainConfig


def test_the_step_budget_by_hand():
    from convolab.train.config import MAX_AUTO_EPOCHS, STEP_BUDGET, auto_epochs

    assert STEP_BUDGET == 2500
    # Fashion-MNIST: 54,000 training images (10 % held out) at batch 128 -> 422 steps an epoch; 2500 / 422 = 5.9
    assert auto_epochs(422) == 6
    # 4,000 PNGs, 3,600 after the validation split: 29 steps; 2500 / 29 = 86.2 -> 87
    assert auto_epochs(29) == 87
    assert auto_epochs(1) == MAX_AUTO_EPOCHS == 300  # a handful of images: capped
    assert auto_epochs(10_000) == 1  # more steps in one epoch than the budget


def test_defaults_are_convolabs_recipe_and_valid():
    cfg = TrainConfig()
    cfg.validate()
    assert (cfg.model, cfg.optimizer, cfg.lr, cfg.batch_size, cfg.schedule, cfg.label_smoothing, cfg.epochs) == (
        "tutorial_cnn", "adam", 3e-3, 128, "onecycle", 0.1, None)
    assert cfg.augment == "none" and cfg.weight_decay == 0
    assert set(OPTIMIZERS) == {"sgd", "adam", "adamw", "rmsprop"}


@pytest.mark.parametrize("field,value,match", [
    ("epochs", 0, "--epochs must be >= 1; got 0"),
    ("epochs", -3, "--epochs"),
    ("batch_size", -4, "--batch-size must be >= 1; got -4"),
    ("batch_size", 0, "--batch-size"),
    ("eval_batch_size", 0, "--eval-batch-size"),
    ("lr", 0.0, "--lr must be > 0"),
    ("lr", -0.1, "--lr"),
    ("lr", float("nan"), "--lr"),
    ("optimizer", "foo", "unknown optimizer 'foo'; choose one of sgd, adam, adamw"),
    ("optimizer", "Adam", "unknown optimizer"),
    ("momentum", 1.0, "--momentum"),
    ("momentum", -0.1, "--momentum"),
    ("weight_decay", -1e-4, "--weight-decay"),
    ("nesterov", True, "--nesterov needs --optimizer sgd"),
    ("clip_grad_norm", 0.0, "--clip-grad-norm must be > 0"),
    ("accum_steps", 0, "--accum-steps must be >= 1"),
    ("label_smoothing", 1.0, "--label-smoothing must be in"),
    ("val_fraction", 1.0, "--val-fraction"),
    ("val_fraction", -0.1, "--val-fraction"),
])
def test_validate_rejects(field, value, match):
    cfg = TrainConfig(**{field: value})
    with pytest.raises(ValueError, match=match.replace("(", r"\(").replace(")", r"\)")) as info:
        cfg.validate()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("field,value", [("epochs", 1), ("val_fraction", 0.0),
                                         ("weight_decay", 0.0), ("optimizer", "sgd"), ("optimizer", "adamw")])
def test_validate_accepts_the_edges(field, value):
    TrainConfig(**{field: value}).validate()


def test_train_validates_before_touching_the_disk(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="--epochs"):
        train(model="tutorial_cnn", data="digits", epochs=0, out=str(out), progress=False)
    assert not out.exists()


def test_to_dict_round_trips():
    cfg = TrainConfig(model="lenet5", epochs=3, model_kwargs={"drop_rate": 0.1})
    assert TrainConfig(**cfg.to_dict()) == cfg


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_momentum_is_refused_where_the_optimizer_would_ignore_it(optimizer):
    with pytest.raises(ValueError, match=f"^--momentum sets sgd and rmsprop; {optimizer} keeps its own"):
        TrainConfig(optimizer=optimizer, momentum=0.5).validate()
    TrainConfig(optimizer=optimizer).validate()  # the default momentum is fine: nothing was asked for


@pytest.mark.parametrize("optimizer", ["sgd", "rmsprop"])
@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_momentum_is_taken_where_the_optimizer_reads_it(optimizer, momentum):
    TrainConfig(optimizer=optimizer, momentum=momentum).validate()


@pytest.mark.parametrize("field,value", [("lr", float("inf")), ("lr", float("-inf")), ("weight_decay", float("inf")),
                                         ("clip_grad_norm", float("inf")), ("label_smoothing", float("nan")),
                                         ("mixup", float("inf")), ("min_delta", float("inf")), ("ema", float("nan")),
                                         ("rotate", float("nan")), ("min_lr", float("nan")), ("gamma", float("nan")),
                                         ("milestones", [2.0, float("inf")])])
def test_non_finite_numbers_are_refused_up_front(field, value):
    # --lr inf was accepted, diverged at step 4 and left a half-made run
    cfg = TrainConfig(**{field: value}, **({"schedule": "multistep"} if field == "milestones" else {}))
    with pytest.raises(ValueError, match=f"^--{field.replace('_', '-')} must be a finite number; got ") as info:
        cfg.validate()
    assert "\n" not in str(info.value)


def test_cli_refuses_lr_inf_before_the_data_loads(tmp_path, capsys):
    from tests.cli.test_cli import assert_one_line_error, cli

    # (the option's type refuses it first; TrainConfig.validate for callers of the library)
    code, _, err = cli(["train", "--data", "digits", "--lr", "inf", "--out", tmp_path / "r", "--epochs", "1"], capsys)
    assert_one_line_error(code, err, "--lr", "finite number", "inf")
    assert not (tmp_path / "r").exists()
