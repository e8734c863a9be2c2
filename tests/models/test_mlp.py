"""perceptron and mlp: parameters counted by hand, the forward against a hand-written torch.nn.functional
reference, the classifier contract, glass parity, the summary's parameter contrast with tutorial_cnn, and a
few NumPy-engine training steps on digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tests.models._helpers import n_params
from torch import nn

from convolab.analysis import format_side_by_side, summarize
from convolab.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread")

# Counted by hand: fan_in * fan_out weights + fan_out biases per layer.
MLP_28 = (784 * 512 + 512) + (512 * 256 + 256) + (256 * 10 + 10)          # 535,818
PERCEPTRON_28 = 784 * 10 + 10                                              # 7,850
# tutorial_cnn: conv1 1->16 3x3, conv2 16->32 3x3, fc1 32*7*7 -> 128, fc2 128 -> 10
TUTORIAL_28 = (16 * 9 + 16) + (32 * 16 * 9 + 32) + (32 * 7 * 7 * 128 + 128) + (128 * 10 + 10)  # 206,922


def test_parameters_by_hand():
    assert MLP_28 == 535_818 and PERCEPTRON_28 == 7_850 and TUTORIAL_28 == 206_922
    assert n_params(create_model("mlp", num_classes=10, in_chans=1, input_size=28)) == MLP_28
    assert n_params(create_model("perceptron", num_classes=10, in_chans=1, input_size=28)) == PERCEPTRON_28
    # CIFAR-sized input: the first layer grows with C*H*W = 3,072
    cifar = (3072 * 512 + 512) + (512 * 256 + 256) + (256 * 10 + 10)
    assert n_params(create_model("mlp", num_classes=10, in_chans=3, input_size=32)) == cifar
    wide = create_model("mlp", num_classes=7, in_chans=1, input_size=(8, 6), widths=[100])
    assert n_params(wide) == (48 * 100 + 100) + (100 * 7 + 7)


def _reference(model: nn.Module, x: torch.Tensor, act) -> torch.Tensor:
    """The MLP's forward written with torch.nn.functional from its own weights (eval mode: no dropout)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    h = x.reshape(len(x), -1)
    for i, fc in enumerate(linears):
        h = F.linear(h, fc.weight, fc.bias)
        if i < len(linears) - 1:
            h = act(h)
    return h


@pytest.mark.parametrize("act,fn", [("relu", F.relu), ("tanh", torch.tanh), ("gelu", F.gelu),
                                    ("leaky_relu", lambda t: F.leaky_relu(t, 0.01))])
def test_forward_matches_a_functional_reference(act, fn):
    torch.manual_seed(0)
    model = create_model("mlp", num_classes=5, in_chans=3, input_size=(9, 7), widths=[32, 16, 8], act=act).eval()
    x = torch.randn(4, 3, 9, 7)
    torch.testing.assert_close(model(x), _reference(model, x, fn), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(model.forward_head(model.forward_features(x), pre_logits=True).shape, (4, 8))


def test_perceptron_is_one_linear_map():
    torch.manual_seed(0)
    model = create_model("perceptron", num_classes=3, in_chans=2, input_size=5)
    fc = model.get_classifier()
    x = torch.randn(6, 2, 5, 5)
    torch.testing.assert_close(model(x), x.reshape(6, -1) @ fc.weight.T + fc.bias)
    assert [type(m) for m in model.classifier] == [nn.Flatten, nn.Linear]
    # pre-logits are the flattened pixels
    torch.testing.assert_close(model.forward_head(model.forward_features(x), pre_logits=True), x.reshape(6, -1))


def test_contract():
    model = create_model("mlp", num_classes=10, in_chans=1, input_size=28, drop_rate=0.3)
    x = torch.randn(2, 1, 28, 28)
    assert model.forward_features(x) is x  # no feature extractor: the image is the map
    assert model.feature_info == [dict(module="features", num_chs=1, reduction=1)]
    assert isinstance(model.get_classifier(), nn.Linear) and model.get_classifier().out_features == 10
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.3, 0.3]
    model.reset_classifier(4)
    assert model(x).shape == (2, 4) and model.num_classes == 4


@pytest.mark.parametrize("kwargs,message", [
    (dict(widths=[512, 0]), "widths must be a list of positive integers"),
    (dict(widths="512"), "widths must be a list of positive integers"),
    (dict(drop_rate=1.0), "drop_rate must be in [0, 1)"),
    (dict(act="softplus"), "unknown activation 'softplus'"),
])
def test_bad_arguments_are_one_line(kwargs, message):
    with pytest.raises(ValueError, match=None) as e:
        create_model("mlp", **kwargs)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_perceptron_takes_no_hidden_layer_options():
    with pytest.raises(ValueError) as e:
        create_model("perceptron", widths=[10])
    assert "perceptron has no option 'widths'" in str(e.value)
    with pytest.raises(ValueError) as e:
        create_model("perceptron", act="tanh")
    assert "perceptron has no activation choice" in str(e.value) and "mlp (mlp)" in str(e.value)


def test_glass_computes_what_torch_computes():
    from convolab.glass.interop import from_torch

    torch.manual_seed(0)
    model = create_model("mlp", num_classes=10, in_chans=1, input_size=8, widths=[20, 12], act="tanh").double().eval()
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64)
    glass = from_torch(model)
    np.testing.assert_allclose(glass(x.numpy()), model(x).detach().numpy(), rtol=1e-12, atol=1e-12)


def test_summary_shows_the_parameter_contrast():
    mlp, cnn = summarize("mlp"), summarize("tutorial_cnn")
    assert mlp.totals()["params"] == MLP_28 and cnn.totals()["params"] == TUTORIAL_28
    # MACs by hand: one multiply-add per weight of a linear layer; a convolution's per output pixel
    mlp_macs = 784 * 512 + 512 * 256 + 256 * 10
    cnn_macs = 16 * 9 * 28 * 28 + 32 * 16 * 9 * 14 * 14 + 1568 * 128 + 128 * 10
    assert mlp.totals()["macs"] == mlp_macs and cnn.totals()["macs"] == cnn_macs
    table = format_side_by_side([mlp, cnn])
    ratio = f"{MLP_28 / TUTORIAL_28:.3g}x"  # 2.59x
    assert ratio == "2.59x"
    assert (f"mlp / tutorial_cnn: parameters {ratio} ({MLP_28:,} / {TUTORIAL_28:,}), "
            f"MACs {mlp_macs / cnn_macs:.3g}x") in table


def test_cli_summary_of_mlp_and_tutorial_cnn(capsys):
    from convolab.cli import main

    assert main(["summary", "mlp", "tutorial_cnn"]) == 0
    out = capsys.readouterr().out
    assert "mlp / tutorial_cnn: parameters 2.59x (535,818 / 206,922)" in out


@pytest.mark.slow
def test_numpy_engine_trains_mlp_on_digits_as_torch_does(tmp_path):
    """Two epochs on scikit-learn's digits with each engine, from the same --init draw (no dropout: the engines draw
    their masks from different generators): the NumPy engine tracks the torch engine step for step (float32
    rounding), and the saved run reloads as the same mlp."""
    from convolab import load_run, train
    from convolab.atomic import read_jsonl
    from convolab.train import TrainConfig

    recipe = dict(model="mlp", data="digits", epochs=2, batch_size=64, lr=3e-3, schedule="constant", act="tanh",
                  label_smoothing=0.0, device="cpu", precision="32", model_kwargs={"widths": [64, 32], "drop_rate": 0},
                  init="xavier", progress=False, plots=False, checkpoints=False)
    runs = {engine: train(TrainConfig(out=str(tmp_path / engine), engine=engine, **recipe))
            for engine in ("torch", "numpy")}
    rows = {e: read_jsonl(r.run_dir / "metrics.jsonl") for e, r in runs.items()}
    assert len(rows["numpy"]) == len(rows["torch"]) == 2
    for a, b in zip(rows["torch"], rows["numpy"]):
        for key in ("train_loss", "val_loss"):
            assert b[key] == pytest.approx(a[key], rel=1e-4), (key, a, b)
    assert runs["numpy"].summary["test_accuracy"] > 0.8  # chance is 0.1
    run = load_run(tmp_path / "numpy")
    assert run.config["config"]["init"] == "xavier" and run.config["model_kwargs"]["act"] == "tanh"
    assert type(run.model.classifier.act1) is nn.Tanh


def test_explain_and_verified_summary_work_on_mlp():
    """Gradient attributions and Grad-CAM at ``features`` (the input: an MLP has no other map) run; the summary's
    shapes, MACs and receptive fields agree with execution."""
    from convolab.explain.attribution import attribute

    torch.manual_seed(0)
    model = create_model("mlp", num_classes=10, in_chans=1, input_size=8, widths=[16]).eval()
    x = torch.randn(2, 1, 8, 8)
    for method in ("gradcam", "saliency", "integrated-gradients"):
        maps = attribute(model, x, method, torch.tensor([3, 4]))
        assert maps.shape[0] == 2 and maps.shape[-2:] == (8, 8) and torch.isfinite(maps).all()
    s = summarize(model, (1, 8, 8), verify=True)
    assert s.verification.ok and s.totals()["macs"] == 64 * 16 + 16 * 10


@pytest.mark.slow
def test_report_of_an_mlp_run(tmp_path):
    """An mlp run's report: every section is gathered (the kernels section says there is no convolution)."""
    from convolab import train
    from convolab.report.data import gather
    from convolab.train import TrainConfig

    run = train(TrainConfig(model="mlp", data="digits", epochs=1, device="cpu", out=str(tmp_path / "run"),
                            progress=False, plots=False, checkpoints=False))
    data = gather(run.run_dir, samples=8)
    assert data.model.totals["params"] == (64 * 512 + 512) + (512 * 256 + 256) + (256 * 10 + 10)
    assert isinstance(data.kernels, str) and "no convolutional layer" in data.kernels
    assert data.gradcam["layer"] == "features" and data.sanity is not None
