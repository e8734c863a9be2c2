"""The decoded-dataset cache: a second load skips decoding; a changed source file is decoded again."""

from __future__ import annotations

import os

import numpy as np
import pytest

import convolab.data.builtin as builtin_module
import convolab.data.named as named_module
from convolab.data import load_dataset
from convolab.data.cache import fingerprint, load_cached, save_cached


@pytest.fixture
def count_decodes(monkeypatch):
    """Count calls of the decoder ``load_dataset`` uses; ``calls["fail"] = True`` makes it raise."""
    calls = {"n": 0, "fail": False}
    real = named_module.decode

    def counting(spec, folder):
        calls["n"] += 1
        if calls["fail"]:
            raise RuntimeError("decode called although the cache should have answered")
        return real(spec, folder)

    monkeypatch.setattr(builtin_module, "decode", counting)  # the name load_builtin calls
    monkeypatch.setattr(named_module, "decode", counting)
    return calls


@pytest.fixture
def mnist_dir(tmp_path, mnist_system_dir, write_mnist):
    folder = tmp_path / "mnist-data"
    return folder, write_mnist(folder, seed=0)


def test_second_load_hits_the_cache(mnist_dir, count_decodes, user_cache):
    folder, written = mnist_dir
    first = load_dataset("mnist", data_dir=folder)
    assert count_decodes["n"] == 1
    assert list((user_cache / "decoded").glob("mnist-*.safetensors"))
    count_decodes["fail"] = True
    second = load_dataset("mnist", data_dir=folder)
    np.testing.assert_array_equal(second.train.images.numpy(), first.train.images.numpy())
    np.testing.assert_array_equal(second.test.images[:, 0].numpy(), written["test_x"])
    np.testing.assert_array_equal(second.test.labels.numpy(), written["test_y"])
    # The failing decoder is really in the path: without the cache it is called and raises.
    with pytest.raises(RuntimeError, match="decode called"):
        load_dataset("mnist", data_dir=folder, cache=False)


def test_cache_false_neither_reads_nor_writes(mnist_dir, count_decodes, user_cache):
    folder, _ = mnist_dir
    load_dataset("mnist", data_dir=folder, cache=False)
    load_dataset("mnist", data_dir=folder, cache=False)
    assert count_decodes["n"] == 2
    assert not (user_cache / "decoded").exists()


def test_touching_a_source_file_invalidates(mnist_dir, count_decodes):
    folder, _ = mnist_dir
    load_dataset("mnist", data_dir=folder)
    path = folder / "t10k-labels-idx1-ubyte.gz"
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    load_dataset("mnist", data_dir=folder)
    assert count_decodes["n"] == 2


def test_rewriting_a_source_file_gives_the_new_data(mnist_dir, write_mnist, count_decodes):
    folder, old = mnist_dir
    assert load_dataset("mnist", data_dir=folder).test.images[:, 0].numpy().tolist() == old["test_x"].tolist()
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    new = write_mnist(folder, seed=1)  # same sizes, different pixels
    for p in folder.iterdir():  # make sure the mtime moves even on a coarse-clock filesystem
        os.utime(p, ns=(before[p.name] + 2_000_000_000,) * 2)
    ds = load_dataset("mnist", data_dir=folder)
    assert count_decodes["n"] == 2
    np.testing.assert_array_equal(ds.test.images[:, 0].numpy(), new["test_x"])
    np.testing.assert_array_equal(ds.test.labels.numpy(), new["test_y"])


def test_damaged_cache_file_is_only_a_miss(mnist_dir, count_decodes, user_cache, convolab_log):
    folder, written = mnist_dir
    load_dataset("mnist", data_dir=folder)
    (cached,) = (user_cache / "decoded").glob("mnist-*.safetensors")
    cached.write_bytes(b"not a safetensors file")
    ds = load_dataset("mnist", data_dir=folder)
    assert count_decodes["n"] == 2
    np.testing.assert_array_equal(ds.test.images[:, 0].numpy(), written["test_x"])
    assert any("unreadable cache file" in r.getMessage() and str(cached) in r.getMessage()
               for r in convolab_log.records)


def test_fingerprint_depends_on_tag_extra_size_and_mtime(tmp_path):
    f = tmp_path / "a"
    f.write_bytes(b"1234")
    base = fingerprint("t", [f])
    assert fingerprint("t", [f]) == base
    assert fingerprint("u", [f]) != base
    assert fingerprint("t", [f], extra="28x28x1") != base
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    touched = fingerprint("t", [f])
    assert touched != base
    f.write_bytes(b"12345")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # same mtime, other size
    assert fingerprint("t", [f]) != touched


def test_save_and_load_cached_round_trip(user_cache):
    arrays = {"x": np.arange(24, dtype=np.uint8).reshape(2, 3, 4), "y": np.array([3, 1], np.int64)}
    assert load_cached("some/name", "k1") is None
    save_cached("some/name", "k1", arrays, {"bad": ["f.png (broken)"]})
    got, meta = load_cached("some/name", "k1")
    assert meta == {"bad": ["f.png (broken)"]}
    assert set(got) == {"x", "y"}
    for k in arrays:
        assert got[k].dtype == arrays[k].dtype
        np.testing.assert_array_equal(got[k], arrays[k])
    assert load_cached("some/name", "k2") is None
    assert all(p.parent == user_cache / "decoded" for p in user_cache.rglob("*.safetensors"))
