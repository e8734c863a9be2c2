"""Memory and disk bounds of the data layer (issue 15): a folder of large photos or one too big for memory is
refused before decoding, with the figures and the way to downscale; the decode cache stays under its cap."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

import convolab.data.dataset as dataset_module
from convolab.data import load_dataset
from convolab.data.cache import evict, load_cached, save_cached
from convolab.data.folder import LARGE_SIDE, scan_folder
from convolab.data.limits import format_bytes, max_cache_bytes, max_data_bytes, parse_bytes


def photos(root, size, n=3, classes=("cat", "dog")):
    """``n`` constant images of ``size`` (H, W) per class (PNG: tiny files whatever the size)."""
    for k, c in enumerate(classes):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", size[::-1], (10 * i + k, 0, 0)).save(root / c / f"{i}.png")


@pytest.fixture
def no_decode(monkeypatch):
    """Fail the test if anything is decoded (the refusals come first)."""

    def fail(scan):
        raise AssertionError("decoded although the folder should have been refused")

    monkeypatch.setattr(dataset_module, "decode_folder", fail)


def test_folder_of_large_photos_is_refused_before_decoding(tmp_path, no_decode, user_cache):
    photos(tmp_path, (1200, 1600))
    with pytest.raises(ValueError) as e:
        load_dataset(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{tmp_path}: ")
    assert "1200x1600" in msg and "large photos" in msg
    assert f"{format_bytes(6 * 3 * 1200 * 1600)} for 6 images" in msg  # N x C x H x W, said in the message
    assert "--image-size 192x256" in msg  # the way to downscale, same aspect ratio
    assert not (user_cache / "decoded").exists()  # nothing cached either


def test_image_size_downscales_a_folder_of_photos(tmp_path):
    photos(tmp_path, (1200, 1600))
    ds = load_dataset(tmp_path, image_size=(48, 64), val_fraction=0.0)
    assert ds.image_size == (48, 64) and ds.in_chans == 3
    assert len(ds.train) + len(ds.test) == 6
    # a constant image stays constant when downscaled: the values read back are the files' own
    values = sorted(int(x[0, 0, 0]) for s in (ds.train, ds.test) for x in s.images)
    assert values == sorted(10 * i + k for i in range(3) for k in range(2))


def test_image_size_may_keep_the_full_size(tmp_path):
    photos(tmp_path, (LARGE_SIDE + 1, 8), n=2)
    assert load_dataset(tmp_path, image_size=(LARGE_SIDE + 1, 8), val_fraction=0.0).image_size == (LARGE_SIDE + 1, 8)


def test_bad_image_size_is_refused(tmp_path):
    photos(tmp_path, (8, 8), n=2)
    for bad in (0, (8,), (8, -1), (8.5, 8), "8x8"):
        with pytest.raises(ValueError, match="image_size must be"):
            load_dataset(tmp_path, image_size=bad)


def test_image_size_of_a_named_dataset_must_be_its_own(tmp_path):
    with pytest.raises(ValueError, match="the digits images are 8x8; resizing applies to image folders only"):
        load_dataset("digits", image_size=16)
    assert load_dataset("digits", image_size=(8, 8)).image_size == (8, 8)


def test_a_folder_over_the_memory_limit_streams_instead_of_loading(tmp_path):
    from convolab.data.stream import FileImages

    photos(tmp_path, (30, 40), n=5)
    need = 10 * 3 * 30 * 40  # 36,000 bytes
    streamed = load_dataset(tmp_path, max_bytes=need - 1)
    assert isinstance(streamed.train.images, FileImages)
    fits = load_dataset(tmp_path, max_bytes=need)  # exactly at the limit: in memory
    assert isinstance(fits.train.images, torch.Tensor)
    assert torch.equal(streamed.train.images[torch.arange(len(streamed.train))], fits.train.images)


def test_memory_limit_from_the_environment(tmp_path, monkeypatch):
    from convolab.data.stream import FileImages

    photos(tmp_path, (30, 40), n=5)
    monkeypatch.setenv("CONVOLAB_MAX_DATA_BYTES", "30K")
    assert isinstance(load_dataset(tmp_path).train.images, FileImages)  # 35.2 KiB: streamed
    assert isinstance(load_dataset(tmp_path, image_size=(20, 20)).train.images, torch.Tensor)  # 12 KB fits
    monkeypatch.setenv("CONVOLAB_MAX_DATA_BYTES", "36000")
    assert load_dataset(tmp_path).image_size == (30, 40)  # exactly at the limit: loads


def test_bad_limit_in_the_environment_names_it(monkeypatch):
    monkeypatch.setenv("CONVOLAB_MAX_DATA_BYTES", "lots")
    with pytest.raises(ValueError, match=r"\$CONVOLAB_MAX_DATA_BYTES='lots': expected a number of bytes"):
        max_data_bytes()


def test_parse_bytes():
    assert parse_bytes("2G", "x") == 2 * 1024**3 == max_data_bytes()
    assert parse_bytes("500 MiB", "x") == 500 * 1024**2 and parse_bytes("1.5k", "x") == 1536
    assert max_cache_bytes() == 4 * 1024**3


def test_scan_reports_decoded_bytes(tmp_path):
    photos(tmp_path, (30, 40), n=2)
    assert scan_folder(tmp_path).decoded_bytes() == 4 * 3 * 30 * 40
    assert scan_folder(tmp_path, image_size=10).decoded_bytes() == 4 * 3 * 10 * 10


# --- the decode cache is bounded --------------------------------------------------------------------------


def entry(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)}


def cache_files(user_cache) -> list[str]:
    return sorted(p.name.split("-")[0] for p in (user_cache / "decoded").glob("*.safetensors"))


def age(user_cache, name: str, seconds_ago: float) -> None:
    (path,) = (user_cache / "decoded").glob(f"{name}-*.safetensors")
    t = time.time() - seconds_ago
    os.utime(path, (t, t))


def test_cache_evicts_least_recently_used_past_its_cap(user_cache, monkeypatch):
    monkeypatch.setenv("CONVOLAB_CACHE_MAX_BYTES", "3500")  # room for three 1000-byte entries (plus headers)
    for i, name in enumerate(("a", "b", "c")):
        save_cached(name, "k", entry(1000, i), {})
        age(user_cache, name, 100 - i)  # a oldest, c newest
    assert cache_files(user_cache) == ["a", "b", "c"]
    assert load_cached("a", "k") is not None  # a hit makes "a" the most recently used
    (user_cache / "decoded" / "notes.txt").write_text("not convolab's")
    save_cached("d", "k", entry(1000, 3), {})
    assert cache_files(user_cache) == ["a", "c", "d"]  # "b" was the least recently used
    assert (user_cache / "decoded" / "notes.txt").exists()  # only convolab's cache files are deleted
    total = sum(p.stat().st_size for p in (user_cache / "decoded").glob("*.safetensors"))
    assert total <= 3500


def test_entry_larger_than_the_cap_is_not_cached(user_cache, monkeypatch, convolab_log):
    save_cached("small", "k", entry(100), {})
    monkeypatch.setenv("CONVOLAB_CACHE_MAX_BYTES", "1K")
    save_cached("big", "k", entry(5000), {})
    assert cache_files(user_cache) == ["small"]  # and the big one evicted nothing
    assert any("not caching big" in r.getMessage() for r in convolab_log.records)


def test_evict_to_zero_keeps_nothing_but_keep(user_cache):
    save_cached("a", "k", entry(10), {})
    save_cached("b", "k", entry(10, 1), {})
    (keep,) = (user_cache / "decoded").glob("b-*.safetensors")
    assert [p.name.split("-")[0] for p in evict(0, keep=keep)] == ["a"]
    assert cache_files(user_cache) == ["b"]


def test_folder_of_photos_downscaled_caches_the_small_tensors(tmp_path, user_cache):
    photos(tmp_path, (1200, 1600))
    load_dataset(tmp_path, image_size=(48, 64))
    (path,) = (user_cache / "decoded").glob("*.safetensors")
    assert path.stat().st_size < 6 * 3 * 48 * 64 + 4096  # not the 33 MiB of the full-size images
