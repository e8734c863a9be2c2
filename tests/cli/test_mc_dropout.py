"""``convolab predict --mc-samples`` and ``convolab eval``'s ``ece`` / ``ece_mc`` on a run of a model with dropout
(mlp on digits), against the passes and the ECE written out in tests/explain/test_uncertainty.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from tests.cli.test_cli import assert_one_line_error, cli
from tests.explain.test_uncertainty import ece_reference, mc_reference

import convolab
from convolab.data import load_dataset


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory, digits_config):
    """mlp (dropout 0.2 after each hidden layer) trained 2 epochs on digits."""
    return convolab.train(digits_config(tmp_path_factory.mktemp("mlp-run") / "run", model="mlp", epochs=2)).run_dir


@pytest.fixture(scope="module")
def digit(tmp_path_factory):
    path = tmp_path_factory.mktemp("mc-images") / "digit.png"
    Image.fromarray(load_dataset("digits").test.images[3, 0].numpy(), "L").save(path)
    return path


def _test_inputs(run):
    """The test split's images as the model sees them, and their labels."""
    test = load_dataset("digits").test
    mean, std = torch.tensor(run.mean).view(1, -1, 1, 1), torch.tensor(run.std).view(1, -1, 1, 1)
    return (test.images.float() / 255 - mean) / std, test.labels


def test_eval_json_has_the_ece_of_the_plain_and_the_mc_predictions(mlp_run, capsys):
    code, stdout, err = cli(["eval", mlp_run, "--json", "--device", "cpu"], capsys)
    assert code == 0, err
    plain = json.loads(stdout)
    assert plain["ece_bins"] == 15 and "ece_mc" not in plain
    run = convolab.load_run(mlp_run)
    x, y = _test_inputs(run)
    with torch.no_grad():
        probs = run.model.eval()(x).softmax(1).double().numpy()
    assert plain["ece"] == pytest.approx(ece_reference(probs, y.numpy(), 15)[0], abs=1e-6)

    code, stdout, err = cli(["eval", mlp_run, "--json", "--device", "cpu", "--mc-samples", "12", "--seed", "3"],
                            capsys)
    assert code == 0, err
    res = json.loads(stdout)
    assert res["ece"] == plain["ece"] and res["accuracy"] == plain["accuracy"]  # the plain figures unchanged
    # the split is one batch (359 digits < 1000): the reference draws the same masks
    ref = mc_reference(run.model, x, 12, seed=3)
    mean = ref["probabilities"]
    assert res["mc_samples"] == 12
    assert res["ece_mc"] == pytest.approx(ece_reference(mean, y.numpy(), 15)[0], abs=1e-6)
    assert res["accuracy_mc"] == pytest.approx(float((mean.argmax(1) == y.numpy()).mean()), abs=1e-12)
    top_std = ref["std"][np.arange(len(y)), mean.argmax(1)]
    assert res["mean_std_mc"] == pytest.approx(float(top_std.mean()), rel=1e-6)  # (inputs normalised apart)
    assert res["ece_mc"] != res["ece"]


def test_eval_text_shows_both_eces(mlp_run, capsys):
    code, stdout, err = cli(["eval", mlp_run, "--device", "cpu", "--mc-samples", "4", "--seed", "3"], capsys)
    assert code == 0, err
    (line, mc_line) = stdout.strip().splitlines()
    run = convolab.load_run(mlp_run)
    x, y = _test_inputs(run)
    with torch.no_grad():
        plain = run.model.eval()(x).softmax(1).double().numpy()
    ece = ece_reference(plain, y.numpy(), 15)[0]
    assert f"ECE {ece:.4f} (15 bins) on 359 digits images" in line
    mean = mc_reference(run.model, x, 4, seed=3)["probabilities"]
    acc, ece_mc = float((mean.argmax(1) == y.numpy()).mean()), ece_reference(mean, y.numpy(), 15)[0]
    assert mc_line == f"MC dropout (4 passes, seed 3): accuracy {acc:.4f}, ECE {ece_mc:.4f}"


def test_predict_mc_json(mlp_run, digit, capsys):
    argv = ["predict", mlp_run, digit, "--json", "--mc-samples", "9", "--top-k", "4"]
    code, stdout, err = cli(argv, capsys)
    assert code == 0, err
    (res,) = json.loads(stdout)
    assert set(res) == {"image", "top_k", "std", "entropy", "mutual_information", "mc_samples"}
    assert res["mc_samples"] == 9 and len(res["top_k"]) == 4
    run = convolab.load_run(mlp_run)
    ref = mc_reference(run.model, run.preprocess([digit]), 9, seed=0)
    order = np.argsort(-ref["probabilities"][0])[:4]
    assert [t["index"] for t in res["top_k"]] == order.tolist()
    assert [t["probability"] for t in res["top_k"]] == pytest.approx(ref["probabilities"][0][order], rel=1e-9)
    assert [t["std"] for t in res["top_k"]] == pytest.approx(ref["std"][0][order], rel=1e-9)
    assert res["std"] == res["top_k"][0]["std"] > 0
    assert res["entropy"] == pytest.approx(ref["entropy"][0], rel=1e-9)
    assert res["mutual_information"] == pytest.approx(ref["mutual_information"][0], rel=1e-7, abs=1e-12)
    # the library says the same; the same seed gives the same figures, another seed others
    (lib,) = run.predict([digit], top_k=4, mc_samples=9)
    assert {k: v for k, v in lib.items()} == {k: v for k, v in res.items() if k != "image"}
    assert json.loads(cli(argv, capsys)[1]) == [res]
    other = json.loads(cli([*argv, "--seed", "1"], capsys)[1])[0]
    assert other["top_k"][0]["probability"] != res["top_k"][0]["probability"]


def test_predict_mc_text(mlp_run, digit, capsys):
    code, stdout, err = cli(["predict", mlp_run, digit, "--mc-samples", "5", "--top-k", "2"], capsys)
    assert code == 0, err
    (mc,) = convolab.load_run(mlp_run).predict([digit], top_k=2, mc_samples=5)
    ranked = ", ".join(f"{t['class']} {100 * t['probability']:.1f}% ± {100 * t['std']:.1f}%" for t in mc["top_k"])
    assert stdout.strip() == (f"{digit}: {ranked} (MC dropout, 5 passes: entropy {mc['entropy']:.3f}, mutual "
                              f"information {mc['mutual_information']:.3f} nats)")


@pytest.mark.parametrize("verb", ["predict", "eval"])
def test_a_model_without_dropout_is_one_line(verb, digits_run, digit, capsys):
    """tutorial_cnn has no dropout: one line before any input is read (not one per image)."""
    argv = [verb, digits_run.run_dir, *([digit, digit] if verb == "predict" else []), "--mc-samples", "10"]
    code, stdout, err = cli(argv, capsys)
    assert_one_line_error(code, err, f"convolab {verb}: error:", "MC dropout needs dropout layers", "TutorialCNN")
    assert stdout == ""


@pytest.mark.parametrize("verb", ["predict", "eval"])
def test_one_sample_is_one_line(verb, mlp_run, digit, capsys):
    argv = [verb, mlp_run, *([digit] if verb == "predict" else []), "--mc-samples", "1"]
    code, stdout, err = cli(argv, capsys)
    assert_one_line_error(code, err, "--mc-samples must be at least 2")
    assert stdout == ""
    code, _, err = cli([*argv[:-1], "0"], capsys)
    assert code == 2 and "Traceback" not in err
