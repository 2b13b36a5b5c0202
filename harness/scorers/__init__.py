"""Scorers behind one registry: built-ins register on import; users add `module:function`."""

from harness.scorers import classification, embedding, judge, numeric, pairwise, rouge, text  # noqa: F401 - registration
from harness.scorers._apply import score_records, scorer_error_warnings
from harness.scorers._registry import (
    REGISTRY,
    AggregateFn,
    BatchScoreFn,
    CheckFn,
    Scored,
    ScoreFn,
    Scorer,
    ScorerParts,
    build_scorer,
    scorer,
)

__all__ = [
    "REGISTRY",
    "AggregateFn",
    "BatchScoreFn",
    "CheckFn",
    "ScoreFn",
    "Scored",
    "Scorer",
    "ScorerParts",
    "build_scorer",
    "score_records",
    "scorer",
    "scorer_error_warnings",
]
