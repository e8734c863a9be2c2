"""Where named datasets are looked for, in order, and what the user is told when they are nowhere.

Order (convolab.data.resolve): --data-dir, $CONVOLAB_DATA, the user cache, system copies, download.
Each place gets a different tiny IDX set, so the loaded pixels say which place was used.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import convolab.data.builtin as builtin_module
from convolab.data import load_dataset
from convolab.data.named import DATASETS, find_files
from convolab.data.resolve import search_places, user_cache_dir
from convolab.data.split import stratified_split
from convolab.errors import DataNotFoundError


def assert_loaded(ds, arrays: dict[str, np.ndarray], folder: Path, val_fraction: float = 0.1, seed: int = 0):
    """``ds`` came from ``folder`` and holds exactly ``arrays`` (train/val carved as stratified_split does)."""
    assert Path(ds.source) == folder
    keep, held = stratified_split(torch.from_numpy(arrays["train_y"].astype(np.int64)), val_fraction, seed=seed)
    np.testing.assert_array_equal(ds.train.images[:, 0].numpy(), arrays["train_x"][keep])
    np.testing.assert_array_equal(ds.val.images[:, 0].numpy(), arrays["train_x"][held])
    np.testing.assert_array_equal(ds.train.labels.numpy(), arrays["train_y"][keep])
    np.testing.assert_array_equal(ds.test.images[:, 0].numpy(), arrays["test_x"])
    np.testing.assert_array_equal(ds.test.labels.numpy(), arrays["test_y"])


@pytest.fixture
def places(tmp_path, monkeypatch, user_cache, mnist_system_dir):
    """The four search places for ``mnist``, with $CONVOLAB_DATA set; none holds data yet."""
    env_dir = tmp_path / "env-data"
    env_dir.mkdir()
    monkeypatch.setenv("CONVOLAB_DATA", str(env_dir))
    (tmp_path / "data-dir").mkdir()
    return {"data_dir": tmp_path / "data-dir", "env": env_dir, "cache": user_cache, "system": mnist_system_dir}


@pytest.fixture
def no_download(monkeypatch):
    def fail(spec, root):
        pytest.fail(f"download of {spec.name} attempted although the data is on disk")  # BaseException: not caught

    monkeypatch.setattr(builtin_module, "download", fail)


def test_user_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert user_cache_dir() == tmp_path / "convolab"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_cache_dir() == tmp_path / "home" / ".cache" / "convolab"


def test_search_places_order(monkeypatch, tmp_path, user_cache):
    monkeypatch.setenv("CONVOLAB_DATA", str(tmp_path / "env"))
    got = [(p.label, p.path) for p in search_places(tmp_path / "dd", ("/sys/a", "/sys/b"))]
    assert got == [("--data-dir", tmp_path / "dd"), ("$CONVOLAB_DATA", tmp_path / "env"), ("user cache", user_cache),
                   ("system copy", Path("/sys/a")), ("system copy", Path("/sys/b"))]


def test_data_dir_beats_everything(places, write_mnist, no_download):
    written = {name: write_mnist(places[name], seed=i) for i, name in enumerate(["data_dir", "env", "cache", "system"])}
    ds = load_dataset("mnist", data_dir=places["data_dir"])
    assert_loaded(ds, written["data_dir"], places["data_dir"])


def test_env_beats_user_cache_and_system(places, write_mnist, no_download):
    written = {name: write_mnist(places[name], seed=i) for i, name in enumerate(["env", "cache", "system"])}
    ds = load_dataset("mnist")
    assert_loaded(ds, written["env"], places["env"])


def test_user_cache_beats_system(places, write_mnist, no_download):
    written = {name: write_mnist(places[name], seed=i) for i, name in enumerate(["cache", "system"])}
    ds = load_dataset("mnist", data_dir=places["data_dir"])  # set but empty: the search goes on
    assert_loaded(ds, written["cache"], places["cache"])


def test_system_copy_is_the_last_place_on_disk(places, write_mnist, no_download):
    written = write_mnist(places["system"], seed=3)
    ds = load_dataset("mnist", data_dir=places["data_dir"])
    assert_loaded(ds, written, places["system"])


def test_incomplete_folder_is_passed_over(places, write_mnist, no_download):
    write_mnist(places["data_dir"], seed=0)
    (places["data_dir"] / "train-labels-idx1-ubyte.gz").unlink()
    written = write_mnist(places["env"], seed=1)
    assert_loaded(load_dataset("mnist", data_dir=places["data_dir"]), written, places["env"])


@pytest.mark.parametrize("layout", ["", "mnist", "MNIST/raw"])
@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
def test_layouts_under_data_dir(tmp_path, mnist_system_dir, write_mnist, no_download, layout, gz):
    folder = tmp_path / "dd" / layout if layout else tmp_path / "dd"
    written = write_mnist(folder, seed=5, gz=gz)
    assert_loaded(load_dataset("mnist", data_dir=tmp_path / "dd", cache=False), written, folder)


def test_data_dir_beats_the_real_system_copy(tmp_path, write_mnist, no_download):
    written = write_mnist(tmp_path / "fashion-mnist", seed=6)
    ds = load_dataset("fashion_mnist", data_dir=tmp_path)
    assert ds.name == "fashion-mnist"
    assert_loaded(ds, written, tmp_path / "fashion-mnist")


def test_val_fraction_and_seed_are_applied(tmp_path, mnist_system_dir, write_mnist):
    written = write_mnist(tmp_path, seed=7, n_train=100)
    ds = load_dataset("mnist", data_dir=tmp_path, val_fraction=0.3, seed=11)
    assert (len(ds.train), len(ds.val)) == (70, 30)
    assert_loaded(ds, written, tmp_path, val_fraction=0.3, seed=11)


def test_missing_without_download_names_every_place(places, monkeypatch):
    monkeypatch.setattr(builtin_module, "download", lambda spec, root: pytest.fail("download=False was ignored"))
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("mnist", data_dir=places["data_dir"], download=False)
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    for label, path in [("--data-dir", places["data_dir"]), ("$CONVOLAB_DATA", places["env"]),
                        ("user cache", places["cache"]), ("system copy", places["system"])]:
        assert f"{label} {path}" in msg
    assert "download not attempted" in msg
    assert "convolab datasets --download mnist" in msg  # how to get it
    assert "--data-dir DIR" in msg and "train-images-idx3-ubyte[.gz]" in msg


def test_a_data_dir_that_is_no_folder_is_refused_not_searched_past(places, write_mnist, no_download):
    write_mnist(places["system"])  # the data is elsewhere: a typo in --data-dir must not quietly use it
    for given in (places["data_dir"] / "typo", places["system"] / "train-labels-idx1-ubyte.gz"):
        with pytest.raises(DataNotFoundError, match=f"^--data-dir {given}: no such folder$"):
            load_dataset("mnist", data_dir=given)


def test_missing_says_which_places_are_not_set(user_cache, mnist_system_dir):
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("mnist", download=False)
    msg = str(info.value)
    assert "--data-dir (not set)" in msg and "$CONVOLAB_DATA (not set)" in msg
    assert f"user cache {user_cache}" in msg and f"system copy {mnist_system_dir}" in msg


def test_missing_fashion_mnist_suggests_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setitem(DATASETS, "fashion-mnist", replace(DATASETS["fashion-mnist"], system_dirs=(str(tmp_path),)))
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", download=False)


def test_failed_download_is_reported(places, monkeypatch):
    calls = []

    def failing(spec, root):
        calls.append((spec.name, root))
        raise OSError("Network is unreachable")

    monkeypatch.setattr(builtin_module, "download", failing)
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("mnist", data_dir=places["data_dir"])
    assert calls == [("mnist", places["cache"])]
    msg = str(info.value)
    assert "download failed (OSError: Network is unreachable)" in msg
    assert f"--data-dir {places['data_dir']}" in msg and f"system copy {places['system']}" in msg


def test_successful_download_goes_into_the_user_cache(places, monkeypatch, write_mnist):
    written = {}

    def fake_download(spec, root):
        written.update(write_mnist(root / "MNIST" / "raw", seed=9))  # where torchvision puts MNIST
        return find_files(spec, root)

    monkeypatch.setattr(builtin_module, "download", fake_download)
    ds = load_dataset("mnist", data_dir=places["data_dir"])
    assert_loaded(ds, written, places["cache"] / "MNIST" / "raw")
    # Next time the data is found in the user cache: no download.
    monkeypatch.setattr(builtin_module, "download", lambda spec, root: pytest.fail("downloaded twice"))
    assert_loaded(load_dataset("mnist", data_dir=places["data_dir"]), written, places["cache"] / "MNIST" / "raw")


def test_a_runs_data_dir_that_is_gone_is_passed_over_when_its_data_is_reloaded(places, write_mnist, no_download):
    from types import SimpleNamespace

    from convolab.explain.inputs import run_dataset

    written = write_mnist(places["env"])  # where the data is now
    gone = places["data_dir"] / "moved-away"  # the run's --data-dir, since deleted
    run = SimpleNamespace(path=places["data_dir"], input_size=(1, 28, 28), classes=list(DATASETS["mnist"].classes),
                          config={"seed": 0, "dataset": {"name": "mnist", "data_dir": str(gone), "val_fraction": 0.1}})
    assert_loaded(run_dataset(run), written, places["env"])
    with pytest.raises(DataNotFoundError, match="no such folder"):  # given on the command line, it is refused
        run_dataset(run, data_dir=gone)
