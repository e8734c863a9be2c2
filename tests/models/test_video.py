"""3-D CNNs on clips (N, C, T, H, W): C3D (Tran et al., ICCV 2015) and R3D-18 (Tran et al., CVPR 2018).

References: C3D's Figure 3 counted layer by layer (by hand below): 79,991,015 parameters with the
Sports-1M head (487 classes), the total Keras reports for the authors' released Sports-1M network
converted from Caffe, and 78,409,573 with a UCF101 head (101 classes); the paper itself states no
total. R3D-18: ``torchvision.models.video.r3d_18`` (parameter count 33,371,472, the paper's Table 2
figure 33.4 M; strict state-dict load; equal eval outputs).
"""

from __future__ import annotations

import pytest
import torch
import torchvision

from convolab.models import create_model
from convolab.models.video import VideoResNet

from ._helpers import feature_maps, n_params, randomize_norms

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (tests/models/conftest.py)


def c3d_params(num_classes: int, in_chans: int = 3) -> int:
    """By hand from Figure 3: 3x3x3 convolutions with bias; fc6 reads pool5's 512 x 1 x 4 x 4 map."""
    widths = [in_chans, 64, 128, 256, 256, 512, 512, 512, 512]
    convs = sum(cin * cout * 27 + cout for cin, cout in zip(widths, widths[1:]))
    return convs + (8192 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * num_classes + num_classes)


@pytest.mark.parametrize("num_classes,expected", [(487, 79_991_015), (101, 78_409_573)])
def test_c3d_parameter_count(num_classes, expected):
    with torch.device("meta"):
        model = create_model("c3d", num_classes=num_classes)
    assert n_params(model) == c3d_params(num_classes) == expected
    # The parameter count does not depend on the clip size (the adaptive pool feeds fc6 1x4x4 maps).
    with torch.device("meta"):
        assert n_params(create_model("c3d", num_classes=num_classes, input_size=(8, 28, 28))) == expected


NARROW_C3D = dict(widths=(4, 8, 8, 8, 8), fc_width=16)  # the same layout, cheap to run


def test_c3d_maps_at_16x112x112_are_the_papers():
    torch.manual_seed(0)
    model = create_model("c3d", num_classes=5, input_size=(16, 112, 112), **NARROW_C3D).eval()
    shapes, feats = feature_maps(model, torch.randn(1, 3, 16, 112, 112))
    assert [tuple(s[2:]) for s in shapes] == [(16, 56, 56), (8, 28, 28), (4, 14, 14), (2, 7, 7), (1, 4, 4)]
    assert [(i["reduction"], i["temporal_reduction"]) for i in model.feature_info] == [
        (2, 1), (4, 2), (8, 4), (16, 8), (32, 16)]
    assert feats.shape == (1, 8, 1, 4, 4)
    with torch.no_grad():  # at the native size avgpool is the identity: fc6 reads pool5's map as it is
        torch.testing.assert_close(model.avgpool(feats), feats, rtol=0, atol=0)
    names = [n for n, m in model.features.named_children() if isinstance(m, torch.nn.Conv3d)]
    assert names == ["conv1a", "conv2a", "conv3a", "conv3b", "conv4a", "conv4b", "conv5a", "conv5b"]
    assert [m.kernel_size for m in model.modules() if isinstance(m, torch.nn.MaxPool3d)] == [
        (1, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2)]


@pytest.mark.parametrize("clip,last", [((8, 28, 28), (1, 1, 1)), ((4, 32, 32), (1, 1, 1)), ((1, 1, 1), (1, 1, 1)),
                                       ((16, 64, 48), (1, 2, 2))])
def test_c3d_runs_small_clips_with_every_pool(clip, last):
    torch.manual_seed(0)
    model = create_model("c3d", num_classes=5, in_chans=1, input_size=clip, **NARROW_C3D).eval()
    with torch.no_grad():
        feats = model.forward_features(torch.randn(2, 1, *clip))
        out = model(torch.randn(2, 1, *clip))
    assert tuple(feats.shape[2:]) == last  # ceil(T / 16), ceil(H / 32), ceil(W / 32)
    assert out.shape == (2, 5) and torch.isfinite(out).all()


def test_c3d_dropout_after_fc6_and_fc7():
    torch.manual_seed(0)
    model = create_model("c3d", num_classes=5, input_size=(4, 16, 16), **NARROW_C3D)
    assert [m.p for m in model.classifier if isinstance(m, torch.nn.Dropout)] == [0.5, 0.5]
    assert list(model.classifier._modules)[:3] == ["fc6", "relu6", "drop6"]
    x = torch.randn(2, 3, 4, 16, 16)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    assert create_model("c3d", num_classes=5, drop_rate=0.0, **NARROW_C3D).classifier.drop7.p == 0.0


@pytest.mark.parametrize("kwargs,match", [(dict(drop_rate=1.0), "drop_rate"), (dict(widths=(8, 8)), "widths"),
                                          (dict(fc_width=0), "fc_width"), (dict(batch_norm=True), "batch_norm")])
def test_c3d_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_model("c3d", num_classes=5, **kwargs)


# -- R3D-18 -----------------------------------------------------------------------------------------
def test_r3d_18_matches_torchvision():
    torch.manual_seed(0)
    ref = randomize_norms(torchvision.models.video.r3d_18(weights=None)).eval()
    model = create_model("r3d_18", num_classes=400).eval()
    assert isinstance(model, VideoResNet)
    assert n_params(model) == n_params(ref) == 33_371_472
    assert list(model.state_dict()) == list(ref.state_dict())
    model.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 8, 28, 28)
    with torch.no_grad():
        out = model(x)
        torch.testing.assert_close(out, ref(x))
    assert out.std() > 0


def test_r3d_maps_at_16x112x112():
    torch.manual_seed(0)
    model = create_model("r3d_18", num_classes=5, widths=(4, 4, 8, 8)).eval()
    shapes, feats = feature_maps(model, torch.randn(1, 3, 16, 112, 112))
    assert [tuple(s[2:]) for s in shapes] == [(16, 56, 56), (16, 56, 56), (8, 28, 28), (4, 14, 14), (2, 7, 7)]
    assert [(i["module"], i["reduction"], i["temporal_reduction"]) for i in model.feature_info] == [
        ("stem", 2, 1), ("layer1", 2, 1), ("layer2", 4, 2), ("layer3", 8, 4), ("layer4", 16, 8)]
    assert feats.shape == (1, 8, 2, 7, 7)


def test_r3d_head_dropout_is_optional():
    assert create_model("r3d_18", num_classes=5).head_drop_rate == 0.0
    model = create_model("r3d_18", num_classes=5, widths=(4, 4, 8, 8), drop_rate=0.5).train()
    feats = torch.rand(4, 8, 1, 2, 2) + 1
    pre = model.forward_head(feats, pre_logits=True)
    assert (pre == 0).any()
    with pytest.raises(ValueError, match="drop_rate"):
        create_model("r3d_18", num_classes=5, drop_rate=1.5)


# -- clip sizes through create_model --------------------------------------------------------------
@pytest.mark.parametrize("input_size,expected", [(None, (16, 112, 112)), (32, (16, 32, 32)), ((24, 32), (16, 24, 32)),
                                                 ((8, 28, 28), (8, 28, 28)), ([4, 20, 24], (4, 20, 24))])
@pytest.mark.parametrize("name", ["c3d", "r3d_18"])
def test_clip_input_size_forms(name, input_size, expected):
    with torch.device("meta"):
        model = create_model(name, num_classes=5, input_size=input_size)
    assert tuple(model.input_size) == expected
    cfg = dict(model.convolab_cfg)
    assert cfg["input_size"] == list(expected)
    with torch.device("meta"):
        twin = create_model(cfg.pop("name"), **cfg)  # a run directory rebuilds the same model
    assert tuple(twin.input_size) == expected


@pytest.mark.parametrize("input_size", [(1, 2, 3, 4), (0, 28, 28), (8, -1, 28), "clip"])
def test_bad_clip_input_size(input_size):
    with pytest.raises(ValueError, match="input_size"):
        create_model("r3d_18", num_classes=5, input_size=input_size)

