"""``convolab.compress.prune``: structured pruning removes channels for real (shapes, parameters, MACs against
convolab.analysis and a hand count), reaches the MAC target, refuses what torch-pruning cannot follow; unstructured
pruning zeroes exactly the globally smallest weights and says it speeds nothing up."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from convolab.analysis import summarize
from convolab.compress.prune import NO_SPEEDUP, count_macs, prune_structured, prune_unstructured
from convolab.models import create_model


def _tutorial(size: int = 28) -> nn.Module:
    torch.manual_seed(0)
    return create_model("tutorial_cnn", num_classes=10, in_chans=1, input_size=(size, size))


def _hand_macs(m: nn.Module, size: int) -> int:
    """tutorial_cnn's MACs from its layer sizes: conv k*k*Cin*Cout per output pixel (size, then size/2), fc in*out."""
    f, c = m.features, m.classifier
    conv1 = 9 * f.conv1.in_channels * f.conv1.out_channels * size * size
    conv2 = 9 * f.conv2.in_channels * f.conv2.out_channels * (size // 2) ** 2
    return conv1 + conv2 + c.fc1.in_features * c.fc1.out_features + c.fc2.in_features * c.fc2.out_features


@pytest.fixture(scope="module")
def half():
    """tutorial_cnn at 28x28, half of its MACs removed (L2 importance)."""
    model = _tutorial()
    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    before = copy.deepcopy(model.state_dict())
    return model, x, before, prune_structured(model, x, macs_fraction=0.5)


def test_channels_are_physically_removed(half):
    model, x, _, r = half
    p = r.model
    f, c = p.features, p.classifier
    assert f.conv1.weight.shape == (f.conv1.out_channels, 1, 3, 3) and f.conv1.out_channels < 16
    assert f.conv2.weight.shape == (f.conv2.out_channels, f.conv1.out_channels, 3, 3) and f.conv2.out_channels < 32
    assert c.fc1.weight.shape == (c.fc1.out_features, f.conv2.out_channels * 7 * 7)  # flatten followed
    assert c.fc2.weight.shape == (10, c.fc1.out_features)  # the classifier keeps its 10 outputs
    assert r.params_after == sum(t.numel() for t in p.parameters()) < r.params_before == 206_922
    assert r.channels_before == {"features.conv1": 16, "features.conv2": 32, "classifier.fc1": 128,
                                 "classifier.fc2": 10}
    assert r.channels_after == {"features.conv1": f.conv1.out_channels, "features.conv2": f.conv2.out_channels,
                                "classifier.fc1": c.fc1.out_features, "classifier.fc2": 10}
    out = p.eval()(x)
    assert out.shape == (8, 10) and torch.isfinite(out).all()


def test_the_mac_target_is_reached_and_counted_as_analysis_and_by_hand(half):
    _, _, _, r = half
    assert abs(r.macs_removed - 0.5) <= 0.02
    assert r.macs_before == r.analysis_macs_before == _hand_macs(_tutorial(), 28) == 1_218_048
    assert r.macs_after == r.analysis_macs_after == _hand_macs(r.model, 28)
    assert r.to_dict()["channels"]["features.conv1"] == [16, r.model.features.conv1.out_channels]


def test_the_given_model_is_left_as_it_was(half):
    model, x, before, r = half
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert model.features.conv1.out_channels == 16 and r.model is not model


def test_kept_channels_carry_their_weights(half):
    """The pruned conv1's filters are a subset of the original's (removed, not retrained or reshuffled), and
    they are the largest by L2 norm (the importance asked for)."""
    _, _, before, r = half
    w0, w1 = before["features.conv1.weight"], r.model.features.conv1.weight.detach()
    kept = [int((w0 - w).flatten(1).abs().sum(1).argmin()) for w in w1]
    assert all(torch.equal(w0[k], w) for k, w in zip(kept, w1)) and len(set(kept)) == len(kept)


def test_the_build_records_every_changed_size(half):
    _, _, _, r = half
    b, p = r.model.convolab_build, r.model
    assert b["kind"] == "pruned" and r.model.convolab_cfg["name"] == "tutorial_cnn"
    assert b["base"] == {"name": "tutorial_cnn", "kwargs": {"num_classes": 10, "in_chans": 1, "input_size": [28, 28]}}
    assert b["modules"]["features.conv1"] == {"out_channels": p.features.conv1.out_channels}
    assert b["modules"]["classifier.fc2"] == {"in_features": p.classifier.fc1.out_features}
    assert b["shapes"]["classifier.fc1.weight"] == list(p.classifier.fc1.weight.shape)
    assert "classifier.fc2.bias" not in b["shapes"]  # unchanged tensors are not listed


@pytest.mark.slow
def test_macs_agree_with_analysis_on_a_residual_network():
    """resnet20 with 1x1-projection shortcuts (the dependency graph couples the residual sums): the summary's MAC
    count (a meta-device trace) and torch-pruning's counter agree before and after."""
    torch.manual_seed(0)
    m = create_model("resnet20", num_classes=10, in_chans=3, input_size=(16, 16), shortcut="B")
    x = torch.randn(2, 3, 16, 16)
    assert count_macs(m, x) == summarize(m, (3, 16, 16)).macs
    r = prune_structured(m, x, macs_fraction=0.4)
    assert r.macs_after == r.analysis_macs_after and r.macs_before == r.analysis_macs_before
    assert abs(r.macs_removed - 0.4) <= 0.03
    # the channels of a residual stage are pruned together: every block of layer1 keeps the same count
    kept = {r.channels_after[f"layer1.{i}.conv2"] for i in range(3)} | {r.channels_after["conv1"]}
    assert len(kept) == 1 and kept.pop() < 16
    assert r.model.eval()(x).shape == (2, 10)


def test_a_zero_padding_shortcut_is_refused_naming_the_layer():
    m = create_model("resnet20", num_classes=10, in_chans=3, input_size=(16, 16))  # option A shortcuts
    with pytest.raises(ValueError, match=r"layer2\.0\.downsample \(ZeroPadShortcut\).*shortcut='B'") as e:
        prune_structured(m, torch.randn(1, 3, 16, 16))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("importance", ["l1", pytest.param("taylor", marks=pytest.mark.slow)])
def test_other_importances_and_steps(importance):
    m = _tutorial(8)
    x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    y = torch.arange(16) % 10
    r = prune_structured(m, x, macs_fraction=0.3, importance=importance, iterative_steps=2, targets=y)
    assert abs(r.macs_removed - 0.3) <= 0.05 and r.macs_after == _hand_macs(r.model, 8)
    assert r.importance == importance and r.iterative_steps == 2


def test_ignored_layers_keep_their_channels():
    m = _tutorial(8)
    r = prune_structured(m, torch.randn(2, 1, 8, 8), macs_fraction=0.3, ignore=["features.conv1"])
    assert r.channels_after["features.conv1"] == 16 and r.channels_after["features.conv2"] < 32


@pytest.mark.parametrize("kwargs, message", [
    (dict(macs_fraction=0.0), "macs_fraction must be between 0 and 1"),
    (dict(macs_fraction=1.0), "macs_fraction must be between 0 and 1"),
    (dict(macs_fraction="half"), "macs_fraction must be between 0 and 1"),
    (dict(importance="l3"), "importance must be one of l2, l1, taylor"),
    (dict(importance="taylor"), "needs targets"),
    (dict(iterative_steps=0), "iterative_steps must be an integer"),
    (dict(ignore=["features.conv9"]), "does not have"),
    (dict(round_to=0), "round_to must be a positive integer"),
    (dict(macs_fraction=0.9, ignore=["features.conv2", "classifier.fc1"]), "at most .* of the MACs can be removed"),
])
def test_bad_arguments_are_one_line(kwargs, message):
    with pytest.raises(ValueError, match=message) as e:
        prune_structured(_tutorial(8), torch.randn(2, 1, 8, 8), **kwargs)
    assert "\n" not in str(e.value)


def test_an_example_that_does_not_fit_is_refused():
    with pytest.raises(ValueError, match=r"example images of shape \(3, 8, 8\) do not fit the model"):
        prune_structured(_tutorial(8), torch.randn(2, 3, 8, 8))


# -- unstructured ---------------------------------------------------------------------------------------------------


def test_unstructured_zeroes_the_globally_smallest_weights():
    m = _tutorial()
    weights = {n: mod.weight.detach().clone() for n, mod in m.named_modules() if isinstance(mod, (nn.Conv2d,
                                                                                                   nn.Linear))}
    info = prune_unstructured(m, 0.7)
    # the reference: one threshold over all |w| of the conv and linear layers, in NumPy
    flat = np.concatenate([w.abs().flatten().numpy() for w in weights.values()])
    k = round(0.7 * flat.size)
    threshold = np.sort(flat)[k - 1]
    zeros = sum(int((mod.weight == 0).sum()) for n, mod in m.named_modules() if n in weights)
    assert zeros == k == info["zeros"] and info["weights"] == flat.size
    assert info["sparsity"] == pytest.approx(0.7, abs=1 / flat.size)
    for n, w in weights.items():
        new = m.get_submodule(n).weight.detach()
        assert torch.equal(new == 0, w.abs() <= threshold)  # no ties in random float weights
        assert torch.equal(new[new != 0], w[new != 0])  # the rest untouched
        assert info["layers"][n] == pytest.approx(float((w.abs() <= threshold).float().mean()))
    # permanent: plain parameters again, no mask or original copy left behind, as many values as before
    assert not any("orig" in k or "mask" in k for k in m.state_dict())
    assert sum(p.numel() for p in m.parameters()) == 206_922
    out = m(torch.randn(4, 1, 28, 28))
    assert torch.isfinite(out).all() and out.shape == (4, 10)
    assert info["note"] == NO_SPEEDUP and "no faster" in NO_SPEEDUP


def test_unstructured_layers_and_bad_amounts():
    m = _tutorial(8)
    info = prune_unstructured(m, 0.5, layers=(nn.Conv2d,))
    assert set(info["layers"]) == {"features.conv1", "features.conv2"}
    assert int((m.classifier.fc1.weight == 0).sum()) == 0
    for bad in (1.0, -0.1, "a lot"):
        with pytest.raises(ValueError, match=r"amount must be a fraction of the weights in \[0, 1\)"):
            prune_unstructured(m, bad)
    with pytest.raises(ValueError, match="no Conv3d layer"):
        prune_unstructured(m, 0.5, layers=(nn.Conv3d,))


@pytest.mark.slow
def test_prune_run_prunes_and_fine_tunes_into_a_new_run(digits_run, tmp_path):
    from convolab.compress.prune import prune_run
    from convolab.runs import load_run

    res = prune_run(digits_run.run_dir, tmp_path / "pruned", macs_fraction=0.4, epochs=1, progress=False,
                    plots=False)
    run = load_run(res.path)
    assert res.path == tmp_path / "pruned" and run.build["kind"] == "pruned"
    assert run.model.features.conv2.out_channels == res.prune.channels_after["features.conv2"] < 32
    assert abs(res.prune.macs_removed - 0.4) <= 0.05
    assert res.accuracy_before == digits_run.summary["test_accuracy"]
    assert res.accuracy_after == run.summary["test_accuracy"] and 0 <= res.accuracy_after <= 1
    assert res.to_dict()["path"] == str(res.path)
    with pytest.raises(FileExistsError, match="already exists"):  # a run folder is never overwritten silently
        prune_run(digits_run.run_dir, tmp_path / "pruned", macs_fraction=0.4, epochs=1, progress=False)


@pytest.mark.slow
def test_the_target_is_found_where_large_ratios_stop_pruning():
    """LeNet-5's 6-channel conv1: at a channel ratio of 0.95 torch-pruning leaves the convolutions whole (their MACs
    go back up), so the search brackets the target from below instead of from the largest ratio."""
    torch.manual_seed(0)
    m = create_model("lenet5", num_classes=10, in_chans=1, input_size=(28, 28))
    r = prune_structured(m, torch.randn(2, 1, 28, 28), macs_fraction=0.5)
    assert abs(r.macs_removed - 0.5) <= 0.05 and r.macs_after == r.analysis_macs_after
    assert r.channels_after["features.conv1"] < 6


@pytest.mark.slow
def test_a_channel_shuffle_is_refused_in_one_line():
    m = create_model("shufflenet_v2_x0_5", num_classes=10, in_chans=3, input_size=(64, 64))
    with pytest.raises(ValueError, match=r"torch-pruning cannot follow this model's graph \(ZeroDivisionError") as e:
        prune_structured(m, torch.randn(1, 3, 64, 64))
    assert "\n" not in str(e.value)
