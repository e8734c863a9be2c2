"""FCN-ResNet50 (Long et al., CVPR 2015; torchvision's form) and the dilated ResNet backbone it uses.

Reference: ``torchvision.models.segmentation.fcn_resnet50`` (parameter count, names and shapes,
strict state-dict load, equal eval outputs for both heads) and torchvision's ResNet-50 with
``replace_stride_with_dilation``.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.segmentation import fcn_resnet50 as tv_fcn_resnet50

from convolab.models import create_model
from convolab.models.fcn import FCN
from convolab.models.resnet import BasicBlock, Bottleneck, ResNet

from ._helpers import n_params, randomize_norms

TORCHVISION_PARAMS = {False: 32_957_013, True: 35_322_218}  # aux_loss -> count at 21 classes

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (tests/models/conftest.py)


def reference(aux_loss: bool):
    return tv_fcn_resnet50(weights=None, weights_backbone=None, num_classes=21, aux_loss=aux_loss)


@pytest.mark.parametrize("aux_loss", [False, True])
def test_names_shapes_and_count_match_torchvision(aux_loss):
    with torch.device("meta"):
        model = create_model("fcn_resnet50", num_classes=21, aux_loss=aux_loss)
        ref = reference(aux_loss)
    ours, theirs = model.state_dict(), ref.state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in theirs)
    assert n_params(model) == n_params(ref) == TORCHVISION_PARAMS[aux_loss]
    assert (model.aux_classifier is not None) is aux_loss


def test_parity_with_torchvision_both_heads():
    torch.manual_seed(0)
    ref = randomize_norms(reference(aux_loss=True)).eval()
    model = create_model("fcn_resnet50", num_classes=21, aux_loss=True).eval()
    model.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 3, 45, 37)  # odd sizes: the bilinear upsampling must land on them exactly
    with torch.no_grad():
        expected = ref(x)
        got = model.forward_with_aux(x)
        out = model(x)
    assert list(got) == list(expected) == ["out", "aux"]
    for key in expected:
        assert got[key].shape == (1, 21, 45, 37)
        torch.testing.assert_close(got[key], expected[key])
    torch.testing.assert_close(out, expected["out"], rtol=0, atol=0)  # forward is the main head's logits
    assert out.std() > 0


def test_backbone_is_torchvisions_dilated_resnet50():
    with torch.device("meta"):
        model = create_model("fcn_resnet50", num_classes=21)
        ref = torchvision.models.resnet50(replace_stride_with_dilation=[False, True, True])
    b = model.backbone
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        ours = [(blk.conv2.stride, blk.conv2.dilation, blk.conv2.padding) for blk in getattr(b, stage)]
        theirs = [(blk.conv2.stride, blk.conv2.dilation, blk.conv2.padding) for blk in getattr(ref, stage)]
        assert ours == theirs, stage
    # The first block of a dilated stage keeps the previous dilation, the rest double it.
    assert [blk.conv2.dilation[0] for blk in b.layer3] == [1, 2, 2, 2, 2, 2]
    assert [blk.conv2.dilation[0] for blk in b.layer4] == [2, 4, 4]
    assert [(i["module"], i["reduction"]) for i in model.feature_info] == [
        ("backbone.relu", 2), ("backbone.layer1", 4), ("backbone.layer2", 8), ("backbone.layer3", 8),
        ("backbone.layer4", 8)]
    assert not hasattr(b.fc, "weight")  # no classification head in the backbone: torchvision's keys


def test_dilated_resnet50_matches_torchvision():
    torch.manual_seed(0)
    ref = randomize_norms(torchvision.models.resnet50(replace_stride_with_dilation=[False, True, True])).eval()
    model = ResNet(Bottleneck, (3, 4, 6, 3), replace_stride_with_dilation=(False, True, True)).eval()
    model.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x))
        assert model.forward_features(x).shape == (1, 2048, 8, 8)  # output stride 8


def test_dilation_arguments_are_checked():
    with pytest.raises(ValueError, match="one flag for each of the 3 stages"):
        ResNet(Bottleneck, (1, 1, 1, 1), replace_stride_with_dilation=(True,))
    with pytest.raises(ValueError, match="bottleneck"):
        ResNet(BasicBlock, (1, 1, 1, 1), replace_stride_with_dilation=(False, True, True))


def small_fcn(aux_loss: bool = True) -> FCN:
    """The same classes at a width and depth that train in milliseconds."""
    backbone = ResNet(Bottleneck, (1, 1, 2, 1), num_classes=0, widths=(4, 8, 16, 32), small_stem=False,
                      replace_stride_with_dilation=(False, True, True))
    return FCN(backbone, num_classes=3, in_chans=3, input_size=(28, 28), aux_loss=aux_loss)


def test_aux_head_trains_layer3_and_the_main_head_layer4():
    torch.manual_seed(0)
    model = small_fcn().train()
    x, y = torch.randn(4, 3, 29, 27), torch.randint(0, 3, (4, 29, 27))
    outs = model.forward_with_aux(x)
    assert {k: v.shape for k, v in outs.items()} == {"out": (4, 3, 29, 27), "aux": (4, 3, 29, 27)}
    F.cross_entropy(outs["aux"], y).backward()  # the auxiliary loss alone reaches layer3, not layer4
    assert model.backbone.layer3[-1].conv3.weight.grad.abs().sum() > 0
    assert model.backbone.layer4[0].conv1.weight.grad is None and model.classifier[0].weight.grad is None
    model.zero_grad()
    outs = model.forward_with_aux(x)
    (F.cross_entropy(outs["out"], y) + 0.5 * F.cross_entropy(outs["aux"], y)).backward()  # torchvision's recipe
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_grad_checkpointing_keeps_both_heads():
    torch.manual_seed(0)
    model = small_fcn().train()
    ckpt = copy.deepcopy(model)
    ckpt.set_grad_checkpointing(True)
    x = torch.randn(2, 3, 28, 28)

    def run(m):
        torch.manual_seed(1)  # the heads' dropout draws the same masks
        outs = m.forward_with_aux(x)
        (outs["out"].square().mean() + outs["aux"].square().mean()).backward()
        return {k: v.detach() for k, v in outs.items()}, {k: p.grad for k, p in m.named_parameters()}

    (outs, grads), (outs_c, grads_c) = run(model), run(ckpt)
    for k in outs:
        torch.testing.assert_close(outs_c[k], outs[k])
    for k in grads:
        torch.testing.assert_close(grads_c[k], grads[k], msg=k)


def test_options_are_checked():
    with pytest.raises(ValueError, match="'drop_rate'.*aux_loss"):
        create_model("fcn_resnet50", num_classes=21, drop_rate=0.1)
