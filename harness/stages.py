"""The sequential gate's stages: run a share of the items, look, and stop once every candidate is decided.

The statistics live in `harness.sequential`; this module only decides which calls to make next. Items
are taken in the seeded order `plan.item_order` gives, so an interrupted or repeated gate makes the
same stages and the cache serves what was paid for. A candidate decided at a look is not called again;
the baseline runs while any candidate is undecided.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from rich.console import Console

from harness.analysis import floor_or_ceiling, item_means, score_arrays
from harness.config import ConfigError, SequentialConfig
from harness.decision import (
    CandidateDecision,
    PairedScores,
    SequentialOutcome,
    candidate_alpha,
    look,
    score_range_of,
)
from harness.estimate import VariantEstimate
from harness.plan import Plan, item_order
from harness.pool import ModelPool
from harness.records import Record, usd_per_item
from harness.runner import RunResult, run_plan
from harness.sequential import boundaries, schedule

Score = Callable[[Plan, list[Record]], None]


@dataclass
class Staged:
    """What the stages ran, and how the sequential design ended."""

    result: RunResult
    records: list[Record]
    outcome: SequentialOutcome


def run_stages(
    plan: Plan,
    console: Console,
    pool: ModelPool,
    ready: dict[str, list[Record]],
    config: SequentialConfig,
    estimates: list[VariantEstimate],
    score: Score,
) -> Staged:
    """Run the gate's variants stage by stage; `ready` holds a stored baseline's records (no calls)."""
    experiment = plan.experiment
    gate = experiment.gate
    baseline = plan.baseline
    names = {v.name for v in plan.runnable} | set(ready)
    if baseline is None or baseline not in names:
        problem = "a sequential gate needs the baseline to run"
        raise ConfigError(experiment.source_path, "gate.sequential", problem, "configure baseline")
    active = [v.name for v in plan.runnable if v.name != baseline]
    alpha = candidate_alpha(1 - gate.confidence, len(active), gate.multiplicity)
    order = item_order([item.id for item in plan.eval_set.items], experiment.analysis.seed)
    stops = schedule(len(order), config.looks)
    bounds = boundaries(tuple(stop / len(order) for stop in stops), alpha, config.spending)
    outcome = SequentialOutcome(len(stops), config.spending, alpha, len(order))
    metric = gate.metric or (plan.scorers[0].label if plan.scorers else "")
    total = RunResult(records=[])
    records: list[Record] = []
    ran_items = dict.fromkeys({v.name for v in plan.runnable} - set(ready), 0)  # a stored baseline costs nothing
    start = 0
    for index, stop in enumerate(stops):
        ids = order[start:stop]
        stage = plan.with_items(ids).select({baseline, *active})
        console.print(f"sequential gate: look {index + 1} of {len(stops)}, items {start + 1}-{stop} of {len(order)}")
        start = stop
        result = run_plan(stage, console=console, exclude=set(ready), pool=pool)
        chosen = set(ids)
        stored = [r.model_copy(update={"cache_hit": True}) for rs in ready.values() for r in rs if r.item_id in chosen]
        new = stored + result.records
        score(stage, new)
        records += new
        _add(total, result)
        for name in {baseline, *active} & set(ran_items):
            ran_items[name] = stop
        outcome.stopped_at, outcome.items_used = index + 1, stop
        if pool.budget.exhausted:
            outcome.stopped_by = "the budget ran out"
            break
        for name, decision in candidates_at_look(
            records, baseline, active, metric, index, bounds, config.futility, plan
        ).items():
            outcome.decisions[name] = decision
            if decision.status != "continue":
                active.remove(name)
                outcome.decided_at[name] = index + 1
        if not active:
            break
    total.records = records
    outcome.usd_spent = total.spent_usd
    outcome.usd_not_spent = _not_spent(records, estimates, ran_items, len(order))
    return Staged(total, records, outcome)


def candidates_at_look(
    records: list[Record],
    baseline: str,
    candidates: list[str],
    metric: str,
    index: int,
    bounds: tuple[float, ...],
    futility: float,
    plan: Plan,
) -> dict[str, CandidateDecision]:
    """Each undecided candidate's look at the items scored so far, paired with the baseline (the decision
    engine's `look`); a metric at its floor or ceiling never passes (the verdict's own rule)."""
    gate = plan.experiment.gate
    item_ids = list(dict.fromkeys(r.item_id for r in records))
    names = [baseline, *candidates]
    sums, counts = score_arrays(records, names, item_ids, metric, gate.errors)
    means = item_means(sums, counts)
    kind = next((s.kind for s in plan.scorers if s.label == metric), "continuous")
    binary = kind == "binary" and bool(np.all(counts <= 1))
    columns = {name: means[v] for v, name in enumerate(candidates, start=1)}
    scores = PairedScores(means[0], columns, binary, score_range_of(kind, list(means)), gate.margin, gate.confidence)
    out = look(scores, index, bounds, futility)
    if floor_or_ceiling(records, names, metric) is not None:
        last = index == len(bounds) - 1
        for name, decision in out.items():
            if decision.status == "pass":
                out[name] = replace(decision, status="undecided" if last else "continue", better=False)
    return out


def _add(total: RunResult, stage: RunResult) -> None:
    total.spent_usd += stage.spent_usd
    total.calls_made += stage.calls_made
    total.cache_hits += stage.cache_hits
    total.not_run += stage.not_run
    total.budget_exhausted = total.budget_exhausted or stage.budget_exhausted


def _not_spent(
    records: list[Record], estimates: list[VariantEstimate], ran_items: dict[str, int], n_items: int
) -> float:
    """What the items each variant never ran would have cost: at the dollars per item its calls (and their
    scoring) cost so far, else at the estimate's expected dollars per item."""
    if not n_items:
        return 0.0
    paid = usd_per_item(records)
    expected = {e.variant: e.expected_usd / n_items for e in estimates}
    out = 0.0
    for name, ran in ran_items.items():
        per_item = paid.get(name, 0.0) if ran else expected.get(name, 0.0)
        out += per_item * (n_items - ran)
    return out if math.isfinite(out) else 0.0
