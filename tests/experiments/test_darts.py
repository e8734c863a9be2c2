"""DARTS: the second-order architecture gradient against finite differences of the unrolled objective, partial
channels, deriving a genotype, the skip-collapse guard, and a short search on digits whose genotype trains."""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from convolab.atomic import read_jsonl
from convolab.experiments.nas.darts import (
    MixedOp,
    SkipCollapseGuard,
    SuperNet,
    channel_shuffle,
    darts_search,
    derive_genotype,
    first_order_arch_grad,
    random_cell,
    second_order_arch_grad,
    train_network,
)
from convolab.models.darts import PRIMITIVES, CellGenotype, DartsNetwork

SKIP = PRIMITIVES.index("skip_connect")


def _tiny(seed: int = 0) -> SuperNet:
    torch.manual_seed(seed)
    net = SuperNet(num_classes=3, in_chans=1, init_channels=2, layers=3, steps=2).double()
    with torch.no_grad():  # alphas away from uniform, so the gradients are not all alike
        for a in net.arch_parameters():
            a.normal_(0, 0.5)
    return net


def _unrolled_val_loss(net: SuperNet, alphas: list[torch.Tensor], batches, xi: float) -> float:
    """L_val(w - xi grad_w L_train(w, alpha), alpha), written with torch.func (independent of the in-place
    implementation under test)."""
    (xt, yt), (xv, yv) = batches
    names = ["alphas_normal", "alphas_reduce"]
    weights = {n: p.detach().clone().requires_grad_(True) for n, p in net.named_parameters() if n not in names}
    arch = dict(zip(names, alphas))
    loss = F.cross_entropy(functional_call(net, {**weights, **arch}, (xt,)), yt)
    grads = torch.autograd.grad(loss, list(weights.values()), allow_unused=True)
    unrolled = {n: w.detach() - xi * (0 if g is None else g) for (n, w), g in zip(weights.items(), grads)}
    with torch.no_grad():
        return float(F.cross_entropy(functional_call(net, {**unrolled, **arch}, (xv,)), yv))


@pytest.mark.slow  # (about 10 s: float64 supernet forwards on a busy CPU)
def test_second_order_gradient_matches_finite_differences():
    """Against central differences of the unrolled objective itself, in float64, with a small step for the
    Hessian-vector product (the paper's 0.01 / |v| is too coarse on a network this tiny: see the docstring)."""
    net = _tiny()
    torch.manual_seed(1)
    batches = [(torch.randn(6, 1, 8, 8, dtype=torch.float64), torch.randint(0, 3, (6,))) for _ in range(2)]
    (xt, yt), (xv, yv) = batches
    xi = 0.5
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k}
    grads = second_order_arch_grad(net, F.cross_entropy, xt, yt, xv, yv, xi, eps_scale=1e-6)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the weights were not put back"
    first = first_order_arch_grad(net, F.cross_entropy, xv, yv)
    base = [a.detach().clone() for a in net.arch_parameters()]
    gen = torch.Generator().manual_seed(2)
    h = 1e-5
    errors_second, errors_first = [], []
    for _ in range(3):  # directional derivatives along random directions of both alpha matrices
        u = [torch.randn(a.shape, generator=gen, dtype=torch.float64) for a in base]
        plus = _unrolled_val_loss(net, [a + h * d for a, d in zip(base, u)], batches, xi)
        minus = _unrolled_val_loss(net, [a - h * d for a, d in zip(base, u)], batches, xi)
        numeric = (plus - minus) / (2 * h)
        analytic = sum(float((g * d).sum()) for g, d in zip(grads, u))
        analytic_first = sum(float((g * d).sum()) for g, d in zip(first, u))
        errors_second.append(abs(analytic - numeric) / max(abs(numeric), 1e-8))
        errors_first.append(abs(analytic_first - numeric) / max(abs(numeric), 1e-8))
    assert max(errors_second) < 1e-3, errors_second
    assert min(errors_first) > 10 * max(errors_second), (errors_first, errors_second)  # the unrolling matters here


def test_partial_channels_bypass_the_operations():
    torch.manual_seed(0)
    op = MixedOp(8, 1, partial_channels=4)
    x = torch.randn(2, 8, 5, 5)
    out = op(x, torch.zeros(len(PRIMITIVES)))  # every operation weighted 0: only the bypass is left
    assert out.shape == x.shape
    unshuffled = channel_shuffle(out, 8 // 4)  # shuffling with C/g groups undoes shuffling with g
    assert torch.equal(unshuffled[:, 2:], x[:, 2:]) and torch.equal(unshuffled[:, :2], torch.zeros(2, 2, 5, 5))
    reduced = MixedOp(8, 2, partial_channels=2)(x, torch.softmax(torch.randn(len(PRIMITIVES)), 0))
    assert reduced.shape == (2, 8, 3, 3)
    assert sum(p.numel() for p in MixedOp(8, 1, 4).parameters()) * 4 < sum(p.numel() for p in
                                                                           MixedOp(8, 1, 1).parameters())


def test_derive_takes_the_top_two_inputs_and_never_none():
    alphas = torch.zeros(5, len(PRIMITIVES))  # 2 nodes: edges (s0, s1) then (s0, s1, n0)
    alphas[0, PRIMITIVES.index("none")] = 9  # the strongest weight of all: never chosen
    alphas[0, PRIMITIVES.index("sep_conv_3x3")] = 2
    alphas[1, PRIMITIVES.index("max_pool_3x3")] = 3
    alphas[2, PRIMITIVES.index("dil_conv_5x5")] = 1
    alphas[3, SKIP] = 4
    alphas[4, PRIMITIVES.index("avg_pool_3x3")] = 5
    assert derive_genotype(alphas, 2) == (("sep_conv_3x3", 0), ("max_pool_3x3", 1),
                                          ("skip_connect", 1), ("avg_pool_3x3", 2))


def test_genotype_round_trips_and_bad_ones_are_refused():
    g = CellGenotype((("sep_conv_3x3", 0), ("skip_connect", 1)), (("max_pool_3x3", 0), ("dil_conv_3x3", 1)),
                     (2,), (2,))
    assert CellGenotype.from_dict(json.dumps(g.to_dict())) == g
    with pytest.raises(ValueError, match="node 0 reads state 2"):
        CellGenotype((("sep_conv_3x3", 2), ("skip_connect", 1)), g.reduce, (2,), (2,))
    with pytest.raises(ValueError, match="unknown operation 'none'"):
        CellGenotype((("none", 0), ("skip_connect", 1)), g.reduce, (2,), (2,))


def test_derived_network_shapes():
    g = CellGenotype((("sep_conv_3x3", 0), ("skip_connect", 1), ("dil_conv_5x5", 2), ("avg_pool_3x3", 0)),
                     (("max_pool_3x3", 0), ("skip_connect", 1), ("sep_conv_5x5", 2), ("max_pool_3x3", 1)),
                     (2, 3), (2, 3))
    net = DartsNetwork(g, num_classes=5, in_chans=1, input_size=(9, 9), init_channels=4, layers=3)
    assert net(torch.randn(2, 1, 9, 9)).shape == (2, 5)
    assert net.forward_features(torch.randn(2, 1, 9, 9)).shape == (2, 2 * 16, 3, 3)  # 9 -> 5 -> 3, C 4 -> 8 -> 16


def test_guard_stops_on_the_second_skip_and_keeps_the_genotype_before():
    normal_ok = (("sep_conv_3x3", 0), ("skip_connect", 1), ("sep_conv_3x3", 0), ("dil_conv_3x3", 2))
    normal_collapsed = (("skip_connect", 0), ("skip_connect", 1), ("sep_conv_3x3", 0), ("dil_conv_3x3", 2))
    reduce = (("max_pool_3x3", 0), ("max_pool_3x3", 1), ("max_pool_3x3", 0), ("max_pool_3x3", 2))
    genotypes = [CellGenotype(n, reduce, (2, 3), (2, 3)) for n in (normal_ok, normal_collapsed)]
    guard = SkipCollapseGuard(max_skips=2)
    trainer = SimpleNamespace(stop_reason=None, model=SimpleNamespace(genotype=lambda: genotypes[0]))
    guard.on_epoch_end(trainer, {"epoch": 1}, None)
    assert trainer.stop_reason is None
    trainer.model.genotype = lambda: genotypes[1]
    row = {"epoch": 2}
    guard.on_epoch_end(trainer, row, None)
    assert "collapse" in trainer.stop_reason and row["normal_skips"] == 2
    assert guard.result == genotypes[0]
    restored = SkipCollapseGuard()
    fresh = SimpleNamespace(stop_reason=None)
    restored.load_state_dict(guard.state_dict(), fresh)
    assert restored.result == genotypes[0] and fresh.stop_reason == trainer.stop_reason


def _search_config(digits_config, out, **overrides):
    recipe = dict(model="darts_supernet", epochs=1, batch_size=512, optimizer="sgd", lr=0.05, plots=False,
                  precision="32")
    return digits_config(out, **{**recipe, **overrides})


@pytest.mark.slow
def test_random_cells_cover_the_derivable_space():
    """random_cell draws what derive_genotype can give (two different earlier states per node, never none), with
    every operation and input position reached, deterministically per seed."""
    import random

    rng = random.Random(0)
    cells = [random_cell(rng, steps=3) for _ in range(300)]
    ops, sources = set(), set()
    for c in cells:
        for edges in (c.normal, c.reduce):
            for node in range(3):
                (op_a, a), (op_b, b) = edges[2 * node], edges[2 * node + 1]
                assert a != b and 0 <= a < 2 + node and 0 <= b < 2 + node
                ops |= {op_a, op_b}
                sources |= {(node, a), (node, b)}
        assert c.normal_concat == c.reduce_concat == (2, 3, 4)
    assert ops == set(PRIMITIVES) - {"none"}
    assert sources == {(n, s) for n in range(3) for s in range(2 + n)}
    assert random_cell(random.Random(5)) == random_cell(random.Random(5))
    DartsNetwork(cells[0], num_classes=10, in_chans=1, input_size=(8, 8), init_channels=4, layers=3)


def test_search_reads_the_data_settings_the_config_gives(digits_config, tmp_path):
    """--image-size reaches the supernet's data as it reaches train's (it was once dropped)."""
    from convolab.experiments.nas.darts import _load

    config = _search_config(digits_config, tmp_path / "s")
    assert tuple(_load(config).input_size) == (1, 8, 8)
    assert len(_load(replace(config, train_size=100)).train) == 100  # --train-size too
    with pytest.raises(ValueError, match=r"image_size \(12, 12\): the digits images are 8x8"):
        _load(replace(config, image_size=[12, 12]))  # (the loader's own answer: it was given the size)


def test_forced_skip_collapse_stops_a_real_search(digits_config, tmp_path):
    torch.manual_seed(0)
    net = SuperNet(num_classes=10, in_chans=1, init_channels=2, layers=3, steps=2)
    with torch.no_grad():
        net.alphas_normal[:, SKIP] = 10.0  # forced: skip connections everywhere in the normal cell
    result = darts_search(_search_config(digits_config, tmp_path / "search", epochs=3),
                          model=net, arch_lr=0.0, arch_weight_decay=0.0)
    assert result.stop_reason and "collapse" in result.stop_reason
    assert [r["epoch"] for r in read_jsonl(tmp_path / "search" / "metrics.jsonl")] == [1]
    assert result.genotype.skip_count("normal") == 4  # (no epoch before the first: its genotype is kept)
    assert result.summary["stop_reason"] == result.stop_reason


@pytest.mark.slow
@pytest.mark.parametrize("order,partial", [(1, 1), (2, 2)])
def test_short_search_on_digits_derives_a_genotype_that_trains(digits_config, tmp_path, order, partial):
    torch.manual_seed(0)
    net = SuperNet(num_classes=10, in_chans=1, init_channels=2, layers=3, steps=2, partial_channels=partial)
    start = [a.detach().clone() for a in net.arch_parameters()]
    result = darts_search(_search_config(digits_config, tmp_path / "search"), model=net, order=order,
                          max_skips=None, arch_lr=3e-3)
    assert not torch.equal(net.alphas_normal.detach(), start[0]), "the architecture weights never moved"
    saved = json.loads((tmp_path / "search" / "genotype.json").read_text())
    assert CellGenotype.from_dict(saved["genotype"]) == result.genotype == net.genotype()
    trained = train_network(result.genotype, digits_config(tmp_path / "train", epochs=3, plots=False,
                                                           model="darts_net", precision="32"),
                            init_channels=8, layers=3)
    assert trained.summary["test_accuracy"] > 0.6  # 10 classes: chance is 0.1
    config = json.loads((tmp_path / "train" / "config.json").read_text())
    assert CellGenotype.from_dict(config["build"]["kwargs"]["genotype"]) == result.genotype


@pytest.mark.parametrize("capability,enabled", [("AVX2", False), ("AVX512", True), ("DEFAULT", True)])
def test_the_search_turns_onednn_off_only_on_avx2_cpus(monkeypatch, capability, enabled):
    from convolab.experiments.nas import darts as darts_module

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    before = torch.backends.mkldnn.enabled
    with darts_module._safe_cpu_convolutions():
        assert torch.backends.mkldnn.enabled is (enabled and before)
    assert torch.backends.mkldnn.enabled is before
