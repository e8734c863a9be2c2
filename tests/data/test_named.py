"""Named datasets: the real Fashion-MNIST from Debian's package, and the folder layouts recognised.

The Fashion-MNIST test reads /usr/share/datasets/fashion-mnist, which ``make test`` installs first
(scripts/get-fashion-mnist.sh); it fails, rather than skips, when the copy is missing.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets.mnist import read_image_file, read_label_file

from convolab.data import load_dataset
from convolab.data.named import DATASETS, find_files
from convolab.data.split import stratified_split

SYSTEM_FASHION = Path("/usr/share/datasets/fashion-mnist")
# Zalando's label list (github.com/zalandoresearch/fashion-mnist, README "Labels").
ZALANDO_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    """Fashion-MNIST loaded once through convolab (fresh user cache, no download), and torchvision's parse."""
    tmp = tmp_path_factory.mktemp("fashion")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp / "cache"))
        mp.delenv("CONVOLAB_DATA", raising=False)
        ds = load_dataset("fashion-mnist", download=False)
    ref = {}
    for key, name, reader in [("train_x", "train-images-idx3-ubyte", read_image_file),
                              ("train_y", "train-labels-idx1-ubyte", read_label_file),
                              ("test_x", "t10k-images-idx3-ubyte", read_image_file),
                              ("test_y", "t10k-labels-idx1-ubyte", read_label_file)]:
        plain = tmp / name  # torchvision's reader takes uncompressed files only
        plain.write_bytes(gzip.decompress((SYSTEM_FASHION / f"{name}.gz").read_bytes()))
        ref[key] = reader(str(plain))
    return ds, ref


def test_fashion_mnist_comes_from_the_system_copy(fashion):
    ds, _ = fashion
    assert ds.name == "fashion-mnist"
    assert Path(ds.source) == SYSTEM_FASHION


def test_fashion_mnist_split_sizes_and_layout(fashion):
    ds, _ = fashion
    assert (len(ds.train), len(ds.val), len(ds.test)) == (54_000, 6_000, 10_000)
    for split in (ds.train, ds.val, ds.test):
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (1, 28, 28)
        assert split.labels.dtype == torch.int64 and split.labels.shape == (len(split.images),)
    assert (ds.in_chans, ds.image_size, ds.num_classes) == (1, (28, 28), 10)
    assert ds.classes == ZALANDO_CLASSES


def test_fashion_mnist_val_split_is_stratified(fashion):
    ds, _ = fashion
    assert torch.bincount(ds.val.labels, minlength=10).tolist() == [600] * 10
    assert torch.bincount(ds.train.labels, minlength=10).tolist() == [5_400] * 10
    assert torch.bincount(ds.test.labels, minlength=10).tolist() == [1_000] * 10


def test_fashion_mnist_normalisation_matches_published_stats(fashion):
    ds, _ = fashion
    # Widely quoted training-set statistics: mean 0.2860, std 0.3530 (over all 60k; ours is the 54k part).
    assert ds.mean[0] == pytest.approx(0.2860, abs=2e-3)
    assert ds.std[0] == pytest.approx(0.3530, abs=2e-3)
    x = ds.train.images.float()  # float32 is plenty for a 1e-5 check and four times lighter than float64
    assert ds.mean[0] == pytest.approx(x.mean().item() / 255, rel=1e-5)
    assert ds.std[0] == pytest.approx(x.std(unbiased=False).item() / 255, rel=1e-5)


def test_fashion_mnist_equals_torchvision_parse(fashion):
    ds, ref = fashion
    assert ref["train_x"].shape == (60_000, 28, 28)
    keep, held = stratified_split(ref["train_y"], 0.1, seed=0)
    assert torch.equal(ds.train.images[:, 0], ref["train_x"][keep])
    assert torch.equal(ds.train.labels, ref["train_y"][keep])
    assert torch.equal(ds.val.images[:, 0], ref["train_x"][held])
    assert torch.equal(ds.val.labels, ref["train_y"][held])
    assert torch.equal(ds.test.images[:, 0], ref["test_x"])
    assert torch.equal(ds.test.labels, ref["test_y"])
    # train + val together are the 60,000 training images, each exactly once.
    assert sorted(np.concatenate([keep, held]).tolist()) == list(range(60_000))


@pytest.mark.parametrize("layout", ["", "mnist", "MNIST/raw"])
@pytest.mark.parametrize("gz", [True, False, (True, False, False, True)], ids=["gz", "plain", "mixed"])
def test_find_files_layouts(tmp_path, write_mnist, layout, gz):
    folder = tmp_path / layout if layout else tmp_path
    write_mnist(folder, gz=gz)
    assert find_files(DATASETS["mnist"], tmp_path) == folder


def test_find_files_needs_all_four_files(tmp_path, write_mnist):
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    assert find_files(DATASETS["mnist"], tmp_path) is None


@pytest.mark.parametrize("layout", ["fashion-mnist", "FashionMNIST/raw", "fashion_mnist"])
def test_find_files_fashion_layouts(tmp_path, write_mnist, layout):
    write_mnist(tmp_path / layout)
    assert find_files(DATASETS["fashion-mnist"], tmp_path) == tmp_path / layout


def test_digits_are_scikit_learns_without_importing_it():
    import subprocess
    import sys

    from sklearn.datasets import load_digits

    from convolab.data.named import digits_arrays

    images, labels = digits_arrays()
    reference = load_digits()
    assert np.array_equal(images, reference.images) and images.dtype == reference.images.dtype
    assert np.array_equal(labels, reference.target) and labels.dtype == np.int64
    data = load_dataset("digits", cache=False)  # 0..16 scaled to uint8 0..255, the fixed stratified 20 % test split
    scaled = {bytes(row) for row in np.round(reference.images * (255 / 16)).astype(np.uint8).reshape(-1, 64)}
    assert len(data.train) + len(data.val) + len(data.test) == 1797
    assert all(bytes(row) in scaled for row in data.test.images.numpy().reshape(-1, 64))
    code = ("import sys; from convolab.data import load_dataset; d = load_dataset('digits', cache=False); "
            "print(len(d.train) + len(d.val) + len(d.test), 'sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.split() == ["1797", "False"]
