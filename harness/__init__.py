"""harness: controlled experiments that put LLM cost and quality side by side.

The public API, importable from here (loaded on first use, so `python -m harness --help` stays fast):

- `run(experiment_or_yaml_path, options=RunOptions(...))` -> `RunOutcome`: run every variant.
- `gate(experiment, candidate="MODEL[:PROMPT]", against=RUN_ID)` -> `GateOutcome`: the CI decision.
- `load_run(run_id)` -> `StoredRun`; `analyze(stored)`, `route(stored, routing)`,
  `reprice(stored, prices, tier)`, `levers_of(stored, prices)`: everything from stored records, without a
  model call.
- `decide(baseline_scores, {name: candidate_scores}, kind=..., margin=...)` -> `Decision`: the one decision
  engine every verdict comes from, on paired per-item scores from harness or any other tool.
- `Experiment`, `load_experiment`, `Record`, `Usage`, `ConfigError`: the data they take and give.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ConfigError": "harness.config",
    "Experiment": "harness.config",
    "load_config": "harness.config",
    "Record": "harness.records",
    "Usage": "harness.records",
    "RunOptions": "harness.workflow",
    "RunOutcome": "harness.workflow",
    "StoredRun": "harness.tracking.read",
    "Rebuilt": "harness.rebuild",
    "GateOutcome": "harness.api",
    "Decision": "harness.decision",
    "SequentialDesign": "harness.decision",
    "decide": "harness.decision",
    "Repriced": "harness.api",
    "analyze": "harness.api",
    "gate": "harness.api",
    "load_experiment": "harness.api",
    "levers_of": "harness.api",
    "load_run": "harness.api",
    "reprice": "harness.api",
    "route": "harness.api",
    "run": "harness.api",
    "write_report": "harness.api",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'harness' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    """The lazy exports too, so `dir(harness)` and completion show the API before it is loaded."""
    return sorted({*globals(), *_EXPORTS})
