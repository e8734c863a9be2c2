"""Residual networks: He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition", CVPR 2016,
and the wide residual networks of Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016.

Three families share the blocks and the head defined here:

* ``resnet18`` ... ``resnet152``: the ImageNet networks of the paper's Table 1, with torchvision's
  submodule names (``conv1``, ``bn1``, ``relu``, ``maxpool``, ``layer1`` ... ``layer4``, ``avgpool``,
  ``fc``), so torchvision's state dicts load unchanged. The bottleneck puts its stride on the 3x3
  convolution (torchvision's "ResNet v1.5"; the paper strides the first 1x1 convolution; the
  parameter count is the same).
* ``resnet20`` ... ``resnet110``: the CIFAR-10 networks of the paper's section 4.2 (6n + 2 layers,
  3 stages of 16/32/64 channels, parameter-free "option A" shortcuts).
* ``wrn28_10``, ``wrn16_8``: wide residual networks (pre-activation wide basic blocks, dropout
  between the two convolutions of a block).

``convolab.models.senet`` builds the squeeze-and-excitation variants from these same classes
through the blocks' ``attn_layer`` argument.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from convolab.layers import ConvNormAct, checkpoint_seq
from convolab.models._activations import act_layer
from convolab.models._base import check_drop_rate
from convolab.models._registry import register_model

__all__ = ["BasicBlock", "Bottleneck", "ZeroPadShortcut", "ResNet", "WideBasicBlock", "WideResNet",
           "SMALL_INPUT_THRESHOLD", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
           "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "wrn28_10", "wrn16_8"]

# Inputs with a side below this many pixels get the CIFAR stem (3x3 stride-1 conv1, no max-pool).
# The ImageNet stem divides by 4 before layer1 and the whole network by 32: a 63x63 image would
# leave layer4 with a 2x2 map built from a 16x16 layer1 map; 64 is the first size where the
# native layout keeps at least a 2x2 map at the end.
SMALL_INPUT_THRESHOLD = 64

AttnLayer = Callable[[int], nn.Module]  # channels -> a shape-preserving module (e.g. squeeze-and-excitation)
ActLayer = Callable[[], nn.Module]  # () -> a fresh activation layer


def _relu() -> nn.Module:
    return nn.ReLU(inplace=True)


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding = dilation, no bias (a norm layer follows): keeps the size at stride 1,
    ceil(H/2) at 2."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=dilation, dilation=dilation,
                     bias=False)


# -- blocks ------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    """Two 3x3 convolutions and an identity shortcut (the paper's Figure 5, left): ResNet-18/34 and CIFAR.

    ``relu(bn2(conv2(relu(bn1(conv1(x))))) [-> se] + shortcut(x))``. ``downsample`` maps ``x`` to the
    branch's shape when the stride or the width changes (``None``: identity). ``attn_layer``, when
    given, is applied to the branch before the addition (SE-ResNet puts squeeze-and-excitation there).
    ``act_layer`` builds the activation (torchvision's name ``relu`` is kept whatever it is).
    """

    expansion = 1  # output channels = planes * expansion

    def __init__(self, in_channels: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d, attn_layer: AttnLayer | None = None,
                 dilation: int = 1, act_layer: ActLayer = _relu):
        super().__init__()
        if dilation != 1:  # torchvision's BasicBlock has none either
            raise ValueError("dilated stages need bottleneck blocks (ResNet-50 and deeper); BasicBlock has no dilation")
        self.conv1 = _conv3x3(in_channels, planes, stride)   # the block's stride sits here
        self.bn1 = norm_layer(planes)
        self.relu = act_layer()
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        # Only registered when used, so a plain ResNet's state dict is torchvision's.
        self.se = attn_layer(planes) if attn_layer is not None else None
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))                 # (N, planes, H/s, W/s)
        out = self.bn2(self.conv2(out))
        if self.se is not None:
            out = self.se(out)
        out += shortcut
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 -> 1x1 expand (x4), with a shortcut (the paper's Figure 5, right): ResNet-50/101/152.

    The stride is on the 3x3 convolution (torchvision's ResNet v1.5; the paper strides the first 1x1,
    which skips three quarters of its input). ``attn_layer`` as in :class:`BasicBlock`. ``dilation``
    spaces the 3x3 taps (padding = dilation keeps the size): the dilated stages of FCN / DeepLab.
    ``act_layer`` as in :class:`BasicBlock`.
    """

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d, attn_layer: AttnLayer | None = None,
                 dilation: int = 1, act_layer: ActLayer = _relu):
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, kernel_size=1, bias=False)
        self.bn1 = norm_layer(planes)
        self.conv2 = _conv3x3(planes, planes, stride, dilation)
        self.bn2 = norm_layer(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, kernel_size=1, bias=False)
        self.bn3 = norm_layer(out_channels)
        self.relu = act_layer()
        self.se = attn_layer(out_channels) if attn_layer is not None else None
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))                 # (N, planes, H, W)
        out = self.relu(self.bn2(self.conv2(out)))               # (N, planes, H/s, W/s)
        out = self.bn3(self.conv3(out))                          # (N, 4 * planes, H/s, W/s)
        if self.se is not None:
            out = self.se(out)
        out += shortcut
        return self.relu(out)


class ZeroPadShortcut(nn.Module):
    """The paper's option A shortcut: subsample by ``stride``, then append zero channels (no parameters).

    (N, C_in, H, W) -> (N, C_out, ceil(H/s), ceil(W/s)); ``x[..., ::s, ::s]`` keeps the pixels a
    stride-s 3x3 convolution with padding 1 is centred on, so both paths have the same size.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"a zero-padding shortcut cannot reduce channels ({in_channels} -> {out_channels})")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.out_channels - self.in_channels))  # pad the channel dim at the end

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


class WideBasicBlock(nn.Module):
    """Pre-activation wide basic block (Zagoruyko & Komodakis, BMVC 2016, "B(3,3)" with dropout).

    ``conv2(drop(relu(bn2(conv1(relu(bn1(x))))))) + shortcut``. Where the width or the stride changes,
    the shortcut is a 1x1 convolution of the pre-activated input ``relu(bn1(x))`` (the authors' code),
    otherwise ``x`` itself. ``drop_rate`` is the dropout between the two convolutions (the paper: 0.3).
    ``act_layer`` as in :class:`BasicBlock`.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, drop_rate: float = 0.0,
                 norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d, act_layer: ActLayer = _relu):
        super().__init__()
        self.bn1 = norm_layer(in_channels)
        self.relu = act_layer()
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn2 = norm_layer(out_channels)
        self.drop = nn.Dropout(drop_rate)
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu(self.bn1(x))                             # bn1 makes a new tensor: x stays intact
        shortcut = x if self.downsample is None else self.downsample(pre)
        out = self.conv1(pre)                                    # (N, out, H/s, W/s)
        out = self.conv2(self.drop(self.relu(self.bn2(out))))
        return out + shortcut


# -- networks ----------------------------------------------------------------------------------
class _ResNetBase(nn.Module):
    """What the residual families share: the stages (``layer1`` ...), checkpointing and the head.

    Subclasses set ``stage_names``, ``avgpool``, ``fc``, ``num_features`` (fc's input width),
    ``head_drop_rate`` and the contract's
    attributes, and write ``forward_features`` around :meth:`_forward_stages`.
    """

    stage_names: tuple[str, ...]
    num_features: int
    num_classes: int
    in_chans: int
    input_size: tuple[int, int]
    feature_info: list[dict]
    head_drop_rate: float = 0.0
    grad_checkpointing: bool = False

    def _forward_stages(self, x: torch.Tensor) -> torch.Tensor:
        stages = [getattr(self, name) for name in self.stage_names]
        if self.grad_checkpointing and self.training:
            # One checkpoint per residual block: the stored activations are the block boundaries.
            return checkpoint_seq([block for stage in stages for block in stage], x)
        for stage in stages:
            x = stage(x)
        return x

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each residual block's activations in the backward pass (training only).

        Outputs and gradients are unchanged; BatchNorm running statistics are updated once more per
        block by the recomputation (as with any checkpointed BatchNorm network).
        """
        self.grad_checkpointing = bool(enable)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(N, C, H, W) -> global average pool -> (N, C) -> dropout (``drop_rate``) -> fc -> (N, num_classes)."""
        x = torch.flatten(self.avgpool(x), 1)                    # (N, C)
        x = F.dropout(x, self.head_drop_rate, self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The final ``nn.Linear`` (``fc``)."""
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace ``fc`` with a freshly initialised layer of ``num_classes`` outputs (0: identity)."""
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.num_classes = num_classes

    def _init_weights(self) -> None:
        # He et al.'s initialisation (torchvision's): normal with std sqrt(2 / fan_out) for the
        # convolutions, BatchNorm at identity; fc keeps PyTorch's default.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)


class ResNet(_ResNetBase):
    """A post-activation residual network: stem -> stages of blocks -> global average pool -> dropout -> fc.

    Layout and names are torchvision's ``ResNet``: ``conv1`` (7x7, stride 2) -> ``bn1`` -> ``relu`` ->
    ``maxpool`` (3x3, stride 2) -> ``layer1`` (stride 1) -> ``layer2`` ... (stride 2 each) ->
    ``avgpool`` -> ``fc``; the first block of a stage gets a ``downsample`` shortcut where the shape
    changes (``shortcut="B"``: 1x1 convolution + BatchNorm; ``"A"``: :class:`ZeroPadShortcut`).

    Small inputs: when ``small_stem`` is ``None`` it is decided from ``input_size`` alone. If either
    side of ``input_size`` is below 64 (``SMALL_INPUT_THRESHOLD``), ``conv1`` is a 3x3 stride-1
    convolution (padding 1) and ``maxpool`` is an identity — the usual CIFAR adaptation — so the
    network's total stride is 8 instead of 32 (a 32x32 image leaves a 4x4 map in ``layer4``, an 8x8
    one a 1x1 map). At 64x64 and above (and at the native 224x224) the stem is torchvision's.
    Every input from 1x1 up runs (padded convolutions give ceil(H / stride)), so no size is refused.

    ``feature_info``: the stem's ``relu`` (reduction 2, or 1 with the small stem), then each stage.

    ``replace_stride_with_dilation`` (one flag per stage after the first, torchvision's argument):
    a flagged stage keeps stride 1 and dilates its 3x3 convolutions instead (Yu & Koltun 2016; the
    FCN / DeepLab backbones), so the map keeps its resolution while the receptive field grows as
    before. As in torchvision, the stage's first block keeps the previous dilation and the others
    take the new one (x2 per flagged stage); only bottleneck blocks can dilate. ``num_classes=0``
    builds no ``fc`` (an identity), for use as a backbone.

    ``act`` (a ``convolab.models._activations`` name, default ReLU) is the activation of the stem and of
    every block; the modules keep torchvision's name ``relu`` whatever it is.
    """

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: Sequence[int], num_classes: int = 1000,
                 in_chans: int = 3, input_size: tuple[int, int] = (224, 224), *,
                 widths: Sequence[int] = (64, 128, 256, 512), small_stem: bool | None = None,
                 shortcut: str = "B", drop_rate: float = 0.0, attn_layer: AttnLayer | None = None,
                 norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
                 replace_stride_with_dilation: Sequence[bool] | None = None, act: str = "relu"):
        super().__init__()
        if len(layers) != len(widths) or min(layers) < 1:
            raise ValueError(f"layers must give >= 1 block for each of the {len(widths)} stages; got {tuple(layers)}")
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' (zero padding) or 'B' (1x1 projection); got {shortcut!r}")
        dilate = [False] + [bool(d) for d in (replace_stride_with_dilation or [False] * (len(widths) - 1))]
        if len(dilate) != len(widths):
            raise ValueError(f"replace_stride_with_dilation needs one flag for each of the {len(widths) - 1} stages "
                             f"after the first; got {replace_stride_with_dilation!r}")
        self.num_classes, self.in_chans, self.input_size = num_classes, in_chans, tuple(input_size)
        self.head_drop_rate = check_drop_rate(drop_rate)
        if small_stem is None:
            small_stem = min(self.input_size) < SMALL_INPUT_THRESHOLD
        self.small_stem = small_stem
        stem_width = widths[0]

        if small_stem:  # (N, C, H, W) -> (N, 64, H, W)
            self.conv1 = nn.Conv2d(in_chans, stem_width, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:           # (N, C, H, W) -> (N, 64, H/2, W/2) -> max-pool -> (N, 64, H/4, W/4)
            self.conv1 = nn.Conv2d(in_chans, stem_width, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        make_act = act_layer(act)
        self.bn1 = norm_layer(stem_width)
        self.relu = make_act()
        stem_stride = 1 if small_stem else 2
        self.feature_info = [dict(module="relu", num_chs=stem_width, reduction=stem_stride)]

        in_channels, reduction, dilation = stem_width, stem_stride * (1 if small_stem else 2), 1
        names = []
        for i, (planes, blocks) in enumerate(zip(widths, layers)):
            stride = 1 if i == 0 else 2
            first_dilation = dilation
            if dilate[i]:  # trade the stride for dilation: same receptive field growth, no downsampling
                dilation, stride = dilation * stride, 1
            reduction *= stride
            out_channels = planes * block.expansion
            downsample = None
            if stride != 1 or in_channels != out_channels:
                if shortcut == "A":
                    downsample = ZeroPadShortcut(in_channels, out_channels, stride)
                else:  # ConvNormAct's indices 0 (conv) and 1 (bn) are torchvision's downsample.0 / .1
                    downsample = ConvNormAct(in_channels, out_channels, kernel_size=1, stride=stride,
                                             norm_layer=norm_layer, act_layer=None)
            stage = [block(in_channels, planes, stride, downsample, norm_layer=norm_layer, attn_layer=attn_layer,
                           dilation=first_dilation, act_layer=make_act)]
            stage += [block(out_channels, planes, norm_layer=norm_layer, attn_layer=attn_layer, dilation=dilation,
                            act_layer=make_act) for _ in range(1, blocks)]
            name = f"layer{i + 1}"
            self.add_module(name, nn.Sequential(*stage))        # (N, out_channels, H/reduction, W/reduction)
            names.append(name)
            self.feature_info.append(dict(module=name, num_chs=out_channels, reduction=reduction))
            in_channels = out_channels
        self.stage_names = tuple(names)

        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.num_features = in_channels
        self.fc = nn.Linear(in_channels, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_chans, H, W) -> (N, C, H/32, W/32) (H/8 with the small stem, H/8 with the last two stages
        dilated), before pooling."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self._forward_stages(x)


class WideResNet(_ResNetBase):
    """WRN-d-k (Zagoruyko & Komodakis, BMVC 2016): ``conv1`` 3x3 to 16 channels, three stages of
    ``n = (d - 4) / 6`` :class:`WideBasicBlock` of widths 16k, 32k, 64k (strides 1, 2, 2), then the
    final pre-activation ``bn`` -> ``relu``, global average pool and ``fc``.

    It is a CIFAR network at every size: total stride 4, a 32x32 image leaves an 8x8 map, an 8x8
    image a 2x2 one, and every input from 1x1 up runs, so there is no small-input adaptation.
    ``drop_rate`` is the dropout inside each block (the paper uses 0.3; default 0). ``feature_info``:
    ``layer1``, ``layer2`` and the final ``relu`` (the pre-activated output of ``layer3``). ``act`` as in
    :class:`ResNet`.
    """

    def __init__(self, depth: int, widen_factor: int, num_classes: int = 10, in_chans: int = 3,
                 input_size: tuple[int, int] = (32, 32), *, drop_rate: float = 0.0,
                 norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d, act: str = "relu"):
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"depth must be 6n + 4 with n >= 1 (10, 16, 22, 28 ...); got {depth}")
        if widen_factor < 1:
            raise ValueError(f"widen_factor must be >= 1; got {widen_factor}")
        drop_rate = check_drop_rate(drop_rate)
        make_act = act_layer(act)
        self.num_classes, self.in_chans, self.input_size = num_classes, in_chans, tuple(input_size)
        n = (depth - 4) // 6
        widths = (16 * widen_factor, 32 * widen_factor, 64 * widen_factor)

        self.conv1 = _conv3x3(in_chans, 16)                      # (N, 16, H, W); its BN-ReLU is in layer1's block
        in_channels, reduction, names = 16, 1, []
        self.feature_info = []
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            reduction *= stride
            stage = [WideBasicBlock(in_channels if j == 0 else width, width, stride if j == 0 else 1, drop_rate,
                                    norm_layer=norm_layer, act_layer=make_act) for j in range(n)]
            name = f"layer{i + 1}"
            self.add_module(name, nn.Sequential(*stage))        # (N, width, H/reduction, W/reduction)
            names.append(name)
            in_channels = width
            if i < len(widths) - 1:
                self.feature_info.append(dict(module=name, num_chs=width, reduction=reduction))
        self.stage_names = tuple(names)
        self.bn = norm_layer(in_channels)                        # pre-activation: the last block ends unnormalised
        self.relu = make_act()
        self.feature_info.append(dict(module="relu", num_chs=in_channels, reduction=reduction))

        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.num_features = in_channels
        self.fc = nn.Linear(in_channels, num_classes)
        self._init_weights()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_chans, H, W) -> (N, 64k, H/4, W/4), after the final BN-ReLU, before pooling."""
        x = self._forward_stages(self.conv1(x))
        return self.relu(self.bn(x))


# -- builders ----------------------------------------------------------------------------------
_IMAGENET_CFG = dict(num_classes=1000, in_chans=3, input_size=(224, 224))
_CIFAR_CFG = dict(num_classes=10, in_chans=3, input_size=(32, 32))


def _resnet(block: type[BasicBlock] | type[Bottleneck], layers: Sequence[int], num_classes: int, in_chans: int,
            input_size: tuple[int, int] | None, **kwargs) -> ResNet:
    return ResNet(block, layers, num_classes, in_chans, input_size or (224, 224), **kwargs)


@register_model(year=2016, default_cfg=_IMAGENET_CFG)
def resnet18(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
             **kwargs) -> ResNet:
    """ResNet-18: basic blocks (2, 2, 2, 2), torchvision-compatible (He et al., CVPR 2016).

    11,689,512 parameters at 1000 classes (torchvision's count; the paper's Table 1: 1.8 GFLOPs).
    """
    return _resnet(BasicBlock, (2, 2, 2, 2), num_classes, in_chans, input_size, **kwargs)


@register_model(year=2016, default_cfg=_IMAGENET_CFG)
def resnet34(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
             **kwargs) -> ResNet:
    """ResNet-34: basic blocks (3, 4, 6, 3), torchvision-compatible (He et al., CVPR 2016).

    21,797,672 parameters at 1000 classes (torchvision's count; the paper's Table 1: 3.6 GFLOPs).
    """
    return _resnet(BasicBlock, (3, 4, 6, 3), num_classes, in_chans, input_size, **kwargs)


@register_model(year=2016, default_cfg=_IMAGENET_CFG)
def resnet50(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
             **kwargs) -> ResNet:
    """ResNet-50 (v1.5, stride on the 3x3): bottlenecks (3, 4, 6, 3), torchvision-compatible (He et al., 2016).

    25,557,032 parameters at 1000 classes (torchvision's count; the paper's Table 1: 3.8 GFLOPs).
    """
    return _resnet(Bottleneck, (3, 4, 6, 3), num_classes, in_chans, input_size, **kwargs)


@register_model(year=2016, default_cfg=_IMAGENET_CFG)
def resnet101(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
              **kwargs) -> ResNet:
    """ResNet-101 (v1.5): bottlenecks (3, 4, 23, 3), torchvision-compatible (He et al., CVPR 2016).

    44,549,160 parameters at 1000 classes (torchvision's count; the paper's Table 1: 7.6 GFLOPs).
    """
    return _resnet(Bottleneck, (3, 4, 23, 3), num_classes, in_chans, input_size, **kwargs)


@register_model(year=2016, default_cfg=_IMAGENET_CFG)
def resnet152(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
              **kwargs) -> ResNet:
    """ResNet-152 (v1.5): bottlenecks (3, 8, 36, 3), torchvision-compatible (He et al., CVPR 2016).

    60,192,808 parameters at 1000 classes (torchvision's count; the paper's Table 1: 11.3 GFLOPs).
    """
    return _resnet(Bottleneck, (3, 8, 36, 3), num_classes, in_chans, input_size, **kwargs)


def _cifar_resnet(depth: int, num_classes: int, in_chans: int, input_size: tuple[int, int] | None,
                  **kwargs) -> ResNet:
    """The 6n + 2 layer CIFAR networks of He et al., section 4.2: n basic blocks in each of 3 stages.

    Layout: 3x3 conv to 16 channels (always the small stem: these are 32x32 networks at every
    size, total stride 4), stages of 16/32/64 channels (feature maps 32, 16, 8 at 32x32), global
    average pool, fc. Shortcuts are the paper's option A (identity, zero-padded where the width
    doubles: no parameters); ``shortcut="B"`` gives 1x1 projections + BatchNorm instead.
    """
    n = (depth - 2) // 6
    kwargs.setdefault("shortcut", "A")
    return ResNet(BasicBlock, (n, n, n), num_classes, in_chans, input_size or (32, 32), widths=(16, 32, 64),
                  small_stem=True, **kwargs)


@register_model(year=2016, default_cfg=_CIFAR_CFG)
def resnet20(*, num_classes: int = 10, in_chans: int = 3, input_size: tuple[int, int] | None = None,
             **kwargs) -> ResNet:
    """ResNet-20 for CIFAR-10: 3 stages of 3 basic blocks, 16/32/64 channels (He et al., CVPR 2016, sec. 4.2).

    The paper gives 0.27 M parameters; this one has 269,722 at 10 classes (option A shortcuts;
    272,474 with ``shortcut="B"``). Works at any input size (total stride 4).
    """
    return _cifar_resnet(20, num_classes, in_chans, input_size, **kwargs)


@register_model(year=2016, default_cfg=_CIFAR_CFG)
def resnet32(*, num_classes: int = 10, in_chans: int = 3, input_size: tuple[int, int] | None = None,
             **kwargs) -> ResNet:
    """ResNet-32 for CIFAR-10: 3 stages of 5 basic blocks, 16/32/64 channels (He et al., CVPR 2016, sec. 4.2).

    The paper gives 0.46 M parameters; this one has 464,154 at 10 classes (option A shortcuts).
    """
    return _cifar_resnet(32, num_classes, in_chans, input_size, **kwargs)


@register_model(year=2016, default_cfg=_CIFAR_CFG)
def resnet44(*, num_classes: int = 10, in_chans: int = 3, input_size: tuple[int, int] | None = None,
             **kwargs) -> ResNet:
    """ResNet-44 for CIFAR-10: 3 stages of 7 basic blocks, 16/32/64 channels (He et al., CVPR 2016, sec. 4.2).

    The paper gives 0.66 M parameters; this one has 658,586 at 10 classes (option A shortcuts).
    """
    return _cifar_resnet(44, num_classes, in_chans, input_size, **kwargs)


@register_model(year=2016, default_cfg=_CIFAR_CFG)
def resnet56(*, num_classes: int = 10, in_chans: int = 3, input_size: tuple[int, int] | None = None,
             **kwargs) -> ResNet:
    """ResNet-56 for CIFAR-10: 3 stages of 9 basic blocks, 16/32/64 channels (He et al., CVPR 2016, sec. 4.2).

    The paper gives 0.85 M parameters; this one has 853,018 at 10 classes (option A shortcuts).
    """
    return _cifar_resnet(56, num_classes, in_chans, input_size, **kwargs)


@register_model(year=2016, default_cfg=_CIFAR_CFG)
def resnet110(*, num_classes: int = 10, in_chans: int = 3, input_size: tuple[int, int] | None = None,
              **kwargs) -> ResNet:
    """ResNet-110 for CIFAR-10: 3 stages of 18 basic blocks, 16/32/64 channels (He et al., CVPR 2016, sec. 4.2).

    The paper gives 1.7 M parameters (rounded); this one has 1,727,962 at 10 classes (option A shortcuts).
    """
    return _cifar_resnet(110, num_classes, in_chans, input_size, **kwargs)


@register_model(year=2016, default_cfg=_CIFAR_CFG)
def wrn28_10(*, num_classes: int = 10, in_chans: int = 3, input_size: tuple[int, int] | None = None,
             **kwargs) -> WideResNet:
    """WRN-28-10: wide ResNet, 4 pre-activation blocks per stage, widths 160/320/640 (Zagoruyko & Komodakis, 2016).

    The paper gives 36.5 M parameters on CIFAR-10; this one has 36,479,194 at 10 classes. The
    paper trains it with ``drop_rate=0.3`` (dropout between the convolutions of each block).
    """
    return WideResNet(28, 10, num_classes, in_chans, input_size or (32, 32), **kwargs)


@register_model(year=2016, default_cfg=_CIFAR_CFG)
def wrn16_8(*, num_classes: int = 10, in_chans: int = 3, input_size: tuple[int, int] | None = None,
            **kwargs) -> WideResNet:
    """WRN-16-8: wide ResNet, 2 pre-activation blocks per stage, widths 128/256/512 (Zagoruyko & Komodakis, 2016).

    The paper gives 11.0 M parameters on CIFAR-10; this one has 10,961,370 at 10 classes. The
    paper trains it with ``drop_rate=0.3`` (dropout between the convolutions of each block).
    """
    return WideResNet(16, 8, num_classes, in_chans, input_size or (32, 32), **kwargs)
