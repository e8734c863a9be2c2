"""stratified_split: property tests with hypothesis."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from convolab.data.split import stratified_split

labels_st = st.lists(st.integers(0, 6), min_size=0, max_size=120)
fraction_st = st.floats(0.0, 0.95, allow_nan=False)
seed_st = st.integers(0, 2**32 - 1)


@settings(max_examples=200, deadline=None)
@given(labels=labels_st, fraction=fraction_st, seed=seed_st)
def test_partition_sorted_and_stratified(labels, fraction, seed):
    y = np.asarray(labels, np.int64)
    keep, held = stratified_split(torch.from_numpy(y), fraction, seed=seed)
    assert keep.dtype.kind == "i" and held.dtype.kind == "i"
    # disjoint and covering: every index exactly once
    assert sorted(np.concatenate([keep, held]).tolist()) == list(range(len(y)))
    assert np.all(np.diff(keep) > 0) and np.all(np.diff(held) > 0)  # sorted, no repeats
    for c in set(labels):
        n_c = labels.count(c)
        expected = round(fraction * n_c)
        if fraction > 0 and expected == 0 and n_c >= 2:
            expected = 1
        assert int((y[held] == c).sum()) == expected, (c, n_c)


@settings(max_examples=50, deadline=None)
@given(labels=labels_st, fraction=fraction_st, seed=seed_st)
def test_deterministic_in_seed_and_input_type(labels, fraction, seed):
    y = np.asarray(labels, np.int64)
    a = stratified_split(torch.from_numpy(y), fraction, seed=seed)
    b = stratified_split(torch.from_numpy(y.copy()), fraction, seed=seed)
    c = stratified_split(y, fraction, seed=seed)
    for x, z in zip(a, b):
        np.testing.assert_array_equal(x, z)
    for x, z in zip(a, c):
        np.testing.assert_array_equal(x, z)


def test_different_seeds_differ():
    y = torch.arange(1000) % 5
    assert not np.array_equal(stratified_split(y, 0.2, seed=0)[1], stratified_split(y, 0.2, seed=1)[1])


def test_zero_fraction_holds_nothing_out():
    keep, held = stratified_split(torch.tensor([0, 0, 1, 1, 1]), 0.0)
    assert keep.tolist() == [0, 1, 2, 3, 4] and held.tolist() == []


def test_singleton_class_stays_in_keep():
    keep, held = stratified_split(torch.tensor([0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]), 0.1)
    assert 0 in keep.tolist() and len(held) == 1


@pytest.mark.parametrize("fraction", [-0.01, 1.0, 2.0])
def test_bad_fraction(fraction):
    with pytest.raises(ValueError, match="fraction"):
        stratified_split(torch.tensor([0, 1]), fraction)
