"""Uncertainty and power: bootstrap CIs, Wilson intervals, rank correlation, detectable differences.

The paired tests and every verdict live in the decision engine (`harness.decision`, `harness.paired_tests`).

Scores arrive as per-item sums and counts over samples (`sums[v, i]`, `counts[v, i]`; count 0 means the
item has no score for that variant, e.g. its call errored). Resampling items, not samples, is the
cluster bootstrap: repeated samples of one item are correlated, and treating them as independent would
make intervals too narrow (Miller, "Adding Error Bars to Evals", arXiv:2411.00640, section 2.2).

The bootstrap is vectorised: resample weights (B x N, the count of each item in each resample) serve
every variant and every paired difference through matrix products, so 10,000 items x 10 variants x
2,000 resamples costs a few BLAS calls instead of Python loops. Using the same
resamples for candidate and baseline is what makes the difference a *paired* bootstrap (Efron &
Tibshirani, "An Introduction to the Bootstrap", 1993, ch. 13).
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import numpy as np

POWER = 0.8
NORMAL = statistics.NormalDist()
"""The standard normal's quantiles from the standard library, for the intervals computed here."""


KEPT_WEIGHTS = 2_000_000
"""Entries of the weight matrix (float32) a `Resampler` keeps between calls: 8 MB."""


@dataclass(frozen=True)
class Resampler:
    """Item-level bootstrap resamples, drawn from a seed in blocks and applied as matrix products.

    The B x N matrix of resample weights (how often each item is drawn in each resample) is held whole
    only when small: at 10,000 items x 2,000 resamples it would be 80 MB, the largest allocation of a run.
    There each block of rows (about 2 MB of draws) is drawn, multiplied and dropped. The same seed gives the same
    resamples on every call, so totals computed in separate calls stay paired.
    """

    n_items: int
    n_resamples: int
    seed: int
    block_bytes: int = 2_000_000

    def blocks(self) -> Iterator[np.ndarray]:
        """Successive rows of the weight matrix, as float32 blocks."""
        kept = self._kept
        return iter(kept) if kept is not None else self._draw()

    @cached_property
    def _kept(self) -> list[np.ndarray] | None:
        """The whole matrix, when it is small (up to `KEPT_WEIGHTS` entries, 8 MB): an analysis sums
        columns over the same resamples several times (each metric's estimates, then its paired tests),
        and drawing the weights, not multiplying by them, is what each of those calls paid."""
        if self.n_items * self.n_resamples > KEPT_WEIGHTS:
            return None
        return list(self._draw())

    def _draw(self) -> Iterator[np.ndarray]:
        rng = np.random.default_rng(self.seed)
        n = max(self.n_items, 1)
        size = max(1, min(self.n_resamples, self.block_bytes // (8 * n)))
        for start in range(0, self.n_resamples, size):
            rows = min(size, self.n_resamples - start)
            draws = rng.integers(0, n, size=(rows, n), dtype=np.int64)
            draws += np.arange(rows, dtype=np.int64)[:, None] * n
            yield np.bincount(draws.ravel(), minlength=rows * n).reshape(rows, n).astype(np.float32)

    def totals(self, columns: np.ndarray) -> np.ndarray:
        """B x K: each of the N x K `columns` summed over the items of every resample (with repeats)."""
        values = np.ascontiguousarray(columns, dtype=np.float32)
        return np.vstack([block @ values for block in self.blocks()])


class Totals(Protocol):
    """Anything that sums item columns over bootstrap resamples (a `Resampler`, or fixed weights in tests)."""

    def totals(self, columns: np.ndarray) -> np.ndarray: ...


def bootstrap_means(resampler: Totals, sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """B x V resampled means (item-clustered): sum of scores over sum of samples in each resample."""
    n_variants = sums.shape[0]
    totals = resampler.totals(np.hstack([sums.T, counts.T]))
    num, den = totals[:, :n_variants], totals[:, n_variants:]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def column_percentiles(draws: np.ndarray, percents: list[float]) -> np.ndarray:
    """len(percents) x K: each column's percentiles, NaN draws left out (`np.nanpercentile`'s values).
    Why not `nanpercentile` alone: it sorts column by column in Python (`apply_along_axis`), 6 to 10
    times slower than `percentile` over the whole block, and a NaN draw (a resample with no scored item)
    is rare; only the columns holding one take that path."""
    out = np.full((len(percents), draws.shape[1]), np.nan)
    ragged = np.isnan(draws).any(axis=0)
    if not ragged.all():
        out[:, ~ragged] = np.percentile(draws[:, ~ragged], percents, axis=0)
    if ragged.any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a variant with no scored item: NaN bounds
            out[:, ragged] = np.nanpercentile(draws[:, ragged], percents, axis=0)
    return out


def percentile_interval(draws: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided percentile interval per column of bootstrap draws."""
    alpha = 1.0 - confidence
    lo, hi = column_percentiles(draws, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return lo, hi


def wilson_interval(successes: float, n: int, confidence: float) -> tuple[float, float]:
    """Wilson score interval for a proportion (Wilson, JASA 1927); sound for small n and p near 0 or 1."""
    if n == 0:
        return math.nan, math.nan
    z = NORMAL.inv_cdf(1 - (1 - confidence) / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At 0 (or n) successes the bound is exactly 0 (or 1); the formula reaches it only up to rounding.
    low = 0.0 if successes <= 0 else max(0.0, centre - half)
    high = 1.0 if successes >= n else min(1.0, centre + half)
    return low, high


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties given the mean of the ranks they span (scipy's `rankdata`, method "average")."""
    values = np.asarray(values, dtype=float)
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    first = np.concatenate(([True], ordered[1:] != ordered[:-1]))
    starts = np.flatnonzero(first)
    ends = np.append(starts[1:], values.size)
    ranks = np.empty(values.size)
    ranks[order] = ((starts + ends + 1) / 2)[np.cumsum(first) - 1]
    return ranks


def spearman(first: np.ndarray, second: np.ndarray) -> float:
    """Spearman's rho: the Pearson correlation of the average ranks, as scipy's `spearmanr` computes it.
    Here rather than scipy.stats because the scorer agreement runs after every run, and importing
    scipy.stats for it cost about a second of a 1,000-item run's wall time. NaN when a side is constant."""
    a, b = average_ranks(first), average_ranks(second)
    a, b = a - a.mean(), b - b.mean()
    scale = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / scale if scale > 0 else math.nan


def minimum_detectable_difference(diff_sd: float, n: int, confidence: float, power: float = POWER) -> float:
    """Smallest true paired difference a one-sided test at this confidence detects with `power`.

    MDD = (z_{1-alpha} + z_{power}) * sd(diff) / sqrt(n), the normal approximation for a paired mean
    (Chow, Shao & Wang, "Sample Size Calculations in Clinical Research", 2008, section 3.2).
    """
    if n < 2 or not math.isfinite(diff_sd):
        return math.inf
    z = NORMAL.inv_cdf(confidence) + NORMAL.inv_cdf(power)
    return z * diff_sd / math.sqrt(n)


@dataclass(frozen=True)
class PairedResult:
    """One candidate against the baseline on one metric, over the items both answered, unadjusted for
    multiplicity: the decision engine's test (`harness.decision`) with the power figures beside it."""

    n_pairs: int
    n_excluded: int
    """Items left out because the candidate or the baseline errored (or could not be scored)."""
    mean_diff: float
    """Candidate minus baseline; positive means the candidate scored higher."""
    ci_low: float
    ci_high: float
    lower_one_sided: float
    """Lower bound of the one-sided CI at the gate's confidence: non-inferior when above -margin."""
    upper_one_sided: float
    """Upper bound of the one-sided CI: below 0, the candidate is shown worse than the baseline."""
    p_value: float
    test: str
    mdd: float
    """Minimum detectable difference at 80% power for this many pairs."""
    p_noninferior: float = math.nan
    """One-sided p-value for "the candidate is worse by the margin or more" (small: non-inferior); below
    1 - confidence exactly when `lower_one_sided` > -margin."""
    p_worse: float = math.nan
    """One-sided p-value for "the candidate is at least as good" (small: shown worse)."""
    items_needed: int | None = None
    """Paired items at which the margin becomes detectable at 80% power (None: no margin, or no estimate)."""
    items_for_margin: int | None = None
    """The same, possibly fewer than n_pairs: what a new run of these variants needs (`estimate`)."""


def items_for_margin(
    n: int, mdd: float, margin: float, confidence: float, score_range: float, identical: bool
) -> int | None:
    """Paired items at which `margin` is the minimum detectable difference, from n items that detect `mdd`.

    The MDD shrinks as 1/sqrt(n), so n x (MDD / margin)^2 (Chow, Shao & Wang 2008, section 3.2); where no
    pair has differed yet, the exact bound for 0 events instead: the n with (1 - margin/range)^n below
    1 - confidence. An estimate from the items seen, to plan the next run, not a guarantee.
    """
    if n < 2 or margin <= 0 or not math.isfinite(mdd):
        return None
    if identical:
        if margin >= score_range:
            return 1
        return math.ceil(math.log(1 - confidence) / math.log(1 - margin / score_range))
    return max(2, math.ceil(n * (mdd / margin) ** 2))
