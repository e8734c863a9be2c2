"""ShuffleNet v1/v2: torchvision parity (v2), the paper's complexity (v1), channel shuffle, small inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from convolab.models import create_model
from convolab.models.shufflenet import channel_shuffle

from ._helpers import n_params, randomize_norms

V2 = ["shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0"]
ALL = ["shufflenet_v1", *V2]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (tests/models/conftest.py)


def macs_at_224(model: nn.Module) -> float:
    """Multiply-adds of the convolutions and the FC layer for one 224x224 image."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.randn(1, 3, 224, 224))
    return counter.get_total_flops() / 2


# -- channel shuffle ------------------------------------------------------------------------------
@pytest.mark.parametrize("groups,per_group", [(2, 3), (3, 4), (8, 2)])
def test_channel_shuffle_is_the_papers_transpose(groups, per_group):
    c = groups * per_group
    x = torch.randn(2, c, 3, 5)
    y = channel_shuffle(x, groups)
    # Channel j of group i (input index i * per_group + j) lands at j * groups + i.
    for i in range(groups):
        for j in range(per_group):
            assert torch.equal(y[:, j * groups + i], x[:, i * per_group + j])
    # Shuffling with the transposed grouping undoes it.
    assert torch.equal(channel_shuffle(y, per_group), x)


# -- ShuffleNet v2: torchvision parity ------------------------------------------------------------
@pytest.mark.parametrize("name", V2)
def test_v2_parity_with_torchvision(name):
    torch.manual_seed(0)
    ref = getattr(torchvision.models, name)(weights=None).eval()
    randomize_norms(ref)
    model = create_model(name, num_classes=1000, in_chans=3, input_size=None).eval()
    assert n_params(model) == n_params(ref)
    model.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x))


def test_v2_reference_parameter_counts():
    # torchvision's weight metadata (num_params); the paper's Table 5 rounds them to 1.4, 2.3, 3.5, 7.4 M
    expected = [1_366_792, 2_278_604, 3_503_624, 7_393_996]
    assert [n_params(create_model(name)) for name in V2] == expected


# -- ShuffleNet v1: counted by hand and against the paper's complexity ----------------------------
def v1_params_by_hand(groups: int, widths: tuple[int, int, int], num_classes: int = 1000) -> int:
    """Stem conv 3x3 + BN; per unit 1x1 GConv + BN, 3x3 DWConv + BN, 1x1 GConv + BN; FC with bias."""
    total = 3 * 24 * 9 + 2 * 24
    cin = 24
    for stage, (cout, repeats) in enumerate(zip(widths, (4, 8, 4))):
        for j in range(repeats):
            mid = cout // 4
            branch = cout - cin if j == 0 else cout
            g1 = 1 if (stage == 0 and j == 0) else groups  # the paper: stage 2's first 1x1 is not grouped
            total += cin * mid // g1 + 2 * mid + 9 * mid + 2 * mid + mid * branch // groups + 2 * branch
            cin = cout
    return total + cin * num_classes + num_classes


# The paper's Table 1: stage widths for each g at 1x, and the "Complexity" row (MFLOPs, i.e. multiply-adds).
V1_TABLE1 = {1: ((144, 288, 576), 143e6), 2: ((200, 400, 800), 140e6), 3: ((240, 480, 960), 137e6),
             4: ((272, 544, 1088), 133e6), 8: ((384, 768, 1536), 137e6)}


def test_v1_parameter_count():
    count = n_params(create_model("shufflenet_v1"))
    assert count == v1_params_by_hand(3, (240, 480, 960)) == 1_865_728
    # megvii-model/ShuffleNet-Series (the authors' code) README: ShuffleNetV1 1.0x (group=3) has 1.9M
    # parameters, given to 0.1 M; the count here rounds to it.
    assert round(count / 1e6, 1) == 1.9


def test_v1_complexity_matches_table_1_for_g3():
    # Table 1, g = 3: 137 MFLOPs; here 137.46 M multiply-adds (0.3 % off).
    assert abs(macs_at_224(create_model("shufflenet_v1")) - 137e6) / 137e6 < 0.01


@pytest.mark.parametrize("groups", [1, 2, 4, 8])
def test_v1_other_groups_follow_table_1(groups):
    widths, mflops = V1_TABLE1[groups]
    model = create_model("shufflenet_v1", groups=groups)
    assert model.stage4[-1].out_channels == widths[-1]
    assert n_params(model) == v1_params_by_hand(groups, widths)
    # Within 1.5 %: the table's figures are rounded to 1 MFLOP and g = 4 and 8 land 1.0 % above them
    # (134.3 and 138.4 M here against 133 and 137).
    assert abs(macs_at_224(model) - mflops) / mflops < 0.015


def test_v1_units():
    model = create_model("shufflenet_v1")
    first = model.stage2[0]
    assert first.concat and first.conv1[0].groups == 1 and first.conv2[0].groups == 3
    assert isinstance(first.shortcut, nn.AvgPool2d)
    assert all(u.conv1[0].groups == 3 and not u.concat for u in model.stage3[1:])
    assert all(u.dwconv[0].groups == u.dwconv[0].in_channels for s in (model.stage2, model.stage3) for u in s)


# -- small inputs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("side,chans,reduction,last", [(8, 1, 2, 4), (28, 1, 8, 4), (32, 3, 8, 4)])
def test_small_inputs(name, side, chans, reduction, last):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_chans=chans, input_size=side).eval()
    with torch.no_grad():
        feats = model.forward_features(torch.randn(2, chans, side, side))
        out = model.forward_head(feats)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    assert feats.shape[1] == model.feature_info[-1]["num_chs"] == model.get_classifier().in_features
    assert model.feature_info[-1]["reduction"] == reduction
    assert feats.shape[2:] == (last, last)
    # Below 49 the max-pool is gone and the stem has stride 1 (the module docstring).
    assert isinstance(model.maxpool, nn.Identity)
    assert model.conv1[0].stride == (1, 1)


@pytest.mark.parametrize("name", ALL)
def test_native_layout_above_96(name):
    for size in (None, 128, 97):
        model = create_model(name, input_size=size)
        assert isinstance(model.maxpool, nn.MaxPool2d) and model.conv1[0].stride == (2, 2)
        assert model.feature_info[-1]["reduction"] == 32
    model = create_model(name, input_size=96)  # stride 16: only the stem loses its stride
    assert isinstance(model.maxpool, nn.MaxPool2d) and model.conv1[0].stride == (1, 1)
    assert model.feature_info[-1]["reduction"] == 16


# -- grad checkpointing ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["shufflenet_v1", "shufflenet_v2_x0_5"])
def test_grad_checkpointing_keeps_outputs_and_gradients(name):
    torch.manual_seed(0)
    plain = create_model(name, num_classes=7, in_chans=1, input_size=8).train()
    ckpt = create_model(name, num_classes=7, in_chans=1, input_size=8).train()
    ckpt.load_state_dict(plain.state_dict())
    ckpt.set_grad_checkpointing(True)
    x = torch.randn(4, 1, 8, 8)
    y = torch.arange(4)
    outs = []
    for model in (plain, ckpt):
        out = model(x)
        F.cross_entropy(out, y).backward()
        outs.append(out.detach())
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    grads = dict(ckpt.named_parameters())
    for pname, p in plain.named_parameters():
        torch.testing.assert_close(grads[pname].grad, p.grad, rtol=1e-5, atol=1e-6, msg=pname)


# -- arguments ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_bad_drop_rate_raises(name):
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="drop_rate"):
            create_model(name, input_size=32, drop_rate=bad)


def test_bad_groups_raises():
    with pytest.raises(ValueError, match="groups"):
        create_model("shufflenet_v1", groups=5)


def test_drop_rate_is_applied_in_training_only():
    model = create_model("shufflenet_v2_x0_5", num_classes=7, input_size=8, drop_rate=0.5)
    feats = torch.ones(64, model.num_features, 1, 1)
    model.train()
    pre = model.forward_head(feats, pre_logits=True)
    assert set(pre.unique().tolist()) == {0.0, 2.0}  # dropped, or kept and scaled by 1 / (1 - p)
    model.eval()
    assert torch.equal(model.forward_head(feats, pre_logits=True), feats.flatten(1))
