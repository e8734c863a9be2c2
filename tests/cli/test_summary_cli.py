"""``convolab summary``: the table, JSON, side by side, --verify, and one-line errors."""

from __future__ import annotations

import json

import pytest
from tests.cli.test_cli import assert_one_line_error, cli


def test_table_with_totals(capsys):
    code, out, err = cli(["summary", "vgg16", "--input", "3,224,224", "--depth", "1"], capsys)
    assert code == 0, err
    assert "features" in out and "classifier" in out
    assert "parameters: 138,357,544" in out
    assert "FLOPs = 2 x MACs" in out
    assert "receptive field: 212 pixels, effective stride 32" in out


def test_json_totals(capsys):
    code, out, _ = cli(["summary", "alexnet", "--json"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert doc["totals"]["receptive_field"] == 195 and doc["input"] == [3, 224, 224]
    assert doc["totals"]["flops"] == 2 * doc["totals"]["macs"]
    assert doc["layers"][0]["name"] == "features.0"


@pytest.mark.parametrize("name,shape,params", [
    ("tutorial_cnn", [1, 28, 28], 206_922),  # tests/models/test_tutorial.py counts it by hand
    ("resnet20", [3, 32, 32], 269_722),  # He et al. 2016, table 6: 0.27 M
    ("resnet18", [3, 224, 224], 11_689_512),  # torchvision's
])
def test_a_model_is_summarised_at_its_own_input_and_classes_by_default(capsys, name, shape, params):
    """No --input / --num-classes: the input and class count the model is made for, as `convolab models` counts it."""
    code, out, _ = cli(["summary", name, "--json"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert doc["input"] == shape and doc["totals"]["params"] == params
    code, out, _ = cli(["models", name, "--json"], capsys)
    assert json.loads(out)[0]["params"] == params


def test_side_by_side(capsys):
    code, out, _ = cli(["summary", "conv5", "conv3,conv3", "--input", "64,32,32"], capsys)
    assert code == 0
    last = out.strip().splitlines()[-10:]
    assert last[0].split() == ["conv5", "conv3,conv3"]
    assert last[2].split() == ["parameters", "102,464", "73,856"]
    assert last[7].split() == ["receptive", "field", "5", "5"]
    # the ratio line: 5*5*64*64 + 64 = 102,464 against 2 * (3*3*64*64 + 64) = 73,856
    assert last[9] == "conv5 / conv3,conv3: parameters 1.39x (102,464 / 73,856), MACs 1.39x (104.86 M / 75.50 M)"


def test_several_models_as_json_list(capsys):
    code, out, _ = cli(["summary", "lenet5", "tutorial_cnn", "--input", "1,28,28", "--json"], capsys)
    assert code == 0
    docs = json.loads(out)
    assert [d["model"] for d in docs] == ["lenet5", "tutorial_cnn"]


def test_verify(capsys):
    code, out, err = cli(["summary", "resnet18", "--input", "3,32,32", "--verify"], capsys)
    assert code == 0, err
    assert "verify: all figures match" in out


def test_run_directory(digits_run, capsys):
    code, out, err = cli(["summary", digits_run.run_dir, "--verify", "--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["input"] == [1, 8, 8] and doc["verification"]["ok"]


@pytest.mark.parametrize("args,needles", [
    (["summary", "resnet5"], ["unknown model", "resnet50"]),
    (["summary", "resnet18", "--input", "3,224"], ["--input must be C,H,W"]),
    (["summary", "resnet18", "--input", "0,8,8"], ["--input must be"]),
    (["summary", "conv3,conv"], ["needs --input"]),
    (["summary", "conv3,conv", "--input", "4,8,8"], ["cannot read 'conv'"]),
    (["summary", "resnet18", "--depth", "0"], ["--depth"]),
    (["summary", "/no/such/run"], ["no such run directory"]),
])
def test_user_errors(args, needles, capsys):
    code, _, err = cli(args, capsys)
    assert_one_line_error(code, err, *needles)
