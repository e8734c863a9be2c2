"""experiments.equivariance: the per-layer figures against direct computations with torch."""

import pytest
import torch
from torch import nn

from convolab.experiments.equivariance import _shift_pixels, format_equivariance, measure_equivariance


class Net(nn.Module):
    """conv (padded) -> ReLU -> 2x2 max-pool -> global average -> linear."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    raw = torch.zeros(6, 1, 16, 16, dtype=torch.uint8)
    raw[:, :, 4:12, 4:12] = torch.randint(1, 256, (6, 1, 8, 8), generator=g, dtype=torch.uint8)  # background 0
    return raw


def test_shift_brings_in_background():
    x = torch.arange(1, 6, dtype=torch.uint8).view(1, 1, 1, 5)
    assert _shift_pixels(x, 2).flatten().tolist() == [0, 0, 1, 2, 3]


def test_convolution_is_equivariant_and_the_change_matches_a_direct_computation(images):
    net = Net().eval()
    result = measure_equivariance(net, images, [0.2], [0.3], shifts=(1, 2))
    conv, relu, pool = result.layers
    assert (conv.name, conv.stride, pool.stride) == ("features.0", 1, 2)
    # a convolution computes the same products on shifted pixels: zero error away from the borders
    assert conv.equivariance[1] < 1e-6 and conv.equivariance[2] < 1e-6 and relu.equivariance[1] < 1e-6
    assert 2 in pool.equivariance and 1 not in pool.equivariance  # a 1-pixel shift is not a pooled-grid shift
    assert pool.equivariance[2] < 1e-6
    # the change at 1 px of conv, directly: interior columns whose 3-pixel field avoids column 0 and the padding
    x = (images.float() / 255 - 0.2) / 0.3
    xs = (_shift_pixels(images, 1).float() / 255 - 0.2) / 0.3
    with torch.no_grad():
        a, b = net.features[0](x), net.features[0](xs)
    cols = torch.arange(2, 15)  # lo = i-1 >= 1 (the strip brought in is column 0), hi = i+1 <= 15
    want = (b[..., cols] - a[..., cols]).norm() / a[..., cols].norm()
    assert conv.change[1] == pytest.approx(want.item(), rel=1e-5)
    # and the logits: relative change and agreement, directly
    with torch.no_grad():
        la, lb = net(x), net(xs)
    assert result.logits_change[1] == pytest.approx(((lb - la).norm() / la.norm()).item(), rel=1e-5)
    assert result.same_prediction[1] == (la.argmax(1) == lb.argmax(1)).float().mean().item()


def test_a_layer_that_is_not_equivariant_is_caught(images):
    class Positional(nn.Module):  # adds a different value at every column: breaks equivariance
        def forward(self, x):
            return x + torch.arange(x.shape[-1], dtype=x.dtype, device=x.device)

    net = Net()
    net.features = nn.Sequential(net.features[0], Positional(), net.features[1], net.features[2])
    result = measure_equivariance(net.eval(), images, [0.2], [0.3], shifts=(1,))
    by_name = {r.name: r for r in result.layers}
    assert by_name["features.0"].equivariance[1] < 1e-6
    assert by_name["features.1"].equivariance[1] > 1e-2


def test_table_and_bad_shifts(images):
    result = measure_equivariance(Net(), images, [0.2], [0.3], shifts=(2,))
    text = format_equivariance(result)
    assert "features.0" in text and "same prediction" in text
    with pytest.raises(ValueError, match="shifts must be between 1 and 15"):
        measure_equivariance(Net(), images, [0.2], [0.3], shifts=(16,))
