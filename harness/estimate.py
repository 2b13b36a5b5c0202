"""What a run will cost before it runs: exact input tokens, output from history or the limit, wall time.

No model calls. Input tokens come from litellm's offline tokenizers over the rendered prompts; output
tokens and latency from the newest earlier run of the same variant in MLflow, else from `max_tokens`.
Cached calls cost nothing and take no time.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from harness.cache import ResponseCache
from harness.figures import usd
from harness.plan import Plan, Variant
from harness.pool import ModelPool, declared_slots
from harness.pricing import ModelPrice
from harness.records import Record, Usage, usd_per_item
from harness.tokens import count_prompts

if TYPE_CHECKING:
    from harness.analysis import Analysis


@dataclass(frozen=True)
class History:
    """What an earlier run of the same variant measured."""

    mean_output_tokens: float
    latency_p50_s: float


@dataclass(frozen=True)
class VariantEstimate:
    """The cost range and time of one variant's calls."""

    variant: str
    calls: int
    cached: int
    input_tokens: int
    expected_output_per_call: float | None
    output_source: str
    min_usd: float
    expected_usd: float
    max_usd: float
    expected_seconds: float | None
    needs: str = ""
    """Why the variant cannot run here (an API key not set): priced all the same, left out of the totals."""
    standard_usd: float | None = None
    """Bought through a Batch API: the expected cost of the same calls at standard prices (else None)."""


def estimate_plan(
    plan: Plan, cache: ResponseCache | None, history: dict[str, History], unrunnable: bool = False
) -> list[VariantEstimate]:
    """One estimate per runnable variant over exactly the calls the runner makes (every sample of every
    item, from `Plan.jobs` and `Plan.call`); cached calls are free. With `unrunnable`, also the variants
    skipped for a missing key whose price is known, marked with what they need: a run can be priced
    before anyone buys the key."""
    pool = ModelPool.for_experiment(plan.experiment, cache)
    out = []
    extra = [v for v in plan.variants if v.skipped is not None and _priced(v)] if unrunnable else []
    for variant in [*plan.called, *extra]:
        specs = [plan.call(v, item, k) for v, item, k in plan.jobs([variant])]
        if variant.skipped is not None:  # its prompts were not counted by the plan: count them now
            counted = count_prompts([(variant.model.model, s.messages) for s in specs])
            specs = [dataclasses.replace(s, input_tokens=n) for s, n in zip(specs, counted, strict=True)]
        hits = pool.prefetch([s.key for s in specs])
        pending = [s for s in specs if s.key not in hits]
        limit = variant.limits.output_tokens
        past = history.get(variant.name)
        if past is not None:
            expected_out, source = past.mean_output_tokens, "earlier run"
        elif limit is not None:
            expected_out, source = float(limit), "max_tokens"
        else:
            expected_out, source = None, "unknown (set max_tokens)"
        latency = past.latency_p50_s if past is not None else None
        tokens = [s.input_tokens or 0 for s in pending]
        price = variant.price
        tier = variant.limits.tier if not specs else pool.tier(specs[0])  # flex, priority, batch: at its prices

        expected = functools.partial(_expected_usd, price, tokens, round(expected_out or 0), latency or 0.0)

        out.append(
            VariantEstimate(
                variant=variant.name,
                calls=len(pending),
                cached=len(specs) - len(pending),
                input_tokens=sum(tokens),
                expected_output_per_call=expected_out,
                output_source=source,
                min_usd=sum(price.cost(Usage(input_tokens=t), tier=tier) for t in tokens),
                expected_usd=expected(tier),
                max_usd=sum(pool.worst_case_usd(s) for s in pending),
                expected_seconds=None if latency is None or tier == "batch" else latency * len(pending),
                needs=(variant.skipped or "").removeprefix("skipped: "),
                standard_usd=expected(None) if tier == "batch" else None,
            )
        )
    return out


def _expected_usd(price: ModelPrice, tokens: list[int], output: int, latency: float, tier: str | None) -> float:
    return sum(price.cost(Usage(input_tokens=t, output_tokens=output), latency, tier) for t in tokens)


def _priced(variant: Variant) -> bool:
    return bool(variant.price.rates) or variant.price.usd_per_hour > 0


SCORER_PREFIX = "scorer "


def estimate_scorers(plan: Plan, exclude: set[str] | None = None) -> list[VariantEstimate]:
    """The worst case of the scorers that call models (judges, embedders), one row each, counted over
    every output the run can produce: no output exists yet, so each is taken at its output limit."""
    pool = ModelPool.for_experiment(plan.experiment)
    variants = [v for v in plan.runnable if v.name not in (exclude or set())]
    limits = [v.limits.output_tokens or 0 for v in variants for _ in plan.samples]
    out = []
    for scorer in plan.scorers:
        if scorer.worst_case is None or not limits:
            continue
        calls, worst = scorer.worst_case(plan.eval_set.items, limits, pool)
        out.append(
            VariantEstimate(
                variant=f"{SCORER_PREFIX}{scorer.label}",
                calls=calls,
                cached=0,
                input_tokens=0,
                expected_output_per_call=None,
                output_source="worst case",
                min_usd=0.0,
                expected_usd=worst,
                max_usd=worst,
                expected_seconds=None,
            )
        )
    return out


def expected_wall_seconds(plan: Plan, estimates: list[VariantEstimate]) -> float | None:
    """Wall time at the configured concurrency; a one-slot model runs its calls one after another. Calls
    bought by batch are not in it: the provider's window bounds them (`batch_wait`)."""
    estimates = [e for e in estimates if not e.variant.startswith(SCORER_PREFIX) and e.standard_usd is None]
    if any(e.expected_seconds is None and e.calls for e in estimates):
        return None
    by_variant = {v.name: v for v in plan.runnable}
    shared = 0.0
    serial: dict[str, float] = defaultdict(float)
    for e in estimates:
        seconds = e.expected_seconds or 0.0
        slots = declared_slots(by_variant[e.variant].model)
        if slots is not None:
            serial[by_variant[e.variant].model.display_name] += seconds / min(slots, plan.experiment.concurrency)
        else:
            shared += seconds
    return max([shared / plan.experiment.concurrency, *serial.values()])


@dataclass(frozen=True)
class DecisionSize:
    """How many items the gate's decision on one candidate needs, sized from an earlier run of it."""

    candidate: str
    pilot_pairs: int
    pilot_mdd: float
    """The minimum detectable difference the earlier run's items reached (80% power)."""
    items: int | None
    """Items at which the margin is detectable at 80% power; None when the run gives no estimate."""
    usd_per_item: float
    """Candidate and baseline together, per item (every sample, scoring included), as the run paid."""
    pilot_verdict: str = ""
    """The earlier run's own verdict under this gate: pass or fail means its items already decided."""

    @property
    def usd(self) -> float | None:
        return None if self.items is None else self.items * self.usd_per_item


@dataclass(frozen=True)
class Sizing:
    """The items the gate's decisions need, sized from an earlier run (`estimate`)."""

    run_id: str | None
    sizes: list[DecisionSize] = field(default_factory=list)
    note: str = ""
    """Why nothing could be sized, or against what the sizes were taken when not the configured baseline."""


def decision_sizes(
    baseline: str, candidates: list[str], records: list[Record], analysis: Analysis
) -> list[DecisionSize]:
    """From an earlier run's records and its analysis under this config's gate (margin, confidence): the
    items each candidate's decision needs and their cost at the dollars per item that run paid."""
    per_item = usd_per_item(records)
    paired = analysis.paired.get(analysis.metric, {})
    out = []
    for name in candidates:
        result = paired.get(name)
        if result is None or baseline not in per_item or name not in per_item:
            continue
        out.append(
            DecisionSize(
                name,
                result.n_pairs,
                result.mdd,
                result.items_for_margin,
                per_item[name] + per_item[baseline],
                analysis.verdicts[name].status if name in analysis.verdicts else "",
            )
        )
    return out


def batch_note(estimates: list[VariantEstimate], durations: list[float]) -> str | None:
    """One line on what buying by batch changes: the expected cost against standard prices (for the
    variants that will run, and with those that need a key where `estimate` priced them too) and the
    wait (the window, and how long this project's last batches took); None when nothing is batched."""
    batched = [e for e in estimates if e.standard_usd is not None and e.calls]
    if not batched:
        return None

    def cost(rows: list[VariantEstimate]) -> str:
        paid, standard = sum(e.expected_usd for e in rows), sum(e.standard_usd or 0.0 for e in rows)
        saving = f" ({1 - paid / standard:.0%} less)" if standard > 0 else ""
        calls = sum(e.calls for e in rows)
        return f"{calls} calls expected {usd(paid)} against {usd(standard)} at standard prices{saving}"

    ready = [e for e in batched if not e.needs]
    parts = [cost(ready)] if ready else []
    if len(ready) < len(batched):
        parts.append(f"with the variants that need a key, {cost(batched)}")
    wait = "results within the provider's 24 h window"
    if durations:
        ordered = sorted(durations)
        median = ordered[len(ordered) // 2]
        wait += (
            f"; the last {len(ordered)} batches here took {_duration(median)} (median), "
            f"{_duration(ordered[-1])} at most"
        )
    return f"by batch: {'; '.join(parts)}; {wait}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
