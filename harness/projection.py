"""The bill on the real traffic mix: per segment of a production log, calls per day, $/month today and with
each candidate, and the variant each segment should run.

A log's segments (features, teams) differ in volume, prompt length and how hard they are, so one
average hides where a cheaper model suffices. Each segment is projected on its own calls per day over the
log's window, with a bootstrap interval over its sampled calls, and decided on its own through the one
decision engine (production against each candidate, Holm across them, the gate's margin and confidence);
the recommendation for a segment is the cheapest candidate shown non-inferior there, else production.
The total is the sum over segments, so the saving is what the per-segment choice would save a month.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from harness.config import GateConfig
from harness.datasets import Item
from harness.decision import decide
from harness.logs import LogFacts
from harness.records import Record
from harness.summary import DAYS_PER_MONTH

Interval = tuple[float, float, float]
"""(estimate, low, high)."""


@dataclass(frozen=True)
class SegmentProjection:
    """One segment's volume, each variant's month on it, and its pick."""

    segment: str
    calls: int
    """Calls in the log's window."""
    per_day: float
    sampled: int
    monthly: dict[str, Interval]
    """Variant to its $/month on this segment's traffic."""
    mean_input_tokens: float
    mean_output_tokens: float
    recommended: str
    why: str


@dataclass(frozen=True)
class Projection:
    """Every segment, and the month today against the month with each segment's pick."""

    baseline: str
    segments: list[SegmentProjection]
    now: Interval
    """The baseline (production) on every segment, $/month."""
    recommended: Interval
    """Each segment on its recommended variant, $/month."""
    saving: Interval
    """now - recommended, $/month (its interval from the same resamples)."""
    days: float
    per_day: float
    notes: list[str] = field(default_factory=list)


def project(
    records: list[Record],
    items: list[Item],
    log: LogFacts,
    baseline: str,
    ran: list[str],
    metric: str,
    gate: GateConfig,
    resamples: int,
    seed: int,
    per_day_total: float | None = None,
) -> Projection | None:
    """The projection, or None when the log gives no rate (no times, and no `traffic` to share out)."""
    total = sum(log.segments.values())
    if log.days:
        rates = {s: n / log.days for s, n in log.segments.items()}
    elif per_day_total:
        rates = {s: per_day_total * n / total for s, n in log.segments.items()}
    else:
        return None
    segment_of = {item.id: item.segment or "" for item in items}
    by = {(r.variant, r.item_id): r for r in records if r.sample == 0}
    rng = np.random.default_rng(seed)
    segments, draws_now, draws_pick = [], np.zeros(resamples), np.zeros(resamples)
    estimate_now = estimate_pick = 0.0
    for name in log.segments:
        ids = [i for i, s in segment_of.items() if s == name]
        if not ids:
            continue
        costs = {v: np.array([_cost(by.get((v, i))) for i in ids]) for v in ran}
        picks = rng.integers(0, len(ids), size=(resamples, len(ids)))
        scale = rates[name] * DAYS_PER_MONTH
        monthly: dict[str, Interval] = {}
        boot: dict[str, np.ndarray] = {}
        for v, c in costs.items():
            boot[v] = c[picks].mean(axis=1) * scale
            low, high = np.percentile(boot[v], [2.5, 97.5])
            monthly[v] = (float(c.mean() * scale), float(low), float(high))
        chosen, why = _pick(by, ids, baseline, ran, metric, gate, monthly)
        estimate_now += monthly[baseline][0]
        estimate_pick += monthly[chosen][0]
        draws_now += boot[baseline]
        draws_pick += boot[chosen]
        production = [by[(baseline, i)] for i in ids if (baseline, i) in by]
        segments.append(
            SegmentProjection(
                segment=name,
                calls=log.segments[name],
                per_day=rates[name],
                sampled=len(ids),
                monthly=monthly,
                mean_input_tokens=float(np.mean([r.usage.input_tokens for r in production])) if production else 0.0,
                mean_output_tokens=float(np.mean([r.usage.output_tokens for r in production])) if production else 0.0,
                recommended=chosen,
                why=why,
            )
        )
    if not segments:
        return None
    saving = draws_now - draws_pick
    return Projection(
        baseline=baseline,
        segments=segments,
        now=(estimate_now, *_interval(draws_now)),
        recommended=(estimate_pick, *_interval(draws_pick)),
        saving=(estimate_now - estimate_pick, *_interval(saving)),
        days=log.days or 0.0,
        per_day=sum(rates.values()),
    )


def _cost(record: Record | None) -> float:
    return record.cost_usd if record is not None else math.nan


def _interval(draws: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(low), float(high)


def _pick(
    by: dict[tuple[str, str], Record],
    ids: list[str],
    baseline: str,
    ran: list[str],
    metric: str,
    gate: GateConfig,
    monthly: dict[str, Interval],
) -> tuple[str, str]:
    """The segment's variant: the cheapest candidate non-inferior to the baseline on this segment's items."""
    candidates = [v for v in ran if v != baseline and monthly[v][0] < monthly[baseline][0]]
    if not candidates:
        return baseline, "no candidate is cheaper here"

    def scores(variant: str) -> np.ndarray:
        values = []
        for i in ids:
            record = by.get((variant, i))
            value = record.scores.get(metric) if record is not None else None
            values.append(math.nan if value is None else float(value))
        return np.array(values)

    decision = decide(
        scores(baseline),
        {v: scores(v) for v in candidates},
        margin=gate.margin,
        confidence=gate.confidence,
        multiplicity=gate.multiplicity,
    )
    passing = [v for v in candidates if decision.candidates[v].status == "pass"]
    if not passing:
        return baseline, f"no cheaper candidate shown non-inferior on {metric} with {len(ids)} calls"
    best = min(passing, key=lambda v: monthly[v][0])
    return best, f"non-inferior on {metric} (margin {gate.margin:g}) and cheapest"
