"""DenseNet-BC: parity with torchvision, the small-input stem and pooling rule, memory-efficient checkpointing."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import convolab.layers.checkpoint as checkpoint_module
import convolab.models.densenet as densenet_module
from convolab.models import create_model

from ._helpers import n_params, randomize_norms

# torchvision's weight metadata (num_params of DenseNet121_Weights ... DenseNet201_Weights).
TORCHVISION_PARAMS = {
    "densenet121": 7_978_856,
    "densenet161": 28_681_000,
    "densenet169": 14_149_480,
    "densenet201": 20_013_928,
}


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_parity_with_torchvision(name):
    torch.manual_seed(0)
    ref = randomize_norms(getattr(torchvision.models, name)(weights=None)).eval()
    model = create_model(name).eval()
    assert n_params(model) == n_params(ref) == TORCHVISION_PARAMS[name]
    model.load_state_dict(ref.state_dict(), strict=True)
    # The native layout at a small input (64x64 -> 2x2 before the pool) keeps the test fast.
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x))


def test_dropout_inside_dense_layers_matches_torchvision():
    """Same drop_rate, same seed: the same dropout masks in the same order (train mode)."""
    torch.manual_seed(0)
    ref = torchvision.models.densenet121(weights=None, drop_rate=0.3).train()
    model = create_model("densenet121", drop_rate=0.3).train()
    model.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    torch.manual_seed(1)
    want = ref(x)
    torch.manual_seed(1)
    got = model(x)
    torch.testing.assert_close(got, want)
    torch.manual_seed(2)
    assert not torch.allclose(model(x), got), "dropout should change the output between draws"


@pytest.mark.parametrize("size,chans", [(8, 1), (28, 1), (32, 3)])
def test_small_inputs_use_the_cifar_stem(size, chans):
    model = create_model("densenet121", num_classes=7, in_chans=chans, input_size=size).eval()
    conv0 = model.features.conv0
    assert (conv0.kernel_size, conv0.stride, conv0.in_channels) == ((3, 3), (1, 1), chans)
    assert not hasattr(model.features, "pool0")
    # 8x8 and up: all three transitions keep their pools, total stride 8.
    assert [hasattr(getattr(model.features, f"transition{i}"), "pool") for i in (1, 2, 3)] == [True] * 3
    assert [i["reduction"] for i in model.feature_info] == [1, 1, 2, 4, 8]
    x = torch.randn(1, chans, size, size)
    with torch.no_grad():
        feats = model.forward_features(x)
        out = model(x)
    assert feats.shape == (1, 1024, size // 8, size // 8)
    assert out.shape == (1, 7) and torch.isfinite(out).all()


def test_native_stem_from_64():
    model = create_model("densenet121", input_size=64)
    assert model.features.conv0.kernel_size == (7, 7) and model.features.conv0.stride == (2, 2)
    assert isinstance(model.features.pool0, nn.MaxPool2d)
    assert [i["reduction"] for i in model.feature_info] == [2, 4, 8, 16, 32]
    assert create_model("densenet121", input_size=(63, 200)).features.conv0.kernel_size == (3, 3)


@pytest.mark.parametrize("size,pools,final", [(4, [True, True, False], 1), (2, [True, False, False], 1),
                                              (1, [False, False, False], 1), (5, [True, True, False], 1)])
def test_transition_pools_that_would_collapse_are_dropped(size, pools, final):
    model = create_model("densenet121", num_classes=3, in_chans=1, input_size=size).eval()
    assert [hasattr(getattr(model.features, f"transition{i}"), "pool") for i in (1, 2, 3)] == pools
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 1, size, size))
    assert feats.shape[2:] == (final, final)
    assert model.feature_info[-1]["reduction"] == 2 ** sum(pools)


def test_grad_checkpointing_keeps_outputs_and_gradients(monkeypatch):
    torch.manual_seed(0)
    model = create_model("densenet121", num_classes=7, in_chans=1, input_size=8).train()
    ckpt = copy.deepcopy(model)
    ckpt.set_grad_checkpointing(True)
    calls = []
    real = checkpoint_module.checkpoint  # DenseNet checkpoints through convolab.layers.checkpoint_call
    monkeypatch.setattr(checkpoint_module, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    x = torch.randn(4, 1, 8, 8)
    y = torch.arange(4)
    out, out_ckpt = model(x), ckpt(x)
    torch.testing.assert_close(out_ckpt, out)
    F.cross_entropy(out, y).backward()
    F.cross_entropy(out_ckpt, y).backward()
    assert len(calls) == 6 + 12 + 24 + 16, "every dense layer's bottleneck is checkpointed"
    for (name, p), q in zip(model.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(q.grad, p.grad, msg=name)
    # No checkpointing without gradients (inference) or when switched off again.
    calls.clear()
    with torch.no_grad():
        ckpt(x)
    ckpt.set_grad_checkpointing(False)
    ckpt(x)
    assert calls == []


def test_memory_efficient_option_is_grad_checkpointing():
    model = create_model("densenet121", num_classes=3, input_size=32, memory_efficient=True)
    assert model.grad_checkpointing
    assert all(m.memory_efficient for m in model.modules() if isinstance(m, densenet_module.DenseLayer))


def test_classifier_surface():
    model = create_model("densenet169", num_classes=7, in_chans=1, input_size=12).eval()
    assert model.get_classifier() is model.classifier and model.classifier.in_features == 1664
    x = torch.randn(2, 1, 12, 12)
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
    assert pre.shape == (2, 1664)
    torch.testing.assert_close(pre, feats.mean((2, 3)))
    model.reset_classifier(0)
    assert isinstance(model.get_classifier(), nn.Identity)


@pytest.mark.parametrize("bad", [-0.1, 1.0])
def test_bad_drop_rate(bad):
    with pytest.raises(ValueError, match="drop_rate"):
        create_model("densenet121", drop_rate=bad)
