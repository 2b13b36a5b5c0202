"""Async scheduling of every (variant, item, sample) call through the run's model pool.

The runner is the only stage that calls models, and it does so through `harness.pool`, which owns the
cache, the budget and the concurrency limits for candidates and scorers alike. Each call becomes exactly
one Record, success or error, so nothing is dropped and a failure is never mistaken for a low score.
Every success is cached as it returns, so an interrupted run resumes by running the same command again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from harness.datasets import Item
from harness.plan import Plan, Variant
from harness.pool import BatchProgress, Completion, ModelPool
from harness.records import Record
from harness.replay import replayed_record

OnRecord = Callable[[Record], None]


@dataclass
class RunResult:
    """What the runner did: records of every call made or served from cache, and the spend."""

    records: list[Record]
    spent_usd: float = 0.0
    """Dollars actually spent by this invocation (cache hits cost nothing)."""
    calls_made: int = 0
    cache_hits: int = 0
    not_run: int = 0
    """Calls never started because the budget would not cover their worst case."""
    budget_exhausted: bool = False


def run_plan(plan: Plan, **options: Any) -> RunResult:
    """Run every runnable variant (except `exclude`) on every item; records come in (variant, item, sample) order.

    Takes the keyword options of `run_plan_async`.
    """
    return asyncio.run(run_plan_async(plan, **options))


async def run_plan_async(
    plan: Plan,
    console: Console | None = None,
    on_record: OnRecord | None = None,
    exclude: set[str] | None = None,
    pool: ModelPool | None = None,
) -> RunResult:
    """The async body of `run_plan`, for callers that already own an event loop.

    `pool` is the run's model pool (cache, budget, concurrency); scorers use the same one afterwards.
    """
    pool = pool or ModelPool.for_experiment(plan.experiment)
    console = console or Console(stderr=True, emoji=False)
    jobs = plan.jobs([v for v in plan.runnable if v.name not in (exclude or set())])
    specs = [plan.call(v, item, k) for v, item, k in jobs]
    pool.prefetch([s.key for s in specs])
    before = dataclasses.replace(pool.counts)
    spent_before = pool.budget.spent
    done: list[Record | None] = [None] * len(jobs)
    errors = 0
    with _progress(console, len(jobs)) as (progress, task):

        async def store(index: int) -> None:
            finish(index, await pool.complete(specs[index]))

        def finish(index: int, outcome: Completion) -> None:
            nonlocal errors
            variant, item, sample = jobs[index]
            record = None if outcome.not_run else _record(plan, variant, item, sample, outcome)
            done[index] = record
            errors += record is not None and record.error is not None
            spent = pool.budget.spent - spent_before
            hits = pool.counts.cache_hits - before.cache_hits
            progress.update(task, advance=1, spent=spent, errors=errors, hits=hits)
            if record is not None and on_record is not None:
                on_record(record)

        batched = [i for i, spec in enumerate(specs) if pool.batched(spec.model)]
        direct = _groups(plan, pool, jobs, exclude=set(batched))
        with _batch_lines(pool, progress):
            await asyncio.gather(
                *(_drain(store, indices, window) for indices, window in direct),
                pool.complete_batched([specs[i] for i in batched], lambda j, outcome: finish(batched[j], outcome)),
            )
    counts = pool.counts
    replayed = [
        replayed_record(item, plan.messages[(v.prompt.name, item.id)], plan.replay_prices)
        for v in plan.runnable
        if v.replayed and v.name not in (exclude or set())
        for item in plan.eval_set.items
    ]
    return RunResult(
        records=_in_plan_order(plan, [r for r in done if r is not None] + replayed),
        spent_usd=pool.budget.spent - spent_before,
        calls_made=counts.calls_made - before.calls_made,
        cache_hits=counts.cache_hits - before.cache_hits,
        not_run=counts.not_run - before.not_run,
        budget_exhausted=pool.budget.exhausted,
    )


def _in_plan_order(plan: Plan, records: list[Record]) -> list[Record]:
    """Records by variant, then item in the eval's order, then sample (the calls ran item by item)."""
    variants = {v.name: i for i, v in enumerate(plan.variants)}
    items = {item.id: i for i, item in enumerate(plan.eval_set.items)}
    return sorted(records, key=lambda r: (variants.get(r.variant, len(variants)), items.get(r.item_id, 0), r.sample))


@contextlib.contextmanager
def _progress(console: Console, total: int) -> Iterator[tuple[Progress, TaskID]]:
    progress = Progress(
        TextColumn("[bold]{task.description}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("calls"),
        TextColumn("[green]${task.fields[spent]:.4f}[/] spent"),
        _Tail(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        disable=not total,
    )
    with progress:
        yield progress, progress.add_task("running", total=total, spent=0.0, errors=0, hits=0)


class _Tail(ProgressColumn):
    """The run's cached and failed calls; a batch's state on a batch's line."""

    def render(self, task: Task) -> Text:
        if "state" in task.fields:
            return Text(str(task.fields["state"]), style="cyan")
        return Text.assemble(f"{task.fields['hits']} cached ", (f"{task.fields['errors']} errors", "red"))


@contextlib.contextmanager
def _batch_lines(pool: ModelPool, progress: Progress) -> Iterator[None]:
    """A progress line per submitted batch (its state, requests done, dollars), under the run's bar."""
    lines: dict[str, TaskID] = {}

    def show(batch: BatchProgress) -> None:
        if batch.batch_id not in lines:
            lines[batch.batch_id] = progress.add_task(f"  {batch.batch_id}", total=batch.total, spent=0.0, state="")
        line = lines[batch.batch_id]
        progress.update(line, completed=batch.done, total=batch.total, spent=batch.spent_usd, state=batch.status)

    pool.on_batch = show
    try:
        yield
    finally:
        pool.on_batch = None


def _groups(
    plan: Plan, pool: ModelPool, jobs: list[tuple[Variant, Item, int]], exclude: set[int]
) -> list[tuple[list[int], int]]:
    """Job indices per model (but `exclude`) with the window each drains through (twice its concurrency)."""
    groups: dict[str, list[int]] = {}
    for index, (variant, _, _) in enumerate(jobs):
        if index not in exclude:
            groups.setdefault(variant.model.display_name, []).append(index)
    concurrency = plan.experiment.concurrency
    return [
        (indices, 2 * min(pool.model_slots(jobs[indices[0]][0].model) or concurrency, concurrency))
        for indices in groups.values()
    ]


async def _drain(store: Callable[[int], Awaitable[None]], indices: list[int], window: int) -> None:
    """Tasks are created as earlier ones finish, never all at once: 10,000 waiting coroutines would hold
    tens of megabytes for nothing. Each model drains on its own, so a one-slot local model does not hold
    back the others."""
    running: set[asyncio.Task[None]] = set()
    for index in indices:
        if len(running) >= window:
            finished, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for finished_task in finished:
                finished_task.result()
        running.add(asyncio.create_task(store(index)))
    await asyncio.gather(*running)


def _record(plan: Plan, variant: Variant, item: Item, sample: int, outcome: Completion) -> Record:
    """A record with the variant's and item's identity filled in from what the pool produced."""
    return Record(
        variant=variant.name,
        item_id=item.id,
        sample=sample,
        model=variant.model.model,
        prompt=variant.prompt.name,
        prompt_hash=plan.prompt_hash(variant.prompt.name, item.id),
        prompt_tokens_estimate=plan.prompt_tokens.get((variant.name, item.id), 0),
        **{**outcome.record_fields(), "price_source": outcome.price_source or variant.price.source},
    )
