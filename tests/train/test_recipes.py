"""``--recipe NAME``: named presets of train flags that fill only what the user left out."""

import json
import shlex

import pytest
from tests.cli.test_cli import assert_one_line_error, cli

from convolab.cli.train import train_config
from convolab.train.config import TrainConfig
from convolab.train.flags import read_flags, recipe_config, recipe_settings
from convolab.train.recipes import RECIPES, check_recipe_device


@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_is_flags_train_takes(name):
    settings = recipe_settings(name)
    config, given = read_flags(RECIPES[name].flags)  # a flag train refuses would raise here
    assert settings and set(settings) == given
    device = "cuda" if RECIPES[name].needs_cuda else "cpu"
    recipe_config(name, device=device).validate()


def test_the_tutorial_recipe_is_the_tutorials_loop():
    c = train_config(["--recipe", "tutorial"])
    assert (c.recipe, c.model, c.epochs, c.batch_size, c.lr, c.optimizer, c.schedule, c.label_smoothing,
            c.val_fraction) == ("tutorial", "tutorial_cnn", 5, 64, 1e-3, "adam", "constant", 0.0, 0.0)


def test_flags_given_beside_a_recipe_win_even_when_they_equal_the_default():
    base = train_config(["--recipe", "speedrun-cpu"])
    assert base.batch_size != TrainConfig().batch_size  # (the recipe changes it)
    c = train_config(["--recipe", "speedrun-cpu", "--batch-size", str(TrainConfig().batch_size), "--seed", "4"])
    assert c.batch_size == TrainConfig().batch_size and c.seed == 4
    assert c.epochs == base.epochs and c.model == base.model  # the rest still the recipe's
    assert read_flags(["--recipe", "tutorial", "--lr", "0.01"])[0].lr == 0.01  # the experiments read flags alike
    assert recipe_config("tutorial", lr=0.02, seed=3).lr == 0.02


def test_no_recipe_changes_nothing():
    assert train_config([]) == TrainConfig()


def test_an_unknown_recipe_lists_the_recipes(capsys):
    code, _, err = cli(["train", "--recipe", "fastest", "--data", "digits"], capsys)
    assert_one_line_error(code, err, "--recipe", "fastest", *RECIPES)
    with pytest.raises(ValueError, match="unknown recipe 'fastest'; choose one of: tutorial"):
        recipe_config("fastest")
    with pytest.raises(ValueError, match="unknown --recipe 'fastest'"):
        TrainConfig(recipe="fastest").validate()


def test_a_gpu_recipe_on_a_cpu_is_one_line(capsys, tmp_path):
    code, _, err = cli(["train", "--recipe", "speedrun-gpu", "--device", "cpu", "--out", tmp_path / "r"], capsys)
    assert_one_line_error(code, err, "--recipe speedrun-gpu needs a CUDA GPU", "--device cpu", "speedrun-cpu")
    assert not (tmp_path / "r").exists()  # refused before anything ran
    check_recipe_device("speedrun-gpu", "cuda")  # a GPU run is let through
    check_recipe_device("speedrun-cpu", "cpu")


def test_the_run_records_the_recipe_and_every_value_it_set(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = cli(["train", "--recipe", "tutorial", "--data", "digits", "--epochs", "1", "--device", "cpu",
                             "--quiet", "--no-plots", "--out", out, "--json"], capsys)
    assert code == 0, err
    recorded = json.loads((out / "config.json").read_text())["config"]  # the TrainConfig as trained
    assert recorded["recipe"] == "tutorial" and recorded["epochs"] == 1  # given beside it
    assert (recorded["batch_size"], recorded["lr"], recorded["schedule"], recorded["val_fraction"]) == \
        (64, 1e-3, "constant", 0.0)
    assert json.loads(stdout)["epochs"] == 1


def test_the_readme_lists_every_recipe_with_its_flags():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for recipe in RECIPES.values():
        assert f"| `{recipe.name}` |" in readme and f"`{shlex.join(recipe.flags)}`" in readme, recipe.name
