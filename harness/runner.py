"""Async scheduling of every (variant, item) call: cache first, then a budget guard, then the model.

The runner is the only stage that calls models. Each call becomes exactly one Record, success or error,
so nothing is dropped and a failure is never mistaken for a low score. Every success is written to the
response cache as it returns, so an interrupted run resumes by running the same command again, and the
budget guard reserves each call's worst-case cost before it starts, so a cap is never exceeded.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from harness.cache import CachedResponse, ResponseCache, cache_key
from harness.datasets import Item
from harness.plan import Plan, Variant
from harness.preflight import prompt_hash
from harness.pricing import is_local_model
from harness.providers import call_model
from harness.providers.local import local_slots, register_local_provider
from harness.records import Record, Usage

OnRecord = Callable[[Record], None]
INPUT_TOKEN_SAFETY = 1.25
"""Local token counts can differ from a provider's tokenizer; the budget reserves this much more."""


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


@dataclass
class BudgetGuard:
    """Reserves each call's worst-case cost before it starts; refuses once the cap would be passed."""

    max_usd: float | None
    spent: float = 0.0
    reserved: float = 0.0
    exhausted: bool = False
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def reserve(self, worst_usd: float) -> bool:
        """True when the call may start; False (and stays False) once the cap would be exceeded."""
        async with self._lock:
            if self.exhausted:
                return False
            if self.max_usd is not None and self.spent + self.reserved + worst_usd > self.max_usd:
                self.exhausted = True
                return False
            self.reserved += worst_usd
            return True

    async def settle(self, worst_usd: float, actual_usd: float) -> None:
        """Replace a call's reservation with what it really cost."""
        async with self._lock:
            self.reserved -= worst_usd
            self.spent += actual_usd


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
    cache: ResponseCache | None = None,
    read_cache: bool = True,
    max_usd: float | None = None,
) -> RunResult:
    """The async body of `run_plan`, for callers that already own an event loop."""
    register_local_provider()
    console = console or Console(stderr=True)
    exclude = exclude or set()
    samples = range(plan.experiment.epochs)
    jobs = [
        (v, item, k) for v in plan.runnable if v.name not in exclude for item in plan.eval_set.items for k in samples
    ]
    keys = [cache_key(v.model, plan.messages[(v.prompt.name, item.id)], v.params, k) for v, item, k in jobs]
    hits = cache.get_many(keys) if cache is not None and read_cache else {}
    result = RunResult(records=[])
    guard = BudgetGuard(max_usd)
    limit = asyncio.Semaphore(plan.experiment.concurrency)
    per_model = {
        v.model.display_name: asyncio.Semaphore(n) for v in plan.runnable if (n := model_concurrency(v)) is not None
    }
    output_limits = {v.name: max_output_tokens(v) for v in plan.runnable}
    errors = 0
    progress = Progress(
        TextColumn("[bold]running[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("calls"),
        TextColumn("[green]${task.fields[spent]:.4f}[/] spent"),
        TextColumn("{task.fields[hits]} cached"),
        TextColumn("[red]{task.fields[errors]} errors"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        disable=not jobs,
    )

    inflight: dict[str, asyncio.Future[Record | None]] = {}

    async def one(variant: Variant, item: Item, sample: int, key: str) -> Record | None:
        nonlocal errors
        if key in hits:
            record = _from_cache(plan, variant, item, sample, hits[key])
            result.cache_hits += 1
        elif key in inflight:
            # The same call for another variant (two truncation lengths that render one prompt): paid once.
            first = await inflight[key]
            if first is None:  # the first was never started: the budget ran out
                result.not_run += 1
                progress.update(task, advance=1)
                return None
            if first.error is not None or first.output is None:
                update = {**_identity(plan, variant, item, sample), "cost_usd": 0.0, "attempts": 0}
                record = first.model_copy(update=update)
            else:
                hit = CachedResponse(first.output, first.usage, first.latency_s)
                record = _from_cache(plan, variant, item, sample, hit)
                result.cache_hits += 1
        else:
            inflight[key] = asyncio.get_running_loop().create_future()
            # The model's own limit is taken first, so a call queued behind a one-slot local model neither
            # holds a global slot nor counts its wait as latency (or as a timeout).
            async with per_model.get(variant.model.display_name) or contextlib.nullcontext(), limit:
                worst = worst_case_usd(plan, variant, item, output_limits[variant.name])
                if not await guard.reserve(worst):
                    result.not_run += 1
                    progress.update(task, advance=1)
                    inflight[key].set_result(None)
                    return None
                record = await _call(plan, variant, item, sample)
                await guard.settle(worst, record.cost_usd)
            inflight[key].set_result(record)
            result.calls_made += 1
            if cache is not None and record.error is None and record.output is not None:
                cache.put(key, variant.model.model, record.output, record.usage, record.latency_s)
        errors += record.error is not None
        progress.update(task, advance=1, spent=guard.spent, errors=errors, hits=result.cache_hits)
        if on_record is not None:
            on_record(record)
        return record

    done: list[Record | None] = [None] * len(jobs)

    async def store(index: int) -> None:
        (variant, item, sample), key = jobs[index], keys[index]
        done[index] = await one(variant, item, sample, key)

    async def drain(indices: list[int], window: int) -> None:
        # Tasks are created as earlier ones finish, never all at once: 10,000 waiting coroutines would
        # hold tens of megabytes for nothing. Each model drains on its own, so a one-slot local model
        # does not hold back the others.
        running: set[asyncio.Task[None]] = set()
        for index in indices:
            if len(running) >= window:
                finished, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for finished_task in finished:
                    finished_task.result()
            running.add(asyncio.create_task(store(index)))
        await asyncio.gather(*running)

    groups: dict[str, list[int]] = {}
    for index, (variant, _, _) in enumerate(jobs):
        groups.setdefault(variant.model.display_name, []).append(index)
    concurrency = plan.experiment.concurrency
    windows = {
        name: 2 * min(model_concurrency(jobs[indices[0]][0]) or concurrency, concurrency)
        for name, indices in groups.items()
    }
    with progress:
        task = progress.add_task("run", total=len(jobs), spent=0.0, errors=0, hits=0)
        await asyncio.gather(*(drain(indices, windows[name]) for name, indices in groups.items()))
    result.records = [r for r in done if r is not None]
    result.spent_usd = guard.spent
    result.budget_exhausted = guard.exhausted
    return result


def model_concurrency(variant: Variant) -> int | None:
    """The variant's model's own concurrency limit, if it has one."""
    return variant.model.concurrency or local_slots(variant.model.model)


def max_output_tokens(variant: Variant) -> int | None:
    """The most output a call can bill: `max_tokens`, else the model's limit from litellm's map."""
    for key in ("max_tokens", "max_completion_tokens"):
        if variant.params.get(key) is not None:
            return int(variant.params[key])
    from harness.pricing import map_price

    info = map_price(variant.model.model) or {}
    value = info.get("max_output_tokens")
    return None if value is None else int(value)


def worst_case_usd(plan: Plan, variant: Variant, item: Item, output: int | None) -> float:
    """The most one call can cost: known input (with a safety margin), output up to its limit, all retries."""
    estimate = plan.prompt_tokens.get((variant.name, item.id), 0)
    usage = Usage(
        input_tokens=math.ceil(estimate * INPUT_TOKEN_SAFETY) + 16,
        output_tokens=output if output is not None else 0,
    )
    seconds = plan.experiment.timeout_s * (plan.experiment.max_retries + 1)
    return variant.price.cost(usage, latency_s=seconds)


def sample_params(variant: Variant, sample: int) -> dict[str, Any]:
    """The call's parameters for one sample: each repeated sample of a seeded model gets its own seed."""
    if sample == 0:
        return variant.params
    if "seed" in variant.params or is_local_model(variant.model.model):
        return {**variant.params, "seed": int(variant.params.get("seed", 0)) + sample}
    return variant.params


def _identity(plan: Plan, variant: Variant, item: Item, sample: int) -> dict[str, Any]:
    return {
        "variant": variant.name,
        "item_id": item.id,
        "sample": sample,
        "model": variant.model.model,
        "prompt": variant.prompt.name,
        "prompt_hash": prompt_hash(plan, variant.prompt.name, item.id),
        "prompt_tokens_estimate": plan.prompt_tokens.get((variant.name, item.id), 0),
    }


def _record(plan: Plan, variant: Variant, item: Item, sample: int, **outcome: Any) -> Record:
    """A record with the variant's and item's identity filled in; `outcome` is what the call produced."""
    return Record(**_identity(plan, variant, item, sample), **outcome)


def _from_cache(plan: Plan, variant: Variant, item: Item, sample: int, hit: CachedResponse) -> Record:
    return _record(
        plan,
        variant,
        item,
        sample,
        output=hit.output,
        usage=hit.usage,
        cost_usd=variant.price.cost(hit.usage, hit.latency_s),
        price_source=variant.price.source,
        latency_s=hit.latency_s,
        attempts=0,
        cache_hit=True,
    )


async def _call(plan: Plan, variant: Variant, item: Item, sample: int) -> Record:
    experiment = plan.experiment
    messages = plan.messages[(variant.prompt.name, item.id)]
    params = sample_params(variant, sample)
    result = await call_model(variant.model, messages, params, experiment.timeout_s, experiment.max_retries)
    usage = result.usage
    price_source = variant.price.source
    if result.output is not None and not result.usage_reported:
        from harness.prompts import count_tokens

        usage = usage.model_copy(
            update={
                "input_tokens": plan.prompt_tokens.get((variant.name, item.id), 0),
                "output_tokens": count_tokens(variant.model.model, [{"role": "assistant", "content": result.output}]),
            }
        )
        price_source += " (usage estimated locally: the provider reported none)"
    return _record(
        plan,
        variant,
        item,
        sample,
        output=result.output,
        usage=usage,
        cost_usd=variant.price.cost(usage, result.latency_s),
        price_source=price_source,
        latency_s=result.latency_s,
        attempts=result.attempts,
        error=result.error,
    )
