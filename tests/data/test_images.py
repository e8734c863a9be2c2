"""convolab.data.images: one image file -> (C, H, W) uint8, compared with PIL's own conversions."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from convolab.data.images import channels_of_mode, image_to_array, load_image, open_image


def noise(shape, seed, dtype=np.uint8, high=256):
    return np.random.default_rng(seed).integers(0, high, shape, dtype=dtype)


@pytest.mark.parametrize("mode,shape", [("L", (12, 9)), ("RGB", (12, 9, 3)), ("RGBA", (12, 9, 4)), ("LA", (12, 9, 2))])
@pytest.mark.parametrize("channels", [1, 3])
def test_shape_is_channels_h_w(tmp_path, mode, shape, channels):
    Image.fromarray(noise(shape, 0), mode).save(tmp_path / "x.png")
    arr = load_image(tmp_path / "x.png", (12, 9), channels)
    assert arr.dtype == np.uint8 and arr.shape == (channels, 12, 9)


def test_rgb_to_gray_is_pils_luma(tmp_path):
    img = Image.fromarray(noise((10, 11, 3), 1), "RGB")
    np.testing.assert_array_equal(image_to_array(img, (10, 11), 1)[0], np.asarray(img.convert("L")))
    # ITU-R 601 luma by hand, as PIL documents it: L = R*299/1000 + G*587/1000 + B*114/1000 (within rounding)
    rgb = np.asarray(img).astype(np.float64)
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    assert np.abs(image_to_array(img, (10, 11), 1)[0] - luma).max() <= 1.0


def test_rgb_layout(tmp_path):
    rgb = noise((6, 7, 3), 2)
    np.testing.assert_array_equal(image_to_array(Image.fromarray(rgb, "RGB"), (6, 7), 3), rgb.transpose(2, 0, 1))


def test_rgba_to_rgb_drops_alpha(tmp_path):
    rgba = noise((8, 8, 4), 3)
    rgba[..., 3] = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4  # varying transparency, not composited
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_image(tmp_path / "a.png", (8, 8), 3), rgba[..., :3].transpose(2, 0, 1))


def test_gray_to_rgb_repeats(tmp_path):
    gray = noise((5, 6), 4)
    out = image_to_array(Image.fromarray(gray, "L"), (5, 6), 3)
    np.testing.assert_array_equal(out, np.stack([gray] * 3))


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 255, 256, 32768], [40000, 65280, 65535, 1000]], np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    got = load_image(tmp_path / "g16.png", (2, 4), 1)[0]
    np.testing.assert_array_equal(got, [[0, 0, 1, 128], [156, 255, 255, 3]])  # v // 256, the top 8 bits
    rgb = load_image(tmp_path / "g16.png", (2, 4), 3)
    np.testing.assert_array_equal(rgb, np.stack([got] * 3))


def test_resize_is_pils_bilinear(tmp_path):
    img = Image.fromarray(noise((30, 40), 5), "L")  # 40 wide, 30 high
    out = image_to_array(img, (28, 28), 1)
    np.testing.assert_array_equal(out[0], np.asarray(img.resize((28, 28), Image.Resampling.BILINEAR)))
    out = image_to_array(img, (15, 20), 1)  # (H, W): halve both
    assert out.shape == (1, 15, 20)
    np.testing.assert_array_equal(out[0], np.asarray(img.resize((20, 15), Image.Resampling.BILINEAR)))


def test_bad_channels():
    with pytest.raises(ValueError, match="channels"):
        image_to_array(Image.new("L", (2, 2)), (2, 2), 2)


@pytest.mark.parametrize("mode,expected", [("L", 1), ("LA", 1), ("I;16", 1), ("I", 1), ("F", 1), ("1", 1),
                                           ("RGB", 3), ("RGBA", 3), ("P", 3), ("CMYK", 3)])
def test_channels_of_mode(mode, expected):
    assert channels_of_mode(mode) == expected


def test_directory_is_an_error_naming_it(tmp_path):
    d = tmp_path / "a-folder.png"
    d.mkdir()
    with pytest.raises(ValueError, match="a-folder.png"):
        load_image(d, (28, 28), 1)


def test_corrupt_file_is_an_error_naming_it(tmp_path):
    p = tmp_path / "broken.png"
    p.write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(ValueError, match="broken.png"):
        load_image(p, (28, 28), 1)


def test_truncated_file_is_an_error_naming_it(tmp_path):
    Image.fromarray(noise((64, 64), 6), "L").save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.png"):
        open_image(tmp_path / "cut.png")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.png"):
        load_image(tmp_path / "nothing.png", (28, 28), 1)
