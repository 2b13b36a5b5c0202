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
class Upgrade:
    """A candidate shown better than the baseline: its quality gain with the two-sided interval, and what
    it costs more (per item, and per month at the traffic when known)."""

    variant: str
    gain: float
    gain_low: float
    gain_high: float
    extra_cost_per_item: float = math.nan
    extra_monthly_usd: float | None = None


@dataclass(frozen=True)
class Recommendation:
    """The variant to use (the cheapest shown non-inferior to the baseline, or the best value when a point
    of quality has a stated price), what switching saves, and the dearer variants shown better."""

    variant: str
    baseline: str
    cost_per_item: float
    baseline_cost_per_item: float
    upgrades: tuple[Upgrade, ...] = ()
    """Variants shown better than the baseline that cost more than the recommendation: "switch up"."""
    value_note: str = ""
    """How the stated value of quality chose the variant, with its uncertainty (empty without one)."""

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


def recommend(
    points: list[Point],
    baseline: str,
    acceptable: set[str],
    upgrades: list[Upgrade] | None = None,
    monthly: dict[str, float] | None = None,
    value: object | None = None,
) -> Recommendation | None:
    """Among the baseline and the variants in `acceptable`, the cheapest (ties: higher quality).

    Only variants with a measured quality count: one whose every call failed (no score, NaN) is never
    recommended, and without a measured baseline there is nothing to recommend against. Variants shown
    better (`upgrades`, all of which are acceptable) that cost more are offered beside it. With `value`
    (a `DecisionConfig` with `usd_per_point_per_month`, a point being 0.01 of the metric) and monthly
    costs, the choice is instead the acceptable variant whose quality, at the lower bound of its gain,
    is worth the most net of its extra monthly cost.
    """
    by_name = {p.variant: p for p in points if math.isfinite(p.quality) and math.isfinite(p.cost_per_item)}
    if baseline not in by_name:
        return None
    candidates = [by_name[v] for v in acceptable | {baseline} if v in by_name]
    best = min(candidates, key=lambda p: (p.cost_per_item, -p.quality, p.variant != baseline))
    base_cost = by_name[baseline].cost_per_item
    monthly = monthly or {}
    priced = [_priced(u, by_name, base_cost, monthly, baseline) for u in upgrades or [] if u.variant in by_name]
    note = ""
    per_point = getattr(value, "usd_per_point_per_month", None)
    if per_point is not None and baseline in monthly:
        best, note = _best_value(best, priced, by_name, monthly, baseline, float(per_point))
    dearer = tuple(
        u for u in priced if by_name[u.variant].cost_per_item > best.cost_per_item and u.variant != best.variant
    )
    return Recommendation(best.variant, baseline, best.cost_per_item, base_cost, dearer, note)


def _priced(
    u: Upgrade, by_name: dict[str, Point], base_cost: float, monthly: dict[str, float], baseline: str
) -> Upgrade:
    extra = by_name[u.variant].cost_per_item - base_cost
    extra_monthly = monthly[u.variant] - monthly[baseline] if u.variant in monthly and baseline in monthly else None
    return Upgrade(u.variant, u.gain, u.gain_low, u.gain_high, extra, extra_monthly)


def _best_value(
    cheapest: Point,
    upgrades: list[Upgrade],
    by_name: dict[str, Point],
    monthly: dict[str, float],
    baseline: str,
    per_point: float,
) -> tuple[Point, str]:
    """The variant worth most per month: 100 x gain x per_point - extra monthly cost, the gain taken at
    its lower bound (a claim the evidence supports), against the cheapest acceptable variant (gain
    counted as 0: non-inferior is not better)."""
    saving = monthly[baseline] - monthly.get(cheapest.variant, monthly[baseline])
    best, best_value, note = cheapest, saving, ""
    for u in upgrades:
        if u.extra_monthly_usd is None:
            continue
        low = 100 * u.gain_low * per_point - u.extra_monthly_usd
        high = 100 * u.gain_high * per_point - u.extra_monthly_usd
        if low > best_value:
            best, best_value = by_name[u.variant], low
            note = (
                f"at ${per_point:,.2f} per point per month, {u.variant}'s gain of {100 * u.gain:+.1f} points "
                f"[{100 * u.gain_low:+.1f}, {100 * u.gain_high:+.1f}] is worth ${low:,.2f} to ${high:,.2f} a month "
                f"net of its extra ${u.extra_monthly_usd:,.2f}"
            )
    return best, note
