"""compress.ptq and runs.quantized: post-training int8 through torchao's PT2E flow, stored and rebuilt bit for bit."""

import json

import pytest
import torch

import convolab
from convolab.compress.ptq import (
    MIN_CALIBRATION_IMAGES,
    build_record,
    calibration_images,
    float_first_layers,
    quantize_ptq,
)
from convolab.data import load_dataset
from convolab.runs.build import build_model
from convolab.runs.quantized import KIND
from convolab.runs.writer import save_state


@pytest.fixture(scope="module")
def quantized(digits_run):
    run = convolab.load_run(digits_run.run_dir)
    data = load_dataset("digits")
    cal = calibration_images(data.train, 256, run.mean, run.std)
    tensors, converted, keep, rewrites = quantize_ptq(run.model, cal)
    return run, data, cal, tensors, converted, keep, rewrites


def test_calibration_images_are_normalised_training_images(digits_run):
    run = convolab.load_run(digits_run.run_dir)
    data = load_dataset("digits")
    x = calibration_images(data.train, 64, run.mean, run.std, seed=3)
    assert x.shape == (64, 1, 8, 8) and x.dtype == torch.float32
    # every row is one training image, normalised: undo it and find it in the split
    raw = (x * torch.tensor(run.std).view(1, -1, 1, 1) + torch.tensor(run.mean).view(1, -1, 1, 1)) * 255
    train = data.train.images.float()
    for img in raw[:5]:
        assert (train - img.round()).abs().amax(dim=(1, 2, 3)).min() < 1e-3
    assert torch.equal(x, calibration_images(data.train, 64, run.mean, run.std, seed=3))  # deterministic


def test_too_few_calibration_images_refused_with_the_minimum(digits_run):
    run = convolab.load_run(digits_run.run_dir)
    data = load_dataset("digits")
    with pytest.raises(ValueError, match=f"minimum is {MIN_CALIBRATION_IMAGES}"):
        calibration_images(data.train, MIN_CALIBRATION_IMAGES - 1, run.mean, run.std)
    with pytest.raises(ValueError, match="at most"):
        calibration_images(data.train, len(data.train.images) + 1, run.mean, run.std)
    with pytest.raises(ValueError, match=f"minimum is {MIN_CALIBRATION_IMAGES}"):
        quantize_ptq(run.model, torch.zeros(4, 1, 8, 8))


def test_first_convolution_on_one_channel_stays_float_unless_rewritten(quantized):
    run, _, cal, tensors, _, keep, rewrites = quantized
    # rewritten (the default): the 1-channel conv -> ReLU -> pool became a conv on 4 channels, quantized like the rest
    assert rewrites == ["relu-before-maxpool", "space-to-depth-stem", "channels-last-flatten"] and keep == []
    for name in ("features.conv1.conv.weight", "features.conv2.weight", "classifier.fc1.weight",
                 "classifier.fc2.weight"):
        assert tensors[name].dtype == torch.int8
    plain, _, keep, rewrites = quantize_ptq(run.model, cal, rewrite=False)
    assert rewrites == [] and keep == float_first_layers(run.model) == ["features.conv1"]
    assert plain["features.conv1.weight"].dtype == torch.float32
    for name in ("features.conv2.weight", "classifier.fc1.weight", "classifier.fc2.weight"):
        assert plain[name].dtype == torch.int8


def test_int8_weights_are_per_channel_symmetric_quantization_of_the_float_ones(quantized):
    run, _, _, tensors, _, _, _ = quantized
    w = run.model.state_dict()["classifier.fc2.weight"]  # (fc1's columns are permuted by channels-last-flatten)
    q = tensors["classifier.fc2.weight"].float()
    scales = [k for k in tensors if k.endswith(".scale") and tensors[k].numel() == w.shape[0]]
    # the observer's scale is max|w| / 127.5 per output channel (torch's symmetric int8 range [-128, 127])
    expected = w.abs().amax(dim=1) / 127.5
    match = [k for k in scales if torch.allclose(tensors[k], expected, rtol=1e-6)]
    assert match, "no per-channel scale equals max|w|/127.5"
    s = tensors[match[0]].view(-1, 1)
    assert torch.equal(q, torch.clamp(torch.round(w * (1.0 / s)), -128, 127))
    assert (w - q * s).abs().max() <= s.max() / 2 + 1e-7  # rounding error at most half a step


def test_int8_graph_is_close_to_float_and_rebuilds_bit_for_bit(quantized, tmp_path):
    run, data, cal, tensors, converted, keep, rewrites = quantized
    x = cal[:64]
    with torch.no_grad():
        want = run.model(x)
        got = converted(x)
    agree = (got.argmax(1) == want.argmax(1)).float().mean()
    assert agree > 0.9
    save_state(tensors, tmp_path / "w.safetensors", {})
    build = json.loads(json.dumps({**build_record(run, keep), "rewrites": rewrites}))
    assert build["kind"] == KIND and build["input_shape"] == [1, 8, 8]
    again = build_model(build, tmp_path / "w.safetensors", "config.json")
    with torch.no_grad():
        assert torch.equal(again(x), got)
        assert torch.equal(again(x[:1]), converted(x[:1]))  # any batch size: the batch dimension is dynamic


def test_int8_file_is_about_four_times_smaller(quantized, tmp_path):
    run, _, _, tensors, _, _, _ = quantized
    save_state(tensors, tmp_path / "w.safetensors", {})
    save_state(run.model.state_dict(), tmp_path / "f.safetensors", {})
    ratio = (tmp_path / "f.safetensors").stat().st_size / (tmp_path / "w.safetensors").stat().st_size
    int8 = sum(t.numel() for t in tensors.values() if t.dtype == torch.int8)
    floats = sum(t.numel() for t in run.model.state_dict().values())
    assert int8 / floats > 0.9  # (more than 1: the rewritten stem holds its kernel 4 times)
    assert ratio > 2.5  # the tiny digits model's headers and float first layer weigh more than a real model's


def test_edited_int8_run_refused_in_one_line(quantized, tmp_path):
    run, _, _, tensors, _, keep, rewrites = quantized
    bad = dict(tensors)
    bad.pop("classifier.fc2.bias")
    save_state(bad, tmp_path / "w.safetensors", {})
    build = {**build_record(run, keep), "rewrites": rewrites}
    with pytest.raises(ValueError, match="do not fit.*missing"):
        build_model(build, tmp_path / "w.safetensors", "config.json")
    key = next(k for k, v in tensors.items() if k.endswith(".scale") and v.numel() > 1)  # a per-channel scale
    save_state({**tensors, key: tensors[key][:-1]}, tmp_path / "short.safetensors", {})
    with pytest.raises(ValueError, match=f"do not fit.*{key} has shape"):
        build_model(build, tmp_path / "short.safetensors", "config.json")
    save_state(tensors, tmp_path / "ok.safetensors", {})
    for field, value, msg in (("input_shape", [1, 8], "input_shape"), ("base", "tutorial_cnn", "base"),
                              ("keep_float", "features.conv1", "keep_float"), ("rewrites", "all", "rewrites"),
                              ("rewrites", ["faster"], "rewrites.*unknown model rewrite 'faster'")):
        with pytest.raises(ValueError, match=msg):
            build_model({**build, field: value}, tmp_path / "ok.safetensors", "config.json")
