"""Per-variant aggregates from records: quality per scorer, cost, tokens, latency, errors.

Means are over the items that produced an output; errors are counted apart, so a flaky provider shows
up as an error rate, not as a lower quality score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from harness.records import Record

if TYPE_CHECKING:  # summaries read these objects but never need their modules (which reach the model pool)
    from harness.config import TrafficConfig
    from harness.datasets import Item
    from harness.logs import LogFacts
    from harness.plan import Plan, Variant
    from harness.scorers import Scorer


@dataclass
class VariantSummary:
    """What one row of the results table says."""

    variant: str
    model: str
    prompt: str
    skipped: str | None = None
    n_items: int = 0
    n_errors: int = 0
    quality: dict[str, float] = field(default_factory=dict)
    """Scorer name (and aggregate names such as `accuracy.macro_f1`) to value."""
    cost_total_usd: float = 0.0
    cost_per_item_usd: float = 0.0
    mean_input_tokens: float = 0.0
    mean_output_tokens: float = 0.0
    mean_prompt_tokens_estimate: float = 0.0
    latency_p50_s: float = math.nan
    latency_p95_s: float = math.nan
    retries: int = 0
    n_cache_hits: int = 0
    eval_cost_usd: float = 0.0
    """What scoring cost (judge calls), kept apart from the variant's cost."""
    spent_usd: float = 0.0
    """Dollars this invocation actually paid (cache hits cost nothing; cost_total_usd is the list cost)."""
    monthly_cost_usd: float = math.nan
    """cost_per_item x traffic.requests_per_day x 30.44, when the config gives traffic."""

    @property
    def error_rate(self) -> float:
        """Share of items whose call failed."""
        return self.n_errors / self.n_items if self.n_items else 0.0

    def metrics(self) -> dict[str, float]:
        """Flat, MLflow-safe metric names and values (NaN left out), in the order MLflow's Evaluation runs
        page shows them as columns: each scorer's mean under the name MLflow's own evaluation logs
        (`<scorer>/mean`), then dollars per item and per month, then the rest."""
        values = {f"{k}/mean": v for k, v in self.quality.items()}
        values.update(
            {
                "cost_per_item_usd": self.cost_per_item_usd,
                "monthly_cost_usd": self.monthly_cost_usd,
                "cost_total_usd": self.cost_total_usd,
                "error_rate": self.error_rate,
                "latency_p50_s": self.latency_p50_s,
                "latency_p95_s": self.latency_p95_s,
                "mean_input_tokens": self.mean_input_tokens,
                "mean_output_tokens": self.mean_output_tokens,
                "mean_prompt_tokens_estimate": self.mean_prompt_tokens_estimate,
                "n_items": float(self.n_items),
                "n_errors": float(self.n_errors),
                "retries": float(self.retries),
                "n_cache_hits": float(self.n_cache_hits),
                "eval_cost_usd": self.eval_cost_usd,
                "spent_usd": self.spent_usd,
            }
        )
        return {k: float(v) for k, v in values.items() if not math.isnan(v)}


@dataclass(frozen=True)
class VariantInfo:
    """What a summary needs to know about a variant besides its records (also stored with a run)."""

    name: str
    model: str
    prompt: str
    skipped: str | None = None

    @classmethod
    def of(cls, variant: Variant) -> VariantInfo:
        """The info of a planned variant."""
        return cls(variant.name, variant.model.model, variant.prompt.name, variant.skipped)


DAYS_PER_MONTH = 30.44


def summarize(plan: Plan, records: list[Record]) -> list[VariantSummary]:
    """One summary per variant in plan order, skipped variants included."""
    items = {item.id: item for item in plan.eval_set.items}
    infos = [VariantInfo.of(v) for v in plan.variants]
    rpd = projected_rate(plan.experiment.traffic, plan.eval_set.log)
    weights = item_weights(plan.eval_set.items)
    return summarize_records(infos, records, [s.label for s in plan.scorers], plan.scorers, items, rpd, weights)


def projected_rate(traffic: TrafficConfig | None, log: LogFacts | None) -> float | None:
    """The traffic a month is projected on: the config's, else the log's calls per day over its window."""
    if traffic is not None:
        return traffic.requests_per_day
    if log is not None and log.days:
        return sum(log.segments.values()) / log.days
    return None


def item_weights(items: list[Item]) -> dict[str, float] | None:
    """Item id to the calls it stands for, when the items are a weighted sample (of logs); else None."""
    if len({item.weight for item in items}) <= 1:
        return None
    return {item.id: item.weight for item in items}


def summarize_records(
    variants: list[VariantInfo],
    records: list[Record],
    metrics: list[str],
    scorers: list[Scorer] | None = None,
    items: dict[str, Item] | None = None,
    requests_per_day: float | None = None,
    weights: dict[str, float] | None = None,
) -> list[VariantSummary]:
    """Summaries from records alone; aggregates (macro-F1) need the scorers and items, else are left out.
    With `weights` (a weighted sample of logs), means per item are weighted by the calls each stands for."""
    by_variant: dict[str, list[Record]] = {}
    for record in records:
        by_variant.setdefault(record.variant, []).append(record)
    aggregators = [s for s in scorers or [] if s.aggregate is not None] if items is not None else []
    summaries = [
        _summarize_variant(v, by_variant.get(v.name, []), metrics, aggregators, items or {}, weights or {})
        for v in variants
    ]
    if requests_per_day is not None:
        for s in summaries:
            if s.n_items:
                s.monthly_cost_usd = s.cost_per_item_usd * requests_per_day * DAYS_PER_MONTH
    return summaries


def _summarize_variant(
    variant: VariantInfo,
    records: list[Record],
    metrics: list[str],
    aggregators: list[Scorer],
    items: dict[str, Item],
    weights: dict[str, float],
) -> VariantSummary:
    summary = VariantSummary(variant=variant.name, model=variant.model, prompt=variant.prompt, skipped=variant.skipped)
    if not records:
        return summary
    ok = [r for r in records if r.error is None]
    summary.n_items = len(records)
    summary.n_errors = len(records) - len(ok)
    summary.cost_total_usd = sum(r.cost_usd for r in records)
    w = np.array([weights.get(r.item_id, 1.0) for r in records])
    summary.cost_per_item_usd = float(np.dot(w, [r.cost_usd for r in records]) / w.sum())
    summary.retries = sum(max(r.attempts - 1, 0) for r in records)
    summary.n_cache_hits = sum(r.cache_hit for r in records)
    summary.eval_cost_usd = sum(r.eval_cost_usd for r in records)
    summary.spent_usd = sum(r.cost_usd for r in records if r.paid_now)
    summary.mean_prompt_tokens_estimate = float(np.mean([r.prompt_tokens_estimate for r in records]))
    if ok:
        summary.mean_input_tokens = float(np.mean([r.usage.input_tokens for r in ok]))
        summary.mean_output_tokens = float(np.mean([r.usage.output_tokens for r in ok]))
        latencies = np.array([r.latency_s for r in ok])
        summary.latency_p50_s = float(np.percentile(latencies, 50))
        summary.latency_p95_s = float(np.percentile(latencies, 95))
    for metric in metrics:
        scored = [(v, weights.get(r.item_id, 1.0)) for r in ok if (v := r.scores.get(metric)) is not None]
        values, w_scored = np.array([v for v, _ in scored]), np.array([x for _, x in scored])
        summary.quality[metric] = float(np.dot(values, w_scored) / w_scored.sum()) if scored else math.nan
    for sc in aggregators:
        if ok and sc.aggregate is not None:
            extra = sc.aggregate([r.output or "" for r in ok], [items[r.item_id] for r in ok])
            summary.quality.update({f"{sc.label}.{k}": v for k, v in extra.items()})
    return summary
