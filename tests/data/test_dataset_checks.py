"""Datasets a classifier cannot be trained or measured on are refused with one line, before training (issue 15):
IDX labels outside the classes, negative or not 1-D; train and test images of different sizes; float IDX images;
gzip bombs; partial or damaged CIFAR/SVHN folders; an empty test split; one class. And a failed download
leaves nothing behind."""

from __future__ import annotations

import gzip
import os
import tracemalloc
import urllib.error

import numpy as np
import pytest
import torchvision
from PIL import Image

from convolab.data import load_dataset
from convolab.data.idx import read_idx, write_idx
from convolab.data.named import DATASETS, download
from convolab.errors import DataNotFoundError

from .conftest import IDX_NAMES


def write_set(folder, **override) -> None:
    """A valid 10-class MNIST-like set (plain IDX), with any of train_x, train_y, test_x, test_y replaced."""
    rng = np.random.default_rng(0)
    arrays = {"train_x": rng.integers(0, 256, (40, 28, 28), dtype=np.uint8),
              "train_y": (np.arange(40) % 10).astype(np.uint8),
              "test_x": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
              "test_y": (np.arange(20) % 10).astype(np.uint8)}
    arrays.update(override)
    folder.mkdir(parents=True, exist_ok=True)
    for name, key in zip(IDX_NAMES, arrays):
        write_idx(folder / name, arrays[key])


def load(folder):
    return load_dataset("mnist", data_dir=folder, download=False, cache=False)


def one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_valid_set_loads(tmp_path, mnist_system_dir):
    write_set(tmp_path / "m")
    assert load(tmp_path / "m").num_classes == 10


@pytest.mark.parametrize("labels,needle", [
    ((np.arange(40) % 11).astype(np.uint8), "holds label 10, outside mnist's 10 classes (expected 0..9)"),
    (np.where(np.arange(40) == 7, -1, np.arange(40) % 10).astype(np.int8), "holds label -1, outside"),
    ((np.arange(80) % 10).astype(np.uint8).reshape(40, 2), "labels of shape 40x2; expected one label per image"),
    ((np.arange(40) % 10).astype(np.float32), "labels stored as float32 values; expected integers"),
    ((np.arange(39) % 10).astype(np.uint8), "39 labels for the 40 images of train-images-idx3-ubyte"),
], ids=["past-the-classes", "negative", "2-d", "float", "count"])
def test_bad_idx_labels_are_refused_naming_the_file(tmp_path, mnist_system_dir, labels, needle):
    write_set(tmp_path / "m", train_y=labels)
    with pytest.raises(ValueError) as e:
        load(tmp_path / "m")
    msg = one_line(e)
    assert msg.startswith(str(tmp_path / "m" / "train-labels-idx1-ubyte")) and needle in msg, msg


def test_float_idx_images_are_refused_not_cast(tmp_path, mnist_system_dir):
    # 0.5 would become 0 and 300.0 would wrap to 44 under a uint8 cast
    write_set(tmp_path / "m", train_x=np.full((40, 28, 28), 0.5, np.float32))
    with pytest.raises(ValueError) as e:
        load(tmp_path / "m")
    msg = one_line(e)
    assert msg.startswith(str(tmp_path / "m" / "train-images-idx3-ubyte")) and "float32" in msg and "uint8" in msg


def test_train_and_test_images_of_different_sizes(tmp_path, mnist_system_dir):
    write_set(tmp_path / "m", test_x=np.zeros((20, 32, 32), np.uint8))
    with pytest.raises(ValueError) as e:
        load(tmp_path / "m")
    assert "the train images (train-images-idx3-ubyte) are 28x28 but the test images (t10k-images-idx3-ubyte) " \
           "are 32x32" in one_line(e)


def test_empty_test_split_is_refused(tmp_path, mnist_system_dir):
    write_set(tmp_path / "m", test_x=np.zeros((0, 28, 28), np.uint8), test_y=np.zeros(0, np.uint8))
    with pytest.raises(ValueError) as e:
        load(tmp_path / "m")
    assert "mnist: the test split is empty, so accuracy could not be measured" in one_line(e)


def test_single_class_labels_are_refused(tmp_path, mnist_system_dir):
    write_set(tmp_path / "m", train_y=np.full(40, 3, np.uint8))
    with pytest.raises(ValueError) as e:
        load(tmp_path / "m")
    assert "every training image is of class '3'; a classifier needs images of at least two classes" in one_line(e)


# --- IDX: gzip bombs are not decompressed past what the header promises -------------------------------------


def test_gzip_is_decompressed_only_up_to_the_promised_size(tmp_path):
    # 100 bytes promised, then 200 MB of zeros (a 200 KB file): the file is refused after decompressing the
    # 100 bytes and a little more, never the 200 MB.
    header = bytes([0, 0, 0x08, 1]) + np.asarray([100], ">u4").tobytes()
    path = tmp_path / "bomb.gz"
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(header + bytes(range(100)))
        for _ in range(200):
            f.write(bytes(1_000_000))
    assert path.stat().st_size < 400_000
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as e:
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert one_line(e) == f"{path}: more data than the header promises (100 data bytes for 100 values); " \
                          "damaged, or not one IDX array"
    assert peak < 20_000_000, f"{peak:,} bytes allocated while reading a 100-value file"


@pytest.mark.parametrize("gz", [False, True])
def test_data_past_the_header_promise_is_refused(tmp_path, gz):
    write_idx(tmp_path / "x", np.arange(10, dtype=np.uint8), compress=gz)
    data = gzip.decompress((tmp_path / "x").read_bytes()) if gz else (tmp_path / "x").read_bytes()
    (tmp_path / "x").write_bytes(gzip.compress(data + b"\0") if gz else data + b"\0")
    with pytest.raises(ValueError, match="more data than the header promises"):
        read_idx(tmp_path / "x")


def test_header_promising_more_than_the_limit_is_refused_before_reading(tmp_path, monkeypatch):
    header = bytes([0, 0, 0x08, 3]) + np.asarray([3000, 1000, 1000], ">u4").tobytes()  # 3 GB promised
    path = tmp_path / "big.gz"
    path.write_bytes(gzip.compress(header + bytes(1000)))
    with pytest.raises(ValueError) as e:
        read_idx(path)
    msg = one_line(e)
    assert msg.startswith(f"{path}: the header promises 3000x1000x1000 values (2.8 GiB), more than the limit of "
                          "2.0 GiB ($CONVOLAB_MAX_DATA_BYTES)")
    monkeypatch.setenv("CONVOLAB_MAX_DATA_BYTES", "1K")
    write_idx(tmp_path / "small", np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="more than the limit of 1.0 KiB"):
        read_idx(tmp_path / "small")


@pytest.mark.parametrize("gz", [False, True])
def test_header_promising_more_than_the_file_can_hold(tmp_path, gz):
    header = bytes([0, 0, 0x08, 3]) + np.asarray([1000, 1000, 1000], ">u4").tobytes()  # 1 GB, under the limit
    payload = header + bytes(100)
    path = tmp_path / "liar"
    path.write_bytes(gzip.compress(payload) if gz else payload)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="truncated IDX file") as e:
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "more than its" in str(e.value) and peak < 10_000_000  # refused before a 1 GB buffer was allocated


# --- CIFAR / SVHN folders ----------------------------------------------------------------------------------


def test_partial_cifar_folder_names_the_missing_files(tmp_path):
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir(parents=True)
    for name in ("data_batch_1", "data_batch_2", "batches.meta"):
        (base / name).write_bytes(b"\x80\x04N.")
    with pytest.raises(ValueError) as e:
        load_dataset("cifar10", data_dir=tmp_path, download=False, cache=False)
    msg = one_line(e)
    assert msg.startswith(f"{tmp_path}: incomplete cifar10 folder, data_batch_3, data_batch_4, data_batch_5, "
                          f"test_batch missing from {base}")


def test_damaged_cifar_file_is_named(tmp_path):
    base = tmp_path / "cifar-100-python"
    base.mkdir(parents=True)
    for name in ("train", "test", "meta"):
        (base / name).write_bytes(b"not the published file")
    with pytest.raises(ValueError) as e:
        load_dataset("cifar100", data_dir=tmp_path, download=False, cache=False)
    msg = one_line(e)
    assert msg.startswith(f"{base / 'train'}: damaged cifar100 file (its MD5 checksum is not the published one; "
                          "2 more damaged)")


def test_damaged_svhn_file_is_named(tmp_path):
    (tmp_path / "svhn").mkdir()
    for name in ("train_32x32.mat", "test_32x32.mat"):
        (tmp_path / "svhn" / name).write_bytes(b"MATLAB 5.0 but cut")
    with pytest.raises(ValueError) as e:
        load_dataset("svhn", data_dir=tmp_path, download=False, cache=False)
    assert one_line(e).startswith(f"{tmp_path / 'svhn' / 'train_32x32.mat'}: damaged svhn file")


# --- image folders ----------------------------------------------------------------------------------------


def constant_images(folder, n, value=0):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("L", (8, 8), value + i).save(folder / f"{i}.png")


def test_one_class_folder_is_refused(tmp_path):
    constant_images(tmp_path / "cats", 10)
    with pytest.raises(ValueError) as e:
        load_dataset(tmp_path, cache=False)
    assert one_line(e) == (f"{tmp_path}: has only one class folder ('cats'); a classifier needs at least two "
                           "classes (one subfolder of images per class)")


def test_second_class_without_images_is_refused(tmp_path):
    constant_images(tmp_path / "cats", 10)
    (tmp_path / "dogs").mkdir()
    (tmp_path / "dogs" / "notes.txt").write_text("no images yet")
    with pytest.raises(ValueError, match="every training image is of class 'cats'"):
        load_dataset(tmp_path, cache=False)


def test_empty_test_folder_is_refused(tmp_path):
    for c in ("a", "b"):
        constant_images(tmp_path / "train" / c, 5)
        (tmp_path / "test" / c).mkdir(parents=True)
    with pytest.raises(ValueError) as e:
        load_dataset(tmp_path, cache=False)
    assert one_line(e) == (f"{tmp_path}: the test split is empty, so accuracy could not be measured; put images in "
                           "its test/<class>/ folders, or remove test/ to hold out a share of train/")


# --- a failed download leaves nothing behind --------------------------------------------------------------


class _OfflineFashion:
    """torchvision's FashionMNIST as it behaves offline: makes its folders, prints, then raises."""

    def __init__(self, root, train=True, download=False):
        raw = os.path.join(root, "FashionMNIST", "raw")
        os.makedirs(raw, exist_ok=True)
        with open(os.path.join(raw, "train-images-idx3-ubyte.gz.part"), "wb") as f:
            f.write(b"partial")
        for _ in range(3):
            print("Downloading http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/train-images-idx3-ubyte.gz")
            print("Failed to download (trying next):\n<urlopen error [Errno -3] Temporary failure in name resolution>")
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


@pytest.mark.parametrize("existed", [False, True])
def test_failed_download_removes_only_what_it_made(tmp_path, monkeypatch, capsys, existed):
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", _OfflineFashion)
    root = tmp_path / "cache" / "convolab"
    if existed:  # a cache with the user's other data and an older, unrelated folder
        (root / "decoded").mkdir(parents=True)
        (root / "decoded" / "x.safetensors").write_bytes(b"1")
        (root / "FashionMNIST").mkdir()
        (root / "FashionMNIST" / "mine.txt").write_text("keep")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(DataNotFoundError) as e:
        download(DATASETS["fashion-mnist"], root)
    msg = one_line(e)
    assert msg.startswith(f"downloading fashion-mnist into {root} failed (URLError: <urlopen error [Errno -3] "
                          "Temporary failure in name resolution>); nothing was kept")
    assert "--data-dir" in msg
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing more, nothing less
    assert capsys.readouterr().out == ""  # torchvision's six lines are not printed


def test_failed_download_through_load_dataset_is_one_line(tmp_path, monkeypatch, user_cache):
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", _OfflineFashion)
    monkeypatch.setitem(DATASETS, "fashion-mnist", DATASETS["fashion-mnist"].__class__(
        **{**DATASETS["fashion-mnist"].__dict__, "system_dirs": ()}))
    with pytest.raises(DataNotFoundError) as e:
        load_dataset("fashion-mnist")
    msg = one_line(e)
    assert "download failed (URLError: <urlopen error [Errno -3] Temporary failure in name resolution>)" in msg
    assert not user_cache.exists()
