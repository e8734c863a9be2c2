"""``convolab train --engine numpy``: the same run directory, the same numbers as the torch engine.

Both engines start from the same weights (the glass model is converted from the freshly built
torch model) and see the same batches, so a NumPy run must track the torch run step for step,
up to float32 rounding.
"""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tests.cli.test_cli import FASHION, assert_one_line_error, cli

import convolab
from convolab.atomic import read_jsonl
from convolab.runs.session import resume
from convolab.train import TrainConfig
from convolab.train import checkpoint as ckpt

from ._helpers import rel_err

RECIPE = dict(model="tutorial_cnn", data="digits", epochs=2, batch_size=64, lr=1e-3, optimizer="adam", seed=0,
              schedule="constant", label_smoothing=0.0, device="cpu", progress=False,
              precision="32")  # float32 on both engines (auto would pick bf16 for torch on a CPU that has it)


def _train_both(root, **overrides):
    """The recipe trained by each engine (plots only for the NumPy run: the torch engine's are tested elsewhere)."""
    return {engine: convolab.train(TrainConfig(out=str(root / engine), engine=engine, plots=engine == "numpy",
                                               **{**RECIPE, **overrides}))
            for engine in ("torch", "numpy")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The 2-epoch digits recipe trained once by each engine."""
    return _train_both(tmp_path_factory.mktemp("engines"))


def _assert_same_training(runs, tol):
    t, n = runs["torch"], runs["numpy"]
    rows_t, rows_n = read_jsonl(t.run_dir / "metrics.jsonl"), read_jsonl(n.run_dir / "metrics.jsonl")
    assert len(rows_t) == len(rows_n)
    for a, b in zip(rows_t, rows_n):
        for key in ("train_loss", "val_loss", "lr"):
            assert b[key] == pytest.approx(a[key], rel=tol), (key, a, b)
        assert abs(b["val_accuracy"] - a["val_accuracy"]) <= 1 / 143  # at most one of 143 images flips
    wt, wn = load_file(str(t.run_dir / "model.safetensors")), load_file(str(n.run_dir / "model.safetensors"))
    assert wt.keys() == wn.keys()
    for k in wt:
        assert rel_err(wn[k].numpy(), wt[k].numpy()) < tol, k
    assert n.summary["test_loss"] == pytest.approx(t.summary["test_loss"], rel=tol)


def test_numpy_engine_tracks_the_torch_engine(runs):
    _assert_same_training(runs, tol=1e-4)
    assert runs["numpy"].summary["test_accuracy"] == runs["torch"].summary["test_accuracy"]


def test_same_run_directory(runs):
    t, n = runs["torch"].run_dir, runs["numpy"].run_dir
    files = sorted(str(p.relative_to(n)) for p in n.rglob("*"))
    assert [f for f in files if not f.startswith("plots/")] == sorted(str(p.relative_to(t)) for p in t.rglob("*"))
    assert {"config.json", "metrics.jsonl", "steps.jsonl", "summary.json", "model.safetensors", "plots/loss.png",
            "plots/accuracy.png", "plots/predictions.png", "plots/confusion.png"} <= set(files)
    config = json.loads((n / "config.json").read_text())
    assert config["config"]["engine"] == "numpy" and config["device"] == "cpu"
    state = torch.load(n / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    assert state["optimizer"]["state"][0]["step"] == runs["numpy"].summary["steps"]  # glass Adam's counter


def test_eval_and_predict_use_the_numpy_run_unchanged(runs, capsys, tmp_path):
    run = convolab.load_run(runs["numpy"].run_dir)
    assert type(run.model).__name__ == "TutorialCNN"
    code, out, _ = cli(["eval", runs["numpy"].run_dir, "--json"], capsys)
    result = json.loads(out)
    assert code == 0 and result["accuracy"] == pytest.approx(result["recorded_accuracy"], abs=1e-12)
    image = (np.random.default_rng(0).random((8, 8)) * 255).astype(np.uint8)
    from PIL import Image

    Image.fromarray(image).save(tmp_path / "digit.png")
    code, out, _ = cli(["predict", runs["numpy"].run_dir, tmp_path / "digit.png", "--json"], capsys)
    assert code == 0 and len(json.loads(out)[0]["top_k"]) == 3


def test_resume_from_the_first_epochs_checkpoint_is_bit_identical(runs, tmp_path):
    whole = runs["numpy"].run_dir
    run = tmp_path / "run"
    shutil.copytree(whole, run)
    spe = runs["numpy"].summary["steps"] // 2
    result = resume(run / "checkpoints" / ckpt.checkpoint_name(spe), progress=False)
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(run / "model.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert result.summary["test_loss"] == runs["numpy"].summary["test_loss"] and result.summary["resumes"] == 1


def test_mistakes_fail_before_the_data_loads(tmp_path, capsys, monkeypatch):
    from convolab.train import loop as trainer_module

    monkeypatch.setattr(trainer_module, "load_dataset", lambda *a, **k: pytest.fail("data loaded"))
    code, _, err = cli(["train", "--engine", "numpy", "--model", "se_resnet18", "--data", "digits",
                        "--out", tmp_path / "a"], capsys)
    assert_one_line_error(code, err, "--engine numpy cannot train se_resnet18", "SqueezeExcite", "layer1.0.se")
    code, _, err = cli(["train", "--engine", "numpy", "--device", "cuda", "--data", "digits",
                        "--out", tmp_path / "b"], capsys)
    assert_one_line_error(code, err, "--engine numpy runs on the CPU; drop --device cuda")
    code, _, err = cli(["train", "--engine", "numpy", "--ema", "0.99", "--tta", "--data", "digits",
                        "--out", tmp_path / "c"], capsys)
    assert_one_line_error(code, err, "--engine numpy does not do --ema, --tta; drop them or use --engine torch")
    assert not any((tmp_path / d).exists() for d in "abc")


@pytest.mark.slow
def test_recipe_options_match_the_torch_engine(tmp_path):
    """SGD with Nesterov momentum, weight decay (not on biases), accumulation over a short last group,
    clipping, label smoothing, a warmed-up cosine schedule, augmentation and mixup (the loss on two
    targets, through the glass loss twice): each goes through the glass engine."""
    runs = _train_both(tmp_path, optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4,
                       accum_steps=3, clip_grad_norm=1.0, label_smoothing=0.1, schedule="cosine", warmup_steps=3,
                       augment="standard", mixup=0.4, epochs=3)
    _assert_same_training(runs, tol=1e-4)
    steps_t, steps_n = (read_jsonl(r.run_dir / "steps.jsonl") for r in (runs["torch"], runs["numpy"]))
    assert [s["lr"] for s in steps_n] == pytest.approx([s["lr"] for s in steps_t], rel=1e-12)
    assert [s["grad_norm"] for s in steps_n] == pytest.approx([s["grad_norm"] for s in steps_t], rel=1e-3)


@pytest.mark.slow
def test_tutorial_cnn_on_fashion_mnist_reaches_88_percent(tmp_path, capsys):
    """Issue 7's figure: `convolab train --engine numpy --model tutorial_cnn --data fashion-mnist --epochs 2`."""
    start = time.perf_counter()
    code, out, err = cli(["train", "--engine", "numpy", "--model", "tutorial_cnn", "--data", "fashion-mnist",
                          "--data-dir", FASHION, "--epochs", "2", "--out", tmp_path / "fm", "--quiet", "--json"],
                         capsys)
    assert code == 0, err
    summary = json.loads(out)
    print(f"\nnumpy engine, fashion-mnist, 2 epochs: test accuracy {summary['test_accuracy']:.4f}, "
          f"{summary['train_seconds']:.0f}s of training, {time.perf_counter() - start:.0f}s in all")
    assert summary["test_accuracy"] >= 0.88
