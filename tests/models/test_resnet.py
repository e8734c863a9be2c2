"""ResNets (He et al., CVPR 2016) and wide ResNets (Zagoruyko & Komodakis, BMVC 2016).

References: torchvision's ResNet-18 ... 152 (parameter count, strict state-dict load, equal eval
outputs); the papers' parameter counts for the CIFAR networks (He et al., section 4.2 / Table 6:
0.27 M, 0.46 M, 0.66 M, 0.85 M, 1.7 M) and the wide ones (Zagoruyko & Komodakis' CIFAR tables:
WRN-28-10 36.5 M, WRN-16-8 11.0 M), plus by-hand counts.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from convolab.models import create_model
from convolab.models.resnet import SMALL_INPUT_THRESHOLD, BasicBlock, Bottleneck, ResNet, ZeroPadShortcut

from ._helpers import n_params

IMAGENET = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
CIFAR = ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110"]
WIDE = ["wrn28_10", "wrn16_8"]
ALL = IMAGENET + CIFAR + WIDE


# -- torchvision parity ----------------------------------------------------------------------
@pytest.mark.parametrize("name", [
    "resnet18", "resnet34", "resnet50",
    pytest.param("resnet101", marks=pytest.mark.slow), pytest.param("resnet152", marks=pytest.mark.slow),
])
def test_torchvision_parity(name):
    torch.manual_seed(0)
    ref = getattr(torchvision.models, name)(weights=None).eval()
    model = create_model(name).eval()  # num_classes=1000, in_chans=3, input_size=None: the native layout
    assert not model.small_stem and tuple(model.input_size) == (224, 224)
    assert n_params(model) == n_params(ref)
    model.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x))


def test_resnet50_is_v1_5_stride_on_the_3x3():
    model = create_model("resnet50")
    first = model.layer2[0]
    assert isinstance(first, Bottleneck)
    assert first.conv1.stride == (1, 1) and first.conv2.stride == (2, 2)
    assert first.downsample[0].stride == (2, 2)


# -- small inputs ----------------------------------------------------------------------------
@pytest.mark.parametrize("input_size,small", [(SMALL_INPUT_THRESHOLD - 1, True), (SMALL_INPUT_THRESHOLD, False),
                                              ((224, 32), True), ((8, 8), True), ((224, 224), False)])
def test_stem_adapts_below_64(input_size, small):
    assert SMALL_INPUT_THRESHOLD == 64
    model = create_model("resnet18", num_classes=10, input_size=input_size)
    assert model.small_stem is small
    if small:
        assert (model.conv1.kernel_size, model.conv1.stride, model.conv1.padding) == ((3, 3), (1, 1), (1, 1))
        assert isinstance(model.maxpool, nn.Identity)
        assert [i["reduction"] for i in model.feature_info] == [1, 1, 2, 4, 8]
    else:
        assert (model.conv1.kernel_size, model.conv1.stride, model.conv1.padding) == ((7, 7), (2, 2), (3, 3))
        assert isinstance(model.maxpool, nn.MaxPool2d)
        assert [i["reduction"] for i in model.feature_info] == [2, 4, 8, 16, 32]
    # Only conv1's kernel differs: 64 * 3 * (7*7 - 3*3) parameters.
    native = n_params(create_model("resnet18", num_classes=10))
    assert native - n_params(model) == (64 * 3 * (49 - 9) if small else 0)


@pytest.mark.parametrize("name", ALL)
def test_forward_small_input_seven_classes(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_chans=1, input_size=8).train()
    out = model(torch.randn(2, 1, 8, 8))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name,size", [("resnet18", 28), ("resnet18", 64), ("resnet50", 64), ("resnet20", 30),
                                       ("wrn16_8", 13)])
def test_feature_info_matches_forward_features(name, size):
    """Each listed module gives a (N, num_chs, ceil(H / reduction), ...) map; the last one is forward_features."""
    model = create_model(name, num_classes=7, input_size=size).eval()
    modules = dict(model.named_modules())
    captured = {}
    for i in model.feature_info:
        modules[i["module"]].register_forward_hook(
            lambda _m, _i, out, key=i["module"]: captured.__setitem__(key, out.clone()))
    with torch.no_grad():
        feats = model.forward_features(torch.randn(2, 3, size, size))
    for i in model.feature_info:
        side = math.ceil(size / i["reduction"])  # every convolution and pool here is padded
        assert captured[i["module"]].shape == (2, i["num_chs"], side, side), i
    last = model.feature_info[-1]
    assert feats.shape[1] == last["num_chs"] == model.get_classifier().in_features
    torch.testing.assert_close(captured[last["module"]], feats, rtol=0, atol=0)


# -- gradient checkpointing ------------------------------------------------------------------
@pytest.mark.parametrize("name,kwargs", [("resnet18", {}), ("resnet20", dict(shortcut="B")),
                                         ("wrn16_8", dict(drop_rate=0.3))])
def test_grad_checkpointing_keeps_outputs_and_gradients(name, kwargs):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, input_size=12, **kwargs).train()
    ckpt = copy.deepcopy(model)
    ckpt.set_grad_checkpointing(True)
    x = torch.randn(4, 3, 12, 12)
    y = torch.arange(4) % 7

    def run(m):
        torch.manual_seed(1)  # the same dropout masks (checkpoint replays the RNG state in the recomputation)
        out = m(x)
        F.cross_entropy(out, y).backward()
        return out.detach(), {k: p.grad for k, p in m.named_parameters()}

    out, grads = run(model)
    out_c, grads_c = run(ckpt)
    torch.testing.assert_close(out_c, out)
    assert grads.keys() == grads_c.keys()
    for k in grads:
        torch.testing.assert_close(grads_c[k], grads[k], msg=k)


# -- the CIFAR networks of section 4.2 -------------------------------------------------------
def cifar_resnet_params(depth: int, num_classes: int = 10, projection: bool = False) -> int:
    """By hand: 3x3 convs (no bias) + BN (2 per channel); option A shortcuts have no parameters."""
    n = (depth - 2) // 6
    total = 3 * 16 * 9 + 2 * 16  # conv1, bn1
    in_c = 16
    for width in (16, 32, 64):
        for j in range(n):
            c_in = in_c if j == 0 else width
            total += c_in * width * 9 + width * width * 9 + 4 * width
        if projection and in_c != width:
            total += in_c * width + 2 * width  # 1x1 conv + BN
        in_c = width
    return total + 64 * num_classes + num_classes


# He et al., CVPR 2016, Table 6 (CIFAR-10): the "# params" column.
PAPER_CIFAR = {"resnet20": 0.27e6, "resnet32": 0.46e6, "resnet44": 0.66e6, "resnet56": 0.85e6, "resnet110": 1.7e6}


@pytest.mark.parametrize("name", CIFAR)
def test_cifar_parameter_counts(name):
    depth = int(name.removeprefix("resnet"))
    model = create_model(name, num_classes=10)
    count = n_params(model)
    assert count == cifar_resnet_params(depth)
    paper = PAPER_CIFAR[name]
    # The paper rounds to two significant figures: the count must round to its figure ...
    assert f"{count:.2g}" == f"{paper:.2g}"
    # ... and lie within 1 % of it, except ResNet-110, whose 1,727,962 is 1.6 % above the rounded 1.7 M.
    assert abs(count - paper) / paper < (0.017 if name == "resnet110" else 0.01)


def test_resnet20_counts_exactly():
    assert n_params(create_model("resnet20", num_classes=10)) == 269_722  # option A, as in the paper
    # 272,474, the figure often quoted for ResNet-20, is option B: 1x1 projection + BN where the width doubles.
    assert n_params(create_model("resnet20", num_classes=10, shortcut="B")) == 272_474 == cifar_resnet_params(
        20, projection=True)


def test_cifar_layout_is_section_4_2():
    model = create_model("resnet56", num_classes=10)
    assert isinstance(model, ResNet) and model.num_classes == 10 and tuple(model.input_size) == (32, 32)
    assert model.stage_names == ("layer1", "layer2", "layer3")
    assert [len(getattr(model, s)) for s in model.stage_names] == [9, 9, 9]
    assert all(isinstance(b, BasicBlock) for s in model.stage_names for b in getattr(model, s))
    assert model.conv1.kernel_size == (3, 3) and model.conv1.out_channels == 16
    assert [(i["num_chs"], i["reduction"]) for i in model.feature_info] == [(16, 1), (16, 1), (32, 2), (64, 4)]
    # Option A: the only shortcuts are the two parameter-free ones where the width doubles.
    shortcuts = [m for m in model.modules() if isinstance(m, ZeroPadShortcut)]
    assert len(shortcuts) == 2 and all(n_params(s) == 0 for s in shortcuts)
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 64, 8, 8)


def test_zero_pad_shortcut_subsamples_and_appends_zero_channels():
    x = torch.randn(2, 16, 7, 7)
    out = ZeroPadShortcut(16, 32, stride=2)(x)
    assert out.shape == (2, 32, 4, 4)  # same as a stride-2, padding-1 3x3 conv: ceil(7 / 2)
    torch.testing.assert_close(out[:, :16], x[:, :, ::2, ::2], rtol=0, atol=0)
    assert not out[:, 16:].any()
    with pytest.raises(ValueError, match="reduce channels"):
        ZeroPadShortcut(32, 16)


def test_resnet20_trains_on_digits(tmp_path):
    from convolab.runs.session import train
    from convolab.train import TrainConfig

    result = train(TrainConfig(model="resnet20", data="digits", epochs=1, progress=False, plots=False,
                               out=str(tmp_path / "run")))
    assert math.isfinite(result.summary["test_loss"])
    assert (result.run_dir / "model.safetensors").is_file()
    lines = (result.run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and "train_loss" in lines[0]


# -- wide ResNets ----------------------------------------------------------------------------
def wrn_params(depth: int, k: int, num_classes: int = 10) -> int:
    """By hand: conv1; per block BN (2 per input channel), two 3x3 convs, BN, 1x1 shortcut where the shape changes."""
    n = (depth - 4) // 6
    total, in_c = 3 * 16 * 9, 16
    for width in (16 * k, 32 * k, 64 * k):
        for j in range(n):
            c_in = in_c if j == 0 else width
            total += 2 * c_in + c_in * width * 9 + 2 * width + width * width * 9
            if c_in != width:
                total += c_in * width
        in_c = width
    return total + 2 * in_c + in_c * num_classes + num_classes


# Zagoruyko & Komodakis, BMVC 2016: WRN-28-10 has 36.5 M and WRN-16-8 11.0 M parameters (CIFAR-10).
@pytest.mark.parametrize("name,depth,k,paper", [("wrn28_10", 28, 10, 36.5e6), ("wrn16_8", 16, 8, 11.0e6)])
def test_wide_resnet_parameter_counts(name, depth, k, paper):
    count = n_params(create_model(name, num_classes=10))
    assert count == wrn_params(depth, k)
    assert abs(count - paper) / paper < 0.01


def test_wide_resnet_dropout_sits_between_the_convolutions():
    torch.manual_seed(0)
    model = create_model("wrn16_8", num_classes=10, drop_rate=0.3)
    block = model.layer2[1]
    assert block.drop.p == 0.3
    seen = []
    for m in (block.bn2, block.drop, block.conv2):
        m.register_forward_hook(lambda mod, _i, _o: seen.append(mod))
    x = torch.randn(2, 3, 16, 16)
    model.train()
    assert not torch.equal(model(x), model(x))  # stochastic in training
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    assert seen[:3] == [block.bn2, block.drop, block.conv2]
    # The default is the paper's architecture without dropout.
    assert create_model("wrn28_10").layer1[0].drop.p == 0.0


# -- arguments and head ----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["resnet18", "resnet20", "wrn16_8"])
@pytest.mark.parametrize("drop_rate", [-0.1, 1.0])
def test_bad_drop_rate(name, drop_rate):
    with pytest.raises(ValueError, match="drop_rate"):
        create_model(name, num_classes=10, input_size=32, drop_rate=drop_rate)


def test_bad_shortcut():
    with pytest.raises(ValueError, match="shortcut"):
        create_model("resnet20", shortcut="C")


def test_head_dropout_before_fc():
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=7, input_size=16, drop_rate=0.5)
    feats = torch.rand(4, 512, 2, 2) + 1  # positive, so a zero can only come from dropout
    model.train()
    pre = model.forward_head(feats, pre_logits=True)
    assert (pre == 0).any() and torch.allclose(pre[pre != 0], 2 * feats.mean((2, 3))[pre != 0])
    model.eval()
    torch.testing.assert_close(model.forward_head(feats, pre_logits=True), feats.mean((2, 3)))
    assert create_model("resnet18").head_drop_rate == 0.0
