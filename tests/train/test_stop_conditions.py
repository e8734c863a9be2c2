"""``--stop-at-loss`` and ``--stop-at-accuracy``: a run on digits stops after the first epoch that meets the
condition (thresholds read off an unstopped run with the same seed), records ``stop_reason`` in summary.json, and a
run killed after that epoch's checkpoint resumes into the same end instead of training on."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from tests.cli.test_cli import assert_one_line_error, cli

import convolab
from convolab.atomic import read_jsonl
from convolab.runs.session import resume
from convolab.train.callbacks import StopAt
from convolab.train.config import TrainConfig
from convolab.train.loop import Trainer

RECIPE = dict(model="perceptron", epochs=4, batch_size=128, lr=3e-2, plots=False, precision="32")  # 11 steps an epoch


def _figures(rows: list[dict]) -> list[tuple]:
    return [(r["epoch"], r["train_loss"], r["val_accuracy"]) for r in rows]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, digits_config):
    """The unstopped run: its metrics rows give the thresholds (its trajectory is the stopped runs' until they stop)."""
    out = tmp_path_factory.mktemp("stop") / "run"
    result = convolab.train(digits_config(out, **RECIPE))
    assert result.summary["stop_reason"] is None and not result.summary["stopped_early"]
    return read_jsonl(out / "metrics.jsonl")


def _first_rise(values: list[float], better) -> int:
    """The first epoch index (>= 1) whose value beats every earlier one."""
    return next(i for i in range(1, len(values)) if all(better(values[i], v) for v in values[:i]))


def test_stop_at_loss(reference, digits_config, tmp_path):
    losses = [r["train_loss"] for r in reference]
    i = _first_rise(losses, lambda a, b: a < b)
    assert i < len(reference) - 1, losses
    result = convolab.train(digits_config(tmp_path / "run", **RECIPE, stop_at_loss=losses[i]))
    s = result.summary
    assert (s["epochs"], s["stopped_early"]) == (i + 1, True)
    assert s["stop_reason"] == f"stop at loss: training loss {losses[i]:.4g} <= {losses[i]:g} after epoch {i + 1}"
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert _figures(rows) == _figures(reference[:i + 1])


def test_stop_at_accuracy(reference, digits_config, tmp_path):
    accs = [r["val_accuracy"] for r in reference]
    i = _first_rise(accs, lambda a, b: a > b)
    assert i < len(reference) - 1, accs
    result = convolab.train(digits_config(tmp_path / "run", **RECIPE, stop_at_accuracy=accs[i]))
    s = result.summary
    assert (s["epochs"], s["stopped_early"]) == (i + 1, True)
    assert s["stop_reason"].startswith(f"stop at accuracy: validation accuracy {accs[i]:.4g} >= ")
    assert _figures(read_jsonl(tmp_path / "run" / "metrics.jsonl")) == _figures(reference[:i + 1])


def test_a_condition_met_only_at_the_last_epoch_is_no_early_stop(reference, digits_config, tmp_path):
    result = convolab.train(digits_config(tmp_path / "run", **RECIPE, stop_at_loss=reference[-1]["train_loss"]))
    assert (result.summary["epochs"], result.summary["stopped_early"], result.summary["stop_reason"]) == (4, False,
                                                                                                         None)


def test_resumed_after_the_stopping_epochs_checkpoint_it_stops_there(reference, digits_config, tmp_path, monkeypatch):
    """Killed after the checkpoint of the epoch that met the condition (before the test evaluation): the resumed run
    reads the decision from the checkpoint, trains no further epoch and saves the same weights."""
    losses = [r["train_loss"] for r in reference]
    i = _first_rise(losses, lambda a, b: a < b)
    whole = convolab.train(digits_config(tmp_path / "whole", **RECIPE, stop_at_loss=losses[i]))
    real = Trainer._finish

    def killed(self, stopped_early):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_finish", killed)
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        convolab.train(digits_config(out, **RECIPE, stop_at_loss=losses[i]))
    last = torch.load(sorted((out / "checkpoints").glob("step-*.pt"))[-1], weights_only=True)
    assert last["callbacks"]["stop_at"]["reason"] == whole.summary["stop_reason"]
    monkeypatch.setattr(Trainer, "_finish", real)
    result = resume(out)
    assert (result.summary["epochs"], result.summary["stop_reason"]) == (i + 1, whole.summary["stop_reason"])
    assert result.summary["steps"] == whole.summary["steps"]
    a, b = load_file(str(tmp_path / "whole" / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_callback_state_round_trip_and_old_checkpoints():
    class T:
        stop_reason = None

    cb = StopAt(loss=0.5)
    assert cb.state_dict() == {"stop_at": {"reason": None}}
    trainer = T()
    cb.load_state_dict({}, trainer)  # a checkpoint written without --stop-at-*: nothing to restore
    assert cb.reason is None and trainer.stop_reason is None
    cb.load_state_dict({"stop_at": {"reason": "stop at loss: ..."}}, trainer)
    assert trainer.stop_reason == "stop at loss: ..."


def test_bad_settings(tmp_path, capsys):
    with pytest.raises(ValueError, match="--stop-at-accuracy watches the validation split; use --val-fraction > 0"):
        TrainConfig(stop_at_accuracy=0.9, val_fraction=0.0).validate()
    out = tmp_path / "run"
    code, _, err = cli(["train", "--data", "digits", "--stop-at-accuracy", "90", "--out", out], capsys)
    assert_one_line_error(code, err, "--stop-at-accuracy", "must be in (0, 1], got 90")
    assert not out.exists()
