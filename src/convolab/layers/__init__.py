"""Blocks shared by the model families (timm's flat ``layers/``)."""

from convolab.layers.activation import Swish
from convolab.layers.attention import CBAM, ChannelAttention, NonLocalBlock, SpatialAttention
from convolab.layers.checkpoint import checkpoint_call, checkpoint_seq
from convolab.layers.conv import SeparableConv2d, SpatiallySeparableConv2d, TrueConv2d
from convolab.layers.conv_norm_act import ConvNormAct
from convolab.layers.drop_path import DropPath
from convolab.layers.helpers import make_divisible
from convolab.layers.norm import GroupNorm1
from convolab.layers.pooling import FractionalMaxPool2d, GlobalAvgPool2d, GlobalMaxPool2d, StochasticPool2d
from convolab.layers.squeeze_excite import SqueezeExcite

__all__ = ["ConvNormAct", "SqueezeExcite", "DropPath", "make_divisible", "checkpoint_seq", "checkpoint_call",
           "Swish", "GroupNorm1", "ChannelAttention", "SpatialAttention", "CBAM", "NonLocalBlock",
           "TrueConv2d", "SeparableConv2d", "SpatiallySeparableConv2d",
           "GlobalAvgPool2d", "GlobalMaxPool2d", "FractionalMaxPool2d", "StochasticPool2d"]
