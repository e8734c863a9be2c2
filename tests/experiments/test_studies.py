"""experiments.studies and `convolab study`: every built-in study is a valid comparison, the verdicts follow
Welch's test (checked against scipy), and a study runs end to end into a verdict."""

import json

import pytest
from scipy import stats

from convolab.cli import main
from convolab.experiments import studies
from convolab.experiments.compare import check_variant
from convolab.experiments.studies import STUDIES, Study, compound_grid, get_study, pair_verdict, run_study
from convolab.train.flags import read_flags as train_flags


@pytest.mark.parametrize("name", [n for n in STUDIES if n != "compound-scaling"])
def test_every_study_variant_is_a_valid_training_run(name):
    study = STUDIES[name]
    assert len(study.variants) >= 2 or study.kind == "equivariance"
    assert study.claim and study.epochs >= 1
    for variant, flags in study.variants.items():
        check_variant(variant, flags, [*study.common, "--epochs", str(study.epochs)], train_flags)  # raises if refused


@pytest.mark.slow
def test_compound_grid_keeps_the_flops_constraint():
    from convolab.analysis.summary import summarize

    grid = compound_grid()
    base = summarize(grid["base"]["spec"], (1, 28, 28), num_classes=10).macs
    assert {"base", "depth-only", "width-only", "resolution-only"} <= set(grid)
    compounds = [k for k in grid if k.startswith("a")]
    assert len(compounds) == 4
    for name in compounds:
        c = grid[name]
        assert sum(c[k] > 1 for k in ("alpha", "beta", "gamma")) >= 2
        macs = summarize(c["spec"], (1, c["resolution"], c["resolution"]), num_classes=10).macs
        assert abs(macs / base - 2.0) <= 0.2 and macs / base == pytest.approx(c["ratio"])
    for variant, flags in studies._scaling_variants().items():
        check_variant(variant, flags, ["--data", "fashion-mnist"], train_flags)


def test_pair_verdict_follows_welchs_test():
    a, b = [0.91, 0.915, 0.912], [0.88, 0.884, 0.879]
    p = stats.ttest_ind(a, b, equal_var=False).pvalue
    line = pair_verdict({"a": a, "b": b}, "a", "b")
    assert line.startswith("HELD") and f"p = {p:.3g}" in line and "+3.13 points" in line
    assert pair_verdict({"a": a, "b": b}, "b", "a").startswith("REVERSED")
    close = {"a": [0.90, 0.91, 0.92], "b": [0.905, 0.915, 0.90]}
    assert pair_verdict(close, "a", "b").startswith("NOT SHOWN at this budget")
    assert "too few" in pair_verdict({"a": [0.9], "b": [0.8, 0.81]}, "a", "b")
    same = {"a": [0.9, 0.9, 0.9], "b": [0.9, 0.9, 0.9]}
    assert pair_verdict(same, "a", "b").startswith("NOT SHOWN")


def test_unknown_study_is_one_line_with_a_suggestion(capsys):
    with pytest.raises(ValueError, match="did you mean batchnorm"):
        get_study("batchnorn")
    assert main(["study", "batchnorn"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown study" in err[0]
    assert main(["study"]) == 2


def test_list_names_every_study(capsys):
    assert main(["study", "--list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in STUDIES)


@pytest.mark.slow
def test_a_study_runs_end_to_end_into_its_verdict(tmp_path, monkeypatch, capsys):
    tiny = Study("tiny", "ReLU beats tanh on digits", {"relu": ["--act", "relu"], "tanh": ["--act", "tanh"]},
                 ["--data", "digits", "--model", "tutorial_cnn", "--no-plots"], 1,
                 studies._judge_pairs(("relu", "tanh")))
    monkeypatch.setitem(STUDIES, "tiny", tiny)
    out = tmp_path / "study"
    assert main(["study", "tiny", "--out", str(out), "--seeds", "2", "--jobs", "2", "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["study"] == "tiny" and verdict["claim"] == tiny.claim and len(verdict["verdict"]) == 1
    for variant in ("relu", "tanh"):
        runs = sorted((out / variant).glob("seed-*/summary.json"))
        assert len(runs) == 2
        assert sorted(verdict["values"][variant]) == sorted(json.loads(p.read_text())["test_accuracy"] for p in runs)
        assert verdict["extras"][variant]["params"] > 0 and verdict["extras"][variant]["macs"] > 0
    assert json.loads((out / "verdict.json").read_text()) == verdict
    assert "claim: ReLU beats tanh" in (out / "verdict.txt").read_text()
    # everything kept: nothing trains again
    again = run_study("tiny", out, seeds=2, parse_flags=train_flags, say=lambda line: None)
    assert again.values == verdict["values"]


@pytest.mark.slow
def test_equivariance_study_measures_trained_models(tmp_path, monkeypatch):
    small = Study("eq", "equivariance", {"tutorial_cnn": ["--model", "tutorial_cnn"]},
                  ["--data", "digits", "--no-plots"], 1, None, kind="equivariance")
    monkeypatch.setitem(STUDIES, "eq", small)
    verdict = run_study("eq", tmp_path / "eq", seeds=1, parse_flags=train_flags, say=lambda line: None)
    assert verdict.lines[0].startswith("HELD: equivariance")
    assert "same prediction" in verdict.table and "features.conv1" in verdict.table
