"""How ``convolab.cli.main`` reports what goes wrong: OS errors as one line naming the path, non-finite numbers
refused by the option types, Ctrl-C with the command that continues the run, report's --overwrite passed on."""

from __future__ import annotations

import argparse
import errno
import importlib

import pytest
from tests.cli.test_cli import cli as run_main  # main(argv) in-process: (exit code, stdout, stderr)

import convolab.cli as cli

TRAIN = importlib.import_module("convolab.runs.session")  # where `convolab train` finds train() and resume()




@pytest.mark.parametrize("exc,line", [
    (PermissionError(errno.EACCES, "Permission denied", "/data/x.png"),
     "cannot read/write /data/x.png (Permission denied)"),
    (OSError(errno.ENOSPC, "No space left on device", "/runs/r/model.safetensors"),
     "cannot write /runs/r/model.safetensors (No space left on device)"),
    (OSError(errno.EROFS, "Read-only file system", "/ro/out"), "cannot write /ro/out (Read-only file system)"),
    (OSError(errno.EIO, "Input/output error", "/a", None, "/b"), "cannot read/write /a or /b (Input/output error)"),
    (OSError(errno.ENETUNREACH, "Network is unreachable"), "Network is unreachable"),
    (FileExistsError("--out x.html exists; pass --overwrite to replace it"),
     "--out x.html exists; pass --overwrite to replace it"),
])
def test_os_errors_are_one_line_naming_the_path(exc, line, monkeypatch, capsys):
    def fail(args):
        raise exc

    monkeypatch.setattr(cli.models, "run", fail)
    code, out, err = run_main(["models"], capsys)
    assert code == 2 and out == ""
    assert err == f"convolab models: error: {line}\n"
    assert "Errno" not in err


@pytest.mark.parametrize("argv,option", [
    (["viz", "RUN", "--filters", "--lr", "inf", "--out", "o"], "--lr"),
    (["lr-find", "--start-lr", "inf"], "--start-lr"),
    (["lr-find", "--end-lr", "1e999"], "--end-lr"),
    (["lr-find", "--diverge", "inf"], "--diverge"),
    (["train", "--lr", "inf"], "--lr"),
    (["train", "--weight-decay", "inf"], "--weight-decay"),
    (["train", "--mixup", "inf"], "--mixup"),
    (["train", "--min-delta", "inf"], "--min-delta"),
])
def test_non_finite_numbers_are_refused_by_the_option_types(argv, option, capsys):
    code, out, err = run_main(argv, capsys)
    assert code == 2
    assert f"argument {option}: must be a finite number" in err and len(err.strip().splitlines()) == 1


def test_float_arg_accepts_finite_values():
    parse = cli._float_arg(lambda v: v > 0, "> 0")
    assert parse("1e-3") == 1e-3
    with pytest.raises(argparse.ArgumentTypeError, match="finite"):
        parse("-inf")


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_ctrl_c_in_train_says_how_to_resume_the_run_at_out(tmp_path, monkeypatch, capsys):
    out = tmp_path / "my run"
    out.mkdir()
    monkeypatch.setattr(TRAIN, "train", _interrupt)
    code, _, err = run_main(["train", "--data", "digits", "--out", out], capsys)
    assert code == 130
    last = err.strip().splitlines()[-1]
    assert last == f"convolab train: interrupted; continue with `convolab train --resume '{out}'`"


def test_ctrl_c_in_train_names_the_run_the_trainer_attached(tmp_path, monkeypatch, capsys):
    def interrupt(*args, **kwargs):
        e = KeyboardInterrupt()
        e.run_dir = tmp_path / "runs" / "x"
        raise e

    monkeypatch.setattr(TRAIN, "train", interrupt)
    code, _, err = run_main(["train", "--data", "digits"], capsys)
    assert code == 130 and f"convolab train --resume {tmp_path / 'runs' / 'x'}`" in err


def test_ctrl_c_in_resume_names_the_run_not_the_checkpoint(tmp_path, monkeypatch, capsys):
    step = tmp_path / "run" / "checkpoints" / "step-00000011.pt"
    step.parent.mkdir(parents=True)
    step.write_bytes(b"")
    monkeypatch.setattr(TRAIN, "resume", _interrupt)
    code, _, err = run_main(["train", "--resume", step], capsys)
    assert code == 130 and f"convolab train --resume {tmp_path / 'run'}`" in err


def test_ctrl_c_after_the_trainer_said_how_to_resume_is_not_repeated(tmp_path, monkeypatch, capsys):
    import logging

    def interrupt(*args, **kwargs):
        logging.getLogger("convolab.train.loop").warning("interrupted; continue it with `convolab train --resume R`")
        raise KeyboardInterrupt

    monkeypatch.setattr(TRAIN, "train", interrupt)
    code, _, err = run_main(["train", "--data", "digits", "--out", tmp_path], capsys)
    assert code == 130
    assert err.splitlines()[-1] == "convolab train: interrupted" and err.count("--resume") == 1


def test_ctrl_c_in_train_without_a_known_folder(monkeypatch, capsys):
    monkeypatch.setattr(TRAIN, "train", _interrupt)
    code, _, err = run_main(["train", "--data", "digits"], capsys)
    assert code == 130 and "continue with `convolab train --resume` and the run directory" in err
    code, _, err = run_main(["train", "--data", "digits", "--no-checkpoints"], capsys)
    assert code == 130 and "cannot be resumed" in err


def test_report_passes_overwrite(monkeypatch, capsys, tmp_path):
    import convolab.report.html

    calls = []

    def build_report(run, **kwargs):
        calls.append(kwargs)
        return tmp_path / "r.html"

    monkeypatch.setattr(convolab.report.html, "build_report", build_report)
    for flag in ([], ["--overwrite"]):
        code, out, _ = run_main(["report", "RUN", "--out", tmp_path / "r.html", *flag], capsys)
        assert code == 0 and out == f"report: {tmp_path / 'r.html'}\n"
    assert [c["overwrite"] for c in calls] == [False, True]


def test_explain_unknown_method_lists_the_methods(capsys):
    from convolab.explain.attribution import METHODS

    code, _, err = run_main(["explain", "RUN", "x.png", "--method", "foo", "--out", "o"], capsys)
    assert code == 2 and "--method" in err and "'foo'" in err
    assert all(m in err for m in METHODS)


@pytest.mark.slow
def test_lr_find_json_without_out_writes_no_folder(tmp_path, monkeypatch, capsys):
    import json

    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(["lr-find", "--model", "tutorial_cnn", "--data", "digits", "--device", "cpu",
                               "--num-steps", "5", "--quiet", "--json"], capsys)
    assert code == 0, err
    printed = json.loads(out)
    assert printed["run_dir"] is None and printed["plot"] is None and printed["suggested_lr"] > 0
    assert list(tmp_path.iterdir()) == [], "no runs/ folder is left"


@pytest.mark.slow
def test_ctrl_c_in_a_real_training_process_says_how_to_resume(tmp_path):
    """SIGINT to `convolab train` once its first checkpoint is written: exit 130, the --resume command once, no
    traceback."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "convolab", "train", "--model", "tutorial_cnn", "--data", "digits", "--epochs", "200",
           "--quiet", "--no-plots", "--device", "cpu", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    deadline = time.monotonic() + 120
    while not list((out / "checkpoints").glob("step-*.pt")) and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("convolab train: interrupted")
    assert err.count(f"`convolab train --resume {out}`") == 1, err  # said once, by the trainer or by the CLI


def test_a_closed_pipe_is_no_error(monkeypatch, capsys):
    def fail(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli.models, "run", fail)
    code, out, err = run_main(["models"], capsys)
    assert code == 141 and err == ""


@pytest.mark.slow
def test_a_closed_pipe_as_a_real_process():
    """`convolab models --json | head -c 0`: the reader is gone before the table is printed; no error line and no
    'Exception ignored' from the flush at exit."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "convolab", "models", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # (the models are counted for seconds before anything is printed)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == "", err
