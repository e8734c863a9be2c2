"""convolab.experiments.stats against scipy.stats, closed forms of the t distribution and a worked example."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from convolab.experiments import stats


def test_worked_example_by_hand():
    # a = 1, 2, 3: mean 2, s = 1; b = 2, 4, 6: mean 4, s = 2
    a, b = [1.0, 2.0, 3.0], [2.0, 4.0, 6.0]
    assert stats.mean(a) == 2.0 and stats.sample_std(a) == 1.0 and stats.sample_std(b) == 2.0
    # squared standard errors 1/3 and 4/3: t = -2 / sqrt(5/3); df = (5/3)^2 / ((1/3)^2/2 + (4/3)^2/2) = 50/17
    w = stats.welch_test(a, b)
    assert w.diff == -2.0
    assert w.t == pytest.approx(-2 / math.sqrt(5 / 3), rel=1e-12)
    assert w.df == pytest.approx(50 / 17, rel=1e-12)
    # 95 % interval of a: 2 +- t(0.975, 2) / sqrt(3), where for 2 degrees of freedom t(q) = (2q-1)/sqrt(2q(1-q))
    t975 = 0.95 / math.sqrt(2 * 0.975 * 0.025)
    assert t975 == pytest.approx(4.302653, abs=1e-6)
    lo, hi = stats.confidence_interval(a)
    assert (lo, hi) == (pytest.approx(2 - t975 / math.sqrt(3), rel=1e-12), pytest.approx(2 + t975 / math.sqrt(3),
                                                                                         rel=1e-12))


def test_t_distribution_closed_forms():
    # df = 1 is Cauchy: F(t) = 1/2 + atan(t)/pi; df = 2: F(t) = 1/2 + t / (2 sqrt(2 + t^2))
    for t in (-7.5, -1.0, -0.2, 0.0, 0.3, 2.0, 40.0):
        assert stats.t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, rel=1e-12, abs=1e-15)
        assert stats.t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), rel=1e-12, abs=1e-15)
    for q in (0.01, 0.3, 0.5, 0.8, 0.975):
        assert stats.t_ppf(q, 1) == pytest.approx(math.tan(math.pi * (q - 0.5)), rel=1e-10, abs=1e-14)
    assert stats.t_ppf(0.975, 1e9) == pytest.approx(1.959964, abs=1e-6)  # the normal's 1.96 in the limit


@pytest.mark.parametrize("df", [1, 2, 2.94, 4, 9.5, 30, 1000])
def test_t_against_scipy(df):
    for q in (0.001, 0.025, 0.2, 0.5, 0.9, 0.975, 0.9995):
        assert stats.t_ppf(q, df) == pytest.approx(sps.t.ppf(q, df), rel=1e-9, abs=1e-12)
    for t in (-30.0, -3.1, -0.4, 0.0, 1.7, 6.0, 1e3):
        assert stats.t_cdf(t, df) == pytest.approx(sps.t.cdf(t, df), rel=1e-9, abs=1e-15)


def test_against_scipy_on_random_samples():
    rng = np.random.default_rng(19)
    for _ in range(40):
        na, nb = rng.integers(2, 12, size=2)
        a = list(rng.normal(0.9, rng.uniform(0.001, 0.05), na))
        b = list(rng.normal(0.9 + rng.uniform(-0.05, 0.05), rng.uniform(0.001, 0.05), nb))
        ref = sps.ttest_ind(a, b, equal_var=False)
        w = stats.welch_test(a, b)
        assert w.t == pytest.approx(ref.statistic, rel=1e-9)
        assert w.df == pytest.approx(ref.df, rel=1e-9)
        assert w.p == pytest.approx(ref.pvalue, rel=1e-7, abs=1e-300)
        assert stats.sample_std(a) == pytest.approx(np.std(a, ddof=1), rel=1e-12)
        lo, hi = stats.confidence_interval(a)
        ref_lo, ref_hi = sps.t.interval(0.95, len(a) - 1, loc=np.mean(a), scale=sps.sem(a))
        assert (lo, hi) == (pytest.approx(ref_lo, rel=1e-10), pytest.approx(ref_hi, rel=1e-10))
        assert lo < stats.mean(a) < hi  # the interval contains the mean
        assert stats.median(a) == pytest.approx(np.median(a), rel=1e-12)


def test_tiny_p_value_keeps_its_precision():
    a, b = [0.90, 0.9001, 0.9002, 0.9001], [0.50, 0.5001, 0.5002, 0.5003]
    w = stats.welch_test(a, b)
    ref = sps.ttest_ind(a, b, equal_var=False)
    assert 0 < w.p < 1e-10 and w.p == pytest.approx(ref.pvalue, rel=1e-6)  # not 1 - 1 = 0


def test_one_seed_and_no_spread():
    s = stats.describe([0.7])
    assert (s.n, s.mean, s.std, s.ci95) == (1, 0.7, None, None)
    assert stats.welch_test([0.7], [0.6, 0.8]) is None
    assert stats.welch_test([0.5, 0.5], [0.5, 0.5]) is None  # zero standard error: undefined, not a crash
    assert stats.describe([]) == stats.Sample(0, None, None, None)
    assert stats.median([]) is None and stats.median([3.0, 1.0]) == 2.0
    with pytest.raises(ValueError, match="0 < q < 1"):
        stats.t_ppf(1.0, 3)
