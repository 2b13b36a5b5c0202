"""Attaching scores to records. An errored call gets no score (None), never a silent 0.

Re-scoring a record starts its eval cost from zero: the cost belongs to this scoring pass.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from harness.datasets import Item
from harness.pool import ModelPool
from harness.records import Record
from harness.scorers._registry import Scored, Scorer


def score_records(
    records: list[Record],
    items: dict[str, Item],
    scorers: list[Scorer],
    pool: ModelPool | None = None,
    console: Console | None = None,
) -> None:
    """Fill `record.scores` in place; a scorer that raises leaves None and its message in `score_errors`.

    Scorers with a batch function (judges, embedders) grade every output in one pass through `pool`, the
    run's model pool (cache, concurrency, budget), with a progress bar on `console`.
    """
    for record in records:
        record.eval_cost_usd = 0.0
    scorable = [r for r in records if r.output is not None and r.error is None]
    for record in records:
        if record.output is None or record.error is not None:
            record.scores.update({sc.label: None for sc in scorers})
    for sc in scorers:
        if sc.batch is not None:
            _score_batch(sc, scorable, items, pool, console)
            continue
        for record in scorable:
            try:
                result = sc.score(record.output or "", items[record.item_id])
            except Exception as exc:  # a user's scorer may raise anything; keep the run
                record.scores[sc.label] = None
                record.score_errors[sc.label] = f"{type(exc).__name__}: {exc}"[:300]
                continue
            _attach(record, sc.label, result)


def _score_batch(
    sc: Scorer, records: list[Record], items: dict[str, Item], pool: ModelPool | None, console: Console | None
) -> None:
    assert sc.batch is not None
    progress = Progress(
        TextColumn(f"[bold]scoring[/] {sc.label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console or Console(stderr=True, emoji=False),
        disable=not records or console is None,
    )
    with progress:
        task = progress.add_task("score", total=len(records))
        results = sc.batch([(r.output or "", items[r.item_id]) for r in records], pool, lambda: progress.advance(task))
    for record, result in zip(records, results, strict=True):
        _attach(record, sc.label, result)


def _attach(record: Record, name: str, result: float | Scored) -> None:
    if isinstance(result, Scored):
        record.scores[name] = None if result.value is None else float(result.value)
        record.eval_cost_usd += result.cost_usd
        if result.rationale:
            record.rationales[name] = result.rationale
        if result.value is None:
            record.score_errors[name] = result.detail or "the scorer returned no value"
    else:
        record.scores[name] = float(result)


def scorer_error_warnings(records: list[Record], scorers: list[Scorer]) -> list[str]:
    """One line per scorer that could not score some outputs (an unparseable judge shows up here)."""
    answered = [r for r in records if r.error is None and r.output is not None]
    out = []
    for sc in scorers:
        failed = [r.score_errors[sc.label] for r in answered if sc.label in r.score_errors]
        if failed:
            out.append(
                f"scorer {sc.label} could not score {len(failed)} of {len(answered)} outputs "
                f"(left out of its mean, not counted as 0); e.g. {failed[0][:160]}"
            )
    return out
