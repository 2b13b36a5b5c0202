"""Group-sequential non-inferiority: look after each stage of items, stop once the answer is clear.

The design is fixed before the first call: K looks at equal shares of the items (t_k = k/K), taken in a
seeded random order, and a one-sided alpha spent across the looks by a Lan-DeMets spending function
(Lan & DeMets, Biometrika 1983): O'Brien-Fleming-type, alpha(t) = 2 - 2 Phi(z_{1-alpha/2} / sqrt(t)),
which spends almost nothing early, or Pocock-type, alpha(t) = alpha ln(1 + (e - 1) t), which spends
evenly and stops earlier on clear answers. The boundary c_k of each look follows from the joint normal
law of the z-statistics (correlation sqrt(t_j / t_k)), computed by numerical integration on a grid
(Armitage, McPherson & Rowe, JRSS A 1969; Jennison & Turnbull, "Group Sequential Methods with
Applications to Clinical Trials", 2000, ch. 19).

At each look the paired differences give repeated confidence bounds d +- c_k se (Jennison & Turnbull,
JRSS B 1989): they hold at every look at once, so any stopping rule built on them keeps the error
rates. Non-inferiority is shown when the lower bound clears -margin; a regression when the upper bound is
below -margin, or below 0 with non-inferiority out of reach (at the last look: below 0, as in the fixed
design). Futility (stochastic curtailment, Lan, Simon & Halperin
1982) stops when, under the trend so far, neither decision is likely by the last look; it is non-binding
and only ever removes decisions, so it cannot raise an error rate.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy import stats as sps
from scipy.optimize import brentq

from harness.stats import zero_event_bound

Spending = Literal["obrien-fleming", "pocock"]
LookStatus = Literal["pass", "fail", "futile", "continue", "undecided"]
GRID_STEP = 0.01
GRID_FLOOR = -12.0


def spent(t: float, alpha: float, spending: Spending) -> float:
    """The one-sided alpha spent by information fraction t (0 < t <= 1)."""
    if spending == "pocock":
        return alpha * math.log(1 + (math.e - 1) * t)
    return float(2 - 2 * sps.norm.cdf(sps.norm.ppf(1 - alpha / 2) / math.sqrt(t)))


@functools.lru_cache(maxsize=64)
def boundaries(looks: int, alpha: float, spending: Spending) -> tuple[float, ...]:
    """The z boundary of each of `looks` equally spaced looks: under no difference, the chance of
    crossing look k's boundary first is exactly the alpha spent between looks k-1 and k."""
    fractions = [k / looks for k in range(1, looks + 1)]
    cumulative = [spent(t, alpha, spending) for t in fractions]
    first = float(sps.norm.isf(cumulative[0]))
    out = [first]
    grid = np.arange(GRID_FLOOR, first, GRID_STEP)
    density = sps.norm.pdf(grid)
    for k in range(1, looks):
        ratio = math.sqrt(fractions[k - 1] / fractions[k])
        spread = math.sqrt(1 - fractions[k - 1] / fractions[k])
        weights = density * _trapezoid(grid.size)
        target = cumulative[k] - cumulative[k - 1]

        args = (weights, grid, ratio, spread, target)
        bound = brentq(_crossing, -8.0, 12.0, args=args, xtol=1e-6) if target > 0 else math.inf
        out.append(float(bound))
        nxt = np.arange(GRID_FLOOR, min(bound, 12.0), GRID_STEP)
        density = (sps.norm.pdf((nxt[:, None] - ratio * grid[None, :]) / spread) / spread) @ weights
        grid = nxt
    return tuple(out)


def _crossing(c: float, weights: np.ndarray, grid: np.ndarray, ratio: float, spread: float, target: float) -> float:
    """The chance of reaching the next look from the grid's continuation region and crossing c there,
    less the alpha this look may spend (brentq finds the c where it is 0)."""
    return float(weights @ sps.norm.sf((c - ratio * grid) / spread)) - target


def _trapezoid(n: int) -> np.ndarray:
    w = np.full(n, GRID_STEP)
    w[[0, -1]] = GRID_STEP / 2
    return w


def schedule(n_items: int, looks: int) -> list[int]:
    """Items analysed by each look: equal stages, the last look at every item (fewer looks than items)."""
    looks = max(1, min(looks, n_items))
    return sorted({math.ceil(k * n_items / looks) for k in range(1, looks + 1)})


def item_order(item_ids: list[str], seed: int) -> list[str]:
    """The seeded random order items are taken in: stages are random samples of the eval, not its head
    (an eval sorted by difficulty would otherwise decide on its easy items), and the same seed gives the
    same stages, so a re-run is served from the cache."""
    rng = np.random.default_rng(seed)
    return [item_ids[i] for i in rng.permutation(len(item_ids))]


@dataclass(frozen=True)
class Look:
    """One candidate at one look: the repeated confidence bounds and what they decide."""

    status: LookStatus
    n_pairs: int
    mean_diff: float
    lower: float
    upper: float
    boundary: float
    reason: str


def look(
    diffs: np.ndarray,
    index: int,
    bounds: tuple[float, ...],
    margin: float,
    score_range: float,
    futility: float,
) -> Look:
    """The decision at look `index` (0-based) from the paired item differences (candidate - baseline).

    Where no pair goes one way, that side's bound is the exact 0-event bound at this look's nominal level
    (`stats.zero_event_bound`), as in the fixed design: identical outputs never prove more than n resolves.
    """
    n = int(diffs.size)
    c = bounds[index]
    last = index == len(bounds) - 1
    if n < 2:
        return Look("undecided" if last else "continue", n, math.nan, -math.inf, math.inf, c, "fewer than 2 pairs")
    mean = float(diffs.mean())
    se = float(diffs.std(ddof=1)) / math.sqrt(n)
    lower, upper = mean - c * se, mean + c * se
    level = 1 - float(sps.norm.sf(c)) if math.isfinite(c) else 1.0
    if not np.any(diffs < 0):
        lower = min(lower, mean - score_range * zero_event_bound(n, level))
    if not np.any(diffs > 0):
        upper = max(upper, mean + score_range * zero_event_bound(n, level))
    bounds_text = f"repeated bounds [{lower:+.4f}, {upper:+.4f}] at look {index + 1}/{len(bounds)} ({n} pairs)"
    if lower > -margin:
        return Look("pass", n, mean, lower, upper, c, f"non-inferior: {bounds_text} > -margin {-margin:.4f}")
    if last:
        if upper < 0:
            return Look("fail", n, mean, lower, upper, c, f"regression: {bounds_text}, upper < 0")
        return Look("undecided", n, mean, lower, upper, c, f"inconclusive at the last look: {bounds_text}")
    fraction = (index + 1) / len(bounds)
    reach_pass = _conditional_power(mean + margin, se, fraction, bounds[-1])
    reach_fail = _conditional_power(-mean, se, fraction, bounds[-1])
    if upper < -margin:
        return Look("fail", n, mean, lower, upper, c, f"regression: {bounds_text}, worse by more than the margin")
    if upper < 0 and reach_pass < futility:
        why = f"regression: {bounds_text}, upper < 0, non-inferiority out of reach"
        return Look("fail", n, mean, lower, upper, c, why)
    if reach_pass < futility and reach_fail < futility:
        return Look(
            "futile",
            n,
            mean,
            lower,
            upper,
            c,
            f"out of reach: {bounds_text}; under the trend so far neither non-inferiority nor a regression "
            f"would be shown by the last look (conditional power {reach_pass:.2f} and {reach_fail:.2f})",
        )
    return Look("continue", n, mean, lower, upper, c, bounds_text)


def _conditional_power(effect: float, se: float, fraction: float, final_bound: float) -> float:
    """The chance the last look's z exceeds its boundary if the trend so far continues:
    1 - Phi((c_K - z_k / sqrt(t)) / sqrt(1 - t)) (Jennison & Turnbull 2000, section 10.2)."""
    if se == 0:
        return 1.0 if effect > 0 else 0.0
    z = effect / se
    return float(sps.norm.sf((final_bound - z / math.sqrt(fraction)) / math.sqrt(1 - fraction)))


@dataclass
class SequentialOutcome:
    """How a sequential gate ended: each candidate's deciding look, and what stopping early saved."""

    looks: int
    spending: Spending
    alpha: float
    """The one-sided alpha each candidate's boundaries spend (the gate's, split over the candidates)."""
    items_planned: int
    items_used: int = 0
    stopped_at: int = 0
    """The look (1-based) after which no candidate was left undecided, or the last one run."""
    usd_spent: float = 0.0
    usd_not_spent: float = 0.0
    """The calls never made (the stages not run, per variant) at the dollars per item measured so far."""
    decisions: dict[str, Look] = field(default_factory=dict)
    decided_at: dict[str, int] = field(default_factory=dict)
    stopped_by: str = ""
    """Why the stages ended early other than by decisions (the budget ran out), else empty."""

    @property
    def early(self) -> bool:
        return self.items_used < self.items_planned

    def summary(self) -> str:
        """One line for the terminal, the gate's step summary and the report."""
        how = "stopped early" if self.early else "ran every stage"
        line = (
            f"sequential gate ({self.looks} looks, {self.spending} alpha spending, alpha {self.alpha:.4g} per "
            f"candidate): {how} at look {self.stopped_at} of {self.looks}, {self.items_used} of "
            f"{self.items_planned} items used, ${self.usd_spent:.4f} spent, about ${self.usd_not_spent:.4f} not spent"
        )
        return f"{line} ({self.stopped_by})" if self.stopped_by else line

    def metrics(self) -> dict[str, float]:
        """For MLflow, on the parent run."""
        return {
            "sequential.looks": float(self.looks),
            "sequential.stopped_at_look": float(self.stopped_at),
            "sequential.items_used": float(self.items_used),
            "sequential.items_planned": float(self.items_planned),
            "sequential.usd_not_spent": self.usd_not_spent,
        }
