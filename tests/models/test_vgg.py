"""VGG 11/13/16/19 with and without BatchNorm: torchvision parity, the small-input pool rule, grad checkpointing."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import convolab.layers.checkpoint as checkpoint_module
from convolab.models import create_model, get_model_entry
from convolab.models.vgg import VGG_CFGS

from ._helpers import feature_maps, n_params, randomize_norms

VGGS = ["vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"]


def test_configurations_are_the_papers_weight_layer_counts():
    # Table 1 of the paper: A = 11, B = 13, D = 16, E = 19 weight layers (convolutions + 3 FC), five pools.
    for name, cfg in VGG_CFGS.items():
        assert sum(v != "M" for v in cfg) + 3 == int(name[3:])
        assert cfg.count("M") == 5 and cfg[-1] == "M"


@pytest.mark.parametrize("name", VGGS)
def test_structure_and_parameter_count_match_torchvision(name):
    """Names, shapes and count, on the meta device (no memory, no time); values are checked below."""
    with torch.device("meta"):
        model = create_model(name)
        ref = getattr(torchvision.models, name)(weights=None)
    ours, theirs = model.state_dict(), ref.state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in theirs)
    expected = torchvision.models.get_model_weights(name).IMAGENET1K_V1.meta["num_params"]
    assert n_params(model) == n_params(ref) == expected
    # The builder's docstring states the same figure.
    doc_count = re.search(r"([\d,]{11}) parameters", get_model_entry(name).description).group(1)
    assert int(doc_count.replace(",", "")) == expected


def _check_parity(name: str) -> None:
    torch.manual_seed(0)
    ref = getattr(torchvision.models, name)(weights=None).eval()
    randomize_norms(ref)  # non-trivial running statistics (the _bn forms), so eval-mode BN is really exercised
    model = create_model(name, num_classes=1000, in_chans=3, input_size=None).eval()
    model.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        out = model(x)
        torch.testing.assert_close(out, ref(x))
    assert out.abs().max() > 0


def test_vgg11_matches_torchvision():
    _check_parity("vgg11")


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in VGGS if n != "vgg11"])
def test_matches_torchvision(name):
    _check_parity(name)


@pytest.mark.parametrize("size,kept,last_side", [
    # 3x3 convolutions keep the size; a 2x2 pool is kept while the map reaching it is at least 2.
    (224, [True] * 5, 7),
    (32, [True] * 5, 1),                          # 32 16 8 4 2 -> 1
    (28, [True, True, True, True, False], 1),     # 28 14 7 3 1 -> 1
    (8, [True, True, True, False, False], 1),     # 8 4 2 1 -> 1
    (1, [False] * 5, 1),
])
def test_small_inputs_drop_the_pools_that_do_not_fit(size, kept, last_side):
    with torch.device("meta"):
        model = create_model("vgg16_bn", input_size=size).eval()
        ref = torchvision.models.vgg16_bn(weights=None)
    pools = [isinstance(m, nn.MaxPool2d) for m in model.features if isinstance(m, (nn.MaxPool2d, nn.Identity))]
    assert pools == kept
    # A dropped pool is an Identity in its place: every torchvision name and shape is kept at any size.
    ours, theirs = model.state_dict(), ref.state_dict()
    assert list(ours) == list(theirs) and all(ours[k].shape == theirs[k].shape for k in theirs)
    reductions = [i["reduction"] for i in model.feature_info]
    assert reductions == [1, *[2 ** sum(kept[:i + 1]) for i in range(4)]]
    with torch.device("meta"):
        feats = model.forward_features(torch.empty(1, 3, size, size))
    assert feats.shape == (1, 512, last_side, last_side)


@pytest.mark.parametrize("name", VGGS)
def test_forward_on_a_small_input(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_chans=1, input_size=8).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 8, 8))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


def test_feature_info_matches_the_maps():
    model = create_model("vgg11", num_classes=7, in_chans=3, input_size=32).eval()
    shapes, feats = feature_maps(model, torch.randn(1, 3, 32, 32))
    assert [tuple(s[1:]) for s in shapes] == [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (512, 2, 2)]
    assert [s[1] for s in shapes] == [i["num_chs"] for i in model.feature_info]
    assert model.feature_info[-1]["num_chs"] == feats.shape[1] == 512
    assert [i["module"] for i in model.feature_info] == [f"features.{i}" for i in (1, 4, 9, 14, 19)]


def test_grad_checkpointing_leaves_outputs_and_gradients_unchanged(monkeypatch):
    calls = []
    real = checkpoint_module.checkpoint

    def counting(fn, *args, **kwargs):
        calls.append(fn)
        return real(fn, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module, "checkpoint", counting)
    torch.manual_seed(0)
    model = create_model("vgg11_bn", num_classes=7, in_chans=3, input_size=32, drop_rate=0.0).train()
    # The classifier (102 M of the 133 M parameters) is outside the checkpointed stages; freezing it
    # keeps the test light, and its input gradient still flows into every stage.
    model.classifier.requires_grad_(False)
    x = torch.randn(4, 3, 32, 32)
    y = torch.arange(4) % 7
    results = []
    for enable in (False, True):
        model.set_grad_checkpointing(enable)
        model.zero_grad()
        out = model(x)
        F.cross_entropy(out, y).backward()
        results.append((out.detach(), {n: p.grad.clone() for n, p in model.features.named_parameters()}))
    assert len(calls) == 5  # one checkpointed segment per stage, only when enabled
    (out0, g0), (out1, g1) = results
    torch.testing.assert_close(out1, out0)
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], msg=n)


def test_drop_rate():
    with torch.device("meta"):
        model = create_model("vgg11", drop_rate=0.25)
    assert [m.p for m in model.classifier if isinstance(m, nn.Dropout)] == [0.25, 0.25]
    for rate in (-0.5, 1.0):
        with pytest.raises(ValueError, match="drop_rate"):
            create_model("vgg11", drop_rate=rate)
