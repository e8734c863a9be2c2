"""--train-size: exactly N training images, each class in proportion (largest remainders), by seed; validation and
test untouched; a training run really trains on N."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from convolab.data import load_dataset


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.mark.parametrize("n", [1, 10, 137, 500, 1000])
def test_exactly_n_in_proportion(digits, n):
    cut = digits.with_train_size(n, seed=3)
    assert len(cut.train) == n == len(cut.train.images)
    total = len(digits.train)
    y_all, y_cut = digits.train.labels.numpy(), cut.train.labels.numpy()
    for c in range(digits.num_classes):
        share = (y_all == c).sum() * n / total
        assert np.floor(share) <= (y_cut == c).sum() <= np.ceil(share)  # hand formula: floor or ceil of the share
    # the images are the training split's own rows, with their labels
    rows = {bytes(img.numpy()): int(lab) for img, lab in zip(digits.train.images, digits.train.labels)}
    assert all(rows[bytes(img.numpy())] == int(lab) for img, lab in zip(cut.train.images, cut.train.labels))
    assert cut.val is digits.val and cut.test is digits.test and (cut.mean, cut.std) == (digits.mean, digits.std)


def test_seeded_and_whole(digits):
    a, b, c = (digits.with_train_size(300, seed=s) for s in (0, 0, 1))
    assert torch.equal(a.train.images, b.train.images) and not torch.equal(a.train.images, c.train.images)
    assert digits.with_train_size(len(digits.train)) is digits


def test_bad_sizes_are_one_line(digits):
    with pytest.raises(ValueError, match=f"--train-size 5,000 exceeds the {len(digits.train):,} images of digits"):
        digits.with_train_size(5000)
    with pytest.raises(ValueError, match="positive number of images"):
        digits.with_train_size(0)


def test_a_run_trains_on_n_images(tmp_path, capsys):
    from convolab.cli import main

    out = tmp_path / "run"
    assert main(["train", "--data", "digits", "--train-size", "200", "--epochs", "1", "--quiet", "--no-plots",
                 "--out", str(out)]) == 0
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["train_size"] == 200
    assert steps[-1]["epoch"] == 1
    summary = json.loads((out / "summary.json").read_text())
    # one epoch of 200 images at the default batch of 128: 2 optimizer steps
    assert summary["steps"] == 2
    assert main(["train", "--data", "digits", "--train-size", "99999", "--epochs", "1", "--out",
                 str(tmp_path / "x")]) == 2
    assert "--train-size 99,999 exceeds the" in capsys.readouterr().err
