"""Paired tests of a mean difference, each a family of one-sided p-values and the bounds that invert them.

Every test here answers two questions about the paired differences d = candidate - baseline, for any
shift delta: "is the true mean difference above delta?" (`p_above(delta)`, small when it is) and, the
same evidence read the other way, "what is the lowest delta still compatible at level alpha?"
(`lower(alpha)`). They are one computation, so `lower(alpha) > delta` exactly when `p_above(delta) <
alpha`: a bound and its p-value cannot disagree (the duality the decision engine and its property test
rely on). `p_below` and `upper` are the mirror image.

- **Pass/fail scores, one sample per item**: Tango's score test for a difference of paired proportions
  (Tango, "Equivalence test and confidence interval for the difference in proportions for the paired-sample
  design", Statistics in Medicine 17:891-908, 1998). Its variance is taken under the null (the restricted
  maximum-likelihood estimate of the discordant cells, in closed form), so it stays sound with no discordant
  pair and at small n, where a Wald or bootstrap interval collapses. Its bound is the delta at which the
  statistic crosses the normal quantile, found by root-finding (the statistic decreases in delta).
- **Everything else** (continuous scores, grades, item means over epochs): the paired t statistic with
  Student's t quantiles on n - 1 degrees of freedom, which keeps the error rate at small n where normal
  quantiles do not (Student, Biometrika 1908).
- **Bounded scores at small n** (fewer than `BOUNDED_BELOW` pairs): the t test alone passed a candidate at a
  true loss of the margin 7-12% of the time at 20-100 items, and up to 7.6% at 300, when most items score 0
  (ROUGE on hard items) and the candidate fails a few outright (benchmarks/calibration.py); its skewness
  correction cannot see losses that have not happened yet. There the t test's lower side (non-inferiority
  and superiority, where that error lives) must agree with Gaffke's bound for the mean of a variable known
  to lie in [-R, R] (Gaffke, "Three test statistics for a nonparametric one-sided hypothesis on the mean of
  a nonnegative variable", Mathematical Methods of Statistics 14:451-467, 2005; rederived by Learned-Miller
  & Thomas, arXiv:1905.06208, 2019, and shown to hold its level for every distribution on the interval in
  the family of Phan, Thomas & Learned-Miller, "Towards Practical Mean Bounds for Small Samples", ICML
  2021). It is the alpha quantile of sum_i w_i x_i over the n differences and the worst value -R, w uniform
  on the simplex (Dirichlet(1, ..., 1)): the bound leaves room for one more item at the worst value,
  weighted as the data are. It asks no shape of the distribution, so it costs power at small n
  (benchmarks/calibration.py prints how much) and holds its level where the t test does not. Beyond
  `BOUNDED_BELOW` pairs the t test is calibrated on every shape measured, and the bounded bound would only
  add Monte Carlo cost.
- **No item went one way**: neither test can see a loss that is rare but large (a candidate that matches
  the baseline except on one item in fifty, where it fails outright) before it has happened. Where no item
  is worse, the lower bound is also held to mean - R (1 - alpha^(1/n)), R the score range: the exact
  one-sided bound for 0 events in n (Clopper-Pearson; about 3/n at 95%, Hanley & Lippman-Hand, JAMA 1983)
  on the share of items that could be worse, each by at most R. Its dual p-value is
  (1 - (mean - delta) / R)^n, and the test reports the larger of the two p-values (the smaller bound), so
  the pair still agrees. Wins count: 30 of 30 items better gives a bound near +0.9, not a floor at
  (1 - margin)^n.

Where the lower side must clear a second test (`LowerHeldTo`), the p-value is the larger and the bound the
lower, so the bound still clears delta exactly when the p-value is below alpha.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy import special

EDGE = 1e-12
"""How close to -1 and +1 the score test's root search goes (the statistic is undefined at the ends)."""


def t_sf(x: float, df: int) -> float:
    """Student's t upper tail (scipy.special, not scipy.stats, whose import every run would pay)."""
    return float(special.stdtr(df, -x))


def t_isf(p: float, df: int) -> float:
    """The t quantile with upper tail p."""
    return -float(special.stdtrit(df, p))


def norm_sf(x: float) -> float:
    return float(special.ndtr(-x))


def norm_isf(p: float) -> float:
    return -float(special.ndtri(p))


def bisect(f: Callable[[float], float], low: float, high: float, steps: int = 100) -> float:
    """The root of a decreasing f between low (f > 0) and high (f < 0), to float precision."""
    for _ in range(steps):
        middle = (low + high) / 2
        if middle in (low, high):
            break
        if f(middle) > 0:
            low = middle
        else:
            high = middle
    return (low + high) / 2


class PairedTest(Protocol):
    """One-sided p-values for the mean difference and the bounds that invert them."""

    name: str
    n: int
    mean: float

    def p_above(self, delta: float) -> float:
        """p-value for "the mean difference is delta or less": small when it is shown above delta."""
        ...

    def p_below(self, delta: float) -> float:
        """p-value for "the mean difference is delta or more": small when it is shown below delta."""
        ...

    def lower(self, alpha: float) -> float:
        """One-sided lower bound at level alpha: above delta exactly when p_above(delta) < alpha."""
        ...

    def upper(self, alpha: float) -> float:
        """One-sided upper bound at level alpha: below delta exactly when p_below(delta) < alpha."""
        ...


@dataclass(frozen=True)
class RangeGuard:
    """The 0-event bound on the side no item went (see the module docstring), as a p-value and a bound."""

    n: int
    mean: float
    score_range: float
    no_loss: bool
    no_gain: bool

    def p_above(self, delta: float) -> float:
        if not self.no_loss:
            return 0.0
        gap = (self.mean - delta) / self.score_range
        return 1.0 if gap <= 0 else max(0.0, 1.0 - gap) ** self.n

    def p_below(self, delta: float) -> float:
        if not self.no_gain:
            return 0.0
        gap = (delta - self.mean) / self.score_range
        return 1.0 if gap <= 0 else max(0.0, 1.0 - gap) ** self.n

    def lower(self, alpha: float) -> float:
        if not self.no_loss:
            return math.inf
        return self.mean - self.score_range * (1.0 - alpha ** (1.0 / self.n))

    def upper(self, alpha: float) -> float:
        if not self.no_gain:
            return -math.inf
        return self.mean + self.score_range * (1.0 - alpha ** (1.0 / self.n))


@dataclass(frozen=True)
class TTest:
    """The paired t test with Hall's skewness correction, guarded on a side no item went.

    With T = (mean - delta) / sd, the statistic is sqrt(n) g(T), g(T) = T + gamma T^2 / 3 + gamma^2 T^3 / 27
    + gamma / (6 n), gamma the differences' sample skewness (Hall, "On the removal of skewness by
    transformation", JRSS B 54:221-228, 1992; the one-sample form of Zhou & Dinh, Biostatistics 6:187-200,
    2005), compared with Student's t on n - 1 degrees of freedom. A candidate that fails a few items outright
    skews its differences to the left, and there the plain t test passed it at a true loss of the margin
    about twice as often as its level (benchmarks/calibration.py). g is (1 + gamma T / 3)^3 / gamma up to
    constants, so it never decreases and inverts in closed form: a bound at any level, as far out as a
    sequential design's first look needs, with no resampling.
    """

    n: int
    mean: float
    sd: float
    skew: float
    guard: RangeGuard
    name: str = "paired t (Hall skew-corrected)"

    def _g(self, t: float) -> float:
        gamma = self.skew
        if gamma == 0:
            return t
        return ((1 + gamma * t / 3) ** 3 - 1) / gamma + gamma / (6 * self.n)

    def _g_inverse(self, y: float) -> float:
        gamma = self.skew
        if gamma == 0:
            return y
        return 3 / gamma * (float(np.cbrt(1 + gamma * (y - gamma / (6 * self.n)))) - 1)

    def _statistic(self, delta: float) -> float:
        if self.sd > 0:
            return math.sqrt(self.n) * self._g((self.mean - delta) / self.sd)
        return math.copysign(math.inf, self.mean - delta) if self.mean != delta else 0.0

    def p_above(self, delta: float) -> float:
        if self.n < 2:
            return 1.0
        return max(t_sf(self._statistic(delta), self.n - 1), self.guard.p_above(delta))

    def p_below(self, delta: float) -> float:
        if self.n < 2:
            return 1.0
        return max(t_sf(-self._statistic(delta), self.n - 1), self.guard.p_below(delta))

    def _at(self, quantile: float) -> float:
        """The delta where the statistic equals `quantile`."""
        return self.mean - self.sd * self._g_inverse(quantile / math.sqrt(self.n))

    def lower(self, alpha: float) -> float:
        if self.n < 2:
            return -math.inf
        return min(self._at(t_isf(alpha, self.n - 1)), self.guard.lower(alpha))

    def upper(self, alpha: float) -> float:
        if self.n < 2:
            return math.inf
        return max(self._at(-t_isf(alpha, self.n - 1)), self.guard.upper(alpha))


@dataclass(frozen=True)
class ScoreTest:
    """Tango's score test for paired pass/fail outcomes: `wins` items only the candidate passed, `losses`
    items only the baseline passed, of n; guarded on a side no item went."""

    n: int
    wins: int
    losses: int
    guard: RangeGuard
    name: str = "Tango score"

    @property
    def mean(self) -> float:
        return (self.wins - self.losses) / self.n if self.n else math.nan

    def z(self, delta: float) -> float:
        """The score statistic at a true difference delta (candidate minus baseline pass rates)."""
        n, b, c = self.n, self.wins, self.losses
        # The restricted MLE of the loss cell under delta (Tango 1998, eq. 4): the root of
        # 2n q^2 - B q - c delta (1 - delta) = 0 with B = b (1 + delta) + c (1 - delta) - 2 n delta.
        big_b = b * (1 + delta) + c * (1 - delta) - 2 * n * delta
        q = (big_b + math.sqrt(max(0.0, big_b * big_b + 8 * n * c * delta * (1 - delta)))) / (4 * n)
        q = max(q, -delta, 0.0)
        variance = n * (2 * q + delta - delta * delta)
        numerator = b - c - n * delta
        if variance <= 0:
            return 0.0 if numerator == 0 else math.copysign(math.inf, numerator)
        return numerator / math.sqrt(variance)

    def p_above(self, delta: float) -> float:
        if self.n < 2:
            return 1.0
        if delta <= -1:
            return 0.0
        if delta >= 1:
            return 1.0
        return max(norm_sf(self.z(delta)), self.guard.p_above(delta))

    def p_below(self, delta: float) -> float:
        if self.n < 2:
            return 1.0
        if delta >= 1:
            return 0.0
        if delta <= -1:
            return 1.0
        return max(norm_sf(-self.z(delta)), self.guard.p_below(delta))

    def _root(self, target: float) -> float:
        """The delta in (-1, 1) where z(delta) = target (z decreases in delta)."""
        low, high = -1 + EDGE, 1 - EDGE
        if self.z(low) <= target:
            return -1.0
        if self.z(high) >= target:
            return 1.0
        return bisect(lambda d: self.z(d) - target, low, high)

    def lower(self, alpha: float) -> float:
        if self.n < 2:
            return -math.inf
        return min(self._root(norm_isf(alpha)), self.guard.lower(alpha))

    def upper(self, alpha: float) -> float:
        if self.n < 2:
            return math.inf
        return max(self._root(-norm_isf(alpha)), self.guard.upper(alpha))


BOUNDED_BELOW = 1000
"""Below this many pairs, a non-pass/fail test must also clear Gaffke's bound (see the module docstring)."""

DRAWS = 3999
"""Monte Carlo draws of the simplex weights for Gaffke's bound; its p-values come in steps of 1 / (DRAWS + 1),
so no claim is shown below a level of 1 / 4,000 on it (an O'Brien-Fleming first look waits)."""

WEIGHT_CELLS = 2_000_000
"""How many weights are drawn at once (memory, not the result: the draws are the same in any chunking)."""


@dataclass(frozen=True)
class BoundedMeanTest:
    """Gaffke's bound for a mean difference known to lie in [-R, R] (see the module docstring).

    `low_sums` holds DRAWS sorted draws of sum_i w_i d_i + w_0 (-R), `high_sums` the same with +R: the lower
    bound at alpha is a low quantile of the first, the upper bound a high quantile of the second. The
    weights come from a generator seeded by n alone, so the same scores always give the same verdict, and
    the p-value (count + 1) / (DRAWS + 1) is read off the same draws the bound is, so the two agree.
    """

    n: int
    mean: float
    low_sums: np.ndarray
    high_sums: np.ndarray
    name: str = "Gaffke bounded mean"

    @classmethod
    def of(cls, diffs: np.ndarray, score_range: float) -> BoundedMeanTest:
        n = int(diffs.size)
        rng = np.random.default_rng(2005 + n)
        low, high = np.empty(DRAWS), np.empty(DRAWS)
        rows = max(1, WEIGHT_CELLS // (n + 1))
        for start in range(0, DRAWS, rows):
            stop = min(DRAWS, start + rows)
            weights = rng.standard_exponential((stop - start, n + 1))
            weights /= weights.sum(axis=1, keepdims=True)
            inner = weights[:, 1:] @ diffs
            low[start:stop] = inner - weights[:, 0] * score_range
            high[start:stop] = inner + weights[:, 0] * score_range
        low.sort()
        high.sort()
        return cls(n, float(diffs.mean()) if n else math.nan, low, high)

    def p_above(self, delta: float) -> float:
        if self.n < 2:
            return 1.0
        at_or_below = int(np.searchsorted(self.low_sums, delta, side="right"))
        return (at_or_below + 1) / (DRAWS + 1)

    def p_below(self, delta: float) -> float:
        if self.n < 2:
            return 1.0
        at_or_above = DRAWS - int(np.searchsorted(self.high_sums, delta, side="left"))
        return (at_or_above + 1) / (DRAWS + 1)

    @staticmethod
    def _rank(alpha: float) -> int:
        """The most draws that may lie beyond delta with the claim shown: the largest k with
        (k + 1) / (DRAWS + 1) < alpha, compared exactly as the p-value is (-1 when there is none)."""
        k = min(DRAWS - 1, int(alpha * (DRAWS + 1)))
        while k >= 0 and not (k + 1) / (DRAWS + 1) < alpha:
            k -= 1
        return k

    def lower(self, alpha: float) -> float:
        k = self._rank(alpha)
        return -math.inf if self.n < 2 or k < 0 else float(self.low_sums[k])

    def upper(self, alpha: float) -> float:
        k = self._rank(alpha)
        return math.inf if self.n < 2 or k < 0 else float(self.high_sums[DRAWS - 1 - k])


@dataclass(frozen=True)
class LowerHeldTo:
    """A test whose lower side (non-inferiority, superiority) must also clear a second, more cautious one:
    the larger p-value and the lower bound there; its upper side (a regression) is the test's own.

    Only the lower side is guarded because the error the guard prevents, passing a candidate that loses
    the margin, lives there; on the upper side a skewed loss makes the t test cautious, not bold, and the
    bounded bound would only hide regressions a small eval can show."""

    test: PairedTest
    floor: PairedTest

    @property
    def name(self) -> str:
        return f"{self.test.name}, held to {self.floor.name} below"

    @property
    def n(self) -> int:
        return self.test.n

    @property
    def mean(self) -> float:
        return self.test.mean

    def p_above(self, delta: float) -> float:
        return max(self.test.p_above(delta), self.floor.p_above(delta))

    def p_below(self, delta: float) -> float:
        return self.test.p_below(delta)

    def lower(self, alpha: float) -> float:
        return min(self.test.lower(alpha), self.floor.lower(alpha))

    def upper(self, alpha: float) -> float:
        return self.test.upper(alpha)


def is_pass_fail(values: np.ndarray) -> bool:
    """Every value is 0 or 1 (a pass/fail score with one sample per item)."""
    return bool(np.all((values == 0) | (values == 1)))


def paired_test(candidate: np.ndarray, baseline: np.ndarray, binary: bool, score_range: float) -> PairedTest:
    """The test for these paired item scores (NaN-free, same length): the score test for pass/fail
    outcomes, else the t test on the differences (below `BOUNDED_BELOW` pairs held to Gaffke's bound too);
    both guarded on a side no item went."""
    diffs = candidate - baseline
    n = int(diffs.size)
    mean = float(diffs.mean()) if n else math.nan
    guard = RangeGuard(max(n, 1), mean, score_range, n > 0 and not np.any(diffs < 0), n > 0 and not np.any(diffs > 0))
    if binary and is_pass_fail(candidate) and is_pass_fail(baseline):
        return ScoreTest(n, int(np.sum(diffs > 0)), int(np.sum(diffs < 0)), guard)
    sd = float(diffs.std(ddof=1)) if n > 1 else math.nan
    skew = float(np.mean((diffs - mean) ** 3)) / sd**3 if n > 2 and sd > 0 else 0.0
    t_test = TTest(n, mean, sd, max(-skew_limit(n), min(skew_limit(n), skew)), guard)
    if n >= BOUNDED_BELOW:
        return t_test
    return LowerHeldTo(t_test, BoundedMeanTest.of(diffs, score_range))


def skew_limit(n: int) -> float:
    """The largest skewness the correction uses: g's flat point T = -3 / gamma must lie beyond any quantile
    a look needs (|T| = c / sqrt(n) for boundaries c up to about 6), or the bound swings past the data
    (12 pairs, 10 of them -1: an upper bound of +0.32 with the sample's skewness of 1.57)."""
    return min(1.0, 0.4 * math.sqrt(n) / 3)
