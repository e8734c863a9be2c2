"""GoogLeNet: parity with torchvision (with and without auxiliary heads), the small-input stem, checkpointing."""

from __future__ import annotations

import copy
import importlib

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from convolab.models import create_model
from convolab.models.googlenet import GoogLeNetOutputs

from ._helpers import n_params, randomize_norms

# torchvision's GoogLeNet_Weights metadata (num_params, without the auxiliary heads).
TORCHVISION_PARAMS = 6_624_904
# With aux1 + aux2: each is conv 1x1 (C*128 + BN 2*128) + FC 2048->1024 + FC 1024->1000.
AUX_PARAMS = (512 * 128 + 256 + 2048 * 1024 + 1024 + 1024 * 1000 + 1000) + \
             (528 * 128 + 256 + 2048 * 1024 + 1024 + 1024 * 1000 + 1000)


def reference(**kwargs) -> nn.Module:
    return randomize_norms(torchvision.models.googlenet(weights=None, init_weights=True, **kwargs))


def test_parity_with_torchvision():
    torch.manual_seed(0)
    ref = reference(aux_logits=False).eval()
    model = create_model("googlenet").eval()
    assert n_params(model) == n_params(ref) == TORCHVISION_PARAMS
    model.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)  # the native layout; 64x64 keeps the test fast (2x2 before the pool)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x))


def test_transform_input_is_off_by_default_and_matches_torchvision_when_on():
    assert torchvision.models.googlenet(weights=None, init_weights=True).transform_input is False
    assert create_model("googlenet").transform_input is False
    torch.manual_seed(0)
    ref = reference(aux_logits=False, transform_input=True).eval()
    model = create_model("googlenet", transform_input=True).eval()
    model.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x))
    with pytest.raises(ValueError, match="transform_input"):
        create_model("googlenet", in_chans=1, transform_input=True)


def test_auxiliary_heads_match_torchvision_in_train_and_eval():
    torch.manual_seed(0)
    ref = reference(aux_logits=True)
    model = create_model("googlenet", aux_logits=True)
    assert n_params(model) == n_params(ref) == TORCHVISION_PARAMS + AUX_PARAMS
    model.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    ref.train(), model.train()
    torch.manual_seed(1)
    want = ref(x)
    torch.manual_seed(1)
    got = model(x)  # same dropout draws in the same order: aux1, aux2, main
    assert isinstance(got, GoogLeNetOutputs) and got._fields == ("logits", "aux_logits2", "aux_logits1")
    for g, w in zip(got, want):
        assert g.shape == (2, 1000)
        torch.testing.assert_close(g, w)
    ref.eval(), model.eval()
    with torch.no_grad():
        out = model(x)
        assert isinstance(out, torch.Tensor)  # eval: plain logits
        torch.testing.assert_close(out, ref(x))


def test_auxiliary_heads_train_at_small_sizes():
    model = create_model("googlenet", num_classes=7, in_chans=1, input_size=8, aux_logits=True).train()
    logits, aux2, aux1 = model(torch.randn(4, 1, 8, 8))
    assert logits.shape == aux2.shape == aux1.shape == (4, 7)
    y = torch.arange(4)
    (F.cross_entropy(logits, y) + 0.3 * (F.cross_entropy(aux1, y) + F.cross_entropy(aux2, y))).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.reset_classifier(3)
    assert model.aux1.fc2.out_features == model.aux2.fc2.out_features == model.fc.out_features == 3


@pytest.mark.parametrize("size,chans", [(8, 1), (28, 1), (32, 3)])
def test_small_inputs_use_a_stride_1_stem(size, chans):
    model = create_model("googlenet", num_classes=7, in_chans=chans, input_size=size).eval()
    conv1 = model.conv1.conv
    assert (conv1.kernel_size, conv1.stride, conv1.in_channels) == ((3, 3), (1, 1), chans)
    assert not hasattr(model, "maxpool1")
    assert [i["reduction"] for i in model.feature_info] == [1, 1, 2, 4, 8]
    x = torch.randn(2, chans, size, size)
    with torch.no_grad():
        feats = model.forward_features(x)
        out = model(x)
    assert feats.shape == (2, 1024, -(-size // 8), -(-size // 8))  # ceil-mode pools round up
    assert out.shape == (2, 7) and torch.isfinite(out).all()


def test_native_stem_from_64():
    model = create_model("googlenet", input_size=64)
    assert model.conv1.conv.kernel_size == (7, 7) and model.conv1.conv.stride == (2, 2)
    assert isinstance(model.maxpool1, nn.MaxPool2d)
    assert [i["reduction"] for i in model.feature_info] == [2, 4, 8, 16, 32]


def test_grad_checkpointing_keeps_outputs_and_gradients(monkeypatch):
    torch.manual_seed(0)
    model = create_model("googlenet", num_classes=7, in_chans=1, input_size=8, drop_rate=0.0).train()
    ckpt = copy.deepcopy(model)
    ckpt.set_grad_checkpointing(True)
    calls = []
    ckpt_module = importlib.import_module("convolab.layers.checkpoint")
    real = ckpt_module.checkpoint
    monkeypatch.setattr(ckpt_module, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    x = torch.randn(4, 1, 8, 8)
    y = torch.arange(4)
    out, out_ckpt = model(x), ckpt(x)
    torch.testing.assert_close(out_ckpt, out)
    F.cross_entropy(out, y).backward()
    F.cross_entropy(out_ckpt, y).backward()
    assert len(calls) == len(ckpt.stage_names) == 15
    for (name, p), q in zip(model.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(q.grad, p.grad, msg=name)


@pytest.mark.parametrize("arg", ["drop_rate", "aux_drop_rate"])
def test_bad_drop_rates(arg):
    with pytest.raises(ValueError, match=arg):
        create_model("googlenet", **{arg: -0.5})
