"""DeviceLoader: batches, order and normalisation, against the textbook ``(x / 255 - mean) / std``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convolab.data import DeviceLoader, Split
from convolab.data.loader import Normalizer

MEAN, STD = (0.2, 0.5, 0.7), (0.3, 0.25, 0.1)


def make_split(n: int, channels: int = 3, seed: int = 0) -> Split:
    """Random images; the label of sample i is i, so a batch's labels say which samples it holds."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, 5, 4), dtype=torch.uint8, generator=g)
    return Split(images, torch.arange(n))


def epoch(loader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("shuffle", [False, True])
def test_normalisation_matches_reference(channels, shuffle):
    split = make_split(37, channels)
    mean, std = MEAN[:channels], STD[:channels]
    x, y = epoch(DeviceLoader(split, 8, mean=mean, std=std, shuffle=shuffle))
    assert x.dtype == torch.float32 and x.shape == (37, channels, 5, 4)
    raw = split.images.numpy()[y.numpy()].astype(np.float64)  # the samples in the order served
    ref = (raw / 255 - np.asarray(mean).reshape(1, -1, 1, 1)) / np.asarray(std).reshape(1, -1, 1, 1)
    np.testing.assert_allclose(x.numpy(), ref, rtol=0, atol=1e-5)


def test_normalizer_on_extremes():
    norm = Normalizer([0.5], [0.25])
    out = norm(torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1)).flatten().tolist()
    assert out == pytest.approx([-2.0, 2.0], abs=1e-6)


@pytest.mark.parametrize("n,batch_size,sizes", [(37, 8, [8, 8, 8, 8, 5]), (32, 8, [8, 8, 8, 8]), (3, 10, [3]),
                                                (5, 1, [1] * 5)])
def test_batch_count_and_last_partial_batch(n, batch_size, sizes):
    loader = DeviceLoader(make_split(n), batch_size, mean=MEAN, std=STD)
    assert len(loader) == len(sizes) and loader.num_samples == n
    batches = list(loader)
    assert [len(x) for x, _ in batches] == sizes
    assert [len(y) for _, y in batches] == sizes


def test_unshuffled_order_is_the_split_order():
    _, y = epoch(DeviceLoader(make_split(20), 6, mean=MEAN, std=STD))
    assert y.tolist() == list(range(20))


def test_shuffle_is_a_permutation_each_epoch_and_changes_between_epochs():
    loader = DeviceLoader(make_split(37), 8, mean=MEAN, std=STD, shuffle=True, seed=1)
    orders = [epoch(loader)[1].tolist() for _ in range(3)]
    for order in orders:
        assert sorted(order) == list(range(37))
    assert orders[0] != list(range(37))
    assert orders[0] != orders[1] and orders[1] != orders[2]


def test_same_seed_same_order_other_seed_other_order():
    def orders(seed):
        loader = DeviceLoader(make_split(37), 8, mean=MEAN, std=STD, shuffle=True, seed=seed)
        return [epoch(loader)[1].tolist() for _ in range(2)]

    assert orders(5) == orders(5)
    assert orders(5) != orders(6)


def test_images_travel_with_their_labels():
    split = make_split(23)
    loader = DeviceLoader(split, 4, mean=(0.0, 0.0, 0.0), std=(1 / 255,) * 3, shuffle=True)  # x -> x exactly
    for x, y in loader:
        torch.testing.assert_close(x, split.images[y].float(), rtol=0, atol=1e-4)


@pytest.mark.parametrize("channels_last", [False, True])
def test_channels_last_flag(channels_last):
    loader = DeviceLoader(make_split(10), 4, mean=MEAN, std=STD, channels_last=channels_last)
    for x, _ in loader:
        assert x.is_contiguous(memory_format=torch.channels_last) == channels_last
        assert x.is_contiguous() == (not channels_last)
    x_cl, _ = next(iter(loader))
    x_ref, _ = next(iter(DeviceLoader(make_split(10), 4, mean=MEAN, std=STD)))
    torch.testing.assert_close(x_cl, x_ref, rtol=0, atol=0)  # same values, other layout


def test_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size"):
        DeviceLoader(make_split(3), 0, mean=MEAN, std=STD)
