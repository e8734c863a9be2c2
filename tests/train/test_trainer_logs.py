"""The trainer's logs, numbers, warnings, progress lines and leftovers (issue 15): what a kill or Ctrl-C leaves
is repaired on resume, non-finite numbers never pass as results, and nothing half-made is left behind."""

from __future__ import annotations

import json
import logging
import re

import pytest
import torch
from tests.cli.test_cli import assert_one_line_error, cli

import convolab
from convolab.atomic import read_jsonl
from convolab.runs import session
from convolab.runs.session import resume
from convolab.train import loop as loop_mod
from convolab.train.loop import Trainer

LOGGER = "convolab.train"  # (the loop's and the epoch's loggers are below it)


@pytest.fixture
def logged(caplog):
    """The trainer's log records at INFO and above (the console handler of a CLI run stops propagation)."""
    logger = logging.getLogger(LOGGER)
    logger.addHandler(caplog.handler)  # (a record that also propagates to the root reaches it twice: deduplicated)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield lambda: [r.getMessage() for r in {id(r): r for r in caplog.records}.values()]
    logger.setLevel(level)
    logger.removeHandler(caplog.handler)


def _interrupt_in_epoch(monkeypatch, stop_epoch: int) -> None:
    """Ctrl-C at the start of epoch ``stop_epoch`` (as a KeyboardInterrupt raised in the loop)."""
    real = Trainer._train_epoch

    def train_epoch(self, epoch):
        if epoch == stop_epoch:
            raise KeyboardInterrupt
        return real(self, epoch)

    monkeypatch.setattr(Trainer, "_train_epoch", train_epoch)


def _strict_json_lines(path):
    lines = path.read_text().splitlines()
    return [json.loads(line, parse_constant=lambda c: pytest.fail(f"{path.name}: {c} is not JSON")) for line in lines]


@pytest.mark.slow
def test_ctrl_c_says_how_to_resume_and_resume_repairs_torn_logs_and_leftovers(digits_config, tmp_path, monkeypatch,
                                                                               logged):
    out = tmp_path / "run"
    _interrupt_in_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        convolab.train(digits_config(out, epochs=2, plots=False))
    said = [m for m in logged() if "interrupted" in m]
    assert len(said) == 1 and f"convolab train --resume {out}" in said[0] and "step-" in said[0], said
    monkeypatch.undo()

    # what a kill -9 in the middle of epoch 2's writes leaves: torn last lines, temporary files
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "train_lo')
    with open(out / "steps.jsonl", "a") as f:
        f.write('{"step": 99, "lo')
    leftovers = [out / ".summary.json.k2j4h5g6.tmp", out / "checkpoints" / ".step-00000052.pt.ab12cd34.tmp",
                 out / "plots" / ".loss.png.zz99yy88.tmp"]
    for p in leftovers:
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"half")
    # and a figure that was not finite in the checkpoint's history: the rewritten log must stay strict JSON
    ckpt = sorted((out / "checkpoints").glob("step-*.pt"))[-1]
    state = torch.load(ckpt, weights_only=True)
    state["history"][0]["val_loss"] = float("nan")
    torch.save(state, ckpt)
    result = resume(out)
    metrics = _strict_json_lines(out / "metrics.jsonl")  # every line whole: epoch 2's row was glued to the torn one
    assert [r["epoch"] for r in metrics] == [1, 2] and metrics == read_jsonl(out / "metrics.jsonl")
    assert metrics[0]["val_loss"] is None and metrics[0]["non_finite"] == ["val_loss"]
    steps = _strict_json_lines(out / "steps.jsonl")
    assert [r["step"] for r in steps] == list(range(1, result.summary["steps"] + 1))
    assert not any(p.exists() for p in leftovers)
    assert not list(out.rglob("*.tmp"))


def test_ctrl_c_before_the_first_checkpoint_says_there_is_nothing_to_resume(digits_config, tmp_path, monkeypatch,
                                                                            logged):
    _interrupt_in_epoch(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        convolab.train(digits_config(tmp_path / "run", epochs=1, plots=False))
    assert any("nothing to resume" in m for m in logged())


@pytest.mark.slow
def test_progress_lines_without_a_terminal(digits_config, tmp_path, monkeypatch, logged):
    monkeypatch.setattr(Trainer, "PROGRESS_EVERY", 0.0)  # (30 s in use) every batch here
    # progress=True: the bar is on, but stderr is no terminal under pytest, so tqdm disables it
    result = convolab.train(digits_config(tmp_path / "run", epochs=2, plots=False, checkpoints=False, progress=True))
    pattern = re.compile(r"^epoch (\d)/2  batch (\d+)/(\d+)  step (\d+)/(\d+)  loss \d+\.\d{4}  acc [01]\.\d{4}  "
                         r"ETA \d\d:\d\d:\d\d \(training\)$")
    lines = [m for text in logged() if (m := pattern.match(text))]
    steps = result.summary["steps"]
    assert len(lines) == steps, "one line per batch at PROGRESS_EVERY = 0"
    assert [int(m.group(4)) for m in lines] == list(range(1, steps + 1))
    assert {int(m.group(5)) for m in lines} == {steps}
    assert lines[-1].group(0).endswith("ETA 00:00:00 (training)")


def test_no_progress_line_before_its_interval(digits_config, tmp_path, logged):
    convolab.train(digits_config(tmp_path / "run", epochs=1, plots=False, checkpoints=False))
    assert any(m.startswith("epoch 1/1  train loss") for m in logged())
    assert not [m for m in logged() if "ETA" in m], "a short epoch needs no progress line"


def test_non_finite_optimizer_state_is_never_saved(digits_config, tmp_path, monkeypatch):
    real = Trainer._train_epoch

    def train_epoch(self, epoch):
        figures = real(self, epoch)
        first = next(iter(self.optimizers[0].state.values()))
        first["exp_avg"].view(-1)[0] = float("nan")  # Adam's first moment, as an overflow would leave it
        return figures

    monkeypatch.setattr(Trainer, "_train_epoch", train_epoch)
    out = tmp_path / "run"
    with pytest.raises(FloatingPointError, match=r"^refusing to save non-finite optimizer state \(parameter 0 "
                                                 r"exp_avg has NaN or inf\)"):
        convolab.train(digits_config(out, epochs=1, plots=False))
    assert not list((out / "checkpoints").glob("*.pt"))


def test_weights_that_give_non_finite_outputs_are_no_success(tmp_path, capsys, monkeypatch):
    real = Trainer._finish

    def finish(self, stopped_early):
        with torch.no_grad():  # finite weights whose products overflow to inf (and inf - inf = NaN)
            for p in self.model.parameters():
                p.mul_(1e30)
        return real(self, stopped_early)

    monkeypatch.setattr(Trainer, "_finish", finish)
    out = tmp_path / "run"
    code, stdout, err = cli(["train", "--data", "digits", "--epochs", "1", "--device", "cpu", "--quiet",
                             "--no-plots", "--out", out], capsys)
    assert_one_line_error(code, err, "convolab train: error: training diverged: the final weights give non-finite "
                                     "outputs on the test set", "try a lower --lr")
    assert stdout == "" and not (out / "summary.json").exists() and not (out / "model.safetensors").exists()


def test_batch_size_larger_than_the_training_split_is_warned_and_recorded(digits_config, tmp_path, logged):
    out = tmp_path / "run"
    result = convolab.train(digits_config(out, epochs=1, batch_size=100_000, plots=False, checkpoints=False))
    config = json.loads((out / "config.json").read_text())
    n = config["dataset"]["sizes"]["train"]
    assert config["recipe"]["batch_size"] == n < 100_000 and config["recipe"]["batch_size_given"] == 100_000
    assert result.summary["steps"] == 1
    warned = [m for m in logged() if "--batch-size" in m]
    assert warned == [f"--batch-size 100000 is larger than the training split ({n:,} samples): every epoch is one "
                      f"batch of {n} (config.json records it as the batch size used)"]


def test_an_interrupted_lr_find_leaves_no_half_made_folder(digits_config, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(session, "lr_range_test", interrupted)
    fresh = tmp_path / "fresh"
    with pytest.raises(KeyboardInterrupt):
        session.lr_find(digits_config(fresh, checkpoints=False), num_steps=10)
    assert not fresh.exists(), "the folder this call made is removed"
    mine = tmp_path / "mine"  # an empty folder the user made: it stays, empty
    mine.mkdir()
    with pytest.raises(KeyboardInterrupt):
        session.lr_find(digits_config(mine, checkpoints=False), num_steps=10)
    assert mine.is_dir() and not any(mine.iterdir())
    monkeypatch.undo()
    session.lr_find(digits_config(mine, checkpoints=False, plots=False), num_steps=10)  # a finished one ...
    (mine / "notes.txt").write_text("mine")  # ... beside the user's file
    monkeypatch.setattr(session, "lr_range_test", interrupted)
    with pytest.raises(KeyboardInterrupt):  # --overwrite replaced the old run's files, then was interrupted
        session.lr_find(digits_config(mine, checkpoints=False, overwrite=True), num_steps=10)
    assert sorted(p.name for p in mine.rglob("*")) == ["notes.txt"]


def test_a_failed_lr_find_before_its_folder_is_made_touches_nothing(digits_config, tmp_path, monkeypatch):
    old = tmp_path / "old"  # a previous lr-find run that --overwrite would replace
    session.lr_find(digits_config(old, checkpoints=False, plots=False), num_steps=10)
    before = sorted(p.relative_to(old) for p in old.rglob("*"))

    def no_data(*args, **kwargs):
        raise FileNotFoundError("no data here")

    monkeypatch.setattr(loop_mod, "load_dataset", no_data)
    with pytest.raises(FileNotFoundError):
        session.lr_find(digits_config(old, checkpoints=False, overwrite=True), num_steps=10)
    assert sorted(p.relative_to(old) for p in old.rglob("*")) == before


def test_lr_find_without_keep_writes_no_folder(digits_config, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.chdir(tmp_path)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    config = digits_config(None, checkpoints=False)
    config.out = None  # runs/<model>-<data>-<time> had been made
    result, path = session.lr_find(config, num_steps=10, keep=False)
    assert path is None and len(result.lrs) >= 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scratch"] and not any(scratch.iterdir())


def test_without_epochs_the_data_sets_the_run_length(digits_config, tmp_path, logged):
    from convolab.train.config import STEP_BUDGET

    trainer = Trainer(digits_config(tmp_path / "run", epochs=None, plots=False, checkpoints=False))
    trainer._setup()
    steps = trainer.steps_per_epoch
    n = len(trainer.data.train)
    assert steps == -(-n // 64)  # digits' training split at batch 64, the last batch kept
    # the fewest epochs that reach the budget, worked out here from the two counts
    epochs = next(e for e in range(1, 1000) if e * steps >= STEP_BUDGET)
    assert trainer.config.epochs == epochs and trainer.schedule.total_steps == epochs * steps
    said = [m for m in logged() if "default budget" in m]
    assert said == [f"{epochs} epochs of {steps} optimizer steps: the default budget of about 2,500 steps "
                    f"({n:,} training samples at batch 64); --epochs N sets it"]
    assert trainer.run_record("train")["config"]["epochs"] == epochs  # config.json: a resume reads the length chosen


def test_a_tiny_split_says_the_epoch_cap_cut_the_budget_short(digits_config, tmp_path, logged):
    from convolab.train.config import MAX_AUTO_EPOCHS, STEP_BUDGET

    # batch 2,000 > digits' 1,295 training images: one step an epoch, so the cap, not the budget, sets the length
    trainer = Trainer(digits_config(tmp_path / "run", epochs=None, batch_size=2000, plots=False, checkpoints=False))
    trainer._setup()
    assert trainer.steps_per_epoch == 1 and trainer.config.epochs == MAX_AUTO_EPOCHS < STEP_BUDGET
    said = [m for m in logged() if "default budget" in m]
    n = len(trainer.data.train)
    assert said == [f"{MAX_AUTO_EPOCHS} epochs of 1 optimizer step: the default budget of about 2,500 steps, at most "
                    f"{MAX_AUTO_EPOCHS} epochs ({n:,} training samples at batch {n}); --epochs N sets it"]


def test_given_epochs_are_kept_and_nothing_is_said(digits_config, tmp_path, logged):
    trainer = Trainer(digits_config(tmp_path / "run", epochs=3, plots=False, checkpoints=False))
    trainer._setup()
    assert trainer.config.epochs == 3 and not [m for m in logged() if "default budget" in m]
