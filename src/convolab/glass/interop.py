"""Interop with PyTorch: ``from_torch`` (torch model -> glass model) and ``to_torch`` (glass weights -> torch).

Weights are copied one to one under the same qualified names (``features.conv1.weight``), so a
glass model and its torch original produce the same numbers, and a model trained by the NumPy
engine loads into the convolab model of the same name. torch is imported only when these
functions run: the rest of ``convolab.glass`` works without it.

Supported: convolab's ``tutorial_cnn``, ``mnist_cnn``, ``lenet5``/``lenet5_classic``, the ResNets
built from basic blocks (``resnet20`` ... ``resnet110``, ``resnet18``/``34``) without SE, DenseNets
and their blocks, and any ``nn.Sequential`` of the layers glass implements -- among them GELU,
``convolab.layers.Swish``, LayerNorm, GroupNorm (and ``GroupNorm1``), LocalResponseNorm, and the
attention blocks ``SqueezeExcite``, ``CBAM`` (and its two parts) and ``NonLocalBlock``.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from convolab.glass import activation as act
from convolab.glass import attention
from convolab.glass import branches as glass_branches
from convolab.glass.blocks import BasicBlock, DenseBlock, DenseLayer, ZeroPadShortcut
from convolab.glass.conv import Conv2d
from convolab.glass.conv_variants import PaddedConv2d, SeparableConv2d, SpatiallySeparableConv2d, TrueConv2d
from convolab.glass.dropout import Dropout, Dropout2d
from convolab.glass.linear import Flatten, Linear
from convolab.glass.module import Identity, Module, Sequential
from convolab.glass.norm import BatchNorm2d, GroupNorm, GroupNorm1, LayerNorm, LocalResponseNorm
from convolab.glass.pool import (
    AdaptiveAvgPool2d,
    AvgPool2d,
    FractionalMaxPool2d,
    GlobalAvgPool2d,
    GlobalMaxPool2d,
    MaxPool2d,
    StochasticPool2d,
)

__all__ = ["from_torch", "to_torch", "check_convertible"]


def _leaf_converters(nn) -> dict:
    """torch layer class -> function building the glass layer with the same hyper-parameters."""
    from convolab import layers

    return {
        nn.Conv2d: lambda m: (Conv2d if m.padding_mode == "zeros" else PaddedConv2d)(
            m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
            m.bias is not None, m.padding_mode),
        layers.TrueConv2d: lambda m: TrueConv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                                                m.dilation, m.groups, m.bias is not None, m.padding_mode),
        layers.SeparableConv2d: lambda m: SeparableConv2d(
            m.depthwise.in_channels, m.pointwise.out_channels, m.depthwise.kernel_size, m.depthwise.stride,
            m.depthwise.padding, m.depthwise.dilation, m.pointwise.bias is not None, m.depthwise.padding_mode,
            m.depthwise.out_channels // m.depthwise.in_channels),
        layers.SpatiallySeparableConv2d: lambda m: SpatiallySeparableConv2d(
            m.vertical.in_channels, m.horizontal.out_channels, (m.vertical.kernel_size[0], m.horizontal.kernel_size[1]),
            (m.vertical.stride[0], m.horizontal.stride[1]),
            m.vertical.padding if isinstance(m.vertical.padding, str) else (m.vertical.padding[0],
                                                                            m.horizontal.padding[1]),
            (m.vertical.dilation[0], m.horizontal.dilation[1]), m.horizontal.bias is not None, m.vertical.padding_mode,
            m.vertical.out_channels),
        nn.Linear: lambda m: Linear(m.in_features, m.out_features, m.bias is not None),
        nn.BatchNorm2d: lambda m: BatchNorm2d(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats),
        nn.MaxPool2d: lambda m: MaxPool2d(m.kernel_size, m.stride, m.padding, m.dilation, m.return_indices,
                                          m.ceil_mode),
        nn.AvgPool2d: lambda m: AvgPool2d(m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad,
                                          m.divisor_override),
        nn.AdaptiveAvgPool2d: lambda m: AdaptiveAvgPool2d(m.output_size),
        layers.GlobalAvgPool2d: lambda m: GlobalAvgPool2d(m.flatten),
        layers.GlobalMaxPool2d: lambda m: GlobalMaxPool2d(m.flatten),
        layers.FractionalMaxPool2d: lambda m: FractionalMaxPool2d(m.output_size, m.output_ratio, m.kernel_size,
                                                                  m.sequence, m.overlapping, m.seed),
        layers.StochasticPool2d: lambda m: StochasticPool2d(m.kernel_size, m.stride),
        nn.ReLU: lambda m: act.ReLU(),
        nn.LeakyReLU: lambda m: act.LeakyReLU(m.negative_slope),
        nn.ELU: lambda m: act.ELU(m.alpha),
        nn.Sigmoid: lambda m: act.Sigmoid(),
        nn.Tanh: lambda m: act.Tanh(),
        nn.SiLU: lambda m: act.SiLU(),
        nn.GELU: lambda m: act.GELU(m.approximate),
        layers.Swish: lambda m: act.Swish(float(getattr(m.beta, "data", m.beta)), m.trainable),
        nn.LayerNorm: lambda m: LayerNorm(m.normalized_shape, m.eps, m.elementwise_affine, m.bias is not None),
        nn.GroupNorm: lambda m: GroupNorm(m.num_groups, m.num_channels, m.eps, m.affine),
        layers.GroupNorm1: lambda m: GroupNorm1(m.num_channels, m.eps, m.affine),
        nn.LocalResponseNorm: lambda m: LocalResponseNorm(m.size, m.alpha, m.beta, m.k),
        layers.ChannelAttention: lambda m: attention.ChannelAttention(m.channels, m.reduction),
        layers.SpatialAttention: lambda m: attention.SpatialAttention(m.kernel_size),
        layers.CBAM: lambda m: attention.CBAM(m.channel.channels, m.channel.reduction, m.spatial.kernel_size),
        layers.NonLocalBlock: lambda m: attention.NonLocalBlock(m.in_channels, m.inter_channels, m.sub_sample),
        nn.Softmax: lambda m: act.Softmax(-1 if m.dim is None else m.dim),
        nn.LogSoftmax: lambda m: act.LogSoftmax(-1 if m.dim is None else m.dim),
        nn.Dropout: lambda m: Dropout(m.p),
        nn.Dropout2d: lambda m: Dropout2d(m.p),
        nn.Flatten: lambda m: Flatten(m.start_dim, m.end_dim),
        nn.Identity: lambda m: Identity(),
    }


class _Converter:
    """Walks a torch module tree and builds the glass tree, naming the first module it cannot convert."""

    def __init__(self, check_only: bool = False):
        import torch.nn as nn

        from convolab.layers import branches
        from convolab.models import densenet, lenet, resnet, spec, tutorial
        from convolab.models._base import ConvClassifier

        self.nn = nn
        self.leaves = _leaf_converters(nn)
        self.ConvClassifier = ConvClassifier
        self.classifiers = (tutorial.TutorialCNN, tutorial.MnistCNN, lenet.LeNet5, spec.SpecNet)
        self.branches = branches
        self.resnet, self.densenet = resnet, densenet
        self.check_only = check_only  # walk the tree without allocating the (possibly huge) leaf layers

    def unsupported(self, m, path: str) -> ValueError:
        where = f" at {path!r}" if path else ""
        return ValueError(f"from_torch: convolab.glass has no equivalent of {type(m).__module__}.{type(m).__name__}"
                          f"{where}; supported: tutorial_cnn, mnist_cnn, lenet5, basic-block ResNets (resnet20 ...), "
                          "DenseNets, spec: networks, and nn.Sequential of Conv2d, Linear, BatchNorm2d, pooling, "
                          "activations, Dropout, Flatten")

    def __call__(self, m, path: str = "") -> Module:
        nn = self.nn
        kind = type(m)
        if kind in self.leaves:
            return Identity() if self.check_only else self.leaves[kind](m)
        def sub(name: str) -> str:
            return f"{path}.{name}" if path else name

        if isinstance(m, nn.Sequential) and kind.forward is nn.Sequential.forward:  # also ConvNormAct, Transition
            return Sequential(OrderedDict((name, self(child, sub(name))) for name, child in m.named_children()))
        if kind in self.classifiers:  # features -> classifier, the ConvClassifier forward
            return Sequential(OrderedDict(features=self(m.features, sub("features")),
                                          classifier=self(m.classifier, sub("classifier"))))
        b = self.branches  # the spec grammar's res(...), cat(...), dense(...)
        if kind is b.Residual:
            return glass_branches.Residual(self(m.body, sub("body")), self(m.shortcut, sub("shortcut")))
        if kind is b.Concat:
            return glass_branches.Concat([self(child, sub(name)) for name, child in m.named_children()])
        if kind is b.DenseConcat:
            return glass_branches.DenseConcat(self(m.body, sub("body")))
        r, d = self.resnet, self.densenet
        if kind is r.ResNet:
            stem = [("conv1", m.conv1), ("bn1", m.bn1), ("relu", m.relu), ("maxpool", m.maxpool)]
            stages = [(name, getattr(m, name)) for name in m.stage_names]
            layers = [(name, self(child, sub(name))) for name, child in stem + stages]
            layers += [("avgpool", self(m.avgpool, sub("avgpool"))), ("flatten", Flatten(1)),
                       ("drop", Dropout(m.head_drop_rate)), ("fc", self(m.fc, sub("fc")))]
            return Sequential(OrderedDict(layers))
        if kind is r.BasicBlock:
            if m.se is not None:
                raise self.unsupported(m.se, sub("se"))
            down = None if m.downsample is None else self(m.downsample, sub("downsample"))
            block = BasicBlock(m.conv1.in_channels, m.conv1.out_channels, m.stride, down)
            for name in ("conv1", "bn1", "conv2", "bn2"):  # the torch block's own layers, whatever their settings
                setattr(block, name, self(getattr(m, name), sub(name)))
            # its activation (--act), used twice: two glass layers, each remembering its own input
            block.relu, block.relu_out = self(m.relu, sub("relu")), self(m.relu, sub("relu"))
            return block
        if kind is r.ZeroPadShortcut:
            return ZeroPadShortcut(m.in_channels, m.out_channels, m.stride)
        if kind is d.DenseNet:
            return Sequential(OrderedDict(features=self(m.features, sub("features")), pool=AdaptiveAvgPool2d(1),
                                          flatten=Flatten(1), classifier=self(m.classifier, sub("classifier"))))
        if kind is d.DenseBlock:
            layers = list(m.named_children())
            first = layers[0][1]
            block = DenseBlock(len(layers), first.conv1.in_channels, first.conv2.out_channels)
            for name, layer in layers:
                setattr(block, name, self(layer, sub(name)))
            return block
        if kind is d.DenseLayer:
            layer = DenseLayer(m.conv1.in_channels, m.conv2.out_channels, 1, m.drop_rate)
            for name in ("norm1", "relu1", "conv1", "norm2", "relu2", "conv2"):
                setattr(layer, name, self(getattr(m, name), sub(name)))
            return layer
        from convolab.layers import SqueezeExcite

        if kind is SqueezeExcite:  # its activation and gate are whatever the torch block was given
            se = attention.SqueezeExcite(m.fc1.in_channels, m.fc1.out_channels)
            se.activation = self(m.activation, sub("activation"))
            se.scale_activation = self(m.scale_activation, sub("scale_activation"))
            return se
        raise self.unsupported(m, path)


def check_convertible(model) -> None:
    """Raise the ``ValueError`` that ``from_torch(model)`` would, without copying anything (meta tensors work)."""
    _Converter(check_only=True)(model)


def from_torch(model) -> Module:
    """A glass model computing what the torch ``model`` computes, with its weights and buffers copied.

    The glass model starts in the torch model's mode (train/eval) and keeps its parameter dtype;
    ``convolab_cfg`` (how ``create_model`` built it) is carried over, so :func:`to_torch` can rebuild it.

    Raises:
        ValueError: a module glass has no equivalent of (the message names it and where it sits).
    """
    glass = _Converter()(model)
    state = OrderedDict((k, v.detach().cpu().numpy()) for k, v in model.state_dict().items())
    floats = [v.dtype for v in state.values() if v.dtype.kind == "f"]
    if floats:
        glass.to(floats[0])
    glass.load_state_dict(state, strict=True)
    glass.train(model.training)
    if getattr(model, "convolab_cfg", None) is not None:
        glass.convolab_cfg = dict(model.convolab_cfg)
    return glass


def to_torch(model: Module, name: str | None = None, *, into=None, **kwargs):
    """Copy a glass model's weights into a torch model and return it.

    Args:
        model: the glass model.
        name: a convolab model name; it is built with ``create_model(name, **kwargs)`` (without
            kwargs, the ones recorded in ``model.convolab_cfg`` when the names agree). ``None``: the
            name recorded in ``model.convolab_cfg``.
        into: an existing torch module to load into instead of building one.

    Raises:
        ValueError: the torch model's parameters differ in names or shapes (the message names the
            entry, the expected and the received shape).
    """
    import torch

    if into is None:
        cfg = dict(getattr(model, "convolab_cfg", None) or {})
        recorded = cfg.pop("name", None)
        if name is None and recorded is None:
            raise ValueError("to_torch: pass the convolab model name (this glass model does not record one)")
        name = name or recorded
        if not kwargs and name == recorded:
            kwargs = cfg
        from convolab.models import create_model

        into = create_model(name, **kwargs)
    target = into.state_dict()
    source = model.state_dict()
    missing, unexpected = [k for k in target if k not in source], [k for k in source if k not in target]
    if missing or unexpected:
        raise ValueError(f"to_torch: the glass model does not fit {type(into).__name__}: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    for k, v in source.items():
        if tuple(target[k].shape) != v.shape:
            raise ValueError(f"to_torch: {k}: the torch model expects shape {tuple(target[k].shape)}, "
                             f"the glass model has {v.shape}")
    with torch.no_grad():
        for k, t in target.items():
            t.copy_(torch.from_numpy(np.array(source[k])).to(t.dtype))  # np.array: 0-d stays 0-d
    return into
