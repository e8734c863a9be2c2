"""MC dropout and calibration (``convolab.explain.uncertainty``) against hand computations and float64 references
written here from the definitions, vectorised differently (loops over bins and passes in NumPy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from convolab.explain.uncertainty import (
    ECE_BINS,
    calibration,
    check_dropout,
    dropout_layers,
    expected_calibration_error,
    mc_dropout,
    mc_dropout_batches,
)


# -- references, from the definitions -------------------------------------------------------------
def ece_reference(probs: np.ndarray, labels: np.ndarray, bins: int) -> tuple[float, list[int], list[float],
                                                                               list[float]]:
    """ECE by a loop over the bins B_1 = [0, 1/M], B_m = ((m-1)/M, m/M], each bin's members found by comparing
    the confidence with the bin's edges: (ece, counts, accuracy, confidence) (NaN for an empty bin)."""
    conf = probs.max(1)
    right = probs.argmax(1) == labels
    n = len(labels)
    ece, counts, accs, confs = 0.0, [], [], []
    for m in range(1, bins + 1):
        lo, hi = (m - 1) / bins, m / bins
        member = (conf <= hi) & ((conf > lo) if m > 1 else (conf >= lo))
        counts.append(int(member.sum()))
        if not member.any():
            accs.append(math.nan)
            confs.append(math.nan)
            continue
        acc, mean_conf = float(right[member].mean()), float(conf[member].mean())
        accs.append(acc)
        confs.append(mean_conf)
        ece += member.sum() / n * abs(acc - mean_conf)
    return float(ece), counts, accs, confs


def random_probs(n: int, k: int, seed: int, sharpness: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = np.random.default_rng(seed)
    p = g.dirichlet(np.full(k, sharpness), size=n)
    y = np.array([g.choice(k, p=row) for row in p])  # labels drawn from the probabilities: nearly calibrated
    return torch.from_numpy(p), torch.from_numpy(y)


# -- calibration ---------------------------------------------------------------------------------
def test_ece_by_hand():
    """Four predictions, 5 bins ([0, .2], (.2, .4], (.4, .6], (.6, .8], (.8, 1]):
    confidences .9 (right), .85 (wrong) -> bin 5: acc .5, conf .875, |.375| * 2/4;
    .5 (right) -> bin 3: acc 1, conf .5, |.5| * 1/4; .7 (right) -> bin 4: acc 1, conf .7, |.3| * 1/4.
    ECE = .1875 + .125 + .075 = .3875."""
    p = torch.tensor([[0.9, 0.1], [0.15, 0.85], [0.5, 0.5], [0.3, 0.7]], dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1])  # row 3: a tie, argmax takes the first class (0): right
    cal = calibration(p, y, bins=5)
    assert cal.ece == pytest.approx(0.3875, abs=1e-15)
    assert cal.counts.tolist() == [0, 0, 1, 1, 2]
    assert cal.accuracy.tolist()[2:] == [1.0, 1.0, 0.5] and math.isnan(cal.accuracy[0])
    assert cal.confidence.tolist()[2:] == pytest.approx([0.5, 0.7, 0.875], abs=1e-15)
    assert (cal.n, cal.accuracy_all, cal.confidence_all) == (4, 0.75, pytest.approx(0.7375, abs=1e-15))
    assert cal.edges.tolist() == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])


def test_a_confidence_on_an_edge_goes_to_the_lower_bin():
    """B_m = ((m-1)/M, m/M]: confidence exactly 0.5 with 2 bins is in the first one, [0, 0.5]."""
    p = torch.tensor([[0.5, 0.5], [0.25, 0.75], [1.0, 0.0]], dtype=torch.float64)
    cal = calibration(p, torch.tensor([1, 1, 0]), bins=2)
    assert cal.counts.tolist() == [1, 2]
    assert cal.ece == pytest.approx(1 / 3 * 0.5 + 2 / 3 * abs(1 - 0.875), abs=1e-15)


@pytest.mark.parametrize("seed", range(12))
def test_ece_equals_the_loop_over_bins(seed):
    g = np.random.default_rng(100 + seed)
    n, k, bins = int(g.integers(1, 400)), int(g.integers(2, 12)), int(g.integers(1, 25))
    p, y = random_probs(n, k, seed, sharpness=float(g.choice([0.1, 0.5, 1.0, 3.0])))
    if seed % 3 == 0:  # labels that ignore the probabilities: badly calibrated
        y = torch.from_numpy(g.integers(0, k, n))
    cal = calibration(p, y, bins=bins)
    ref, counts, accs, confs = ece_reference(p.numpy(), y.numpy(), bins)
    assert cal.ece == pytest.approx(ref, rel=1e-12, abs=1e-15)
    assert cal.counts.tolist() == counts
    np.testing.assert_allclose(cal.accuracy.numpy(), accs, rtol=1e-12)  # (NaN where empty, in both)
    np.testing.assert_allclose(cal.confidence.numpy(), confs, rtol=1e-12)
    assert int(cal.counts.sum()) == n
    assert expected_calibration_error(p.float(), y, bins) == pytest.approx(ref, rel=1e-6, abs=1e-7)  # float32 in


def test_ece_of_a_perfect_and_of_a_wrong_confident_model():
    p = torch.eye(4, dtype=torch.float64).repeat(5, 1)  # confidence 1, always right
    assert calibration(p, p.argmax(1)).ece == 0.0
    assert calibration(p, (p.argmax(1) + 1) % 4).ece == 1.0  # confidence 1, always wrong


def test_ece_of_labels_drawn_from_the_probabilities_is_small():
    """Labels sampled from the predicted distribution: calibrated in expectation, so the ECE shrinks with n."""
    p, y = random_probs(20000, 5, seed=7)
    assert calibration(p, y).ece < 0.02
    assert ECE_BINS == 15 and len(calibration(p, y).counts) == 15


@pytest.mark.parametrize("bad,needle", [
    (dict(bins=0), "at least 1"),
    (dict(labels=torch.zeros(3, dtype=torch.long)), "probabilities (n, K) and labels (n,)"),
    (dict(probabilities=torch.rand(4)), "probabilities (n, K) and labels (n,)"),
    (dict(probabilities=torch.rand(0, 3), labels=torch.zeros(0, dtype=torch.long)), "empty"),
])
def test_calibration_bad_input(bad, needle):
    args = dict(probabilities=torch.rand(4, 3).softmax(1), labels=torch.zeros(4, dtype=torch.long), bins=5) | bad
    with pytest.raises(ValueError) as e:
        calibration(**args)
    assert needle in str(e.value) and "\n" not in str(e.value)


# -- MC dropout ----------------------------------------------------------------------------------
def small_net(drop: float = 0.5, spatial: bool = False) -> nn.Module:
    """Conv -> BatchNorm (with running statistics that differ from a batch's) -> ReLU -> dropout -> linear."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                        nn.Dropout2d(drop) if spatial else nn.Identity(), nn.Flatten(), nn.Dropout(drop),
                        nn.Linear(6 * 5 * 5, 4))
    bn = net[1]
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    return net.double()


def mc_reference(net: nn.Module, x: torch.Tensor, samples: int, seed: int) -> dict[str, np.ndarray]:
    """The passes written out: torch's generator seeded, the dropout modules (only) put in training mode, one
    forward pass after another, then mean, sample std (ddof=1), entropy and mutual information in NumPy float64."""
    net.eval()
    for m in net.modules():
        if isinstance(m, (nn.Dropout, nn.Dropout2d)):
            m.train()
    torch.manual_seed(seed)
    with torch.no_grad():
        ps = np.stack([net(x).softmax(1).double().numpy() for _ in range(samples)])  # (S, N, K) float64
    net.eval()
    mean = ps.mean(0)

    def entropy(q):
        return -np.sum(np.where(q > 0, q * np.log(np.where(q > 0, q, 1)), 0), axis=-1)

    return {"probabilities": mean, "std": ps.std(0, ddof=1), "entropy": entropy(mean),
            "mutual_information": entropy(mean) - entropy(ps).mean(0)}


@pytest.mark.parametrize("spatial", [False, True], ids=["dropout", "dropout+dropout2d"])
@pytest.mark.parametrize("samples,seed", [(2, 0), (7, 3), (30, 11)])
def test_mc_dropout_equals_the_passes_written_out(samples, seed, spatial):
    net = small_net(spatial=spatial)
    x = torch.randn(9, 2, 5, 5, dtype=torch.float64)
    got = mc_dropout(net, x, samples, seed)
    ref = mc_reference(net, x, samples, seed)
    for key, value in ref.items():
        np.testing.assert_allclose(getattr(got, key).numpy(), value, rtol=1e-10, atol=1e-13, err_msg=key)
    assert got.samples == samples
    top = ref["probabilities"].argmax(1)
    np.testing.assert_allclose(got.top_std.numpy(), ref["std"][np.arange(9), top], rtol=1e-10)
    assert (got.mutual_information >= 0).all() and (got.mutual_information <= got.entropy + 1e-12).all()


def test_batchnorm_stays_in_evaluation_mode_and_nothing_is_changed():
    """BatchNorm normalises with its running statistics and they are not updated; every module's mode and the
    caller's random state come back as they were; with a dropout that keeps every unit the passes are the plain
    evaluation-mode output (BatchNorm in evaluation mode, not normalising by the batch)."""
    net = small_net()
    x = torch.randn(6, 2, 5, 5, dtype=torch.float64)
    bn = net[1]
    stats = (bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))
    net.train()
    net[2].eval()  # a mixed state, to be restored as it was
    modes = [m.training for m in net.modules()]
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    mc_dropout(net, x, 5, seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    assert [m.training for m in net.modules()] == modes
    assert torch.equal(bn.running_mean, stats[0]) and torch.equal(bn.running_var, stats[1])
    assert int(bn.num_batches_tracked) == stats[2]
    # with the dropout's rate set to a hair above 0 the passes are the eval-mode output: BatchNorm in eval mode
    net[5].p = 1e-300
    got = mc_dropout(net, x, 3, seed=0)
    with torch.no_grad():
        plain = net.eval()(x).softmax(1)
    torch.testing.assert_close(got.probabilities, plain, rtol=1e-12, atol=1e-15)
    assert float(got.std.max()) < 1e-12


def test_the_seed_fixes_the_output():
    net = small_net()
    x = torch.randn(5, 2, 5, 5, dtype=torch.float64)
    a, b, c = mc_dropout(net, x, 6, seed=4), mc_dropout(net, x, 6, seed=4), mc_dropout(net, x, 6, seed=5)
    assert torch.equal(a.probabilities, b.probabilities) and torch.equal(a.std, b.std)
    assert not torch.equal(a.probabilities, c.probabilities)
    assert float(a.std.max()) > 1e-3  # the passes differ: dropout is on


def test_batches_in_one_go_equal_mc_dropout_and_keep_the_order():
    net = small_net()
    x = torch.randn(8, 2, 5, 5, dtype=torch.float64)
    y = torch.arange(8) % 4
    one, labels = mc_dropout_batches(net, [(x, y)], 4, seed=2)
    ref = mc_dropout(net, x, 4, seed=2)
    assert torch.equal(one.probabilities, ref.probabilities) and torch.equal(labels, y)
    parts, labels = mc_dropout_batches(net, [(x[:3], y[:3]), (x[3:], y[3:])], 4, seed=2)
    assert parts.probabilities.shape == (8, 4) and torch.equal(labels, y)
    # the first batch draws the same masks as a batch of its own would
    torch.testing.assert_close(parts.probabilities[:3], mc_dropout(net, x[:3], 4, seed=2).probabilities)


def test_more_dropout_more_spread():
    x = torch.randn(64, 2, 5, 5, dtype=torch.float64)
    spread = [float(mc_dropout(small_net(drop), x, 20, seed=0).top_std.mean()) for drop in (0.05, 0.3, 0.7)]
    assert spread == sorted(spread) and spread[0] > 0


def test_refusals():
    plain = nn.Sequential(nn.Flatten(), nn.Linear(50, 3)).double()
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    for net, samples, needle in [(plain, 10, "MC dropout needs dropout layers"),
                                 (small_net(drop=0.0), 10, "MC dropout needs dropout layers"),
                                 (small_net(), 1, "at least 2")]:
        with pytest.raises(ValueError) as e:
            mc_dropout(net, x, samples)
        assert needle in str(e.value) and "\n" not in str(e.value)
    seg = nn.Sequential(nn.Conv2d(2, 3, 1), nn.Dropout(0.5)).double()  # scores per pixel: not a classifier
    with pytest.raises(ValueError, match="MC dropout is for classifiers"):
        mc_dropout(seg, x, 3)
    assert [name for name, _ in dropout_layers(small_net(spatial=True))] == ["3", "5"]
    check_dropout(small_net(), 2)  # no error


def test_reliability_figure_draws_each_series():
    from convolab.plotting import plt, reliability_figure

    p, y = random_probs(300, 4, seed=3)
    cal = calibration(p, y, bins=10)
    fig = reliability_figure(cal.edges.tolist(), [
        ("plain", cal.accuracy.tolist(), cal.confidence.tolist(), cal.counts.tolist(), cal.ece),
        ("MC", cal.accuracy.tolist(), cal.confidence.tolist(), cal.counts.tolist(), cal.ece)])
    try:
        axes = fig.axes
        assert len(axes) == 4
        heights = [bar.get_height() for bar in axes[0].patches]
        np.testing.assert_allclose(heights, np.nan_to_num(cal.accuracy.numpy()))
        assert [bar.get_height() for bar in axes[2].patches] == cal.counts.tolist()
        assert f"ECE {cal.ece:.4f}" in axes[0].get_title()
        diag = [line for line in axes[0].lines if line.get_label() == "perfect calibration"]
        assert diag and list(diag[0].get_xdata()) == [0, 1] and list(diag[0].get_ydata()) == [0, 1]
    finally:
        plt.close(fig)
