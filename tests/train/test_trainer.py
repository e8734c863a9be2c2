"""``convolab.train``: a real (small) training run on scikit-learn's digits, and the run directory it writes.

The shared run (``digits_run`` in conftest.py) is tutorial_cnn, Adam 1e-3, batch 64, 5 epochs,
seed 0. Measured on the 2-core dev machine: test accuracy 0.883, train loss 2.20 -> 0.30.
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

import convolab
from convolab.atomic import read_jsonl
from convolab.data import load_dataset
from convolab.runs.reader import read_weights_metadata
from convolab.train import loop as trainer_module  # `convolab.train` itself is the function

METRIC_KEYS = {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds"}
SUMMARY_KEYS = {"test_accuracy", "test_loss", "best_val_accuracy", "epochs", "train_seconds", "samples_per_second",
                "params", "model", "dataset"}
PLOTS = ["accuracy.png", "confusion.png", "loss.png", "predictions.png"]


def _tutorial_cnn_params_at_8x8() -> int:
    # conv1 1*16*9+16, conv2 16*32*9+32, fc1 (32*2*2)*128+128, fc2 128*10+10
    return (1 * 16 * 9 + 16) + (16 * 32 * 9 + 32) + (32 * 2 * 2 * 128 + 128) + (128 * 10 + 10)


def _rows(run_dir):
    return read_jsonl(run_dir / "metrics.jsonl")


def _without_time(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


# -- learning --------------------------------------------------------------------------------------
def test_training_lowers_the_loss(digits_run):
    rows = _rows(digits_run.run_dir)
    first, last = rows[0], rows[-1]
    assert last["train_loss"] < 0.5 * first["train_loss"]
    assert last["val_loss"] < first["val_loss"]
    assert last["train_accuracy"] > first["train_accuracy"]


def test_reasonable_test_accuracy(digits_run):
    # measured 0.883 (tutorial_cnn, 5 epochs, Adam 1e-3); 10 classes, so chance is 0.1
    assert digits_run.summary["test_accuracy"] > 0.8


# -- the run directory -----------------------------------------------------------------------------
def test_run_directory_files(digits_run):
    run_dir = digits_run.run_dir
    names = sorted(p.name for p in run_dir.iterdir())
    assert names == [".convolab-run", "checkpoints", "config.json", "metrics.jsonl", "model.safetensors", "plots",
                     "steps.jsonl", "summary.json"]
    # the two newest epoch checkpoints (21 steps per epoch) and the best validation epoch's
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.pt", "step-00000084.pt",
                                                                          "step-00000105.pt"]
    assert sorted(p.name for p in (run_dir / "plots").iterdir()) == PLOTS, "plots/ holds the four PNGs, no temp files"


def test_metrics_jsonl_one_row_per_epoch(digits_run):
    lines = (digits_run.run_dir / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) == 5
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]
    for r in rows:
        assert set(r) == METRIC_KEYS
        assert r["lr"] == 1e-3
        assert 0 <= r["train_accuracy"] <= 1 and 0 <= r["val_accuracy"] <= 1
        assert r["train_loss"] > 0 and r["val_loss"] > 0
        assert r["seconds"] >= 0


def test_summary_json(digits_run):
    summary = json.loads((digits_run.run_dir / "summary.json").read_text())
    assert summary == digits_run.summary
    assert SUMMARY_KEYS <= set(summary)
    assert summary["model"] == "tutorial_cnn"
    assert summary["dataset"] == "digits"
    assert summary["epochs"] == 5
    assert 0.0 <= summary["test_accuracy"] <= 1.0, "a fraction, not a percentage"
    assert math.isfinite(summary["test_loss"]) and summary["test_loss"] > 0
    rows = _rows(digits_run.run_dir)
    assert summary["best_val_accuracy"] == max(r["val_accuracy"] for r in rows)
    assert summary["train_seconds"] > 0
    assert summary["samples_per_second"] > 0
    model_params = sum(p.numel() for p in digits_run.model.parameters())
    assert summary["params"] == model_params == _tutorial_cnn_params_at_8x8() == 22_602


def test_config_json(digits_run):
    config = json.loads((digits_run.run_dir / "config.json").read_text())
    assert config["model"] == "tutorial_cnn"
    assert config["model_kwargs"] == {"num_classes": 10, "in_chans": 1, "input_size": [8, 8]}
    assert config["seed"] == 0
    assert config["recipe"]["epochs"] == 5 and config["recipe"]["optimizer"] == "adam"
    ds = config["dataset"]
    assert ds["name"] == "digits"
    assert ds["input_size"] == [1, 8, 8]
    assert ds["classes"] == [str(i) for i in range(10)]
    # 1,797 images: scikit-learn's digits, 20 % held out as test, 10 % of the rest as validation
    assert sum(ds["sizes"].values()) == 1797
    assert ds["sizes"]["test"] == pytest.approx(0.2 * 1797, abs=10)
    assert ds["sizes"]["val"] == pytest.approx(0.1 * (1797 - ds["sizes"]["test"]), abs=10)
    assert config["versions"]["torch"] == torch.__version__


def test_plots_are_valid_pngs(digits_run):
    for name in PLOTS:
        path = digits_run.run_dir / "plots" / name
        with Image.open(path) as img:
            assert img.format == "PNG"
            img.verify()
        with Image.open(path) as img:
            img.load()
            assert img.width > 100 and img.height > 100


def test_weights_file(digits_run):
    path = digits_run.run_dir / "model.safetensors"
    meta = read_weights_metadata(path)
    assert meta["model"] == "tutorial_cnn"
    assert meta["classes"] == [str(i) for i in range(10)]
    assert meta["input_size"] == [1, 8, 8]
    state = load_file(str(path))
    trained = digits_run.model.state_dict()
    assert state.keys() == trained.keys()
    for k in state:
        assert torch.equal(state[k], trained[k].cpu()), k


# -- an independent recomputation of the test figures ---------------------------------------------
def test_summary_test_accuracy_recomputed_with_plain_torch(digits_run):
    run = convolab.load_run(digits_run.run_dir)
    data = load_dataset("digits")
    # Normalisation statistics recomputed from the training images, on the 0..1 scale.
    train_x = data.train.images.double() / 255
    mean, std = train_x.mean().item(), train_x.std(unbiased=False).item()
    assert run.mean == pytest.approx((mean,), abs=1e-9)
    assert run.std == pytest.approx((std,), abs=1e-9)

    x = (data.test.images.float() / 255 - mean) / std  # (360, 1, 8, 8)
    y = data.test.labels
    with torch.no_grad():
        logits = run.model(x)
    top2 = logits.topk(2, dim=1).values
    # A near tie between the top two classes may go either way in another memory layout (convolab evaluates
    # channels-last): only those images may count differently.
    near_ties = int(((top2[:, 0] - top2[:, 1]) <= 1e-4).sum())
    assert near_ties <= 2
    accuracy = int((logits.argmax(1) == y).sum()) / len(y)
    assert abs(digits_run.summary["test_accuracy"] - accuracy) <= near_ties / len(y)
    assert digits_run.summary["test_samples"] == len(y)
    assert digits_run.summary["test_loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-4)


# -- determinism -----------------------------------------------------------------------------------
def test_same_seed_same_metrics_and_weights(digits_run, digits_config, tmp_path):
    a = convolab.train(digits_config(tmp_path / "a", epochs=2, plots=False))
    b = convolab.train(digits_config(tmp_path / "b", epochs=2, plots=False))
    rows_a, rows_b = _rows(a.run_dir), _rows(b.run_dir)
    assert _without_time(rows_a) == _without_time(rows_b)
    # The first two epochs of the shared 5-epoch run with the same seed are the same numbers too.
    assert _without_time(rows_a) == _without_time(_rows(digits_run.run_dir)[:2])
    wa, wb = load_file(str(a.run_dir / "model.safetensors")), load_file(str(b.run_dir / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.summary["test_accuracy"] == b.summary["test_accuracy"]
    assert not (a.run_dir / "plots" / "loss.png").exists(), "plots=False writes no pictures"

    c = convolab.train(digits_config(tmp_path / "c", epochs=2, plots=False, seed=1))
    assert _without_time(_rows(c.run_dir)) != _without_time(rows_a), "the seed must matter"


# -- never silently overwrite ---------------------------------------------------------------------
def test_existing_out_is_refused_before_loading_data(digits_config, tmp_path, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")

    def no_data(*args, **kwargs):
        raise AssertionError("the data must not be loaded before --out is checked")

    monkeypatch.setattr(trainer_module, "load_dataset", no_data)
    with pytest.raises(FileExistsError, match="--overwrite"):
        convolab.train(digits_config(out))
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "keep me"


def test_overwrite_refuses_a_folder_that_is_not_a_run(digits_config, tmp_path):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("precious")
    (out / "model.safetensors").write_bytes(b"not from convolab")
    with pytest.raises(FileExistsError, match="not a run directory made by convolab"):
        convolab.train(digits_config(out, overwrite=True, epochs=1, plots=False))
    assert (out / "chapter1.tex").read_text() == "precious"
    assert (out / "model.safetensors").read_bytes() == b"not from convolab"


def test_overwrite_replaces_a_previous_run_completely(digits_run, digits_config, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(digits_run.run_dir, out)
    (out / "notes.txt").write_text("the user's, not the old run's")
    result = convolab.train(digits_config(out, overwrite=True, epochs=1, plots=False))
    assert result.run_dir == out
    rows = _rows(out)
    assert [r["epoch"] for r in rows] == [1], "metrics.jsonl must start afresh, not append to the old run's"
    assert (out / "notes.txt").read_text() == "the user's, not the old run's"  # only convolab's files are removed
    assert not (out / "plots" / "loss.png").exists()
    assert json.loads((out / "summary.json").read_text())["epochs"] == 1


def test_failed_overwrite_keeps_the_old_run(digits_run, digits_config, tmp_path):
    """An unknown model is found after the data loads but before the old run is removed."""
    out = tmp_path / "run"
    shutil.copytree(digits_run.run_dir, out)
    before = sorted(p.name for p in out.rglob("*"))
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        convolab.train(digits_config(out, overwrite=True, model="resnet"))
    assert sorted(p.name for p in out.rglob("*")) == before
    assert json.loads((out / "summary.json").read_text()) == digits_run.summary


def test_no_validation_split(digits_config, tmp_path):
    result = convolab.train(digits_config(tmp_path / "run", epochs=1, val_fraction=0.0, plots=True))
    (row,) = _rows(result.run_dir)
    assert row["val_loss"] is None and row["val_accuracy"] is None
    assert result.summary["best_val_accuracy"] is None
    assert (result.run_dir / "plots" / "loss.png").exists()


def test_a_folder_of_large_photos_trains_once_image_size_is_given(digits_config, tmp_path):
    """The data layer refuses photos larger than LARGE_SIDE at full size; TrainConfig.image_size downscales them."""
    from PIL import Image

    from convolab.data.folder import LARGE_SIDE

    rng = np.random.default_rng(0)
    for label in ("dark", "light"):
        (tmp_path / "photos" / label).mkdir(parents=True)
        for i in range(6):
            base = 40 if label == "dark" else 200
            pixels = np.clip(base + rng.normal(0, 20, (LARGE_SIDE + 76, 1300)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, "L").save(tmp_path / "photos" / label / f"{i}.png")
    photos = str(tmp_path / "photos")
    with pytest.raises(ValueError, match=r"large photos.*--image-size"):
        convolab.train(digits_config(tmp_path / "refused", data=photos, epochs=1, plots=False))
    assert not (tmp_path / "refused").exists()
    result = convolab.train(digits_config(tmp_path / "run", data=photos, epochs=1, plots=False, image_size=[24, 30],
                                          batch_size=4, val_fraction=0.0))
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["dataset"]["input_size"] == [1, 24, 30] and config["config"]["image_size"] == [24, 30]
    assert convolab.load_run(result.run_dir).model(torch.zeros(1, 1, 24, 30)).shape == (1, 2)


@pytest.mark.parametrize("size", [[0, 8], [8], [8, 8, 8], [8193, 8]])
def test_image_size_must_be_two_sides_in_range(digits_config, tmp_path, size):
    with pytest.raises(ValueError, match="--image-size must be HxW"):
        convolab.train(digits_config(tmp_path / "run", image_size=size))
