"""The macro search space: genotypes build through the spec grammar, validity agrees with the builder, mutation
changes one gene, MACs agree with torch's flop counter."""

from __future__ import annotations

import json
import random

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from convolab.experiments.nas.space import Genotype, MacroSpace, Stage, count_macs, macs
from convolab.models import create_model
from convolab.models.spec import SpecError


def _diff(a: Genotype, b: Genotype) -> int:
    n = int(a.bn != b.bn) + int(a.head != b.head)
    for sa, sb in zip(a.stages, b.stages):
        n += sum(getattr(sa, g) != getattr(sb, g) for g in ("depth", "width", "kernel", "down", "act"))
    return n


def test_samples_build_and_run_with_the_spec_builder():
    space = MacroSpace((1, 12, 12), num_stages=3)
    rng = random.Random(0)
    for _ in range(8):
        g = space.sample(rng)
        assert space.is_valid(g)
        model = create_model(g.to_spec(), num_classes=7, in_chans=1, input_size=(12, 12))
        assert model(torch.zeros(2, 1, 12, 12)).shape == (2, 7)


def test_validity_agrees_with_the_spec_builder():
    """Every genotype (valid or not) drawn without the filter: is_valid is True exactly when the builder, which runs
    each layer on a real input, accepts it -- for pools; a stride on a 1x1 map the space refuses on purpose."""
    space = MacroSpace((1, 8, 8), num_stages=4, downs=("max", "avg", "none"), depths=(1,), widths=(4,), kernels=(3,))
    rng = random.Random(1)
    seen = {True: 0, False: 0}
    for _ in range(60):
        g = Genotype(tuple(space._stage(rng) for _ in range(4)), rng.choice((True, False)))
        valid = space.is_valid(g)
        seen[valid] += 1
        try:
            create_model(g.to_spec(), num_classes=3, in_chans=1, input_size=(8, 8))
            built = True
        except SpecError:
            built = False
        assert built == valid, g
    assert seen[True] and seen[False]


def test_strided_stage_output_size_matches_the_network():
    g = Genotype((Stage(2, 4, 5, "stride", "relu"), Stage(1, 4, 3, "stride", "silu")), bn=False)
    model = create_model(g.to_spec(), num_classes=3, in_chans=1, input_size=(7, 7))
    assert model.forward_features(torch.zeros(1, 1, 7, 7)).shape[-2:] == (2, 2)  # 7 -> 4 -> 2 (rounding up)


def test_genotype_round_trips_through_json():
    g = MacroSpace().sample(random.Random(3))
    assert Genotype.from_dict(json.loads(json.dumps(g.to_dict()))) == g
    with pytest.raises(ValueError, match="not a macro genotype"):
        Genotype.from_dict({"stages": [{"depth": 1}]})


def test_mutation_changes_exactly_one_gene_and_stays_valid():
    space = MacroSpace((1, 8, 8), num_stages=3)
    rng = random.Random(2)
    g = space.sample(rng)
    for _ in range(100):
        child = space.mutate(g, rng)
        assert _diff(g, child) == 1 and space.is_valid(child)
        g = child


def test_sampling_is_deterministic_with_a_seed():
    space = MacroSpace()
    a = [space.sample(random.Random(5)) for _ in range(3)]
    assert a[0] == a[1] == a[2]


def test_space_without_a_valid_architecture_names_the_collapsing_stage():
    with pytest.raises(ValueError) as e:
        MacroSpace((1, 8, 8), num_stages=4, downs=("max", "avg"))
    text = str(e.value)
    assert "\n" not in text and "stage 4" in text and "1x1" in text
    MacroSpace((1, 8, 8), num_stages=3, downs=("max", "avg"))  # 8 -> 4 -> 2 -> 1: valid
    MacroSpace((1, 8, 8), num_stages=5, downs=("max", "none"))


def test_bad_choices_are_refused():
    with pytest.raises(ValueError, match="odd"):
        MacroSpace(kernels=(2,))
    with pytest.raises(ValueError, match="unknown activation"):
        MacroSpace(acts=("swishy",))


def test_macs_match_torch_flop_counter():
    space = MacroSpace((3, 16, 16))
    rng = random.Random(4)
    for _ in range(5):
        g = space.sample(rng)
        model = create_model(g.to_spec(), num_classes=10, in_chans=3, input_size=(16, 16)).eval()
        with FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 3, 16, 16))
        assert macs(g, (3, 16, 16)) == counter.get_total_flops() // 2


def test_macs_by_hand():
    # conv 1->4, 3x3 on 8x8 (same): 8*8*4*9 = 2304; max-pool; gap; fc 4->10: 40
    g = Genotype((Stage(1, 4, 3, "max", "relu"),), bn=False)
    assert macs(g, (1, 8, 8)) == 2304 + 40


def test_count_macs_equals_the_summary_count():
    """The fast count (no network built) against convolab.analysis's count of the built network, over samples of
    every downsampling and kernel, on odd sizes where a stride rounds up and a pool down."""
    for shape in ((1, 28, 28), (3, 13, 17)):
        space = MacroSpace(shape, num_stages=3, num_classes=7)
        rng = random.Random(5)
        for _ in range(12):
            g = space.sample(rng)
            assert count_macs(g, shape, 7) == macs(g, shape, num_classes=7), g.to_spec()


def test_max_macs_bounds_every_sample_and_mutation():
    cap = 400_000
    space = MacroSpace((1, 28, 28), max_macs=cap)
    free = MacroSpace((1, 28, 28))
    rng = random.Random(2)
    drawn = [space.sample(rng) for _ in range(40)]
    assert all(count_macs(g, (1, 28, 28)) <= cap for g in drawn)
    assert all(count_macs(space.mutate(g, rng), (1, 28, 28)) <= cap for g in drawn)
    # the cap is what excludes: the unconstrained space draws over it
    assert any(count_macs(free.sample(rng), (1, 28, 28)) > cap for _ in range(40))
    over = next(g for g in iter(lambda: free.sample(rng), None) if count_macs(g, (1, 28, 28)) > cap)
    assert free.is_valid(over) and not space.is_valid(over)


def test_cheapest_is_the_minimum_and_a_cap_below_it_is_one_line():
    space = MacroSpace((1, 16, 16), num_stages=2, depths=(1, 2), widths=(4, 8), kernels=(3, 5))
    everything = [Genotype((Stage(d1, w1, k1, x1, "relu"), Stage(d2, w2, k2, x2, "relu")), True)
                  for d1 in (1, 2) for w1 in (4, 8) for k1 in (3, 5) for x1 in space.downs
                  for d2 in (1, 2) for w2 in (4, 8) for k2 in (3, 5) for x2 in space.downs]
    lowest = min(count_macs(g, (1, 16, 16)) for g in everything if space.is_valid(g))
    assert count_macs(space.cheapest(), (1, 16, 16)) == lowest
    with pytest.raises(ValueError, match=f"no architecture of at most {lowest - 1:,} MACs: the cheapest needs "
                                         f"{lowest:,}"):
        MacroSpace((1, 16, 16), num_stages=2, depths=(1, 2), widths=(4, 8), kernels=(3, 5), max_macs=lowest - 1)
    MacroSpace((1, 16, 16), num_stages=2, depths=(1, 2), widths=(4, 8), kernels=(3, 5), max_macs=lowest)


def test_the_fc_head_is_the_tutorials_and_counted():
    """head='fc': flatten, a hidden layer of HIDDEN units with the last stage's activation, then the classifier the
    spec builder adds; its MACs by hand and by the summary."""
    from convolab.experiments.nas.space import HIDDEN

    g = Genotype((Stage(1, 16, 3, "max", "relu"), Stage(1, 32, 3, "max", "gelu")), True, "fc")
    assert g.to_spec().endswith(f"maxpool(2),flatten,fc({HIDDEN}),gelu")
    model = create_model(g.to_spec(), num_classes=10, in_chans=1, input_size=(28, 28))
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(32 * 7 * 7, HIDDEN), (HIDDEN, 10)]
    by_hand = 28 * 28 * 16 * 9 + 14 * 14 * 32 * 16 * 9 + 32 * 7 * 7 * HIDDEN + HIDDEN * 10
    assert count_macs(g, (1, 28, 28)) == macs(g, (1, 28, 28)) == by_hand
    assert Genotype.from_dict(json.loads(json.dumps(g.to_dict()))) == g
    assert Genotype.from_dict({"stages": g.to_dict()["stages"]}).head == "gap"  # records from before the gene
