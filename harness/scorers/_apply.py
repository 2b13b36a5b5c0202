"""Attaching scores to records. An errored call gets no score (None), never a silent 0.

Re-scoring a record starts its eval cost from zero: the cost belongs to this scoring pass.
"""

from __future__ import annotations

from harness.datasets import Item
from harness.records import Record
from harness.scorers._registry import Scored, Scorer


def score_records(records: list[Record], items: dict[str, Item], scorers: list[Scorer]) -> None:
    """Fill `record.scores` in place; a scorer that raises leaves None and its message in `score_errors`."""
    for record in records:
        record.eval_cost_usd = 0.0
        for sc in scorers:
            if record.output is None or record.error is not None:
                record.scores[sc.name] = None
                continue
            try:
                result = sc.score(record.output, items[record.item_id])
            except Exception as exc:  # a user's scorer may raise anything; keep the run
                record.scores[sc.name] = None
                record.score_errors[sc.name] = f"{type(exc).__name__}: {exc}"[:300]
                continue
            if isinstance(result, Scored):
                record.scores[sc.name] = None if result.value is None else float(result.value)
                record.eval_cost_usd += result.cost_usd
                if result.value is None:
                    record.score_errors[sc.name] = result.detail or "the scorer returned no value"
            else:
                record.scores[sc.name] = float(result)
