"""convolab sweep: the space grammar and its checks against TrainConfig, pruning through the trial callback, the
default SQLite study, two worker processes on one PostgreSQL study, and a SIGKILLed worker's trial.

The references are independent of the sweep's own bookkeeping: each trial's value is compared with its run folder's
metrics.jsonl, the best with the maximum over the run folders, and the study's trials are read back from the
database with Optuna itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from tests.experiments.pg import postgres_server

from convolab.cli import main
from convolab.experiments.storage import open_storage
from convolab.experiments.sweep import (
    Dimension,
    _ReportToTrial,
    check_space,
    option_value,
    parse_space,
    run_study,
)
from convolab.train import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ["--data", "digits", "--epochs", "1", "--batch-size", "64", "--device", "cpu", "--quiet", "--no-plots",
          "--precision", "32", "--no-checkpoints"]


def _last_val(run_dir: str | Path, key: str = "val_accuracy") -> float:
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if line]
    return rows[-1][key]


# -- the grammar ------------------------------------------------------------------------------------------------
def test_space_grammar_reads_every_distribution():
    dims = parse_space(["lr=loguniform(1e-4, 1e-1)", "batch-size=choice(64,128,256)", "epochs=int(1,3)",
                        "label_smoothing=uniform(0,0.2)", "act=choice(relu,'gelu')", "nesterov=choice(true,false)"])
    assert dims == [Dimension("lr", "loguniform", (1e-4, 0.1)), Dimension("batch_size", "choice", (64, 128, 256)),
                    Dimension("epochs", "int", (1, 3)), Dimension("label_smoothing", "uniform", (0.0, 0.2)),
                    Dimension("act", "choice", ("relu", "gelu")), Dimension("nesterov", "choice", (True, False))]
    assert str(dims[0]) == "lr=loguniform(0.0001,0.1)"
    assert parse_space([str(d) for d in dims]) == dims  # the canonical text reads back


@pytest.mark.parametrize("spec, expected", [
    ("lr", "expected KEY=uniform(LOW,HIGH)"),
    ("lr=normal(0,1)", "unknown distribution 'normal'"),
    ("lr=loguniform(0,1)", "loguniform needs 0 < LOW < HIGH"),
    ("lr=uniform(1,0.5)", "LOW must be smaller than HIGH"),
    ("lr=uniform(1)", "two bounds, LOW and HIGH: lr=uniform(LOW,HIGH)"),
    ("lr=uniform(a,1)", "'a' is not a number"),
    ("epochs=int(1.5,3)", "int takes two integers"),
    ("batch_size=choice()", "choice needs one or more values"),
    ("batch_size=choice(64,,128)", "choice needs one or more values"),
    ("batch_size=choice(64,64)", "a value appears twice"),
    ("weight_decy=uniform(0,0.1)", "weight_decy is not a training option; did you mean weight_decay?"),
    ("out=choice(a,b)", "the sweep sets out itself"),
    ("milestones=choice(1,2)", "takes a list of values and cannot be swept"),
])
def test_space_grammar_errors_are_one_line_with_the_right_form(spec, expected):
    with pytest.raises(ValueError) as e:
        parse_space([spec])
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_a_key_given_twice_is_refused():
    with pytest.raises(ValueError, match="lr is given twice"):
        parse_space(["lr=uniform(0.1,0.2)", "--lr=loguniform(1e-3,1e-2)"])


def test_values_are_read_by_the_fields_own_types():
    assert option_value("epochs", 3) == 3 and option_value("lr", 0.01) == 0.01
    assert option_value("nesterov", True) is True and option_value("act", "gelu") == "gelu"
    for key, value, message in [("epochs", 2.5, "epochs: expected a positive integer"), ("lr", 0.0, "lr: must be > 0"),
                                ("nesterov", 1, "nesterov is a switch"), ("optimizer", "adamz", "not one of")]:
        with pytest.raises(ValueError, match=message):
            option_value(key, value)


def test_check_space_builds_the_config_of_both_ends_before_anything_runs():
    base = TrainConfig(data="digits", epochs=3, schedule="cosine")
    check_space(parse_space(["lr=loguniform(1e-4,1e-1)", "warmup_epochs=uniform(0,2)"]), base)
    with pytest.raises(ValueError, match=r"epochs=uniform\(1.0,3.0\): epochs=1.0 is refused: epochs: expected a "
                                         "positive integer"):
        check_space(parse_space(["epochs=uniform(1,3)"]), base)
    # each value alone is fine; --warmup-epochs 3 is not shorter than --epochs 3 (TrainConfig.validate says so)
    with pytest.raises(ValueError, match=r"warmup_epochs=3.0 is refused: --warmup-epochs 3 must be shorter"):
        check_space(parse_space(["warmup_epochs=uniform(0,3)"]), base)


# -- pruning through the trial callback (a real Optuna study, a stand-in trainer) ---------------------------------
def _trainer(epochs: int = 3):
    return SimpleNamespace(stop_reason=None, config=SimpleNamespace(epochs=epochs))


def test_the_median_pruner_stops_a_bad_trial_cleanly_and_keeps_a_good_one():
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=2,
                                                                                          n_warmup_steps=0))
    for acc in (0.80, 0.90):  # two earlier trials: median 0.85 at epoch 1
        study.add_trial(optuna.trial.create_trial(value=acc, intermediate_values={1: acc, 2: acc}))
    bad, good = study.ask(), study.ask()
    for trial, acc, pruned in ((bad, 0.30, True), (good, 0.88, False)):
        trainer, cb = _trainer(), _ReportToTrial(trial, "val_accuracy", "median pruner")
        cb.on_epoch_end(trainer, {"epoch": 1, "val_accuracy": acc}, None)
        assert (cb.pruned_at == 1) is pruned
        assert (trainer.stop_reason is not None) is pruned
        if pruned:
            assert trainer.stop_reason.startswith("pruned by the sweep's median pruner after epoch 1")
        assert study._storage.get_trial(trial._trial_id).intermediate_values == {1: acc}
    # the last epoch is never pruned: the run is complete anyway
    trainer, cb = _trainer(epochs=1), _ReportToTrial(study.ask(), "val_accuracy", "median pruner")
    cb.on_epoch_end(trainer, {"epoch": 1, "val_accuracy": 0.1}, None)
    assert cb.pruned_at is None and trainer.stop_reason is None


def test_a_trial_failed_by_another_worker_stops_its_run():
    """Its heartbeat lapsed (a locked database ...) and another worker failed it: the run stops at the epoch's end
    and the trial is not told again."""
    study = optuna.create_study()
    trial = study.ask()
    study.tell(study.trials[0].number, state=optuna.trial.TrialState.FAIL)  # what fail_stale_trials does elsewhere
    trainer, cb = _trainer(), _ReportToTrial(trial, "val_accuracy", "median pruner")
    cb.on_epoch_end(trainer, {"epoch": 1, "val_accuracy": 0.5}, None)
    assert cb.lost and trainer.stop_reason.startswith("trial 0 was failed by another worker")
    assert study.trials[0].state.name == "FAIL" and study.trials[0].intermediate_values == {}


@pytest.mark.slow
def test_a_pruned_trial_stops_its_run_and_its_folder_says_so(tmp_path, digits_config):
    """Tiny real runs: a good learning rate, then one too small to learn in an epoch."""
    lrs = [3e-3, 1e-7]

    def suggest(trial):  # (fixed by the trial's number: this test chooses which trial is bad)
        return {"lr": lrs[trial.number]}

    base = digits_config(tmp_path / "unused", epochs=2, plots=False, checkpoints=False, precision="32")
    result = run_study("prune", suggest, 2, out=tmp_path / "sw", common=base,
                       pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0), sampler="random")
    states = [r["state"] for r in result.rows]
    assert states == ["COMPLETE", "PRUNED"]
    pruned = result.rows[1]
    run = Path(pruned["run_dir"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped_early"] and summary["stop_reason"].startswith("pruned by the sweep's MedianPruner")
    assert summary["epochs"] == 1 == pruned["pruned_at_epoch"]
    # the reference: its epoch-1 accuracy in its own metrics.jsonl, under the complete trial's at epoch 1 (the
    # median of one trial)
    first = json.loads((Path(result.rows[0]["run_dir"]) / "metrics.jsonl").read_text().splitlines()[0])
    assert _last_val(run) < first["val_accuracy"]
    assert (run / "model.safetensors").is_file()  # stopped cleanly: the run is whole, one epoch long
    assert pruned["intermediate"] == {"1": _last_val(run)}


# -- the CLI on the default SQLite store ---------------------------------------------------------------------------
def _sweep(out: Path, *extra: str, name: str = "lr", trials: int = 2) -> list[str]:
    return ["sweep", name, "--space", "lr=loguniform(1e-3,1e-2)", "--space", "batch_size=choice(32,64)",
            "--trials", str(trials), "--out", str(out), "--sampler", "random", *extra, "--", *DIGITS]


@pytest.mark.slow
def test_sqlite_default_runs_the_asked_trials_once_and_reports_the_best(tmp_path, capsys):
    out = tmp_path / "sw"
    assert main(_sweep(out, "--json")) == 0
    report = json.loads(capsys.readouterr().out)
    assert (out / "study.db").is_file() and report["storage"] == f"sqlite:///{out.resolve() / 'study.db'}"
    rows = report["trials"]
    assert [r["number"] for r in rows] == [0, 1] and {r["state"] for r in rows} == {"COMPLETE"}
    for r in rows:  # each value is the run folder's own last validation accuracy; the test figure its summary's
        assert r["run_dir"] == str(out / f"trial-{r['number']}")
        assert r["value"] == _last_val(r["run_dir"])
        assert r["test_accuracy"] == json.loads((Path(r["run_dir"]) / "summary.json").read_text())["test_accuracy"]
        config = json.loads((Path(r["run_dir"]) / "config.json").read_text())
        assert json.dumps(config).count(str(r["params"]["lr"])) >= 1
    assert report["best"]["value"] == max(_last_val(out / f"trial-{n}") for n in (0, 1))
    assert json.loads((out / "sweep.json").read_text())["best"] == report["best"]
    assert (out / "plots" / "history.png").stat().st_size > 1000
    study = optuna.load_study(study_name="lr", storage=report["storage"])
    assert study.user_attrs["convolab"]["signature"]["space"] == ["batch_size=choice(32,64)",
                                                                  "lr=loguniform(0.001,0.01)"]

    # the study is full: the same command again trains nothing and prints the table
    assert main(_sweep(out)) == 0
    text = capsys.readouterr().out
    assert "this worker trained 0" in text and f"run directory: {report['best']['run_dir']}" in text
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("trial-")) == ["trial-0", "trial-1"]

    # another space, or other common flags, for the same study: one line, exit 2
    other = _sweep(out)
    other[3] = "lr=loguniform(1e-4,1e-2)"
    assert main(other) == 2
    err = capsys.readouterr().err.strip()
    assert "was started with another definition (signature differs" in err and len(err.splitlines()) == 1
    assert main([*_sweep(out), "--lr-schedule-typo"]) == 2
    assert "unrecognized arguments: --lr-schedule-typo" in capsys.readouterr().err
    argv = _sweep(out)
    argv[argv.index("--epochs") + 1] = "2"  # other common flags
    assert main(argv) == 2
    assert "common differs: epochs: stored 1, given 2" in capsys.readouterr().err


def _exit_code(argv: list[str]) -> int:
    """main's exit code, also for argparse's own errors (which exit)."""
    try:
        return main(argv)
    except SystemExit as e:
        return int(e.code)


@pytest.mark.parametrize("argv, expected", [
    (["--space", "lr=gauss(1,2)"], "unknown distribution 'gauss'"),
    (["--space", "lr_rate=uniform(0.1,0.2)"], "lr_rate is not a training option; did you mean lr?"),
    (["--space", "epochs=uniform(1,3)"], "epochs: expected a positive integer"),
    (["--space", "lr=uniform(0.1,0.2)", "--", "--out", "x"], "may not set --out"),
    (["--space", "lr=uniform(0.1,0.2)", "--", "--lr", "0"], "the common training flags after --: argument --lr"),
    (["--space", "lr=uniform(0.1,0.2)", "--trials", "0"], "--trials: must be a positive integer"),
    (["--space", "lr=uniform(0.1,0.2)", "--storage", "postgresql://u:secret@127.0.0.1:1/x"],
     "cannot reach the study storage postgresql://u:***@127.0.0.1:1/x"),
    (["--space", "lr=uniform(0.1,0.2)", "--storage", "not a url"], "is not a database URL"),
])
def test_bad_input_is_one_line_and_exit_2(argv, expected, tmp_path, capsys):
    start = time.perf_counter()
    assert _exit_code(["sweep", "bad", "--out", str(tmp_path / "sw"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1 and "secret" not in err
    assert time.perf_counter() - start < 10  # an unreachable server within a few seconds
    assert not any((tmp_path / "sw").glob("trial-*"))


def test_an_out_folder_of_someone_else_is_refused(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep me")
    assert main(["sweep", "x", "--space", "lr=uniform(0.1,0.2)", "--out", str(tmp_path), "--", "--data",
                 "digits"]) == 2
    assert "is not a sweep folder" in capsys.readouterr().err
    assert (tmp_path / "mine.txt").read_text() == "keep me"


# -- many workers, a real PostgreSQL server ------------------------------------------------------------------------
def _worker(out: Path, storage: str, *extra: str, name: str = "pg", trials: int = 6) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "convolab", *_sweep(out, "--storage", storage, "--json", *extra,
                                                                        name=name, trials=trials)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def pg_url():
    with postgres_server() as url:
        yield url


@pytest.mark.slow
def test_two_workers_on_one_postgres_study_run_every_trial_once(tmp_path, pg_url):
    out = tmp_path / "sw"
    workers = [_worker(out, pg_url) for _ in range(2)]
    reports = []
    for w in workers:
        stdout, stderr = w.communicate(timeout=300)
        assert w.returncode == 0, stderr[-2000:]
        reports.append(json.loads(stdout))
    ran = [set(r["ran_here"]) for r in reports]
    assert not ran[0] & ran[1]  # no trial trained by both workers
    study = optuna.load_study(study_name="pg", storage=open_storage(pg_url))
    trials = [t for t in study.get_trials() if not t.user_attrs.get("over_budget")]
    assert len(trials) == 6 and sorted(t.number for t in trials) == sorted(ran[0] | ran[1])
    assert {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    dirs = [t.user_attrs["run_dir"] for t in trials]
    assert len(set(dirs)) == 6 and sorted(dirs) == sorted(str(p) for p in out.glob("trial-*"))
    for t in trials:  # one run, trained once, per trial: one epoch row, one summary
        assert len((Path(t.user_attrs["run_dir"]) / "metrics.jsonl").read_text().splitlines()) == 1
        if t.state.name == "COMPLETE":
            assert t.value == _last_val(t.user_attrs["run_dir"])
    best = max(_last_val(t.user_attrs["run_dir"]) for t in trials if t.state.name == "COMPLETE")
    for r in reports:  # both waited for the other's last trial, so both report the final study
        assert r["best"]["value"] == best == study.best_value
        assert sum(r["counts"].values()) == 6
    assert json.loads((out / "sweep.json").read_text())["best"]["value"] == best


@pytest.mark.slow
def test_a_killed_workers_trial_fails_and_a_new_worker_finishes_the_study(tmp_path):
    """SIGKILL a worker while its first trial trains; with a 1 s heartbeat the trial is failed once 2 s pass without
    one, and a new worker trains the study's two trials in its place."""
    out = tmp_path / "sw"
    storage = f"sqlite:///{out.resolve() / 'study.db'}"
    slow = ["--heartbeat", "1"]
    first = _worker(out, storage, *slow, name="kill", trials=2)
    deadline = time.monotonic() + 120
    while not (out / "trial-0" / "config.json").exists():  # written once the data loaded, before training
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()[1][-2000:]
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.communicate()
    assert not (out / "trial-0" / "summary.json").exists()  # killed mid-trial
    study = optuna.load_study(study_name="kill", storage=open_storage(storage))
    assert study.trials[0].state.name == "RUNNING"

    second = _worker(out, storage, *slow, name="kill", trials=2)
    stdout, stderr = second.communicate(timeout=300)
    assert second.returncode == 0, stderr[-2000:]
    report = json.loads(stdout)
    study = optuna.load_study(study_name="kill", storage=open_storage(storage))
    states = {t.number: t.state.name for t in study.trials}
    assert states[0] == "FAIL" and study.trials[0].value is None
    assert sorted(n for n, s in states.items() if s == "COMPLETE") == sorted(report["ran_here"]) == [1, 2]
    assert report["counts"] == {"FAIL": 1, "COMPLETE": 2}
    assert report["best"]["number"] in (1, 2)
    assert report["best"]["value"] == max(_last_val(out / f"trial-{n}") for n in (1, 2))


def test_two_workers_asking_at_once_never_exceed_the_total(tmp_path, monkeypatch):
    """The race between the count and ``ask``: another worker's ``ask`` lands in between, so this worker's trial
    comes after a full study; it is turned away (FAIL, over_budget) and nothing trains."""
    storage = f"sqlite:///{tmp_path / 'sw' / 'study.db'}"
    real_ask = optuna.study.Study.ask
    other: list = []

    def ask_after_another_worker(self, *args, **kwargs):
        if not other:  # the other worker's ask, through its own connection, just before ours
            rival = optuna.load_study(study_name="race", storage=storage)
            other.append(real_ask(rival))
        return real_ask(self, *args, **kwargs)

    monkeypatch.setattr(optuna.study.Study, "ask", ask_after_another_worker)
    result = run_study("race", lambda trial: pytest.fail("no trial may train"), 1, storage=storage,
                       out=tmp_path / "sw", common={"data": "digits"}, wait=False)
    assert [(r["number"], r["state"], r["over_budget"]) for r in result.rows] == [(0, "RUNNING", False),
                                                                                  (1, "FAIL", True)]
    assert result.counts == {"RUNNING": 1} and result.ran_here == []
    assert not any((tmp_path / "sw").glob("trial-*"))


@pytest.mark.slow
def test_run_study_takes_a_suggest_that_returns_train_flags(tmp_path):
    """The architecture search's way in: flags (here a spec: model) over common flags, read by train's parser."""
    from convolab.cli.train import train_config

    def suggest(trial):
        width = trial.suggest_categorical("width", [4, 8])
        return ["--model", f"spec:conv({width},3),relu,maxpool(2),flatten,fc"]

    common = DIGITS[:-1]  # (checkpoints on)
    result = run_study("flags", suggest, 1, out=tmp_path / "sw", common=common, parse_flags=train_config,
                       pruner="none")
    (row,) = result.rows
    config = json.loads((Path(row["run_dir"]) / "config.json").read_text())
    assert row["state"] == "COMPLETE" and row["value"] == _last_val(row["run_dir"])
    assert f"conv({row['params']['width']},3)" in json.dumps(config) and '"digits"' in json.dumps(config)
    with pytest.raises(ValueError, match="give the common options as flags too"):
        run_study("flags2", suggest, 1, out=tmp_path / "sw2", common={"data": "digits", "epochs": 1},
                  parse_flags=train_config)
