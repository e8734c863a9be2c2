"""convolab.data.idx against a hand-packed IDX header and torchvision's own MNIST parser."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch
from torchvision.datasets.mnist import read_image_file, read_label_file, read_sn3_pascalvincent_tensor

from convolab.data.idx import read_idx, write_idx

# IDX type codes from LeCun's format description (http://yann.lecun.com/exdb/mnist/).
TYPE_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
              np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}


def idx_bytes(arr: np.ndarray) -> bytes:
    """The IDX encoding of ``arr``, packed by hand: magic, big-endian sizes, big-endian values."""
    header = struct.pack(">BBBB", 0, 0, TYPE_CODES[arr.dtype], arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (7, 28, 28), dtype=np.uint8)


@pytest.fixture
def labels() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 10, 7, dtype=np.uint8)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_round_trip_images_and_labels(tmp_path, images, labels, gz):
    suffix = ".gz" if gz else ""
    write_idx(tmp_path / f"images{suffix}", images)
    write_idx(tmp_path / f"labels{suffix}", labels)
    got_x, got_y = read_idx(tmp_path / f"images{suffix}"), read_idx(tmp_path / f"labels{suffix}")
    assert got_x.dtype == np.uint8 and got_x.shape == (7, 28, 28)
    assert got_y.dtype == np.uint8 and got_y.shape == (7,)
    np.testing.assert_array_equal(got_x, images)
    np.testing.assert_array_equal(got_y, labels)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_written_bytes_match_hand_packed_idx(tmp_path, images, gz):
    path = tmp_path / ("x.gz" if gz else "x")
    write_idx(path, images)
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == gz
    assert (gzip.decompress(raw) if gz else raw) == idx_bytes(images)


def test_reads_hand_packed_idx(tmp_path, images):
    (tmp_path / "x").write_bytes(idx_bytes(images))
    (tmp_path / "x.gz").write_bytes(gzip.compress(idx_bytes(images)))
    np.testing.assert_array_equal(read_idx(tmp_path / "x"), images)
    np.testing.assert_array_equal(read_idx(tmp_path / "x.gz"), images)


def test_compression_follows_flag_and_content_not_name(tmp_path, images):
    write_idx(tmp_path / "forced", images, compress=True)
    write_idx(tmp_path / "plain.gz", images, compress=False)
    assert (tmp_path / "forced").read_bytes()[:2] == b"\x1f\x8b"
    assert (tmp_path / "plain.gz").read_bytes() == idx_bytes(images)
    # read_idx looks at the gzip magic, not the file name.
    np.testing.assert_array_equal(read_idx(tmp_path / "forced"), images)
    np.testing.assert_array_equal(read_idx(tmp_path / "plain.gz"), images)


def test_matches_torchvision_mnist_parser(tmp_path, images, labels):
    write_idx(tmp_path / "train-images-idx3-ubyte", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte", labels)
    tv_x = read_image_file(str(tmp_path / "train-images-idx3-ubyte"))
    tv_y = read_label_file(str(tmp_path / "train-labels-idx1-ubyte"))
    assert torch.equal(torch.from_numpy(read_idx(tmp_path / "train-images-idx3-ubyte")), tv_x)
    assert torch.equal(torch.from_numpy(read_idx(tmp_path / "train-labels-idx1-ubyte")).long(), tv_y)


def test_gz_matches_torchvision_on_the_decompressed_file(tmp_path, images):
    write_idx(tmp_path / "x.gz", images)
    (tmp_path / "x").write_bytes(gzip.decompress((tmp_path / "x.gz").read_bytes()))  # torchvision reads plain only
    assert torch.equal(torch.from_numpy(read_idx(tmp_path / "x.gz")), read_image_file(str(tmp_path / "x")))


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.float32, np.float64])
def test_other_types_match_torchvision(tmp_path, dtype):
    rng = np.random.default_rng(2)
    arr = (rng.standard_normal((3, 4, 5)) * 100).astype(dtype)
    write_idx(tmp_path / "a", arr)
    got = read_idx(tmp_path / "a")
    assert got.dtype == np.dtype(dtype)  # native byte order, not the file's big-endian
    np.testing.assert_array_equal(got, arr)
    assert (tmp_path / "a").read_bytes() == idx_bytes(arr)
    np.testing.assert_array_equal(read_sn3_pascalvincent_tensor(str(tmp_path / "a")).numpy(), arr)


@pytest.mark.parametrize("content", [b"", b"\x00", b"PK\x03\x04" + bytes(100), b"\x00\x01\x08\x01" + bytes(8),
                                     b"\x00\x00\x07\x01" + bytes(8)],
                         ids=["empty", "one-byte", "zip", "nonzero-second-byte", "unknown-type"])
def test_bad_magic_raises_naming_the_file(tmp_path, content):
    path = tmp_path / "bad-idx"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="bad-idx"):
        read_idx(path)


# Cut points: inside the size fields (a 3-d file's header is 4 + 3*4 = 16 bytes), right after the
# header, a few values in, one byte short of the end.
@pytest.mark.parametrize("cut", [6, 10, 16, 66, -1],
                         ids=["in-sizes-6", "in-sizes-10", "header-only", "some-values", "one-byte-short"])
def test_truncated_file_raises_naming_the_file(tmp_path, images, cut):
    path = tmp_path / "short-idx"
    path.write_bytes(idx_bytes(images)[:cut])
    with pytest.raises(ValueError, match="short-idx"):
        read_idx(path)


def test_truncated_gzip_raises_naming_the_file(tmp_path, images):
    full = gzip.compress(idx_bytes(images))
    path = tmp_path / "short-idx.gz"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(ValueError, match="short-idx.gz"):
        read_idx(path)
