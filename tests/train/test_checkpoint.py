"""Checkpoints and resuming: exact continuation after a SIGKILL, atomic saves, corrupt files, refused flags.

The slow test kills a real ``convolab train`` process mid-epoch with SIGKILL, resumes it with
``convolab train --resume`` and compares it with an uninterrupted run of the same command: final
weights bit for bit, every metric, every logged step. The run uses dropout (torch's generator),
AdamW's state, a warmup + cosine schedule, label smoothing and augmentation (shifts, rotations, cutout,
mixup and cutmix: a generator of its own and a NumPy one), so each piece of restored state matters.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from tests.cli.test_cli import assert_one_line_error, cli

import convolab
from convolab.atomic import read_jsonl
from convolab.runs import checkpoints as runs_ckpt
from convolab.runs.session import resume
from convolab.train import checkpoint as ckpt

RECIPE = ["--model", "mnist_cnn", "--data", "digits", "--epochs", "3", "--device", "cpu", "--quiet", "--no-plots",
          "--checkpoint-every", "5", "--schedule", "cosine", "--warmup-steps", "5", "--label-smoothing", "0.1",
          "--optimizer", "adamw", "--weight-decay", "0.01", "--augment", "standard", "--mixup", "0.4",
          "--cutmix", "1.0"]

KILLED_AT_STEP = """
import sys, time
from pathlib import Path
from torch.optim.optimizer import register_optimizer_step_post_hook
from convolab.cli import main

marker, kill_step, argv = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
steps = 0

def wait_for_the_kill(optimizer, args, kwargs):
    global steps
    steps += 1
    if steps == kill_step:
        marker.touch()
        time.sleep(600)  # the test SIGKILLs this process now, mid-epoch

register_optimizer_step_post_hook(wait_for_the_kill)
sys.exit(main(argv))
"""


def _run(args, **kwargs):
    proc = subprocess.run([sys.executable, "-m", "convolab", "train", *map(str, args)], capture_output=True,
                          text=True, timeout=300, **kwargs)
    assert proc.returncode == 0, proc.stderr
    return proc


def _without_time(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    _run([*RECIPE, "--out", whole])
    steps_per_epoch = max(s["step"] for s in read_jsonl(whole / "steps.jsonl") if s["epoch"] == 1)
    kill_step = steps_per_epoch + 7  # mid epoch 2, a few steps after its last checkpoint
    saved = sorted({*range(5, kill_step, 5), steps_per_epoch})  # every 5 steps and at epoch 1's end
    assert kill_step % 5 and kill_step < 2 * steps_per_epoch and saved[-1] < kill_step

    marker = tmp_path / "at-kill-step"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_AT_STEP, str(marker), str(kill_step), "train", *RECIPE,
                             "--out", str(killed)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "the training process never reached the kill step"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "model.safetensors").exists()
    assert [r["epoch"] for r in read_jsonl(killed / "metrics.jsonl")] == [1]
    names = sorted(p.name for p in (killed / "checkpoints").iterdir())
    assert names == ["best.pt", *map(ckpt.checkpoint_name, saved[-2:])], "the newest two, no temp files"
    assert max(s["step"] for s in read_jsonl(killed / "steps.jsonl")) == saved[-1]

    resumed = _run(["--resume", killed, "--quiet"])
    assert f"run directory: {killed}" in resumed.stdout

    a, b = load_file(str(whole / "model.safetensors")), load_file(str(killed / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after the resume"
    rows = read_jsonl(killed / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2, 3], "each epoch exactly once"
    assert _without_time(rows) == _without_time(read_jsonl(whole / "metrics.jsonl"))
    assert read_jsonl(killed / "steps.jsonl") == read_jsonl(whole / "steps.jsonl"), "each step exactly once"
    sa, sb = (convolab.load_run(p).summary for p in (whole, killed))
    assert sa["test_accuracy"] == sb["test_accuracy"] and sa["test_loss"] == sb["test_loss"]
    assert (sa["resumes"], sb["resumes"]) == (0, 1)


# -- fast tests on a 2-epoch digits run ---------------------------------------------------------------
@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory, digits_config):
    """tutorial_cnn on digits, 2 epochs, checkpoints at each epoch's end: (result, steps per epoch)."""
    result = convolab.train(digits_config(tmp_path_factory.mktemp("ckpt") / "run", epochs=2, plots=False))
    return result, result.summary["steps"] // 2


def test_checkpoints_load_with_weights_only(two_epochs):
    result, spe = two_epochs
    folder = result.run_dir / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["best.pt", ckpt.checkpoint_name(spe),
                                                        ckpt.checkpoint_name(2 * spe)]
    state = torch.load(folder / ckpt.checkpoint_name(2 * spe), map_location="cpu", weights_only=True)
    assert (state["epoch"], state["batch"], state["global_step"]) == (3, 0, 2 * spe)
    weights = load_file(str(result.run_dir / "model.safetensors"))
    assert all(torch.equal(state["model"][k], weights[k]) for k in weights)
    assert set(state["rng"]) >= {"python", "numpy", "torch"} and "generator" in state["loader"]
    assert [r["epoch"] for r in state["history"]] == [1, 2]
    assert state["optimizer"]["state"][0]["step"] == 2 * spe  # Adam's own step counter


def test_resume_from_an_older_checkpoint_after_the_newest_is_corrupted(two_epochs, tmp_path, capsys):
    import shutil

    result, spe = two_epochs
    run = tmp_path / "run"
    shutil.copytree(result.run_dir, run)
    newest, previous = (run / "checkpoints" / ckpt.checkpoint_name(s) for s in (2 * spe, spe))
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # a torn file
    before = previous.read_bytes()

    code, out, err = cli(["train", "--resume", run, "--quiet"], capsys)
    assert_one_line_error(code, err, f"{newest}: corrupt or unreadable checkpoint",
                          f"the previous checkpoint {previous} is intact", f"--resume {previous}")
    assert previous.read_bytes() == before, "the good checkpoint is untouched"

    code, out, err = cli(["train", "--resume", previous, "--quiet"], capsys)
    assert code == 0, err
    assert [r["epoch"] for r in read_jsonl(run / "metrics.jsonl")] == [1, 2]
    assert _without_time(read_jsonl(run / "metrics.jsonl")) == _without_time(
        read_jsonl(result.run_dir / "metrics.jsonl"))
    a, b = load_file(str(result.run_dir / "model.safetensors")), load_file(str(run / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a), "epoch 2 again, from epoch 1's checkpoint: the same weights"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", previous.name, newest.name]
    assert torch.load(newest, weights_only=True)["global_step"] == 2 * spe, "the torn file was replaced"


def test_resume_refuses_differing_options(two_epochs, capsys):
    result, _ = two_epochs
    before = sorted(p.name for p in result.run_dir.rglob("*"))
    code, _, err = cli(["train", "--resume", result.run_dir, "--lr", "0.01", "--epochs", "9", "--quiet"], capsys)
    assert_one_line_error(code, err, "refusing to resume", "--epochs (run: 2, given: 9)",
                          "--lr (run: 0.001, given: 0.01)")
    code, _, err = cli(["train", "--resume", result.run_dir, "--out", "elsewhere"], capsys)
    assert_one_line_error(code, err, "--resume continues in the run's own directory")
    with pytest.raises(ValueError, match=r"--optimizer \(run: 'adam', given: 'sgd'\)"):
        resume(result.run_dir, optimizer="sgd", device="cpu")
    assert sorted(p.name for p in result.run_dir.rglob("*")) == before


def test_resume_without_checkpoints(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".convolab-run").write_text('{"kind": "convolab-run", "run_id": "abc"}')
    code, _, err = cli(["train", "--resume", tmp_path / "run"], capsys)
    assert_one_line_error(code, err, f"no step checkpoints in {tmp_path / 'run' / 'checkpoints'}", "--no-checkpoints")
    code, _, err = cli(["train", "--resume", tmp_path / "nowhere"], capsys)
    assert_one_line_error(code, err, "no such run directory")
    code, _, err = cli(["train", "--resume", tmp_path / "run" / "checkpoints" / "step-00000099.pt"], capsys)
    assert_one_line_error(code, err, "step-00000099.pt: no such checkpoint file")


def test_resume_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    """Not "no checkpoints in X/checkpoints": the folder is no run at all."""
    project = tmp_path / "project"
    (project / "checkpoints").mkdir(parents=True)
    (project / "thesis.tex").write_text("x")
    code, _, err = cli(["train", "--resume", project], capsys)
    assert_one_line_error(code, err, f"{project} is not a convolab run directory (no .convolab-run marker and no "
                                     "config.json written by convolab)")
    assert sorted(p.name for p in project.iterdir()) == ["checkpoints", "thesis.tex"]
    (project / "config.json").write_text('{"model": "mine"}')  # anyone's config.json does not make a run
    code, _, err = cli(["train", "--resume", project], capsys)
    assert_one_line_error(code, err, f"{project} is not a convolab run directory")


def test_every_step_checkpoint_damaged_but_best_intact(two_epochs, tmp_path, capsys):
    import shutil

    result, spe = two_epochs
    run = tmp_path / "run"
    shutil.copytree(result.run_dir, run)
    for p in ckpt.step_checkpoints(run):
        p.write_bytes(p.read_bytes()[:1000])  # both torn
    best = run / "checkpoints" / "best.pt"
    epoch = torch.load(best, weights_only=True)["best"]["epoch"]
    code, _, err = cli(["train", "--resume", run, "--quiet"], capsys)
    assert_one_line_error(code, err, "corrupt or unreadable checkpoint", "every step checkpoint in",
                          f"but {best} (the best epoch, {epoch}) is intact", f"resume from it with --resume {best}")
    code, _, err = cli(["train", "--resume", best, "--quiet"], capsys)
    assert code == 0, err
    assert (run / "model.safetensors").exists()

    for p in ckpt.step_checkpoints(run):
        p.unlink()
    with pytest.raises(FileNotFoundError, match=f"no step checkpoints in .*; {best} is there: resume from it with "
                                                f"--resume {best}"):
        runs_ckpt.find_checkpoint(run)


def test_a_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / ckpt.checkpoint_name(1)
    state = {"model": {"w": torch.ones(3)}, "x": 1}
    ckpt.save_checkpoint(path, state)
    good = path.read_bytes()

    def torn_save(obj, f):
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04 half a zip")
        raise OSError("No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", torn_save)
    with pytest.raises(OSError, match="No space left"):
        ckpt.save_checkpoint(path, {"model": {"w": torch.zeros(3)}, "x": 2})
    assert path.read_bytes() == good
    assert os.listdir(path.parent) == [path.name], "the temporary file is removed"


def test_non_finite_weights_are_never_saved(tmp_path):
    path = tmp_path / "checkpoints" / "step-00000001.pt"
    with pytest.raises(FloatingPointError, match=r"non-finite weights \(w has NaN or inf\)"):
        ckpt.save_checkpoint(path, {"model": {"w": torch.tensor([1.0, float("nan")])}})
    assert not path.exists()


# -- non-finite losses ---------------------------------------------------------------------------------
def _nan_at(monkeypatch, calls: set[int]):
    """Make the training loss NaN on the given (1-based) batches."""
    from convolab.train.tasks import Classification

    seen = {"n": 0}
    original = Classification.loss

    def loss(self, logits, y):
        seen["n"] += 1
        value = original(self, logits, y)
        return value * float("nan") if seen["n"] in calls else value

    monkeypatch.setattr(Classification, "loss", loss)


def test_on_nan_skip_skips_exactly_those_steps(digits_config, tmp_path, monkeypatch):
    _nan_at(monkeypatch, {3, 4, 5, 6})
    result = convolab.train(digits_config(tmp_path / "run", epochs=1, plots=False, on_nan="skip"))
    steps = read_jsonl(result.run_dir / "steps.jsonl")
    assert [s["step"] for s in steps if s.get("skipped")] == [3, 4, 5, 6]
    assert all(s["loss"] is None for s in steps if s.get("skipped"))
    assert result.summary["skipped_steps"] == 4
    state = torch.load(result.run_dir / "checkpoints" / ckpt.checkpoint_name(len(steps)), weights_only=True)
    assert state["optimizer"]["state"][0]["step"] == len(steps) - 4, "no optimizer update for a skipped step"
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    n_train = convolab.load_dataset("digits").train.labels.numel()
    sizes = [64] * (len(steps) - 1) + [n_train - 64 * (len(steps) - 1)]
    taken = [(s["loss"], n) for s, n in zip(steps, sizes) if not s.get("skipped")]
    expected = sum(loss * n for loss, n in taken) / sum(n for _, n in taken)
    assert read_jsonl(result.run_dir / "metrics.jsonl")[0]["train_loss"] == pytest.approx(expected, rel=1e-5), \
        "the epoch's loss leaves the skipped steps out"


def test_on_nan_stop_after_patience_in_a_row(digits_config, tmp_path, monkeypatch):
    _nan_at(monkeypatch, {2, 3, 5, 6, 7})  # 2 in a row are tolerated, the third stops
    with pytest.raises(FloatingPointError, match=r"training diverged in epoch 1 \(loss is nan at step 7, 3 "
                                                 r"non-finite step\(s\) in a row\); try a lower --lr"):
        convolab.train(digits_config(tmp_path / "run", epochs=1, plots=False))
    assert not (tmp_path / "run" / "model.safetensors").exists()
    assert [s["step"] for s in read_jsonl(tmp_path / "run" / "steps.jsonl") if s.get("skipped")] == [2, 3, 5, 6, 7]


# -- early stopping, determinism -------------------------------------------------------------------------
def test_early_stopping_keeps_the_best_epoch(digits_config, tmp_path):
    # An improvement of 10 in validation loss never happens: the run stops after epoch 2 and keeps epoch 1.
    result = convolab.train(digits_config(tmp_path / "run", epochs=5, plots=False, early_stopping=1,
                                          monitor="val_loss", min_delta=10.0))
    s = result.summary
    assert (s["epochs"], s["best_epoch"], s["stopped_early"]) == (2, 1, True)
    assert [r["epoch"] for r in read_jsonl(result.run_dir / "metrics.jsonl")] == [1, 2]
    spe = s["steps"] // 2
    folder = result.run_dir / "checkpoints"
    epoch1 = torch.load(folder / ckpt.checkpoint_name(spe), weights_only=True)["model"]
    best = torch.load(folder / "best.pt", weights_only=True)
    weights = load_file(str(result.run_dir / "model.safetensors"))
    assert best["global_step"] == spe
    for k in weights:
        assert torch.equal(weights[k], epoch1[k]) and torch.equal(best["model"][k], epoch1[k])


def test_deterministic_flag_is_scoped_to_the_run(digits_config, tmp_path):
    assert not torch.are_deterministic_algorithms_enabled()
    a = convolab.train(digits_config(tmp_path / "a", epochs=1, plots=False, deterministic=True, checkpoints=False))
    assert not torch.are_deterministic_algorithms_enabled()
    assert not (a.run_dir / "checkpoints").exists()
    with pytest.raises(ValueError, match="--checkpoint-every needs checkpoints"):
        convolab.train(digits_config(tmp_path / "b", checkpoints=False, checkpoint_every=3))


def test_resume_after_the_runs_data_dir_moved(tmp_path, monkeypatch):
    """The run's --data-dir is gone when it resumes: the data is looked for in the other places (here
    $CONVOLAB_DATA) instead of failing on a folder the user did not name this time."""
    import numpy as np

    from convolab.data.idx import write_idx
    from convolab.runs.session import train

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    first, moved = tmp_path / "data", tmp_path / "moved"
    first.mkdir()
    for name, n in (("train", 60), ("t10k", 20)):
        write_idx(first / f"{name}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(first / f"{name}-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8))
    result = train(model="tutorial_cnn", data="mnist", data_dir=str(first), epochs=2, batch_size=16, device="cpu",
                   out=str(tmp_path / "run"), progress=False, plots=False, download=False)
    epoch1 = result.run_dir / "checkpoints" / ckpt.checkpoint_name(result.summary["steps"] // 2)
    weights = load_file(str(result.run_dir / "model.safetensors"))
    first.rename(moved)
    monkeypatch.setenv("CONVOLAB_DATA", str(moved))

    again = resume(epoch1, device="cpu", progress=False, download=False)
    b = load_file(str(again.run_dir / "model.safetensors"))
    assert all(torch.equal(weights[k], b[k]) for k in weights), "epoch 2 again from epoch 1: the same weights"
    assert again.summary["resumes"] == 1 and again.summary["steps"] == result.summary["steps"]


def test_checkpoint_every_on_an_epochs_last_step_keeps_the_newest_two(digits_config, tmp_path):
    """The epoch's end rewrites the step checkpoint --checkpoint-every just wrote; that must not count as a new one
    (it pruned the one before, leaving a single step checkpoint)."""
    probe = convolab.train(digits_config(tmp_path / "probe", epochs=1, plots=False, checkpoints=False))
    steps = len((probe.run_dir / "steps.jsonl").read_text().splitlines())  # optimizer steps per epoch
    run = convolab.train(digits_config(tmp_path / "run", epochs=3, plots=False, checkpoint_every=steps)).run_dir
    kept = sorted(p.name for p in (run / "checkpoints").glob("step-*.pt"))
    assert kept == [ckpt.checkpoint_name(2 * steps), ckpt.checkpoint_name(3 * steps)]


def test_a_failed_checkpoint_write_is_an_oserror_naming_the_file(tmp_path, monkeypatch):
    """torch.save reports a failed write as a RuntimeError from its C++ writer (the text below is what it raised
    once when writing to /dev/full); the user gets the checkpoint's name and the reason, and no temporary file
    stays."""
    import errno
    import shutil
    from collections import namedtuple

    def failed_write(obj, f):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", failed_write)
    usage = namedtuple("usage", "total used free")
    target = tmp_path / "checkpoints" / "step-00000001.pt"
    for free, code, reason in ((0, errno.ENOSPC, "No space left on device"),
                               (10**12, errno.EIO, "write failed: [enforce fail at inline_container.cc:672] . "
                                                   "unexpected pos 704 vs 598")):
        monkeypatch.setattr(shutil, "disk_usage", lambda p, free=free: usage(10**12, 10**12 - free, free))
        with pytest.raises(OSError) as info:
            ckpt.save_checkpoint(target, {"model": {"w": torch.zeros(1000)}, "ema": None})
        assert (info.value.errno, info.value.strerror, info.value.filename) == (code, reason, str(target))
        assert os.listdir(target.parent) == []
