"""load_dataset's names and arguments, and normalization_stats against NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convolab.data import list_datasets, load_dataset, normalization_stats
from convolab.data.named import DATASETS
from convolab.errors import UnknownNameError


@pytest.fixture(autouse=True)
def _in_empty_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # so no folder in the working directory is taken for a dataset path


def test_unknown_name(tmp_path):
    with pytest.raises(UnknownNameError, match="not-a-dataset") as info:
        load_dataset("not-a-dataset")
    assert isinstance(info.value, ValueError)
    assert "folder" in str(info.value)  # says a path works too


def test_misspelt_name_suggests_the_right_one():
    with pytest.raises(UnknownNameError) as info:
        load_dataset("fashon-mnist")
    assert info.value.matches[0] == "fashion-mnist"
    assert "did you mean 'fashion-mnist'" in str(info.value)


@pytest.mark.parametrize("alias", ["fashion_mnist", "FashionMNIST", "fmnist", " Fashion-MNIST "])
def test_aliases_resolve_to_fashion_mnist(alias, tmp_path, write_mnist):
    write_mnist(tmp_path / "dd")
    ds = load_dataset(alias, data_dir=tmp_path / "dd", download=False)
    assert ds.name == "fashion-mnist"
    assert ds.classes == list(DATASETS["fashion-mnist"].classes)


def test_list_datasets():
    assert list_datasets() == sorted(DATASETS)
    assert {"fashion-mnist", "mnist", "kmnist", "cifar10", "cifar100", "svhn", "digits"} <= set(list_datasets())


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_bad_val_fraction(fraction):
    with pytest.raises(ValueError, match="val_fraction"):
        load_dataset("mnist", val_fraction=fraction)


def test_val_fraction_zero_gives_empty_val(tmp_path, write_mnist, mnist_system_dir):
    write_mnist(tmp_path / "dd", n_train=30)
    ds = load_dataset("mnist", data_dir=tmp_path / "dd", val_fraction=0.0)
    assert (len(ds.train), len(ds.val)) == (30, 0)
    assert ds.val.images.shape == (0, 1, 28, 28)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_normalization_stats_against_numpy(channels, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (17, channels, 9, 7), dtype=np.uint8)
    x[:, -1] //= 3  # channels with different statistics
    mean, std = normalization_stats(torch.from_numpy(x))
    assert len(mean) == len(std) == channels
    for c in range(channels):
        v = x[:, c].astype(np.float64) / 255
        assert mean[c] == pytest.approx(v.mean(), rel=1e-12)
        assert std[c] == pytest.approx(v.std(ddof=0), rel=1e-12)  # population std


def test_normalization_stats_constant_channel_is_left_unscaled():
    x = torch.full((4, 2, 3, 3), 51, dtype=torch.uint8)
    x[:, 1] = torch.arange(36, dtype=torch.uint8).reshape(4, 3, 3)
    mean, std = normalization_stats(x)
    assert mean[0] == pytest.approx(0.2) and std[0] == 1.0
    assert std[1] == pytest.approx(np.arange(36).std() / 255)


def test_normalization_stats_of_nothing():
    with pytest.raises(ValueError, match="empty"):
        normalization_stats(torch.empty(0, 1, 28, 28, dtype=torch.uint8))


def test_dataset_mean_std_are_the_training_split_stats(tmp_path, write_mnist, mnist_system_dir):
    write_mnist(tmp_path / "dd", n_train=40)
    ds = load_dataset("mnist", data_dir=tmp_path / "dd")
    x = ds.train.images.numpy().astype(np.float64) / 255
    assert ds.mean[0] == pytest.approx(x.mean()) and ds.std[0] == pytest.approx(x.std())
