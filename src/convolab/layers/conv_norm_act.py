"""Convolution -> normalisation -> activation, the building unit of most modern CNNs."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

__all__ = ["ConvNormAct"]

Size = int | tuple[int, ...]  # one number for every spatial dimension, or one per dimension


class ConvNormAct(nn.Sequential):
    """``Conv2d`` (index 0) -> norm (1) -> activation (2), as an ``nn.Sequential``.

    The indices match torchvision's ``Conv2dNormActivation``, so state dicts of torchvision models
    built from it (MobileNet, EfficientNet ...) load unchanged. ``padding=None`` keeps the size for
    stride 1 ("same" padding for odd kernels: ``(k - 1) // 2 * dilation``, per dimension). The
    convolution has no bias when a norm layer follows (the norm's shift makes it redundant).
    ``conv_layer=nn.Conv3d`` with ``norm_layer=nn.BatchNorm3d`` gives the 3-D form (video ResNets);
    sizes may then be tuples ``(t, h, w)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Size = 3, stride: Size = 1,
                 padding: Size | None = None, groups: int = 1,
                 norm_layer: Callable[..., nn.Module] | None = nn.BatchNorm2d,
                 act_layer: Callable[..., nn.Module] | None = nn.ReLU, dilation: int = 1,
                 bias: bool | None = None, inplace: bool | None = True,
                 conv_layer: Callable[..., nn.Module] = nn.Conv2d):
        if padding is None:
            padding = ((kernel_size - 1) // 2 * dilation if isinstance(kernel_size, int)
                       else tuple((k - 1) // 2 * dilation for k in kernel_size))
        if bias is None:
            bias = norm_layer is None
        layers: list[nn.Module] = [conv_layer(in_channels, out_channels, kernel_size, stride, padding,
                                              dilation=dilation, groups=groups, bias=bias)]
        if norm_layer is not None:
            layers.append(norm_layer(out_channels))
        if act_layer is not None:
            layers.append(act_layer() if inplace is None else act_layer(inplace=inplace))
        super().__init__(*layers)
        self.out_channels = out_channels
