"""Size formulas: the tutorials' worked examples, and the shapes real torch layers produce."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from convolab.analysis.formulas import conv_output_size, pool_output_size


@pytest.mark.parametrize("args,kwargs,expected", [
    ((28, 3), dict(padding=1), 28),  # "same" 3x3 convolution of the tutorial CNN
    ((32, 5), {}, 28),  # LeNet-5's C1 on a 32x32 input
    ((28, 5), dict(padding=2), 28),  # LeNet-5 on MNIST's 28x28
    ((227, 11), dict(stride=4), 55),  # AlexNet conv1
    ((55, 3), dict(stride=2), 27),  # AlexNet's overlapping max-pool, written as a window
    ((224, 7), dict(stride=2, padding=3), 112),  # ResNet stem
    ((28, 3), dict(dilation=2), 24),  # dilated 3x3 spans 5
    ((5, 3), dict(padding=0), 3),
    ((2, 3), {}, 0),  # the window does not fit: the documented non-positive answer
])
def test_conv_hand_examples(args, kwargs, expected):
    assert conv_output_size(*args, **kwargs) == expected


@pytest.mark.parametrize("args,kwargs,expected", [
    ((28, 2), {}, 14),  # 2x2 max-pool halves
    ((14, 2), {}, 7),
    ((7, 2), {}, 3),  # floor
    ((7, 2), dict(ceil_mode=True), 4),  # ceil
    ((55, 3), dict(stride=2), 27),  # AlexNet
    ((112, 3), dict(stride=2, padding=1), 56),  # ResNet stem pool
    ((6, 2), dict(stride=2, padding=1, ceil_mode=True), 4),  # last window would start in the right padding: dropped
])
def test_pool_hand_examples(args, kwargs, expected):
    assert pool_output_size(*args, **kwargs) == expected


@pytest.mark.parametrize("kwargs", [dict(kernel_size=0), dict(kernel_size=3, stride=0), dict(kernel_size=3, padding=-1),
                                    dict(kernel_size=3, dilation=0)])
def test_invalid_window(kwargs):
    with pytest.raises(ValueError):
        conv_output_size(10, **kwargs)


dim = st.fixed_dictionaries({"n": st.integers(1, 40), "k": st.integers(1, 7), "s": st.integers(1, 4),
                             "p": st.integers(0, 4), "d": st.integers(1, 3)})


@settings(max_examples=150, deadline=None)
@given(h=dim, w=dim)
def test_conv_matches_torch_conv2d(h, w):
    conv = nn.Conv2d(1, 1, (h["k"], w["k"]), stride=(h["s"], w["s"]), padding=(h["p"], w["p"]),
                     dilation=(h["d"], w["d"]), bias=False)
    expected = (conv_output_size(h["n"], h["k"], h["s"], h["p"], h["d"]),
                conv_output_size(w["n"], w["k"], w["s"], w["p"], w["d"]))
    try:
        with torch.no_grad():
            shape = tuple(conv(torch.zeros(1, 1, h["n"], w["n"])).shape[2:])
    except RuntimeError:
        # torch refuses a window larger than the padded input; the formula must then say "no output"
        assert min(expected) <= 0, expected
        return
    assert shape == expected


@settings(max_examples=200, deadline=None)
@given(h=dim, w=dim, ceil_mode=st.booleans(), default_stride=st.booleans())
def test_pool_matches_torch_maxpool2d(h, w, ceil_mode, default_stride):
    for p in (h, w):
        p["p"] = min(p["p"], p["k"] // 2)  # torch: padding at most half the kernel size
    stride = None if default_stride else (h["s"], w["s"])
    pool = nn.MaxPool2d((h["k"], w["k"]), stride=stride, padding=(h["p"], w["p"]), dilation=(h["d"], w["d"]),
                        ceil_mode=ceil_mode)
    expected = tuple(pool_output_size(p["n"], p["k"], None if default_stride else p["s"], p["p"], p["d"], ceil_mode)
                     for p in (h, w))
    try:
        shape = tuple(pool(torch.zeros(1, 1, h["n"], w["n"])).shape[2:])
    except RuntimeError:
        assert min(expected) <= 0, expected  # torch: "Output size is too small"
        return
    assert shape == expected
