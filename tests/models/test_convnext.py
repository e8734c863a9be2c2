"""ConvNeXt: parity with torchvision, stochastic depth as torchvision, the small-input stem, checkpointing."""

from __future__ import annotations

import copy
import importlib

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from convolab.models import create_model
from convolab.models.convnext import CNBlock

from ._helpers import n_params, randomize_norms

# torchvision's weight metadata (num_params of ConvNeXt_Tiny_Weights ... ConvNeXt_Large_Weights).
TORCHVISION_PARAMS = {
    "convnext_tiny": 28_589_128,
    "convnext_small": 50_223_688,
    "convnext_base": 88_591_464,
    "convnext_large": 197_767_336,
}
VARIANTS = [pytest.param(n, marks=() if n == "convnext_tiny" else pytest.mark.slow) for n in TORCHVISION_PARAMS]


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random layer scales and norm affines: with the 1e-6 initial layer scale every block is
    nearly the identity, and parity would barely look at the blocks."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layer_scale"):
                p.copy_(torch.rand(p.shape, generator=gen) * 0.5 + 0.25)
    return randomize_norms(model, seed)


@pytest.mark.parametrize("name", VARIANTS)
def test_parity_with_torchvision(name):
    torch.manual_seed(0)
    ref = randomize(getattr(torchvision.models, name)(weights=None)).eval()
    model = create_model(name).eval()
    assert n_params(model) == n_params(ref) == TORCHVISION_PARAMS[name]
    model.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)  # the native layout; 64x64 keeps the test fast (2x2 before the pool)
    with torch.no_grad():
        want = ref(x)
        torch.testing.assert_close(model(x), want)
    assert want.std() > 0.1, "the randomised blocks should matter"


def test_stochastic_depth_matches_torchvision_in_training():
    torch.manual_seed(0)
    ref = torchvision.models.convnext_tiny(weights=None)
    model = create_model("convnext_tiny")
    model.load_state_dict(randomize(ref).state_dict(), strict=True)
    ours = [m.stochastic_depth.drop_prob for m in model.modules() if isinstance(m, CNBlock)]
    theirs = [m.stochastic_depth.p for m in ref.modules() if isinstance(m, torchvision.models.convnext.CNBlock)]
    assert ours == theirs and ours[0] == 0.0 and ours[-1] == pytest.approx(0.1)
    small = create_model("convnext_small", input_size=8)  # torchvision's default rate for S is 0.4
    assert max(m.stochastic_depth.drop_prob for m in small.modules() if isinstance(m, CNBlock)) == pytest.approx(0.4)
    ref.train(), model.train()
    x = torch.randn(4, 3, 64, 64)
    torch.manual_seed(1)
    want = ref(x)
    torch.manual_seed(1)
    torch.testing.assert_close(model(x), want)  # the same masks, drawn in the same order


@pytest.mark.parametrize("size,chans", [(8, 1), (28, 1), (32, 3)])
def test_small_inputs_use_a_stride_1_stem(size, chans):
    model = create_model("convnext_tiny", num_classes=7, in_chans=chans, input_size=size).eval()
    stem = model.features[0][0]
    assert (stem.kernel_size, stem.stride, stem.padding, stem.in_channels) == ((3, 3), (1, 1), (1, 1), chans)
    assert [model.features[i][1].stride for i in (2, 4, 6)] == [(2, 2)] * 3
    assert [i["reduction"] for i in model.feature_info] == [1, 2, 4, 8]
    x = torch.randn(2, chans, size, size)
    with torch.no_grad():
        feats = model.forward_features(x)
        out = model(x)
    assert feats.shape == (2, 768, size // 8, size // 8)
    assert out.shape == (2, 7) and torch.isfinite(out).all()


@pytest.mark.parametrize("size,kernels,reductions", [(4, [2, 2, 1], [1, 2, 4, 4]), (2, [2, 1, 1], [1, 2, 2, 2]),
                                                     (1, [1, 1, 1], [1, 1, 1, 1])])
def test_downsamplings_that_would_collapse_only_widen(size, kernels, reductions):
    model = create_model("convnext_tiny", num_classes=3, in_chans=1, input_size=size).eval()
    assert [model.features[i][1].kernel_size[0] for i in (2, 4, 6)] == kernels
    assert [i["reduction"] for i in model.feature_info] == reductions
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 1, size, size))
    assert feats.shape == (1, 768, size // reductions[-1], size // reductions[-1])


def test_native_stem_from_64():
    model = create_model("convnext_tiny", input_size=64)
    assert model.features[0][0].kernel_size == (4, 4) and model.features[0][0].stride == (4, 4)
    assert [i["reduction"] for i in model.feature_info] == [4, 8, 16, 32]


def test_grad_checkpointing_keeps_outputs_and_gradients(monkeypatch):
    torch.manual_seed(0)
    model = create_model("convnext_tiny", num_classes=7, in_chans=1, input_size=8, drop_path_rate=0.3).train()
    randomize(model)
    ckpt = copy.deepcopy(model)
    ckpt.set_grad_checkpointing(True)
    calls = []
    ckpt_module = importlib.import_module("convolab.layers.checkpoint")
    real = ckpt_module.checkpoint
    monkeypatch.setattr(ckpt_module, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    x = torch.randn(4, 1, 8, 8)
    y = torch.arange(4)
    torch.manual_seed(1)
    out = model(x)
    torch.manual_seed(1)
    out_ckpt = ckpt(x)  # stochastic depth on: the recomputation must replay the same masks
    torch.testing.assert_close(out_ckpt, out)
    F.cross_entropy(out, y).backward()
    F.cross_entropy(out_ckpt, y).backward()
    assert len(calls) == 18, "one checkpoint per CNBlock"
    for (name, p), q in zip(model.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(q.grad, p.grad, msg=name)


def test_classifier_surface():
    model = create_model("convnext_tiny", num_classes=7, in_chans=1, input_size=16).eval()
    assert model.get_classifier() is model.classifier[-1] and model.classifier[-1].in_features == 768
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        # pre-logits: the head's LayerNorm of the pooled features
        torch.testing.assert_close(pre, F.layer_norm(feats.mean((2, 3)), (768,), model.classifier[0].weight,
                                                     model.classifier[0].bias, eps=1e-6))
    model.reset_classifier(3)
    assert model(x).shape == (2, 3)


@pytest.mark.parametrize("kwargs,arg", [(dict(drop_path_rate=-0.1), "drop_path_rate"),
                                        (dict(drop_path_rate=1.0), "drop_path_rate"),
                                        (dict(layer_scale=0.0), "layer_scale")])
def test_bad_arguments(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        create_model("convnext_tiny", input_size=8, **kwargs)
