"""feature_info against the maps the hooked modules really produce, native and small-input layouts."""

from __future__ import annotations

import pytest
import torch

from convolab.models import create_model

from ._helpers import feature_maps


@pytest.mark.parametrize("size", [64, 32])
@pytest.mark.parametrize("name,width", [("convnext_tiny", 768), ("densenet121", 1024), ("efficientnet_b0", 1280),
                                        ("googlenet", 1024)])
def test_feature_info_matches_the_maps(name, width, size):
    model = create_model(name, num_classes=5, input_size=size).eval()
    shapes, feats = feature_maps(model, torch.randn(1, 3, size, size))
    assert model.feature_info[-1]["num_chs"] == feats.shape[1] == width
    for info, shape in zip(model.feature_info, shapes):
        assert shape == (1, info["num_chs"], size // info["reduction"], size // info["reduction"]), info["module"]
