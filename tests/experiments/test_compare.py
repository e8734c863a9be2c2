"""convolab compare: bad input refused before anything runs; real comparisons on scikit-learn's digits (each run a
real `convolab train` process), re-run, resumed after a lost summary and after a SIGKILL."""

from __future__ import annotations

import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scipy import stats as sps

from convolab.atomic import write_json
from convolab.cli import main
from convolab.experiments import stats
from convolab.experiments.compare import RunResult, _result, _write_outputs, check_variant, compare
from convolab.train.flags import read_flags as train_flags

COMMON = ["--data", "digits", "--epochs", "1"]


def cli(argv, capsys):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def refused(argv, capsys, *words):
    code, out, err = cli(["compare", *argv], capsys)
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convolab compare: error: "), err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


@pytest.mark.parametrize("variant, words", [
    ("relu=--act relu --no-such-flag", ("variant relu", "--no-such-flag")),
    ("fast=--lr 0", ("variant fast", "--lr", "> 0")),
    ("big=--epochs 0", ("variant big", "--epochs", "positive integer")),
    ("nag=--optimizer adam --nesterov", ("variant nag", "--nesterov needs --optimizer sgd")),
    ("sw=--act swishy", ("variant sw", "swishy")),
    ("lenet6", ("variant lenet6", "unknown model 'lenet6'")),
    ("s=--seed 3", ("variant s", "--seed", "--seeds")),
    ("o=--out elsewhere", ("variant o", "--out")),
    ("o=--ou elsewhere", ("variant o", "--out")),  # (argparse's abbreviations are caught too)
    ("r=--resume somewhere", ("variant r", "--resume")),
    ("w=--overwrite", ("variant w", "--overwrite")),
    ("h=--help", ("variant h", "--help")),
    ("q=--act 'relu", ("variant q", "quote")),
    ("bad/name=--act relu", ("'bad/name'", "letters, digits")),
    ("plots=--act relu", ("'plots'",)),
    ("..=--act relu", ("'..'",)),
])
def test_bad_variants_are_refused_before_anything_runs(tmp_path, capsys, variant, words):
    out = tmp_path / "cmp"
    refused([out, "--variant", "ok=--act relu", "--variant", variant, "--", *COMMON], capsys, *words)
    assert not out.exists()  # nothing made, nothing trained


def test_bad_arguments(tmp_path, capsys):
    out = tmp_path / "cmp"
    refused([out, "--variant", "a=--act relu", "--variant", "a=--act tanh", "--", *COMMON], capsys,
            "variant a is given twice")
    refused([out, "--variant", "a", "--seeds", "0"], capsys, "--seeds")
    refused([out, "--variant", "a", "--jobs", "0"], capsys, "--jobs")
    refused([out, "--", *COMMON], capsys, "no variants")
    refused([out, "--variant", "a=--act relu", "--", "--data", "digits", "--seed", "1"], capsys,
            "the common train flags", "--seed")
    refused([out, "--variant", "a=--act relu", "--", "--data", "digits", "--bogus"], capsys,
            "the common train flags", "--bogus")
    refused([out, "--variant", "a=--act relu", "--metric", "test accuracy", "--", *COMMON], capsys, "--metric")
    assert not out.exists()
    afile = tmp_path / "afile"
    afile.write_text("x")
    refused([afile, "--variant", "a=--act relu", "--", *COMMON], capsys, "is a file")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    refused([other, "--variant", "a=--act relu", "--", *COMMON], capsys, "not a convolab compare folder")
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]


def test_a_redefined_variant_and_a_foreign_run_folder_are_refused(tmp_path, capsys):
    out = tmp_path / "cmp"
    out.mkdir()
    plan = {"kind": "convolab-compare", "format": 1, "seeds": [0],
            "variants": {"a": {"argv": [*COMMON, "--act", "tanh"], "common": COMMON, "flags": ["--act", "tanh"],
                               "config": check_variant("a", ["--act", "tanh"], COMMON, train_flags)}}}
    write_json(out / "compare.json", plan)
    line = refused([out, "--variant", "a=--act relu", "--", *COMMON], capsys, "variant a", "--act tanh",
                   "--act relu", "another name")
    assert "'tanh'" in line and "'relu'" in line
    # the same definition written otherwise (--act=tanh, another order) is the same variant; a folder in its place
    # that convolab did not make is refused before anything trains
    (out / "a" / "seed-0").mkdir(parents=True)
    (out / "a" / "seed-0" / "mine.txt").write_text("x")
    refused([out, "--variant", "a=--act=tanh", "--", "--epochs", "1", "--data", "digits"], capsys,
            "seed-0 exists and is not a convolab run directory")
    assert json.loads((out / "compare.json").read_text()) == plan  # untouched


def test_a_comparison_from_before_a_new_setting_resumes():
    """A definition stored before TrainConfig had a field (here: train_size, once new) is the same variant when this
    call leaves the field at its default -- and a different one when it does not."""
    from convolab.experiments.compare import _merge_plan

    now = check_variant("a", ["--act", "tanh"], COMMON, train_flags)
    before = {k: v for k, v in now.items() if k != "train_size"}
    plan = {"kind": "convolab-compare", "format": 1, "seeds": [0],
            "variants": {"a": {"argv": ["--act", "tanh"], "config": before}}}
    merged = _merge_plan(plan, Path("cmp"), {"a": {"argv": ["--act", "tanh"], "config": now}}, [0, 1])
    assert merged["seeds"] == [0, 1]
    changed = check_variant("a", ["--act", "tanh", "--train-size", "100"], COMMON, train_flags)
    with pytest.raises(ValueError, match="variant a in cmp was trained as"):
        _merge_plan(plan, Path("cmp"), {"a": {"argv": ["--act", "tanh"], "config": changed}}, [0])


def test_api_refuses_bad_seeds_and_jobs(tmp_path):
    for seeds, jobs, match in ((0, 1, "--seeds must be >= 1"), ([0, 0], 1, "distinct"), ([-1], 1, "distinct"),
                               (2, 0, "--jobs must be >= 1")):
        with pytest.raises(ValueError, match=match):
            compare(tmp_path / "c", {"a": ["--act", "relu"]}, seeds, common=COMMON, jobs=jobs,
                    parse_flags=train_flags)
    with pytest.raises(ValueError, match="no variants"):
        compare(tmp_path / "c", {}, 2, parse_flags=train_flags)
    assert not (tmp_path / "c").exists()


def test_table_csv_json_and_plot_from_runs(tmp_path):
    """The outputs of a comparison from its runs (no training): a failed run and n = 1 leave '-' and no crash."""
    values = {"a": [0.81, 0.84, 0.80], "b": [0.86, 0.90, None], "c": [0.7, None, None]}
    runs = [RunResult(v, s, tmp_path / v / f"seed-{s}", "trained" if x is not None else "failed", x,
                      None if x is None else 10.0 + s, None if x is not None else "exit 2: boom")
            for v, xs in values.items() for s, x in enumerate(xs)]
    result = _result(tmp_path, "test_accuracy", [0, 1, 2], {"a": [], "b": ["--act", "tanh"], "c": []}, runs)
    _write_outputs(result)
    rows = _csv(tmp_path)
    assert [(r["variant"], r["seed"], r["status"]) for r in rows][:4] == [("a", "0", "trained"), ("a", "1", "trained"),
                                                                          ("a", "2", "trained"), ("b", "0", "trained")]
    assert [r["test_accuracy"] for r in rows] == ["0.81", "0.84", "0.8", "0.86", "0.9", "", "0.7", "", ""]
    b = result.variant("b")
    assert (b.sample.n, b.failed, b.median_seconds) == (2, [2], 10.5)
    ref = sps.ttest_ind([0.86, 0.90], values["a"], equal_var=False)
    assert b.welch.t == pytest.approx(ref.statistic, rel=1e-9) and b.welch.p == pytest.approx(ref.pvalue, rel=1e-7)
    assert result.variant("c").welch is None and result.variant("c").sample.std is None
    table = result.table().splitlines()
    assert table[0].startswith("test_accuracy over seeds 0-2") and "against a" in table[0]
    cells = {line.split()[0]: line.split() for line in table[2:]}
    assert cells["a"][1:4] == ["3", f"{stats.mean(values['a']):.4f}", f"{stats.sample_std(values['a']):.4f}"]
    assert cells["a"][-5:] == ["-", "-", "-", "-", "11.0"]
    assert cells["b"][:3] == ["b", "(1", "failed)"] and cells["b"][-1] == "10.5"
    assert cells["c"][1:] == ["(2", "failed)", "1", "0.7000", "-", "-", "-", "-", "-", "-", "10.0"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == json.loads(json.dumps(result.to_dict())) and saved["reference"] == "a"
    assert saved["variants"][1]["ci95"] == list(stats.confidence_interval([0.86, 0.90]))
    assert (tmp_path / "plots" / "compare.png").read_bytes()[:4] == b"\x89PNG"


def _csv(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def _headers(log: Path) -> int:
    """How many runs of train a log records (compare writes one '# ...' line before each)."""
    return sum(line.startswith("# ") for line in log.read_text().splitlines())


@pytest.mark.slow
def test_real_compare_on_digits_resumes_only_what_is_missing(tmp_path, capsys):
    out = tmp_path / "act"
    argv = ["compare", out, "--variant", "relu=--act relu", "--variant", "tanh=--act tanh", "--seeds", "2", "--jobs",
            "2", "--", *COMMON]
    code, stdout, err = cli(argv, capsys)
    assert code == 0, (stdout, err)
    runs = {(v, s): out / v / f"seed-{s}" for v in ("relu", "tanh") for s in (0, 1)}
    for run_dir in runs.values():
        assert (run_dir / "summary.json").is_file() and (run_dir.parent / f"{run_dir.name}.log").is_file()
        config = json.loads((run_dir / "config.json").read_text())["config"]
        assert config["act"] == run_dir.parent.name and config["seed"] == int(run_dir.name[-1])
        assert config["epochs"] == 1 and config["data"] == "digits"
    assert sum(line.startswith("[") and " left" in line for line in stdout.splitlines()) == 4  # a line per run
    rows = _csv(out)
    assert len(rows) == 4 and {(r["variant"], int(r["seed"])) for r in rows} == set(runs)
    for r in rows:
        summary = json.loads((Path(r["run_dir"]) / "summary.json").read_text())
        assert float(r["test_accuracy"]) == summary["test_accuracy"] and float(r["seconds"]) == summary["train_seconds"]
        assert Path(r["run_dir"]) == runs[(r["variant"], int(r["seed"]))] and r["status"] == "trained"
    values = {v: [float(r["test_accuracy"]) for r in rows if r["variant"] == v] for v in ("relu", "tanh")}
    results = json.loads((out / "results.json").read_text())
    by_name = {v["name"]: v for v in results["variants"]}
    table = {line.split()[0]: line.split() for line in stdout.splitlines() if line.split()[:1] in (["relu"], ["tanh"])}
    for v in ("relu", "tanh"):
        assert by_name[v]["n"] == 2
        assert by_name[v]["mean"] == pytest.approx(statistics.mean(values[v]), rel=1e-12)
        assert by_name[v]["std"] == pytest.approx(statistics.stdev(values[v]), rel=1e-12)
        assert table[v][2] == f"{statistics.mean(values[v]):.4f}"  # the table's mean is the csv's
        lo, hi = sps.t.interval(0.95, 1, loc=statistics.mean(values[v]), scale=sps.sem(values[v]))
        assert by_name[v]["ci95"] == [pytest.approx(lo, rel=1e-9), pytest.approx(hi, rel=1e-9)]
    ref = sps.ttest_ind(values["tanh"], values["relu"], equal_var=False)
    assert by_name["relu"]["welch"] is None
    assert by_name["tanh"]["welch"]["t"] == pytest.approx(ref.statistic, rel=1e-9)
    assert by_name["tanh"]["welch"]["p"] == pytest.approx(ref.pvalue, rel=1e-7)
    assert (out / "plots" / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the same command again trains nothing
    stamps = {k: (d / "summary.json").stat().st_mtime_ns for k, d in runs.items()}
    code, stdout, _ = cli(argv, capsys)
    assert code == 0 and "4 finished before, 0 to resume, 0 to train" in stdout
    assert {k: (d / "summary.json").stat().st_mtime_ns for k, d in runs.items()} == stamps
    assert all(_headers(d.parent / f"{d.name}.log") == 1 for d in runs.values())
    assert [r["status"] for r in _csv(out)] == ["kept"] * 4
    # a metric no summary has: one line with the choices, after the (kept) runs; results.csv stays as it was
    before = (out / "results.csv").read_bytes()
    line = refused([*argv[1:-len(COMMON) - 1], "--metric", "test_acc", "--", *COMMON], capsys, "--metric test_acc",
                   "test_accuracy, test_loss", "trains nothing")
    assert "test_top5_accuracy" in line and (out / "results.csv").read_bytes() == before

    # a run without its summary (killed after its last checkpoint) resumes; only it runs
    (runs[("tanh", 1)] / "summary.json").unlink()
    code, stdout, _ = cli([*argv[:-len(COMMON) - 1], "--json", "--", *COMMON], capsys)
    assert code == 0
    printed = json.loads(stdout)
    assert printed == json.loads((out / "results.json").read_text())
    assert {(r["variant"], r["seed"]): r["status"] for r in printed["runs"]} == {
        ("relu", 0): "kept", ("relu", 1): "kept", ("tanh", 0): "kept", ("tanh", 1): "resumed"}
    assert [_headers(d.parent / f"{d.name}.log") for d in runs.values()] == [1, 1, 1, 2]
    assert json.loads((runs[("tanh", 1)] / "summary.json").read_text())["resumes"] == 1
    assert [float(r["test_accuracy"]) for r in _csv(out)] == [*values["relu"], *values["tanh"]]  # same figures

    # a new seed and a new variant in the same OUT: only they train
    stamps = {k: (d / "summary.json").stat().st_mtime_ns for k, d in runs.items()}
    said = []
    result = compare(out, {"relu": ["--act", "relu"], "elu": ["--act", "elu"]}, [1, 2], common=COMMON, jobs=2,
                     say=said.append, parse_flags=train_flags)
    assert {(r.variant, r.seed): r.status for r in result.runs} == {
        ("relu", 1): "kept", ("relu", 2): "trained", ("elu", 1): "trained", ("elu", 2): "trained"}
    assert {k: (d / "summary.json").stat().st_mtime_ns for k, d in runs.items()} == stamps
    assert said[0].endswith("1 finished before, 0 to resume, 3 to train, 2 at a time") and len(said) == 4
    assert result.variant("relu").sample.n == 2 and result.variant("elu").welch is not None
    assert result.seeds == [1, 2] and "over seeds 1, 2" in result.table()
    assert set(json.loads((out / "compare.json").read_text())["variants"]) == {"relu", "tanh", "elu"}


@pytest.mark.slow
def test_a_failed_run_is_reported_and_the_others_count(tmp_path, capsys):
    out = tmp_path / "cmp"
    code, stdout, err = cli(["compare", out, "--variant", "ok=--act relu", "--variant",
                             f"broken=--data {tmp_path / 'no-such-folder'}", "--seeds", "1", "--jobs", "2", "--",
                             *COMMON], capsys)
    assert code == 1, (stdout, err)
    failed = [line for line in stdout.splitlines() if line.startswith("failed: broken seed 0: exit 2: ")]
    assert len(failed) == 1 and "no-such-folder" in failed[0]
    rows = {r["variant"]: r for r in _csv(out)}
    assert rows["broken"]["status"] == "failed" and rows["broken"]["test_accuracy"] == ""
    assert rows["ok"]["status"] == "trained" and float(rows["ok"]["test_accuracy"]) > 0
    results = json.loads((out / "results.json").read_text())
    assert [(v["name"], v["n"], v["failed_seeds"]) for v in results["variants"]] == [("ok", 1, []),
                                                                                     ("broken", 0, [0])]
    ok = [line for line in stdout.splitlines() if line.startswith("ok ")][0].split()
    assert ok[1:5] == ["1", f"{float(rows['ok']['test_accuracy']):.4f}", "-", "-"]  # n = 1: a mean, no spread


def _training_processes(out: Path) -> list[int]:
    """Processes whose command line trains into ``out`` (read from /proc)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"train" in cmd and any(str(out).encode() in part for part in cmd):
            found.append(int(proc.name))
    return found


@pytest.mark.slow
def test_a_killed_compare_resumes_only_the_missing_seeds(tmp_path):
    out = tmp_path / "cmp"
    cmd = [sys.executable, "-m", "convolab", "compare", str(out), "--variant", "relu=--act relu", "--seeds", "3",
           "--", "--data", "digits", "--epochs", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:  # until the first run has finished
        lines.append(line)
        if line.startswith("[1/3]"):
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert lines[-1].startswith("[1/3] relu seed 0: test_accuracy "), lines
    deadline = time.monotonic() + 10
    while _training_processes(out) and time.monotonic() < deadline:  # the run in progress dies with compare
        time.sleep(0.1)
    assert _training_processes(out) == []
    assert (out / "relu" / "seed-0" / "summary.json").is_file()
    assert not (out / "relu" / "seed-2" / "summary.json").exists()

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "3 seeds; 1 finished before" in again.stdout
    rows = _csv(out)
    assert [(r["variant"], r["seed"]) for r in rows] == [("relu", "0"), ("relu", "1"), ("relu", "2")]
    assert rows[0]["status"] == "kept" and {r["status"] for r in rows[1:]} <= {"trained", "resumed"}
    for r in rows:
        assert float(r["test_accuracy"]) == json.loads((Path(r["run_dir"]) / "summary.json").read_text())[
            "test_accuracy"]
    assert _headers(out / "relu" / "seed-0.log") == 1  # the finished run did not run again
    assert os.path.getsize(out / "results.csv") > 0


@pytest.mark.slow
def test_ctrl_c_stops_the_runs_and_says_how_to_continue(tmp_path):
    out = tmp_path / "cmp"
    cmd = [sys.executable, "-m", "convolab", "compare", str(out), "--variant", "relu=--act relu", "--seeds", "3",
           "--", *COMMON]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("[1/3]"):
            break
    proc.send_signal(signal.SIGINT)  # to compare only: it passes it on to the run in progress
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, "".join(lines) + rest
    assert "interrupted: 2 runs unfinished; the same command continues them" in rest
    assert rest.strip().splitlines()[-1] == "convolab compare: interrupted"
    assert _training_processes(out) == []  # nothing left training
    assert not (out / "results.csv").exists()


def test_the_library_needs_no_flag_parser(tmp_path):
    """compare, check_variant and run_study read train's flags themselves (convolab.train.flags) when no parser is
    given: the Python API works without the command line."""
    from convolab.experiments.compare import check_variant as check

    assert check("a", ["--act", "tanh"], COMMON) == check("a", ["--act", "tanh"], COMMON, train_flags)
    with pytest.raises(ValueError, match="variant b: argument --lr: "):
        check("b", ["--lr", "0"], COMMON)
