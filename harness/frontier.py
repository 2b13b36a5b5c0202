"""Pareto sets over cost and quality (optionally latency), and the recommendation. Pure: no I/O."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Point:
    """One variant's position: lower cost and latency are better, higher quality is better."""

    variant: str
    cost_per_item: float
    quality: float
    latency_p95: float = math.nan


def dominates(a: Point, b: Point, use_latency: bool) -> bool:
    """True when `a` is at least as good as `b` on every axis and strictly better on one."""
    axes = [(a.cost_per_item, b.cost_per_item), (-a.quality, -b.quality)]
    if use_latency:
        axes.append((a.latency_p95, b.latency_p95))
    return all(x <= y for x, y in axes) and any(x < y for x, y in axes)


def pareto_front(points: list[Point], use_latency: bool = False) -> list[str]:
    """Variants no other variant dominates, cheapest first."""
    usable = [p for p in points if math.isfinite(p.quality) and math.isfinite(p.cost_per_item)]
    front = [p for p in usable if not any(dominates(q, p, use_latency) for q in usable if q is not p)]
    return [p.variant for p in sorted(front, key=lambda p: (p.cost_per_item, -p.quality))]


@dataclass(frozen=True)
class Recommendation:
    """The cheapest variant shown non-inferior to the baseline, and what switching saves."""

    variant: str
    baseline: str
    cost_per_item: float
    baseline_cost_per_item: float

    @property
    def savings_pct(self) -> float:
        """Percent of the baseline's cost saved per item (0 when the baseline costs nothing)."""
        if self.baseline_cost_per_item <= 0:
            return 0.0
        return 100.0 * (1.0 - self.cost_per_item / self.baseline_cost_per_item)

    @property
    def savings_per_1000_usd(self) -> float:
        """Dollars saved per 1,000 items."""
        return 1000.0 * (self.baseline_cost_per_item - self.cost_per_item)


def recommend(points: list[Point], baseline: str, acceptable: set[str]) -> Recommendation | None:
    """Among the baseline and the variants in `acceptable`, the cheapest (ties: higher quality).

    Only variants with a measured quality count: one whose every call failed (no score, NaN) is never
    recommended, and without a measured baseline there is nothing to recommend against.
    """
    by_name = {p.variant: p for p in points if math.isfinite(p.quality) and math.isfinite(p.cost_per_item)}
    if baseline not in by_name:
        return None
    candidates = [by_name[v] for v in acceptable | {baseline} if v in by_name]
    best = min(candidates, key=lambda p: (p.cost_per_item, -p.quality, p.variant != baseline))
    return Recommendation(best.variant, baseline, best.cost_per_item, by_name[baseline].cost_per_item)
