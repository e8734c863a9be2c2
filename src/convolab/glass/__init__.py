"""convolab.glass: a glass-box CNN engine in NumPy -- every layer's forward *and* backward pass by hand.

Needs NumPy only (``from_torch``/``to_torch`` import torch when called). Layers carry torch's class,
argument and parameter names, and are checked against PyTorch and finite differences::

    import numpy as np
    from convolab import glass

    glass.manual_seed(0)
    model = glass.Sequential(glass.Conv2d(1, 8, 3, padding=1), glass.ReLU(), glass.MaxPool2d(2),
                             glass.Flatten(), glass.Linear(8 * 14 * 14, 10))
    criterion, opt = glass.CrossEntropyLoss(), glass.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = np.random.rand(32, 1, 28, 28).astype(np.float32), np.random.randint(0, 10, 32)
    opt.zero_grad()
    loss = criterion(model(x), y)             # forward
    dx = model.backward(criterion.backward())  # backward: fills model's grads, returns dL/dx
    opt.step()

Modules: ``module`` (the layer contract), ``im2col``, ``conv``, ``conv_variants`` (padding modes, true,
separable), ``pool``, ``activation``, ``norm``, ``dropout``, ``linear``, ``blocks`` (residual add, channel
concat), ``attention`` (SE, CBAM, non-local),
``loss``, ``optim``, ``amp`` (dynamic loss scaling), ``precision``, ``naive`` (the loop reference),
``quant`` (uniform quantization, int8 forward), ``interop`` (torch), ``train`` (the NumPy training loop)
and ``trainer`` (``convolab train --engine numpy``; imports torch, and is not imported here).
"""

from convolab.glass.activation import ELU, GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, SiLU, Softmax, Swish, Tanh
from convolab.glass.amp import LossScaler
from convolab.glass.attention import CBAM, ChannelAttention, NonLocalBlock, SpatialAttention, SqueezeExcite
from convolab.glass.blocks import BasicBlock, DenseBlock, DenseLayer, ZeroPadShortcut
from convolab.glass.conv import Conv2d
from convolab.glass.conv_variants import PaddedConv2d, SeparableConv2d, SpatiallySeparableConv2d, TrueConv2d
from convolab.glass.dropout import Dropout, Dropout2d
from convolab.glass.interop import check_convertible, from_torch, to_torch
from convolab.glass.linear import Flatten, Linear
from convolab.glass.loss import CrossEntropyLoss, MSELoss
from convolab.glass.module import Identity, Module, Sequential
from convolab.glass.norm import BatchNorm2d, GroupNorm, GroupNorm1, LayerNorm, LocalResponseNorm
from convolab.glass.optim import SGD, Adam, AdamW, RMSprop, StepLR, clip_grad_norm
from convolab.glass.pool import (
    AdaptiveAvgPool2d,
    AvgPool2d,
    FractionalMaxPool2d,
    GlobalAvgPool2d,
    GlobalMaxPool2d,
    MaxPool2d,
    StochasticPool2d,
)
from convolab.glass.quant import (
    Int8Conv2d,
    Int8Linear,
    binarize,
    dequantize,
    error_vs_bits,
    fake_quant_forward,
    fake_quantize,
    int8_layer,
    quant_params,
    quantize,
)
from convolab.glass.rng import get_generator, manual_seed

__all__ = [
    "Module", "Sequential", "Identity",
    "Conv2d", "PaddedConv2d", "TrueConv2d", "SeparableConv2d", "SpatiallySeparableConv2d",
    "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "GlobalAvgPool2d", "GlobalMaxPool2d", "FractionalMaxPool2d",
    "StochasticPool2d",
    "ReLU", "LeakyReLU", "ELU", "Sigmoid", "Tanh", "SiLU", "Swish", "GELU", "Softmax", "LogSoftmax",
    "BatchNorm2d", "LayerNorm", "GroupNorm", "GroupNorm1", "LocalResponseNorm",
    "SqueezeExcite", "ChannelAttention", "SpatialAttention", "CBAM", "NonLocalBlock",
    "Dropout", "Dropout2d", "Linear", "Flatten",
    "BasicBlock", "ZeroPadShortcut", "DenseLayer", "DenseBlock",
    "CrossEntropyLoss", "MSELoss",
    "SGD", "Adam", "AdamW", "RMSprop", "StepLR", "clip_grad_norm",
    "LossScaler",
    "from_torch", "to_torch", "check_convertible",
    "manual_seed", "get_generator",
    "quant_params", "quantize", "dequantize", "fake_quantize", "binarize", "fake_quant_forward", "error_vs_bits",
    "Int8Linear", "Int8Conv2d", "int8_layer",
]
