"""The C export: compiled with gcc, compared with torch (float32) and with the glass int8 network (int8)."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import torch
from torch import nn

import convolab
from convolab.compress.c_export import compile_c, export_c, normalise, run_c, write_raw_image
from convolab.data import load_dataset
from convolab.data.loader import Normalizer
from convolab.glass.interop import from_torch
from convolab.glass.quant_net import quantize_network
from convolab.models import create_model

if shutil.which("gcc") is None:  # the project's CI image has gcc; say so rather than skip
    raise RuntimeError("tests/compress/test_c_export.py needs gcc on the PATH")

STRICT = "-O1 -pedantic -Wall -Wextra -Werror"  # the generated C is warning-free C99


def _torch_logits(model: nn.Module, images: np.ndarray, mean, std) -> np.ndarray:
    with torch.inference_mode():
        return model(Normalizer(mean, std)(torch.from_numpy(images))).double().numpy()


def _check_both(run, images: np.ndarray, calibration: np.ndarray, tmp_path) -> tuple[float, float]:
    """Export float32 and int8, compile, compare; return the two accuracies' inputs (max error, agreement)."""
    kw = dict(mean=run.mean, std=run.std, classes=run.classes, input_size=run.input_size)
    export_c(run.model, tmp_path / "f32", name="net", **kw)
    logits = run_c(compile_c(tmp_path / "f32", cc="gcc"), images)
    ref = _torch_logits(run.model, images, run.mean, run.std)
    err = float(np.abs(logits - ref).max())
    assert err <= 1e-4, err

    ex = export_c(run.model, tmp_path / "i8", name="net", dtype="int8", calibration=calibration, **kw)
    q_logits = run_c(compile_c(tmp_path / "i8", cc="gcc"), images)
    # the glass int8 network, built again here from the same model and calibration
    glass_q = quantize_network(from_torch(run.model).eval(), normalise(calibration, run.mean, run.std))
    expected = glass_q.forward(normalise(images, run.mean, run.std))
    np.testing.assert_array_equal(q_logits, expected)
    np.testing.assert_array_equal(q_logits, ex.network.forward(normalise(images, run.mean, run.std)))
    return err, float((q_logits.argmax(1) == ref.argmax(1)).mean())


def test_digits_float32_matches_torch_and_int8_matches_glass(digits_run, tmp_path):
    run = convolab.load_run(digits_run.run_dir)
    data = load_dataset("digits")
    images = data.test.images.numpy()
    err, agree = _check_both(run, images, data.train.images[:300].numpy(), tmp_path)
    assert agree > 0.95


@pytest.mark.slow
def test_fashion_mnist_1000_images(digits_config, tmp_path):
    """Must-reach: a tutorial_cnn trained one epoch on Fashion-MNIST; 1,000 test images."""
    result = convolab.train(digits_config(tmp_path / "run", data="fashion-mnist", epochs=1, batch_size=128))
    run = convolab.load_run(result.run_dir)
    data = load_dataset("fashion-mnist", download=False)
    images = data.test.images[:1000].numpy()
    err, agree = _check_both(run, images, data.train.images[:500].numpy(), tmp_path)
    assert agree > 0.95


@pytest.mark.parametrize("name, chans, size", [("tutorial_cnn", 3, (12, 10)), ("lenet5", 1, (28, 28)),
                                               ("resnet20", 3, (16, 16)), ("mnist_cnn", 1, (10, 10))])
def test_models_match_torch_and_glass_int8(name, chans, size, tmp_path):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_chans=chans, input_size=size).eval()
    for m in model.modules():  # non-trivial BatchNorm statistics, so that folding is tested
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    images = np.random.default_rng(0).integers(0, 256, (20, chans, *size), dtype=np.uint8)
    mean, std = [0.3, 0.5, 0.4][:chans], [0.2, 0.3, 0.25][:chans]
    export_c(model, tmp_path / "out", name="m", mean=mean, std=std)
    logits = run_c(compile_c(tmp_path / "out", cc="gcc", opt=STRICT), images)
    assert logits.shape == (20, 7)
    np.testing.assert_allclose(logits, _torch_logits(model, images, mean, std), rtol=0, atol=1e-4)
    ex = export_c(model, tmp_path / "q", name="m", mean=mean, std=std, dtype="int8", calibration=images)
    q_logits = run_c(compile_c(tmp_path / "q", cc="gcc", opt=STRICT), images)
    np.testing.assert_array_equal(q_logits, ex.network.forward(normalise(images, mean, std)))


def test_program_prints_class_names_and_rejects_wrong_sizes(tmp_path):
    torch.manual_seed(1)
    model = create_model("tutorial_cnn", num_classes=3, in_chans=1, input_size=(8, 8)).eval()
    classes = ['cat "tabby"', "dög", "a\\b"]
    export_c(model, tmp_path / "out", name="pets", mean=[0.5], std=[0.25], classes=classes)
    exe = compile_c(tmp_path / "out", cc="gcc")
    image = np.random.default_rng(1).integers(0, 256, (1, 8, 8), dtype=np.uint8)
    good = write_raw_image(image, tmp_path / "good.raw")
    assert good.read_bytes() == image.tobytes() and len(good.read_bytes()) == 64
    write_raw_image(image[0, :4], tmp_path / "short.raw")
    done = subprocess.run([str(exe), str(good), str(tmp_path / "short.raw")], capture_output=True)
    assert done.returncode == 1
    assert b"short.raw: expected 64 bytes (uint8 C*H*W), got 32" in done.stderr
    path, index, label = done.stdout.decode("utf-8").strip().split("\t")
    expected = int(_torch_logits(model, image[None], [0.5], [0.25]).argmax())
    assert (path, int(index), label) == (str(good), expected, classes[expected])
    with pytest.raises(ValueError, match="exists; pass overwrite=True"):
        write_raw_image(image, good)
    with pytest.raises(ValueError, match="uint8"):
        write_raw_image(image.astype(np.float32), tmp_path / "f.raw")


def test_unsupported_layer_is_named():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.GELU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    with pytest.raises(ValueError, match=r"^1 \(GELU\) is not supported by the C export; supported: Conv2d"):
        export_c(model, "unused", input_size=(1, 8, 8), mean=[0.5], std=[0.5])
    with pytest.raises(ValueError, match=r"^1 \(GELU\) is not supported by the int8 C export"):
        export_c(model, "unused", input_size=(1, 8, 8), mean=[0.5], std=[0.5], dtype="int8",
                 calibration=np.zeros((2, 1, 8, 8), np.uint8))
    bn_alone = nn.Sequential(nn.BatchNorm2d(1), nn.Flatten(), nn.Linear(64, 2))
    with pytest.raises(ValueError, match=r"^0 \(BatchNorm2d\) must follow a convolution"):
        export_c(bn_alone, "unused", input_size=(1, 8, 8), mean=[0.5], std=[0.5])


def test_output_folder_is_not_overwritten(tmp_path):
    model = create_model("tutorial_cnn", num_classes=2, in_chans=1, input_size=(8, 8)).eval()
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(ValueError, match="exists and is not an empty folder"):
        export_c(model, out, mean=[0.5], std=[0.5])
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    ex = export_c(model, out, mean=[0.5], std=[0.5], overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt", "model.c", "model.h"]
    assert ex.c_file.read_text().startswith("/* model.c: generated by convolab.compress.c_export")


def test_bad_arguments(tmp_path):
    model = create_model("tutorial_cnn", num_classes=2, in_chans=1, input_size=(8, 8)).eval()
    with pytest.raises(ValueError, match="C identifier"):
        export_c(model, tmp_path / "a", name="my-model", mean=[0.5], std=[0.5])
    with pytest.raises(ValueError, match="needs calibration"):
        export_c(model, tmp_path / "b", mean=[0.5], std=[0.5], dtype="int8")
    with pytest.raises(ValueError, match="2 outputs but 3 class names"):
        export_c(model, tmp_path / "c", mean=[0.5], std=[0.5], classes=["a", "b", "c"])
    export_c(model, tmp_path / "d", mean=[0.5], std=[0.5])
    with pytest.raises(ValueError, match="no C compiler 'no-such-cc'"):
        compile_c(tmp_path / "d", cc="no-such-cc")


@pytest.mark.parametrize("kind", ["strided-grouped", "no-linear-head"])
def test_layer_geometry_both_dtypes(kind, tmp_path):
    """Stride, padding, groups, dilation, padded max pool, avg pool, flattening order (channels-last in the C),
    and a network whose output is a feature map (its logits in torch's (C, H, W) order)."""
    torch.manual_seed(2)
    if kind == "strided-grouped":
        model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                              nn.Conv2d(4, 6, 3, groups=2, dilation=2, padding=2), nn.MaxPool2d(3, 2, padding=1),
                              nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(24, 5))
        size = (3, 16, 16)
    else:
        model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.AvgPool2d(2))
        size = (1, 10, 10)
    model.eval()
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (24, *size), dtype=np.uint8)
    mean, std = [0.5] * size[0], [0.3] * size[0]
    export_c(model, tmp_path / "f", input_size=size, mean=mean, std=std)
    logits = run_c(compile_c(tmp_path / "f", cc="gcc"), images)
    ref = _torch_logits(model, images, mean, std).reshape(len(images), -1)
    np.testing.assert_allclose(logits, ref, rtol=0, atol=1e-4)
    ex = export_c(model, tmp_path / "q", input_size=size, mean=mean, std=std, dtype="int8", calibration=images)
    q_logits = run_c(compile_c(tmp_path / "q", cc="gcc"), images)
    np.testing.assert_array_equal(q_logits, ex.network.forward(normalise(images, mean, std)).reshape(len(images), -1))
    assert np.abs(q_logits - ref).max() < 0.1 * np.abs(ref).max()
