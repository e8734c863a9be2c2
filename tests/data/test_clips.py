"""Video folders and the official UCF101/HMDB51 lists: clips cut where documented, splits by video, groups right,
bad and short videos skipped with one warning, nothing usable refused, memory checked, cache reused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from convolab.data import load_dataset
from convolab.data.clips import clip_slots, is_clip_source, load_clips
from convolab.data.video_io import write_video
from convolab.errors import DataNotFoundError

T = 4


def _video(path: Path, vid: int, length: int, size=(8, 10), c: int = 1) -> Path:
    """A video whose row 0 holds its id and row 1 the frame index, so every clip says where it came from."""
    a = np.full((length, *size, c), 128, np.uint8)
    a[:, 0] = vid
    a[:, 1] = np.arange(length, dtype=np.uint8)[:, None, None]
    write_video(path, a, fps=10)
    return path


def _origin(clip: torch.Tensor) -> tuple[int, list[int]]:
    """(video id, frame indices) of a decoded clip (C, T, H, W)."""
    return int(clip[0, 0, 0, 0]), clip[0, :, 1, 0].tolist()


def _folder(root: Path, per_class: int = 4, classes=("a", "b"), length: int = 3 * T, ext: str = ".avi") -> dict:
    ids = {}
    for k, cls in enumerate(classes):
        for i in range(per_class):
            vid = 10 * k + i + 1
            ids[vid] = cls
            _video(root / cls / f"v{i}{ext}", vid, length)
    return ids


def test_clip_slots_by_hand():
    assert clip_slots(100, 16, 4) == [0, 2, 3, 5]  # 6 clips: linspace(0, 5, 4) = 0, 1.67, 3.33, 5
    assert clip_slots(40, 16, 4) == [0, 1]
    assert clip_slots(15, 16, 4) == []
    assert clip_slots(80, 4, 4) == [0, 6, 13, 19]


def test_folder_clips_splits_and_groups(tmp_path):
    ids = _folder(tmp_path / "v", per_class=5)
    assert is_clip_source(tmp_path / "v") and not is_clip_source(tmp_path / "nothing")
    ds = load_clips(tmp_path / "v", frames=T, val_fraction=0.25, test_fraction=0.2, seed=0)
    assert ds.task == "clips" and ds.classes == ["a", "b"] and ds.input_size == (1, T, 8, 10)
    assert ds.frames == T
    per_split = {}
    for name, split in (("train", ds.train), ("val", ds.val), ("test", ds.test)):
        assert split.images.dtype == torch.uint8 and split.labels.dtype == torch.int64
        assert split.groups.dtype == torch.int64 and len(split.groups) == len(split)
        videos = {}
        for clip, label, group in zip(split.images, split.labels, split.groups):
            vid, frames = _origin(clip)
            assert ds.classes[int(label)] == ids[vid]
            assert frames in ([0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11])  # non-overlapping, whole clips
            videos.setdefault(int(group), set()).add(vid)
        assert all(len(v) == 1 for v in videos.values())  # a group is one video
        per_split[name] = {next(iter(v)) for v in videos.values()}
        counts = torch.bincount(split.groups)
        assert set(counts[counts > 0].tolist()) == {3}  # every video gives floor(12 / 4) = 3 clips
    assert not (per_split["train"] & per_split["val"]) and not (per_split["train"] & per_split["test"])
    assert not (per_split["val"] & per_split["test"])  # all clips of a video in one split
    assert sum(len(v) for v in per_split.values()) == 10
    assert len(per_split["test"]) == 2 and len(per_split["val"]) == 2  # 20 % of 5 per class; 25 % of 4
    # the same seed gives the same split; the statistics are the training clips'
    again = load_clips(tmp_path / "v", frames=T, val_fraction=0.25, seed=0, cache=False)
    assert torch.equal(again.test.images, ds.test.images) and torch.equal(again.train.groups, ds.train.groups)
    assert abs(ds.mean[0] - ds.train.images.double().mean().item() / 255) < 1e-9


def test_load_dataset_dispatches_video_folders(tmp_path):
    _folder(tmp_path / "v", per_class=3)
    ds = load_dataset(tmp_path / "v", frames=T)
    assert ds.task == "clips" and ds.input_size == (1, T, 8, 10)


def test_clips_spread_over_long_videos_and_capped(tmp_path):
    # AVI records its frame count: 20 possible clips, 4 kept, spread evenly; MKV does not: the first 4
    for k, cls in enumerate(("a", "b")):
        for i in range(3):
            _video(tmp_path / "v" / cls / f"long{i}.avi", 10 * k + i, 80)
            _video(tmp_path / "v" / cls / f"long{i}.mkv", 50 + 10 * k + i, 80)
    ds = load_clips(tmp_path / "v", frames=T, val_fraction=0.0, test_fraction=0.34, cache=False)
    starts: dict[int, list[int]] = {}
    for split in (ds.train, ds.test):
        for clip in split.images:
            vid, frames = _origin(clip)
            assert frames == list(range(frames[0], frames[0] + T))
            starts.setdefault(vid, []).append(frames[0] // T)
    for vid, slots in starts.items():
        assert sorted(slots) == ([0, 6, 13, 19] if vid < 50 else [0, 1, 2, 3]), vid


def test_train_test_folders_and_resize_and_channels(tmp_path):
    root = tmp_path / "v"
    for split, n in (("train", 3), ("test", 2)):
        for k, cls in enumerate(("a", "b")):
            for i in range(n):
                _video(root / split / cls / f"{i}.mkv", 100 * (split == "test") + 10 * k + i, 2 * T)
    # one video of another size and colour: resized and converted to the majority's 8x10 grey
    odd = np.full((2 * T, 16, 20, 3), 128, np.uint8)
    write_video(root / "train" / "a" / "odd.mkv", odd)
    ds = load_clips(root, frames=T, val_fraction=0.0)
    assert ds.input_size == (1, T, 8, 10)
    assert {_origin(c)[0] for c in ds.test.images} == {100, 101, 110, 111}  # test/ is the test split
    assert len(ds.train) == 2 * 7
    assert (ds.train.images == 128).flatten(1).all(1).sum() == 2  # the odd video's 2 clips, still 128 everywhere
    sized = load_clips(root, frames=T, val_fraction=0.0, image_size=(4, 6), cache=False)
    assert sized.input_size == (1, T, 4, 6)


def test_bad_and_short_videos_are_skipped_with_one_warning(tmp_path, convolab_log):
    root = tmp_path / "v"
    _folder(root, per_class=3)
    (root / "a" / "broken.mp4").write_bytes(b"\x00junk" * 100)
    _video(root / "b" / "short.avi", 99, T - 2)  # its header says 2 frames
    _video(root / "b" / "short.mkv", 98, T - 1)  # no frame count in the header: found while decoding
    ds = load_clips(root, frames=T, val_fraction=0.0)
    assert len(ds.train) + len(ds.test) == 6 * 3
    warnings = [r.getMessage() for r in convolab_log.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    w = warnings[0]
    assert w.startswith("skipped 3 unusable video files")
    assert f"{root / 'a' / 'broken.mp4'} (cannot decode video (" in w
    assert f"{root / 'b' / 'short.avi'} (2 frames, shorter than one clip of {T})" in w
    assert f"{root / 'b' / 'short.mkv'} (3 frames, shorter than one clip of {T})" in w
    # from the cache: the same clips, and the same warning
    convolab_log.clear()
    again = load_clips(root, frames=T, val_fraction=0.0)
    assert torch.equal(again.train.images, ds.train.images) and torch.equal(again.test.groups, ds.test.groups)
    assert [r.getMessage() for r in convolab_log.records if r.levelname == "WARNING"] == [w]


def test_nothing_usable_is_refused(tmp_path):
    root = tmp_path / "v"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        (root / cls / "x.mp4").write_bytes(b"junk")
        _video(root / cls / "s.mkv", 1, 2)
    with pytest.raises(ValueError, match=rf"{root}: none of its 4 video files gave a clip of {T} frames"):
        load_clips(root, frames=T)
    header_short = tmp_path / "w"
    for cls in ("a", "b"):
        _video(header_short / cls / "s.avi", 1, 2)  # short by its header: refused before anything is decoded
    with pytest.raises(ValueError, match=rf"{header_short}: none of its 2 video files is usable"):
        load_clips(header_short, frames=T)


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_clips(tmp_path / "missing")
    (tmp_path / "one" / "a").mkdir(parents=True)
    _video(tmp_path / "one" / "a" / "v.avi", 1, 2 * T)
    _video(tmp_path / "one" / "a" / "w.avi", 2, 2 * T)
    with pytest.raises(ValueError, match="has 1 class; a classifier needs at least two"):
        load_clips(tmp_path / "one", frames=T)
    _folder(tmp_path / "big", per_class=2)
    with pytest.raises(ValueError, match=r"would take .* more than the limit .*--image-size"):
        load_clips(tmp_path / "big", frames=T, max_bytes=100)
    with pytest.raises(ValueError, match="frames must be >= 1"):
        load_clips(tmp_path / "big", frames=0)


def _ucf_layout(base: Path) -> None:
    classes = ["Zebra", "Apple"]  # classInd's order, not alphabetical
    lists = base / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("1 Zebra\n2 Apple\n")
    train, test = [], []
    for k, cls in enumerate(classes):
        for g in (1, 2, 3):
            name = f"v_{cls}_g0{g}_c01.avi"
            _video(base / "UCF-101" / cls / name, 10 * k + g, 2 * T)
            (test if g == 1 else train).append(f"{cls}/{name}")
    train.append("Apple/v_Apple_g09_c01.avi")  # listed, not on disk
    (lists / "trainlist01.txt").write_text("".join(f"{p} {classes.index(p.split('/')[0]) + 1}\r\n" for p in train))
    (lists / "testlist01.txt").write_text("".join(f"{p}\n" for p in test))


def test_ucf101_official_split_from_a_fake_layout(tmp_path, convolab_log):
    _ucf_layout(tmp_path / "data" / "ucf101")
    ds = load_clips("UCF101", data_dir=tmp_path / "data", frames=T, val_fraction=0.0)
    assert ds.name == "ucf101" and ds.classes == ["Zebra", "Apple"]
    test_ids = {_origin(c)[0] for c in ds.test.images}
    assert test_ids == {1, 11}  # group 1 of each class, as testlist01.txt says
    assert {_origin(c)[0] for c in ds.train.images} == {2, 3, 12, 13}
    for clip, label in zip(ds.test.images, ds.test.labels):
        assert ds.classes[int(label)] == ("Zebra" if _origin(clip)[0] < 10 else "Apple")
    assert any("v_Apple_g09_c01.avi (listed in the split files but missing)" in r.getMessage()
               for r in convolab_log.records)


def test_hmdb51_official_split_from_a_fake_layout(tmp_path):
    base = tmp_path / "hmdb"
    lists = base / "testTrainMulti_7030_splits"
    lists.mkdir(parents=True)
    for k, cls in enumerate(("wave", "clap")):
        rows = []
        for i, tag in enumerate(("1", "1", "2", "0")):  # train, train, test, in neither
            _video(base / "hmdb51_org" / cls / f"{cls}_{i}.avi", 10 * k + i, 2 * T)
            rows.append(f"{cls}_{i}.avi {tag} \n")
        (lists / f"{cls}_test_split1.txt").write_text("".join(rows))
        (lists / f"{cls}_test_split2.txt").write_text("")  # other splits are ignored
    ds = load_dataset("hmdb51", data_dir=base, frames=T, val_fraction=0.0)
    assert ds.task == "clips" and ds.classes == ["clap", "wave"]
    assert {_origin(c)[0] for c in ds.test.images} == {2, 12}
    assert {_origin(c)[0] for c in ds.train.images} == {0, 1, 10, 11}


def test_official_sets_not_found_say_where_and_how(tmp_path):
    with pytest.raises(DataNotFoundError) as e:
        load_clips("ucf101", data_dir=tmp_path)
    msg = str(e.value)
    assert f"--data-dir {tmp_path}" in msg and "$CONVOLAB_DATA (not set)" in msg and "user cache" in msg
    assert "crcv.ucf.edu" in msg and "ucfTrainTestlist" in msg and "\n" not in msg
    with pytest.raises(FileNotFoundError, match="hmdb51.*serre-lab"):
        load_clips("hmdb51")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_clips("ucf101", data_dir=tmp_path / "typo")
