"""experiments.search and `convolab search`: random search and aging evolution as Optuna studies (every candidate
a real run on digits), and DARTS through the CLI."""

import json
import shlex

import pytest

from convolab.cli import main
from convolab.cli.train import train_config
from convolab.experiments.nas.space import Genotype, MacroSpace, macs
from convolab.experiments.search import pareto, search_architectures

COMMON = ["--data", "digits", "--epochs", "1", "--quiet", "--no-plots"]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["evolution", "random"])
def test_search_trains_every_candidate_once_with_its_genotype(strategy, tmp_path):
    space = MacroSpace(input_shape=(1, 8, 8), num_stages=2)
    result = search_architectures("s", strategy=strategy, trials=5, space=space, population=2, sample=2, seed=1,
                                  out=tmp_path / "s", common=train_config(COMMON), parse_flags=train_config,
                                  pruner="none")
    rows = sorted(result.candidates, key=lambda r: r["number"])
    assert [r["number"] for r in rows] == [0, 1, 2, 3, 4]
    assert result.best == max(rows, key=lambda r: (r["value"], -r["number"]))
    for r in rows:
        g = Genotype.from_dict(r["genotype"])
        assert r["spec"] == g.to_spec() and r["macs"] == macs(g, (1, 8, 8)) and space.is_valid(g)
        config = json.loads((tmp_path / "s" / f"trial-{r['number']}" / "config.json").read_text())
        assert config["model"] == r["spec"].removeprefix("spec:") or r["spec"] in json.dumps(config)
    if strategy == "random":
        assert all(r["parent"] is None for r in rows)
        return
    assert rows[0]["parent"] is None and rows[1]["parent"] is None  # the initial population is sampled
    for r in rows[2:]:
        # the parent is one of the two most recent finished candidates (aging), and the child differs by one gene
        assert r["parent"] in (r["number"] - 2, r["number"] - 1)
        parent = Genotype.from_dict(rows[r["parent"]]["genotype"])
        child = Genotype.from_dict(r["genotype"])
        diff = sum(a != b for a, b in zip(parent.to_dict()["stages"], child.to_dict()["stages"]))
        assert diff + (parent.bn != child.bn) + (parent.head != child.head) == 1
    front = pareto(rows)
    for r in rows:  # nothing off the front beats a front member on both objectives
        assert not any(f["value"] < r["value"] and f["macs"] > r["macs"] for f in front)


def test_bad_options_are_one_line(tmp_path, capsys):
    assert main(["search", "x", "--strategy", "evolution", "--order", "2", "--", "--data", "digits"]) == 2
    assert "--order applies to --strategy darts" in capsys.readouterr().err
    assert main(["search", "x", "--strategy", "darts", "--population", "4", "--", "--data", "digits"]) == 2
    assert "--population applies to --strategy random and evolution" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--sample must be 1 to --population"):
        search_architectures("x", population=2, sample=3, out=tmp_path / "x")
    with pytest.raises(ValueError, match="unknown search strategy 'grid'"):
        search_architectures("x", strategy="grid", out=tmp_path / "x")


def test_max_macs_takes_a_count_or_a_model(capsys):
    from convolab.analysis import summarize
    from convolab.cli.search import _max_macs
    from convolab.models import create_model

    assert _max_macs("1.2M", (1, 28, 28), 10) == 1_200_000
    assert _max_macs("800k", (1, 28, 28), 10) == 800_000 and _max_macs("5e5", (1, 28, 28), 10) == 500_000
    tut = summarize(create_model("tutorial_cnn", num_classes=10, in_chans=1, input_size=(28, 28)), (1, 28, 28)).macs
    assert _max_macs("tutorial_cnn", (1, 28, 28), 10) == tut
    assert main(["search", "x", "--max-macs", "lots", "--", "--data", "digits"]) == 2
    assert "--max-macs takes a count (1.2M, 5e5, 800k) or a model name" in capsys.readouterr().err
    assert main(["search", "x", "--max-macs", "10", "--", "--data", "digits"]) == 2
    assert "no architecture of at most 10 MACs" in capsys.readouterr().err
    assert main(["search", "x", "--strategy", "darts", "--max-macs", "1M", "--", "--data", "digits"]) == 2
    assert "--max-macs applies to --strategy random and evolution" in capsys.readouterr().err


def test_a_space_with_no_valid_architecture_names_the_stage():
    with pytest.raises(ValueError, match="stage 4 gets a 1x1 map"):
        MacroSpace(input_shape=(1, 8, 8), num_stages=4, downs=("max",))


@pytest.mark.slow
def test_cli_evolution_prints_the_best_and_how_to_retrain(tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["search", "cli", "--trials", "3", "--population", "2", "--sample", "1", "--stages", "2",
                 "--out", str(out), "--", *COMMON])
    text = capsys.readouterr().out
    assert code == 0 and "3 candidates (3 complete" in text
    assert "retrain the best from scratch: convolab train --model 'spec:" in text
    assert (out / "sweep.json").is_file()


@pytest.mark.slow
def test_cli_darts_derives_a_cell(tmp_path, capsys):
    out = tmp_path / "darts"
    code = main(["search", "cell", "--strategy", "darts", "--json", "--out", str(out), "--layers", "3", "--nodes", "2",
                 "--init-channels", "4", "--", "--data", "digits",
                 "--epochs", "1", "--quiet", "--no-plots", "--batch-size", "256"])
    info = json.loads(capsys.readouterr().out)
    assert code == 0 and "normal" in json.dumps(info["genotype"])
    assert json.loads((out / "genotype.json").read_text())["genotype"] == info["genotype"]
    # the printed command trains the found cell from scratch
    retrain = shlex.split(info["retrain"])
    assert retrain[:5] == ["convolab", "train", "--model", "darts_net", "--model-arg"]
    assert main([*retrain[1:], "--model-arg", "init_channels=4", "layers=3", "--epochs", "1", "--quiet",
                 "--no-plots", "--out", str(tmp_path / "retrained")]) == 0
