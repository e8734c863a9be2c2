"""3-D convolutional networks for video clips (N, C, T, H, W).

- ``c3d``: Tran, Bourdev, Fergus, Torresani & Paluri, "Learning Spatiotemporal Features with 3D
  Convolutional Networks", ICCV 2015. Eight 3x3x3 convolutions (64, 128, 256, 256, 512, 512, 512,
  512 filters, stride 1, padded), five max-pools (pool1 1x2x2 so that early layers keep the whole
  clip's time axis, the others 2x2x2), fc6 and fc7 of 4096 units with dropout, and the class layer
  (the paper's Figure 3).
- ``r3d_18``: Tran, Wang, Torresani, Ray, LeCun & Paluri, "A Closer Look at Spatiotemporal
  Convolutions for Action Recognition", CVPR 2018: ResNet-18 with every convolution made 3-D
  (R3D). torchvision's ``torchvision.models.video.r3d_18`` layout and names, so its state dicts load.

Both take ``input_size`` as (T, H, W) (``create_model`` also accepts ``H`` or ``(H, W)`` and keeps the
native 16 frames). ``feature_info``'s ``reduction`` is the spatial stride; ``temporal_reduction`` the
stride along T.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from convolab.layers import ConvNormAct, checkpoint_seq
from convolab.models._base import PooledClassifier, check_drop_rate, init_vgg_style
from convolab.models._registry import register_model
from convolab.models.resnet import _ResNetBase

__all__ = ["C3D", "BasicBlock3d", "VideoResNet", "c3d", "r3d_18"]

_CLIP = (16, 112, 112)  # both papers' clips: 16 frames, 112x112 crops


# -- C3D ----------------------------------------------------------------------------------------------
# (stage, number of convolutions, pool window (t, h, w)): the paper's Figure 3 (widths: C3D's ``widths``).
_C3D_STAGES = [("1", 1, (1, 2, 2)), ("2", 1, (2, 2, 2)), ("3", 2, (2, 2, 2)), ("4", 2, (2, 2, 2)), ("5", 2, (2, 2, 2))]


class C3D(PooledClassifier):
    """C3D: 8 convolutions 3x3x3, 5 max-pools, fc6/fc7 of 4096 units, fc8 (Tran et al., ICCV 2015, Figure 3).

    Module names are the paper's layer names: ``features.conv1a``, ``features.pool1``, ``features.conv2a``,
    ... ``features.conv3a``, ``features.conv3b``, ``features.pool3`` ... ``features.pool5``; ``avgpool``;
    ``classifier.fc6``, ``classifier.fc7`` (each followed by ReLU and dropout ``drop_rate``) and
    ``classifier.fc8``. At a 16x112x112 clip the maps after the pools are 16x56x56, 8x28x28, 4x14x14,
    2x7x7 and 1x4x4, so fc6 reads 512 * 1 * 4 * 4 = 8192 values.

    The pools round up (``ceil_mode``), as the Caffe framework the paper's network was built in does:
    that is what takes conv5's 7x7 map to 4x4. It also means no map ever collapses, so no clip size
    needs an adapted layout: every clip from 1x1x1 up runs with all five pools (an 8x28x28 clip leaves
    a 1x1x1 map after pool5). ``avgpool`` (adaptive, to 1x4x4) then replicates or averages whatever
    map arrives to the paper's 1x4x4, so the FC layers and the parameter count never depend on the
    clip size (the AlexNet/VGG convention of this package), and is the identity at 16x112x112.

    ``drop_rate``: dropout after fc6 and after fc7 (default 0.5, the usual rate for such FC layers since
    AlexNet; the paper does not state one).
    ``set_grad_checkpointing`` recomputes each convolution stage (up to and including its pool).
    """

    def __init__(self, num_classes: int = 487, in_chans: int = 3, input_size: tuple[int, int, int] = _CLIP, *,
                 drop_rate: float = 0.5, widths: Sequence[int] = (64, 128, 256, 512, 512), fc_width: int = 4096):
        super().__init__()
        if len(widths) != len(_C3D_STAGES) or min(widths) < 1 or fc_width < 1:
            raise ValueError(f"widths must give 5 positive stage widths and fc_width must be >= 1; got "
                             f"{tuple(widths)}, {fc_width}")
        drop_rate = check_drop_rate(drop_rate)
        self.num_classes, self.in_chans, self.input_size = num_classes, in_chans, tuple(input_size)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        self.feature_info, self._stage_ends = [], []
        channels, reduction, t_reduction = in_chans, 1, 1
        for (stage, n_convs, pool), width in zip(_C3D_STAGES, widths):
            for suffix in "ab"[:n_convs]:
                layers[f"conv{stage}{suffix}"] = nn.Conv3d(channels, width, kernel_size=3, padding=1)
                layers[f"relu{stage}{suffix}"] = nn.ReLU(inplace=True)
                channels = width
            layers[f"pool{stage}"] = nn.MaxPool3d(kernel_size=pool, stride=pool, ceil_mode=True)
            reduction, t_reduction = reduction * pool[1], t_reduction * pool[0]
            self._stage_ends.append(len(layers))
            self.feature_info.append(dict(module=f"features.pool{stage}", num_chs=width, reduction=reduction,
                                          temporal_reduction=t_reduction))
        self.features = nn.Sequential(layers)                  # (N, 512, T/16, H/32, W/32), rounded up
        self.avgpool = nn.AdaptiveAvgPool3d((1, 4, 4))          # (N, 512, 1, 4, 4) at any clip size
        self.classifier = nn.Sequential(OrderedDict(
            fc6=nn.Linear(channels * 16, fc_width), relu6=nn.ReLU(inplace=True), drop6=nn.Dropout(drop_rate),
            fc7=nn.Linear(fc_width, fc_width), relu7=nn.ReLU(inplace=True), drop7=nn.Dropout(drop_rate),
            fc8=nn.Linear(fc_width, num_classes),
        ))
        self.grad_checkpointing = False
        init_vgg_style(self)  # the paper's Caffe fillers are not given; torchvision's VGG and video models' scheme

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each convolution stage in the backward pass (less memory, one more forward)."""
        self.grad_checkpointing = bool(enable)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_chans, T, H, W) -> pool5's map (N, 512, ceil(T/16), ceil(H/32), ceil(W/32))."""
        if self.grad_checkpointing and self.training:
            starts = [0, *self._stage_ends[:-1]]
            return checkpoint_seq([self.features[a:b] for a, b in zip(starts, self._stage_ends)], x)
        return self.features(x)


# -- R3D ----------------------------------------------------------------------------------------------
def _conv3d_bn(in_channels: int, out_channels: int, kernel_size: int | tuple[int, int, int] = 3,
               stride: int | tuple[int, int, int] = 1, relu: bool = True) -> ConvNormAct:
    """Conv3d (no bias) -> BatchNorm3d [-> ReLU]: torchvision's ``Sequential(conv, bn[, relu])`` indices."""
    return ConvNormAct(in_channels, out_channels, kernel_size, stride, conv_layer=nn.Conv3d,
                       norm_layer=nn.BatchNorm3d, act_layer=nn.ReLU if relu else None)


class BasicBlock3d(nn.Module):
    """ResNet's basic block in 3-D: ``relu(conv2(conv1(x)) + shortcut(x))``, 3x3x3 convolutions.

    ``conv1`` is conv -> BN -> ReLU and ``conv2`` conv -> BN, as ``nn.Sequential`` (torchvision's
    video ``BasicBlock``); the stride (the same along T, H and W) sits on conv1's convolution.
    """

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3d_bn(in_channels, planes, 3, stride)  # (N, planes, T/s, H/s, W/s)
        self.conv2 = _conv3d_bn(planes, planes, 3, relu=False)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.conv2(self.conv1(x))
        out += shortcut
        return self.relu(out)


class VideoResNet(_ResNetBase):
    """R3D: a ResNet with 3-D convolutions throughout (Tran et al., CVPR 2018, section 3.1 and Table 1).

    torchvision's ``VideoResNet`` layout and names: ``stem`` (3x7x7 convolution, stride 1x2x2, BN,
    ReLU; no max-pool) -> ``layer1`` (stride 1) ... ``layer4`` (stride 2 along T, H and W each) ->
    ``avgpool`` (global, 3-D) -> dropout (``drop_rate``, default 0: the paper has none) -> ``fc``.
    At a 16x112x112 clip the stages give 16x56x56, 8x28x28, 4x14x14 and 2x7x7 maps.

    Small clips: every convolution is padded, the spatial stride is 16 and the temporal one 8, and
    the pool is global, so every clip from 1x1x1 up runs without an adapted layout (an 8x28x28 clip
    leaves a 1x2x2 map in ``layer4``) and torchvision's weights load at every size.
    ``set_grad_checkpointing`` recomputes each residual block in the backward pass.
    """

    def __init__(self, layers: Sequence[int], num_classes: int = 400, in_chans: int = 3,
                 input_size: tuple[int, int, int] = _CLIP, *, widths: Sequence[int] = (64, 128, 256, 512),
                 drop_rate: float = 0.0):
        super().__init__()
        if len(layers) != len(widths) or min(layers) < 1 or min(widths) < 1:
            raise ValueError(f"layers and widths must give one positive entry per stage; got {tuple(layers)}, "
                             f"{tuple(widths)}")
        self.num_classes, self.in_chans, self.input_size = num_classes, in_chans, tuple(input_size)
        self.head_drop_rate = check_drop_rate(drop_rate)
        # (N, C, T, H, W) -> (N, 64, T, H/2, W/2): the stem strides only in space.
        self.stem = ConvNormAct(in_chans, widths[0], (3, 7, 7), (1, 2, 2), (1, 3, 3), conv_layer=nn.Conv3d,
                                norm_layer=nn.BatchNorm3d)
        self.feature_info = [dict(module="stem", num_chs=widths[0], reduction=2, temporal_reduction=1)]
        in_channels, reduction, t_reduction, names = widths[0], 2, 1, []
        for i, (planes, blocks) in enumerate(zip(widths, layers)):
            stride = 1 if i == 0 else 2
            reduction, t_reduction = reduction * stride, t_reduction * stride
            downsample = None
            if stride != 1 or in_channels != planes:  # 1x1x1 convolution + BN: torchvision's downsample.0 / .1
                downsample = _conv3d_bn(in_channels, planes, 1, stride, relu=False)
            stage = [BasicBlock3d(in_channels, planes, stride, downsample)]
            stage += [BasicBlock3d(planes, planes) for _ in range(1, blocks)]
            name = f"layer{i + 1}"
            self.add_module(name, nn.Sequential(*stage))       # (N, planes, T/t_red, H/red, W/red)
            names.append(name)
            self.feature_info.append(dict(module=name, num_chs=planes, reduction=reduction,
                                          temporal_reduction=t_reduction))
            in_channels = planes
        self.stage_names = tuple(names)
        self.avgpool = nn.AdaptiveAvgPool3d((1, 1, 1))
        self.num_features = in_channels
        self.fc = nn.Linear(in_channels, num_classes)
        init_vgg_style(self)  # torchvision's VideoResNet initialisation

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_chans, T, H, W) -> (N, 512, T/8, H/16, W/16) (rounded up), before pooling."""
        return self._forward_stages(self.stem(x))


# -- builders ---------------------------------------------------------------------------------------
def _clip_size(input_size: tuple[int, ...] | None) -> tuple[int, int, int]:
    size = tuple(input_size) if input_size is not None else _CLIP
    if len(size) != 3 or min(size) < 1:
        raise ValueError(f"a clip model's input_size is (T, H, W) with positive sides; got {input_size!r}")
    return size  # type: ignore[return-value]


@register_model(year=2015, input_kind="clip", default_cfg=dict(num_classes=487, in_chans=3, input_size=_CLIP))
def c3d(*, num_classes: int = 487, in_chans: int = 3, input_size: tuple[int, int, int] | None = None,
        **kwargs) -> C3D:
    """C3D: 8 conv3d 3x3x3, 5 max-pools, fc6/fc7 4096, on 16x112x112 clips (Tran et al., ICCV 2015).

    79,991,015 parameters at 487 classes (Sports-1M; the paper gives no total, this is Figure 3
    counted layer by layer, and the total of the authors' released Sports-1M network as converted to
    Keras); 78,409,573 at 101 classes (UCF101). Options: ``drop_rate`` (default 0.5).
    """
    return C3D(num_classes, in_chans, _clip_size(input_size), **kwargs)


@register_model(year=2018, input_kind="clip", default_cfg=dict(num_classes=400, in_chans=3, input_size=_CLIP))
def r3d_18(*, num_classes: int = 400, in_chans: int = 3, input_size: tuple[int, int, int] | None = None,
           **kwargs) -> VideoResNet:
    """R3D-18: ResNet-18 with 3-D convolutions, torchvision-compatible (Tran et al., CVPR 2018).

    33,371,472 parameters at 400 classes (Kinetics; torchvision's count, the paper's Table 2: 33.4M).
    """
    return VideoResNet((2, 2, 2, 2), num_classes, in_chans, _clip_size(input_size), **kwargs)
