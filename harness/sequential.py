"""Group-sequential non-inferiority: look after each stage of items, stop once the answer is clear.

The design is fixed before the first call: K looks at equal shares of the items (t_k = k/K; the first at
least `MIN_FIRST_LOOK` items, the rest sharing what remains), taken in a
seeded random order, and a one-sided alpha spent across the looks by a Lan-DeMets spending function
(Lan & DeMets, Biometrika 1983): O'Brien-Fleming-type, alpha(t) = 2 - 2 Phi(z_{1-alpha/2} / sqrt(t)),
which spends almost nothing early, or Pocock-type, alpha(t) = alpha ln(1 + (e - 1) t), which spends
evenly and stops earlier on clear answers. The boundary c_k of each look follows from the joint normal
law of the z-statistics (correlation sqrt(t_j / t_k)), computed by numerical integration on a grid
(Armitage, McPherson & Rowe, JRSS A 1969; Jennison & Turnbull, "Group Sequential Methods with
Applications to Clinical Trials", 2000, ch. 19).

The decisions at each look (the repeated bounds, their p-values, futility) are made by the decision
engine (`harness.decision.look`); this module owns the design: the spending, the boundaries, the stages
and the seeded order of the items.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import numpy as np
from scipy import special

from harness.paired_tests import bisect, norm_isf, norm_sf

Spending = Literal["obrien-fleming", "pocock"]
LookStatus = Literal["pass", "fail", "futile", "continue", "undecided"]
GRID_STEP = 0.01
GRID_FLOOR = -12.0


def spent(t: float, alpha: float, spending: Spending) -> float:
    """The one-sided alpha spent by information fraction t (0 < t <= 1)."""
    if spending == "pocock":
        return alpha * math.log(1 + (math.e - 1) * t)
    return 2 * norm_sf(norm_isf(alpha / 2) / math.sqrt(t))


MIN_FIRST_LOOK = 10
"""The fewest items the first look reads: the boundaries rest on a normal law of the statistics, and a look
at four or five pairs (five looks at 20 items) spent alpha where it did not hold."""


@functools.lru_cache(maxsize=64)
def boundaries(fractions: tuple[float, ...], alpha: float, spending: Spending) -> tuple[float, ...]:
    """The z boundary of each look at these information fractions (increasing, the last 1): under no
    difference, the chance of crossing look k's boundary first is exactly the alpha spent between looks
    k-1 and k."""
    looks = len(fractions)
    cumulative = [spent(t, alpha, spending) for t in fractions]
    first = norm_isf(cumulative[0])
    out = [first]
    grid = np.arange(GRID_FLOOR, first, GRID_STEP)
    density = _pdf(grid)
    for k in range(1, looks):
        ratio = math.sqrt(fractions[k - 1] / fractions[k])
        spread = math.sqrt(1 - fractions[k - 1] / fractions[k])
        weights = density * _trapezoid(grid.size)
        target = cumulative[k] - cumulative[k - 1]

        args = (weights, grid, ratio, spread, target)
        bound = bisect(functools.partial(_crossing_at, args), -8.0, 12.0) if target > 0 else math.inf
        out.append(float(bound))
        nxt = np.arange(GRID_FLOOR, min(bound, 12.0), GRID_STEP)
        density = (_pdf((nxt[:, None] - ratio * grid[None, :]) / spread) / spread) @ weights
        grid = nxt
    return tuple(out)


def _crossing(c: float, weights: np.ndarray, grid: np.ndarray, ratio: float, spread: float, target: float) -> float:
    """The chance of reaching the next look from the grid's continuation region and crossing c there,
    less the alpha this look may spend (brentq finds the c where it is 0)."""
    return float(weights @ special.ndtr(-(c - ratio * grid) / spread)) - target


def _pdf(x: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _crossing_at(args: tuple[np.ndarray, np.ndarray, float, float, float], c: float) -> float:
    return _crossing(c, *args)


def _trapezoid(n: int) -> np.ndarray:
    w = np.full(n, GRID_STEP)
    w[[0, -1]] = GRID_STEP / 2
    return w


def schedule(n_items: int, looks: int, min_first: int = MIN_FIRST_LOOK) -> list[int]:
    """Items analysed by each look: equal stages, the last look at every item (fewer looks than items).
    The first look reads at least `min_first` items; the looks after it share the rest equally."""
    looks = max(1, min(looks, n_items))
    first = min(n_items, max(math.ceil(n_items / looks), min_first))
    if looks == 1 or first >= n_items:
        return [max(n_items, 1)]
    rest = n_items - first
    return sorted({first + math.ceil(k * rest / (looks - 1)) for k in range(looks)})
