"""The statistics of a comparison over seeds: mean, sample standard deviation, the 95 % confidence interval of the
mean (Student's t) and Welch's t-test between two variants.

Why these: a handful of seeds per variant is a small sample from an unknown spread, so the interval uses Student's
t distribution with n - 1 degrees of freedom rather than the normal one, and two variants whose seeds spread
differently are compared with Welch's test, which does not assume equal variances (Student's pooled test does, and
is wrong when they differ). The formulas are written out in each docstring; the t distribution's CDF and quantile
come from the regularised incomplete beta function (``scipy.special.betainc`` and its inverse), the one special
function they need. ``tests/experiments/test_stats.py`` checks every figure against ``scipy.stats`` and a worked
example.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Sample", "Welch", "describe", "mean", "sample_std", "t_cdf", "t_ppf", "confidence_interval", "welch_test",
           "median"]


def mean(values: Sequence[float]) -> float:
    """``x̄ = (1/n) Σ xᵢ``."""
    if not values:
        raise ValueError("the mean of no values is undefined; give at least one")
    return math.fsum(values) / len(values)


def sample_std(values: Sequence[float]) -> float | None:
    """The sample standard deviation ``s = sqrt(Σ (xᵢ - x̄)² / (n - 1))`` (Bessel's n - 1: the deviations are taken
    from the sample's own mean, which is closer to them than the true mean, so dividing by n would underestimate the
    spread); None for fewer than two values."""
    n = len(values)
    if n < 2:
        return None
    m = mean(values)
    return math.sqrt(math.fsum((x - m) ** 2 for x in values) / (n - 1))


def median(values: Sequence[float]) -> float | None:
    """The middle value (the mean of the two middle ones for an even count); None for no values."""
    if not values:
        return None
    s, k = sorted(values), len(values) // 2
    return s[k] if len(s) % 2 else (s[k - 1] + s[k]) / 2


def t_cdf(t: float, df: float) -> float:
    """``P(T <= t)`` for Student's t with ``df`` degrees of freedom.

    With ``x = df / (df + t²)``, the two tails beyond ``±|t|`` hold ``I_x(df/2, 1/2)`` of the probability (``I`` the
    regularised incomplete beta function), so ``P(T <= t) = 1 - I_x(df/2, 1/2) / 2`` for ``t >= 0`` and
    ``I_x(df/2, 1/2) / 2`` for ``t < 0``.
    """
    from scipy.special import betainc

    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0; got {df}")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tails = float(betainc(df / 2, 0.5, df / (df + t * t)))
    return 1 - tails / 2 if t >= 0 else tails / 2


def t_ppf(q: float, df: float) -> float:
    """The quantile ``t`` with ``P(T <= t) = q`` (``t_ppf(0.975, n - 1)`` is the 95 % interval's multiplier).

    The inverse of :func:`t_cdf`: the two tails hold ``p = 2 min(q, 1 - q)``; ``x = I⁻¹_p(df/2, 1/2)`` gives
    ``|t| = sqrt(df (1 - x) / x)``, negative below the median.
    """
    from scipy.special import betaincinv

    if not 0 < q < 1:
        raise ValueError(f"a quantile needs 0 < q < 1; got {q}")
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0; got {df}")
    if q == 0.5:
        return 0.0
    x = float(betaincinv(df / 2, 0.5, 2 * min(q, 1 - q)))
    t = math.sqrt(df * (1 - x) / x)
    return t if q > 0.5 else -t


def confidence_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float] | None:
    """The ``level`` confidence interval of the mean: ``x̄ ± t_{(1+level)/2, n-1} · s / sqrt(n)``.

    ``s / sqrt(n)`` is the standard error of the mean; Student's quantile (not the normal 1.96) accounts for ``s``
    being itself estimated from the same few values: with 3 seeds the multiplier is 4.30, with 10 it is 2.26.
    None for fewer than two values (no spread to estimate).
    """
    if not 0 < level < 1:
        raise ValueError(f"the confidence level must be in (0, 1); got {level}")
    s = sample_std(values)
    if s is None:
        return None
    m, n = mean(values), len(values)
    half = t_ppf((1 + level) / 2, n - 1) * s / math.sqrt(n)
    return m - half, m + half


@dataclass(frozen=True)
class Welch:
    """Welch's t-test of ``mean(a) - mean(b)``: the statistic, its degrees of freedom and the two-sided p-value."""

    diff: float  # mean(a) - mean(b)
    t: float
    df: float
    p: float


def welch_test(a: Sequence[float], b: Sequence[float]) -> Welch | None:
    """Welch's t-test: is the mean of ``a`` different from the mean of ``b``?

    ``t = (x̄_a - x̄_b) / sqrt(s_a²/n_a + s_b²/n_b)``, with the Welch-Satterthwaite degrees of freedom
    ``df = (s_a²/n_a + s_b²/n_b)² / ((s_a²/n_a)² / (n_a - 1) + (s_b²/n_b)² / (n_b - 1))``, and the two-sided
    p-value ``2 P(T_df >= |t|)``: the chance of a difference at least this large if both means were equal.

    None when it is undefined: fewer than two values on either side, or no spread in either (every seed gave the
    same figure in both variants: the standard error is zero).
    """
    sa, sb = sample_std(a), sample_std(b)
    if sa is None or sb is None:
        return None
    va, vb = sa * sa / len(a), sb * sb / len(b)  # the squared standard errors of the two means
    if va + vb == 0:
        return None
    diff = mean(a) - mean(b)
    t = diff / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va * va / (len(a) - 1) + vb * vb / (len(b) - 1))
    p = 2 * t_cdf(-abs(t), df)  # (the lower tail directly: 1 - F(|t|) would lose a tiny p to rounding)
    return Welch(diff=diff, t=t, df=df, p=p)


@dataclass(frozen=True)
class Sample:
    """A variant's figures over its seeds: n, mean, sample std and the 95 % interval (None where n is too small)."""

    n: int
    mean: float | None
    std: float | None
    ci95: tuple[float, float] | None


def describe(values: Sequence[float]) -> Sample:
    """n, mean, sample standard deviation and 95 % confidence interval of ``values`` (n = 0: all None)."""
    values = list(values)
    if not values:
        return Sample(0, None, None, None)
    return Sample(len(values), mean(values), sample_std(values), confidence_interval(values))
