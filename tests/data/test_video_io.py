"""PyAV reading and writing: lossless round trips, the stated tolerance of H.264, and one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convolab.data.video_io import iter_frames, probe_video, read_video, write_video


def _frames(t=6, h=18, w=22, c=3, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, c), dtype=np.uint8)


@pytest.mark.parametrize("ext", [".mkv", ".avi"])
@pytest.mark.parametrize("c", [1, 3])
def test_ffv1_round_trip_is_exact(tmp_path, ext, c):
    a = _frames(c=c)
    path = tmp_path / f"v{ext}"
    write_video(path, a, fps=12)
    b = read_video(path)
    assert b.dtype == torch.uint8 and tuple(b.shape) == a.shape  # (T, H, W, C), grey stays grey
    assert np.array_equal(b.numpy(), a)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # atomic: no temporary left behind


@pytest.mark.parametrize("ext", [".mp4", ".mov"])
def test_h264_round_trip_within_two_levels(tmp_path, ext):
    a = _frames()
    path = tmp_path / f"v{ext}"
    write_video(path, torch.from_numpy(a), fps=25)
    b = read_video(path).numpy().astype(int)
    assert b.shape == a.shape
    assert np.abs(b - a).max() <= 2  # qp 0 in YUV 4:4:4: only the RGB <-> YUV rounding


def test_grey_frames_in_mp4_come_back_as_rgb(tmp_path):
    a = _frames(c=1)
    write_video(tmp_path / "g.mp4", a)
    b = read_video(tmp_path / "g.mp4").numpy().astype(int)
    assert b.shape == (*a.shape[:3], 3)
    assert np.abs(b - a).max() <= 2


def test_probe_and_partial_reads(tmp_path):
    a = _frames(t=9, h=10, w=14, c=3)
    write_video(tmp_path / "v.avi", a)
    info = probe_video(tmp_path / "v.avi")
    assert info.size == (10, 14) and info.channels == 3 and info.frames == 9
    assert np.array_equal(read_video(tmp_path / "v.avi", max_frames=4).numpy(), a[:4])
    grey = read_video(tmp_path / "v.avi", channels=1)
    assert grey.shape == (9, 10, 14, 1)
    # FFmpeg's RGB -> grey (BT.601 luma): close to 0.299 R + 0.587 G + 0.114 B
    luma = a.astype(float) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(grey[..., 0].numpy() - luma).max() <= 3
    assert len(list(iter_frames(tmp_path / "v.avi"))) == 9


def test_undecodable_file_is_one_line_naming_it(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 50)
    with pytest.raises(ValueError) as e:
        read_video(bad)
    msg = str(e.value)
    assert str(bad) in msg and "cannot decode video" in msg and "\n" not in msg and "Errno" not in msg
    empty = tmp_path / "empty.mkv"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.mkv: cannot decode video"):
        probe_video(empty)
    with pytest.raises(FileNotFoundError, match="nope.avi: no such file"):
        read_video(tmp_path / "nope.avi")


def test_truncated_file_is_refused_or_shorter(tmp_path):
    a = _frames(t=30)
    write_video(tmp_path / "v.avi", a)
    data = (tmp_path / "v.avi").read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 3])
    try:
        b = read_video(tmp_path / "cut.avi")
    except ValueError as e:
        assert "cut.avi: cannot decode video" in str(e)
    else:  # what was decoded is the start of the video, exactly
        assert len(b) < 30 and np.array_equal(b.numpy(), a[: len(b)])


def test_write_refuses_bad_input(tmp_path):
    with pytest.raises(ValueError, match="extension '.gif'"):
        write_video(tmp_path / "v.gif", _frames())
    with pytest.raises(ValueError, match=r"expected uint8 frames \(T, H, W, 1 or 3\)"):
        write_video(tmp_path / "v.mkv", _frames().astype(np.float32))
    with pytest.raises(ValueError, match="expected uint8 frames"):
        write_video(tmp_path / "v.mkv", _frames()[..., :2])
    assert not any(tmp_path.iterdir())
