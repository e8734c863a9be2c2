"""``convolab.load_run``: a trained model back from its run directory, preprocessing and prediction."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

import convolab
from convolab.data import load_dataset
from convolab.data.loader import DeviceLoader, Normalizer


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def run(digits_run):
    return convolab.load_run(digits_run.run_dir)


def _luma(r: int, g: int, b: int) -> int:
    """ITU-R 601 luma, the grey value a colour pixel becomes."""
    return round(0.299 * r + 0.587 * g + 0.114 * b)


def _normalised(gray: np.ndarray, run) -> torch.Tensor:
    """By hand: (x / 255 - mean) / std."""
    return (torch.from_numpy(gray.astype(np.float32)) / 255 - run.mean[0]) / run.std[0]


# -- loading -------------------------------------------------------------------------------------
def test_load_run(run, digits_run):
    assert isinstance(run, convolab.Run)
    assert run.path == digits_run.run_dir
    assert not run.model.training
    assert not any(m.training for m in run.model.modules())
    assert run.device == torch.device("cpu")
    assert run.classes == [str(i) for i in range(10)]
    assert run.input_size == (1, 8, 8)
    assert run.config["model"] == "tutorial_cnn"
    assert run.summary == digits_run.summary
    assert [r["epoch"] for r in run.metrics()] == [1, 2, 3, 4, 5]
    trained = digits_run.model.state_dict()
    for k, v in run.model.state_dict().items():
        assert torch.equal(v, trained[k].cpu()), k


def test_load_run_from_the_weights_file(run, digits_run):
    direct = convolab.load_run(digits_run.run_dir / "model.safetensors")
    assert direct.path == digits_run.run_dir
    assert direct.config == run.config
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(direct.model(x), run.model(x))


def test_folder_without_weights(digits_run, tmp_path):
    shutil.copy(digits_run.run_dir / "config.json", tmp_path / "config.json")
    with pytest.raises(FileNotFoundError, match="model.safetensors.*training may not have finished"):
        convolab.load_run(tmp_path)


def test_no_such_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such run directory"):
        convolab.load_run(tmp_path / "nope")


def test_weights_without_convolab_metadata(tmp_path):
    save_file({"w": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="no convolab metadata"):
        convolab.load_run(tmp_path)


def test_weights_file_that_is_not_safetensors(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        convolab.load_run(tmp_path)


def test_weights_that_do_not_fit_the_model(digits_run, tmp_path):
    meta = json.dumps({"format": 1, "model": "lenet5", "model_kwargs": {"num_classes": 10, "in_chans": 1},
                       "classes": list("0123456789"), "mean": [0.5], "std": [0.5], "input_size": [1, 8, 8]})
    state = {k: v.contiguous() for k, v in digits_run.model.state_dict().items()}
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"convolab": meta})
    with pytest.raises(ValueError, match="do not fit model lenet5"):
        convolab.load_run(tmp_path)


# -- preprocessing ---------------------------------------------------------------------------------
def test_preprocess_png_equals_what_the_trainer_fed(run, digits, tmp_path):
    k = 7
    image = digits.test.images[k, 0].numpy()  # (8, 8) uint8
    Image.fromarray(image, "L").save(tmp_path / "digit.png")
    x = run.preprocess(tmp_path / "digit.png")
    assert x.shape == (1, 1, 8, 8) and x.dtype == torch.float32
    torch.testing.assert_close(x[0, 0], _normalised(image, run), rtol=0, atol=1e-6)
    # ... and exactly the trainer's own batch for that image
    loader = DeviceLoader(digits.test, 1000, mean=digits.mean, std=digits.std)
    trainer_batch, _ = next(iter(loader))
    assert torch.equal(x[0], trainer_batch[k])
    assert torch.equal(x, Normalizer(run.mean, run.std)(digits.test.images[k:k + 1]))


def test_preprocess_accepts_paths_pil_arrays_and_tensors(run, digits, tmp_path):
    image = digits.test.images[3, 0].numpy()
    Image.fromarray(image).save(tmp_path / "d.png")
    forms = [str(tmp_path / "d.png"), tmp_path / "d.png", Image.fromarray(image), image, image[..., None],
             digits.test.images[3]]
    x = run.preprocess(forms)
    assert x.shape == (len(forms), 1, 8, 8)
    for row in x:
        assert torch.equal(row, x[0])
    assert torch.equal(run.preprocess(digits.test.images[:5]), Normalizer(run.mean, run.std)(digits.test.images[:5]))


@pytest.mark.parametrize("mode,size", [("RGB", (64, 64)), ("RGBA", (64, 64)), ("RGB", (100, 60)), ("L", (3, 5))])
def test_preprocess_other_sizes_and_modes(run, tmp_path, mode, size):
    """A uniform colour image becomes a uniform grey 8x8 whatever its size: the luma of the colour."""
    rgb = (200, 100, 50)
    color = {"RGB": rgb, "RGBA": (*rgb, 90), "L": 77}[mode]
    Image.new(mode, size, color).save(tmp_path / "x.png")
    x = run.preprocess(tmp_path / "x.png")
    assert x.shape == (1, 1, 8, 8)
    gray = 77 if mode == "L" else _luma(*rgb)
    expected = _normalised(np.full((8, 8), gray, np.uint8), run)
    one_level = 1 / 255 / run.std[0]
    torch.testing.assert_close(x[0, 0], expected, rtol=0, atol=one_level + 1e-6)


def test_preprocess_rejects_float_arrays(run):
    with pytest.raises(ValueError, match="uint8"):
        run.preprocess(np.zeros((8, 8), np.float32))


# -- prediction ------------------------------------------------------------------------------------
def test_predict_top_k(run, digits):
    images = [digits.test.images[i] for i in range(20)]
    preds = run.predict(images, top_k=3)
    with torch.no_grad():
        logits = run.model(run.preprocess(images))
    assert len(preds) == 20
    for top, row in zip(preds, logits):
        assert len(top) == 3
        probs = [t["probability"] for t in top]
        assert probs == sorted(probs, reverse=True)
        assert all(0 <= p <= 1 for p in probs) and sum(probs) <= 1 + 1e-6
        assert top[0]["index"] == int(row.argmax())
        assert all(t["class"] == run.classes[t["index"]] for t in top)
        assert top[0]["probability"] == pytest.approx(float(row.softmax(0).max()), rel=1e-6)


def test_predict_top_k_larger_than_the_classes(run, digits):
    (top,) = run.predict(digits.test.images[0], top_k=50)
    assert len(top) == 10
    assert sorted(t["index"] for t in top) == list(range(10))
    assert sum(t["probability"] for t in top) == pytest.approx(1.0, abs=1e-5)


def test_predict_accuracy_agrees_with_the_summary(run, digits):
    preds = run.predict(list(digits.test.images), top_k=1)
    accuracy = np.mean([p[0]["index"] == int(y) for p, y in zip(preds, digits.test.labels)])
    assert accuracy == run.summary["test_accuracy"]


def test_run_model_is_a_plain_module(run):
    assert isinstance(run.model, nn.Module)
    assert run.model.get_classifier().out_features == 10
