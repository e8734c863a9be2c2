"""EfficientNet B0-B7: parity with torchvision, stochastic depth and dropout as torchvision, small inputs."""

from __future__ import annotations

import copy
import importlib

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from convolab.models import create_model
from convolab.models.efficientnet import MBConv

from ._helpers import n_params, randomize_norms

# torchvision's weight metadata (num_params of EfficientNet_B0_Weights ... EfficientNet_B7_Weights).
TORCHVISION_PARAMS = {
    "efficientnet_b0": 5_288_548,
    "efficientnet_b1": 7_794_184,
    "efficientnet_b2": 9_109_994,
    "efficientnet_b3": 12_233_232,
    "efficientnet_b4": 19_341_616,
    "efficientnet_b5": 30_389_784,
    "efficientnet_b6": 43_040_704,
    "efficientnet_b7": 66_347_960,
}
FAST = {"efficientnet_b0", "efficientnet_b1"}
VARIANTS = [pytest.param(n, marks=() if n in FAST else pytest.mark.slow) for n in sorted(TORCHVISION_PARAMS)]


def norm_settings(model: nn.Module) -> set[tuple[float, float]]:
    return {(m.eps, m.momentum) for m in model.modules() if isinstance(m, nn.BatchNorm2d)}


@pytest.mark.parametrize("name", VARIANTS)
def test_parity_with_torchvision(name):
    torch.manual_seed(0)
    ref = randomize_norms(getattr(torchvision.models, name)(weights=None)).eval()
    model = create_model(name).eval()
    assert n_params(model) == n_params(ref) == TORCHVISION_PARAMS[name]
    model.load_state_dict(ref.state_dict(), strict=True)
    # B5-B7 use BatchNorm eps 1e-3, momentum 0.01; the random running variances make a wrong eps visible.
    assert norm_settings(model) == norm_settings(ref)
    assert norm_settings(model) == ({(1e-3, 0.01)} if name[-1] in "567" else {(1e-5, 0.1)})
    x = torch.randn(2, 3, 64, 64)  # the native layout; 64x64 keeps the test fast (2x2 before the pool)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x))


def test_native_input_size_is_the_papers_resolution():
    assert [create_model(f"efficientnet_b{i}", input_size=None).input_size for i in (0, 1)] == [(224, 224), (240, 240)]
    from convolab.models import get_model_entry
    sizes = [get_model_entry(f"efficientnet_b{i}").default_cfg["input_size"][0] for i in range(8)]
    assert sizes == [224, 240, 260, 300, 380, 456, 528, 600]


def test_stochastic_depth_and_dropout_match_torchvision_in_training():
    torch.manual_seed(0)
    ref = torchvision.models.efficientnet_b0(weights=None)
    model = create_model("efficientnet_b0")
    model.load_state_dict(ref.state_dict(), strict=True)
    # Drop probability grows linearly with the block index: 0.2 * i / 16 (torchvision's rule).
    ours = [m.stochastic_depth.drop_prob for m in model.modules() if isinstance(m, MBConv)]
    theirs = [m.stochastic_depth.p for m in ref.modules() if isinstance(m, torchvision.models.efficientnet.MBConv)]
    assert ours == theirs == [0.2 * i / 16 for i in range(16)]
    assert model.classifier[0].p == ref.classifier[0].p == 0.2
    ref.train(), model.train()
    x = torch.randn(4, 3, 64, 64)
    torch.manual_seed(1)
    want = ref(x)
    torch.manual_seed(1)
    got = model(x)  # the same masks, drawn in the same order
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("size,chans", [(8, 1), (28, 1), (32, 3)])
def test_small_inputs_keep_stride_1_in_the_stem_and_first_stride_2_stage(size, chans):
    model = create_model("efficientnet_b0", num_classes=7, in_chans=chans, input_size=size).eval()
    assert model.features[0][0].stride == (1, 1) and model.features[0][0].in_channels == chans
    assert model.features[2][0].block[1][0].stride == (1, 1)  # the depthwise conv of features.2.0
    assert model.features[3][0].block[1][0].stride == (2, 2)
    assert [i["reduction"] for i in model.feature_info] == [1, 2, 4, 8]
    x = torch.randn(2, chans, size, size)
    with torch.no_grad():
        feats = model.forward_features(x)
        out = model(x)
    assert feats.shape == (2, 1280, -(-size // 8), -(-size // 8))  # padded stride-2 convs round up
    assert out.shape == (2, 7) and torch.isfinite(out).all()


def test_small_model_has_the_native_parameter_shapes():
    native = create_model("efficientnet_b0", num_classes=10)
    small = create_model("efficientnet_b0", num_classes=10, input_size=32)
    assert {k: v.shape for k, v in small.state_dict().items()} == {k: v.shape for k, v in native.state_dict().items()}
    assert create_model("efficientnet_b0", input_size=64).features[0][0].stride == (2, 2)
    assert [i["reduction"] for i in native.feature_info] == [2, 4, 8, 16, 32]


def test_grad_checkpointing_keeps_outputs_and_gradients(monkeypatch):
    torch.manual_seed(0)
    model = create_model("efficientnet_b0", num_classes=7, in_chans=1, input_size=8).train()
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
    assert len(calls) == 16, "one checkpoint per MBConv block"
    for (name, p), q in zip(model.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(q.grad, p.grad, msg=name)


def test_classifier_surface():
    model = create_model("efficientnet_b0", num_classes=7, in_chans=1, input_size=16).eval()
    assert model.get_classifier() is model.classifier[1] and model.classifier[1].in_features == 1280
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        feats = model.forward_features(x)
        torch.testing.assert_close(model.forward_head(feats, pre_logits=True), feats.mean((2, 3)))
    model.reset_classifier(3)
    assert model(x).shape == (2, 3)


@pytest.mark.parametrize("arg", ["drop_rate", "drop_path_rate"])
def test_bad_drop_rates(arg):
    with pytest.raises(ValueError, match=arg):
        create_model("efficientnet_b0", **{arg: 1.5})
