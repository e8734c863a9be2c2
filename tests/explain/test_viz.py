"""Kernels, feature maps and activation maximization against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import convolab
from convolab.data import load_dataset
from convolab.explain.viz import (
    activation_maximization,
    activation_maximization_figure,
    feature_map_figure,
    feature_maps,
    kernel_figure,
    kernel_grid,
    mosaic,
    viz_run,
)
from convolab.models import create_model


@pytest.fixture(scope="module")
def tutorial():
    torch.manual_seed(0)
    return create_model("tutorial_cnn", num_classes=10, in_chans=1, input_size=(8, 8)).eval()


@pytest.fixture(scope="module")
def run(digits_run):
    return convolab.load_run(digits_run.run_dir)


def _minmax(w: np.ndarray) -> np.ndarray:
    return (w - w.min()) / (w.max() - w.min())


# -- kernels --------------------------------------------------------------------------------------
def test_gray_kernel_tiles_are_the_weights_scaled_per_filter(tutorial):
    grid = kernel_grid(tutorial)
    w = tutorial.features.conv1.weight.detach().numpy()  # (16, 1, 3, 3)
    assert grid.layer == "features.conv1" and grid.weight_shape == (16, 1, 3, 3)
    assert grid.tiles.shape == (16, 3, 3, 1) and not grid.per_channel
    for f in range(16):
        np.testing.assert_allclose(grid.tiles[f, :, :, 0], _minmax(w[f, 0]), rtol=0, atol=1e-6)
        assert grid.tiles[f].min() == 0 and grid.tiles[f].max() == pytest.approx(1)


def test_rgb_kernels_keep_their_colours_and_diverging_centres_zero():
    torch.manual_seed(0)
    model = create_model("tutorial_cnn", num_classes=3, in_chans=3, input_size=(8, 8)).eval()
    with torch.no_grad():
        model.features.conv1.weight[2, 1, 0, 0] = 0.0
    w = model.features.conv1.weight.detach().numpy()  # (16, 3, 3, 3)
    grid = kernel_grid(model)
    assert grid.tiles.shape == (16, 3, 3, 3)
    for f in (0, 7):  # one min and max over the whole filter: the channels keep their relative strength
        np.testing.assert_allclose(grid.tiles[f], _minmax(w[f]).transpose(1, 2, 0), atol=1e-6)
    div = kernel_grid(model, diverging=True)
    np.testing.assert_allclose(div.tiles[5], (0.5 + 0.5 * w[5] / np.abs(w[5]).max()).transpose(1, 2, 0), atol=1e-6)
    assert div.tiles[2, 0, 0, 1] == 0.5  # a zero weight sits at the middle of the scale


def test_many_input_channels_get_a_tile_each(tutorial):
    grid = kernel_grid(tutorial, "features.conv2", max_channels=4)
    w = tutorial.features.conv2.weight.detach().numpy()  # (32, 16, 3, 3)
    assert grid.per_channel and grid.cols == 4 and grid.tiles.shape == (32 * 4, 3, 3, 1)
    f, c = 9, 3
    scaled = (w[f, c] - w[f].min()) / (w[f].max() - w[f].min())  # scaled over the whole filter
    np.testing.assert_allclose(grid.tiles[f * 4 + c, :, :, 0], scaled, atol=1e-6)


def test_mosaic_places_tiles_row_major_with_blank_gutters():
    tiles = np.arange(5 * 2 * 3, dtype=np.float32).reshape(5, 2, 3, 1)
    m = mosaic(tiles, cols=2, pad=1)
    assert m.shape == (3 * 3 - 1, 2 * 4 - 1, 1)
    np.testing.assert_array_equal(m[3:5, 4:7], tiles[3])  # row 1, column 1
    assert np.isnan(m[2]).all() and np.isnan(m[:, 3]).all() and np.isnan(m[6:, 4:]).all()


def test_kernel_figure_shows_the_mosaic_titled_with_layer_and_shape(tutorial):
    grid = kernel_grid(tutorial)
    fig = kernel_figure(grid)
    ax = fig.axes[0]
    assert "features.conv1" in ax.get_title() and "16 filters of 1x3x3" in ax.get_title()
    shown = ax.images[0].get_array()
    np.testing.assert_array_equal(np.ma.getdata(shown)[~np.ma.getmaskarray(shown)],
                                  grid.mosaic()[..., 0][~np.isnan(grid.mosaic()[..., 0])])


def test_kernels_of_a_non_convolution_are_refused(tutorial):
    with pytest.raises(ValueError, match="not a Conv2d"):
        kernel_grid(tutorial, "classifier.fc1")


# -- feature maps ---------------------------------------------------------------------------------
def test_feature_maps_equal_a_forward_of_the_prefix(tutorial):
    x = torch.randn(3, 1, 8, 8)
    maps = feature_maps(tutorial, x, ["features.conv2", "features.relu1", "features.relu2"])
    assert list(maps) == ["features.conv2", "features.relu1", "features.relu2"]
    with torch.no_grad():
        torch.testing.assert_close(maps["features.relu1"], tutorial.features[:3](x))
        torch.testing.assert_close(maps["features.conv2"], tutorial.features[:4](x))
        torch.testing.assert_close(maps["features.relu2"], tutorial.features(x))


def test_default_layers_are_the_feature_stages(tutorial):
    maps = feature_maps(tutorial, torch.randn(1, 8, 8))  # one image without the batch axis
    assert list(maps) == ["features.relu1", "features.relu2"]
    assert maps["features.relu1"].shape == (1, 16, 4, 4) and maps["features.relu2"].shape == (1, 32, 2, 2)


def test_a_map_is_kept_before_a_later_in_place_relu():
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=10, input_size=32).eval()
    x = torch.randn(1, 3, 32, 32)
    bn1 = feature_maps(model, x, "bn1")["bn1"]  # followed by ReLU(inplace=True)
    with torch.no_grad():
        torch.testing.assert_close(bn1, model.bn1(model.conv1(x)))
    assert (bn1 < 0).any()


def test_feature_maps_unknown_layer(tutorial):
    with pytest.raises(ValueError, match="unknown layer 'features.relu3'.*did you mean"):
        feature_maps(tutorial, torch.randn(1, 1, 8, 8), ["features.relu3"])


def test_feature_map_figure(tutorial):
    x = torch.randn(1, 1, 8, 8)
    maps = feature_maps(tutorial, x)
    fig = feature_map_figure(maps, (torch.rand(1, 8, 8) * 255).to(torch.uint8), max_channels=8)
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert titles == ["input 8x8", "features.relu1: 16x4x4 (first 8 of 16 channels)",
                      "features.relu2: 32x2x2 (first 8 of 32 channels)"]
    shown = np.ma.getdata(fig.axes[1].images[0].get_array())
    a = maps["features.relu1"][0, 1].numpy()  # channel 1 is the second tile of the first row
    np.testing.assert_allclose(shown[0:4, 5:9], (a - a.min()) / (a.max() - a.min()), atol=1e-6)
    with pytest.raises(ValueError, match="not \\(N, C, H, W\\) maps"):
        feature_map_figure(feature_maps(tutorial, x, "classifier.fc1"))


# -- activation maximization ----------------------------------------------------------------------
def _channel_means(model, x, layer):
    a = feature_maps(model, x, layer)[layer]
    return a.reshape(len(a), a.shape[1], -1).mean(2)  # (N, C)


@pytest.mark.parametrize("layer", ["features.relu2", "classifier.fc2"])
def test_activation_maximization_beats_natural_and_random_inputs(run, layer):
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    units = [0, 3, 5, 7]
    res = activation_maximization(run.model, layer, units, steps=150, input_size=run.input_size,
                                  mean=run.mean, std=run.std)
    assert res.layer == layer and res.units == units and res.images.shape == (4, 1, 8, 8)
    # measured independently: a plain forward of the optimised images
    reached = _channel_means(run.model, res.images, layer)[torch.arange(4), torch.tensor(units)]
    torch.testing.assert_close(reached, torch.tensor(res.activations))
    natural = _channel_means(run.model, run.preprocess(load_dataset("digits").test.images), layer)[:, units]
    noise = (torch.rand(500, 1, 8, 8) - run.mean[0]) / run.std[0]
    random = _channel_means(run.model, noise, layer)[:, units]
    assert (reached > natural.max(0).values).all(), (reached, natural.max(0).values)
    assert (reached > random.max(0).values).all()
    assert (reached > 2 * random.mean(0).clamp_min(0.1)).all()
    # valid pixels, untouched weights, still in eval mode
    assert res.pixels.min() >= 0 and res.pixels.max() <= 1
    torch.testing.assert_close(res.pixels, (res.images * run.std[0] + run.mean[0]).clamp(0, 1))
    lo, hi = (0 - run.mean[0]) / run.std[0], (1 - run.mean[0]) / run.std[0]
    assert res.images.min() >= lo - 1e-6 and res.images.max() <= hi + 1e-6
    assert all(torch.equal(v, before[k]) for k, v in run.model.state_dict().items())
    assert not run.model.training
    fig = activation_maximization_figure(res)
    assert [ax.get_title() for ax in fig.axes if ax.get_title()][:2] == [
        f"unit 0\n{res.activations[0]:.3g}", f"unit 3\n{res.activations[1]:.3g}"]


def test_activation_maximization_on_a_jittered_rgb_model():
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=10, input_size=32).eval()
    res = activation_maximization(model, "layer1", 2, steps=20, jitter=2, seed=1)
    assert res.units == [0, 1] and res.images.shape == (2, 3, 32, 32)
    assert all(a > b for a, b in zip(res.activations, res.initial_activations))


def test_activation_maximization_rejects_bad_units(tutorial):
    with pytest.raises(ValueError, match="has 16 channels; units must be in 0..15"):
        activation_maximization(tutorial, "features.relu1", [3, 16], steps=1)
    with pytest.raises(ValueError, match="steps must be at least 1"):
        activation_maximization(tutorial, "features.relu1", 2, steps=0)


# -- writing the files ----------------------------------------------------------------------------
def test_viz_write_errors_are_one_line_and_leave_no_folder(run, tmp_path, monkeypatch):
    import errno

    from convolab import plotting as plots

    def full(fig, path, dpi=110):
        plots.plt.close(fig)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(plots, "save_figure", full)
    out = tmp_path / "new" / "viz"
    with pytest.raises(PermissionError) as e:
        viz_run(run, out, kernels=True, progress=False)
    assert str(e.value) == f"cannot write {out / 'kernels.png'} (No space left on device)"
    assert not (tmp_path / "new").exists()


def test_viz_shows_progress_on_a_terminal(run, tmp_path, monkeypatch):
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    viz_run(run, tmp_path / "v", kernels=True, filters=True, steps=2, units=2)
    assert "viz" in sys.stderr.getvalue() and "/2 [" in sys.stderr.getvalue()


def test_a_layer_the_forward_pass_skips_is_one_line_with_the_choices(tutorial):
    """TutorialCNN calls its classifier's layers one by one: the 'classifier' container never runs."""
    with pytest.raises(ValueError, match="layer 'classifier' does not run in TutorialCNN's forward pass") as e:
        feature_maps(tutorial, torch.zeros(1, 1, 8, 8), ["classifier"])
    assert "feature stages: features.relu1, features.relu2" in str(e.value)
    with pytest.raises(ValueError, match="layer 'classifier' does not run in TutorialCNN's forward pass.*features"):
        activation_maximization(tutorial, "classifier", 2, steps=1)
