"""Async scheduling of every (variant, item) call under a concurrency limit, with a progress bar.

The runner is the only stage that calls models. It turns each call into exactly one Record, success
or error, so nothing is dropped and a failure is never mistaken for a low score.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from harness.datasets import Item
from harness.plan import Plan, Variant
from harness.preflight import prompt_hash
from harness.providers import call_model
from harness.providers.local import local_slots, register_local_provider
from harness.records import Record

OnRecord = Callable[[Record], None]


def run_plan(
    plan: Plan, console: Console | None = None, on_record: OnRecord | None = None, exclude: set[str] | None = None
) -> list[Record]:
    """Run every runnable variant (except `exclude`) on every item; records come in (variant, item) order."""
    return asyncio.run(run_plan_async(plan, console, on_record, exclude))


async def run_plan_async(
    plan: Plan, console: Console | None = None, on_record: OnRecord | None = None, exclude: set[str] | None = None
) -> list[Record]:
    """The async body of `run_plan`, for callers that already own an event loop."""
    register_local_provider()
    console = console or Console(stderr=True)
    exclude = exclude or set()
    jobs = [(v, item) for v in plan.runnable if v.name not in exclude for item in plan.eval_set.items]
    limit = asyncio.Semaphore(plan.experiment.concurrency)
    per_model = {
        v.model.display_name: asyncio.Semaphore(n) for v in plan.runnable if (n := model_concurrency(v)) is not None
    }
    spent = 0.0
    errors = 0
    progress = Progress(
        TextColumn("[bold]running[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("calls"),
        TextColumn("[green]${task.fields[spent]:.4f}[/] spent"),
        TextColumn("[red]{task.fields[errors]} errors"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        disable=not jobs,
    )

    async def one(variant: Variant, item: Item) -> Record:
        nonlocal spent, errors
        # The model's own limit is taken first, so a call queued behind a one-slot local model neither
        # holds a global slot nor counts its wait as latency (or as a timeout).
        async with per_model.get(variant.model.display_name) or contextlib.nullcontext(), limit:
            record = await _call(plan, variant, item)
        spent += record.cost_usd
        errors += record.error is not None
        progress.update(task, advance=1, spent=spent, errors=errors)
        if on_record is not None:
            on_record(record)
        return record

    with progress:
        task = progress.add_task("run", total=len(jobs), spent=0.0, errors=0)
        return list(await asyncio.gather(*(one(v, item) for v, item in jobs)))


def model_concurrency(variant: Variant) -> int | None:
    """The variant's model's own concurrency limit, if it has one."""
    return variant.model.concurrency or local_slots(variant.model.model)


async def _call(plan: Plan, variant: Variant, item: Item) -> Record:
    experiment = plan.experiment
    messages = plan.messages[(variant.prompt.name, item.id)]
    result = await call_model(variant.model, messages, variant.params, experiment.timeout_s, experiment.max_retries)
    estimate = plan.prompt_tokens.get((variant.name, item.id), 0)
    usage = result.usage
    price_source = variant.price.source
    if result.output is not None and not result.usage_reported:
        from harness.prompts import count_tokens

        usage = usage.model_copy(
            update={
                "input_tokens": estimate,
                "output_tokens": count_tokens(variant.model.model, [{"role": "assistant", "content": result.output}]),
            }
        )
        price_source += " (usage estimated locally: the provider reported none)"
    return Record(
        variant=variant.name,
        item_id=item.id,
        model=variant.model.model,
        prompt=variant.prompt.name,
        prompt_hash=prompt_hash(plan, variant.prompt.name, item.id),
        prompt_tokens_estimate=estimate,
        output=result.output,
        usage=usage,
        cost_usd=variant.price.cost(usage, result.latency_s) if result.attempts else 0.0,
        price_source=price_source,
        latency_s=result.latency_s,
        attempts=result.attempts,
        error=result.error,
    )
