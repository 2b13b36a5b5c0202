"""The evidence for a set of records, the same way for a run that just finished and for a stored one:
the engine's analysis, then the routing policies simulated from the records, then the levers (the same
answers bought otherwise). `workflow` calls it live, `rebuild` for `report`, `route`, `reprice` and
`gate --against`, so what a run printed and what its stored copy rebuilds cannot drift apart."""

from __future__ import annotations

from harness.analysis import Analysis, MetricInfo, analyze_records, attach_routing
from harness.config import AnalysisConfig, ConfigError, DecisionConfig, GateConfig, RoutingConfig
from harness.decision import SequentialOutcome
from harness.levers import attach_levers
from harness.pricing import ModelPrice
from harness.records import Record
from harness.summary import VariantSummary


def analyze_run(
    summaries: list[VariantSummary],
    records: list[Record],
    metrics: list[MetricInfo],
    baseline: str | None,
    gate: GateConfig,
    settings: AnalysisConfig,
    value: DecisionConfig,
    routing: RoutingConfig | None,
    source: str,
    prices: dict[str, ModelPrice],
    prefixes: dict[str, int | None],
    requests_per_day: float | None,
    sequential: SequentialOutcome | None = None,
    routing_errors: str = "raise",
) -> Analysis:
    """The analysis of these records with its routing policies and levers attached.

    `routing_errors` "warn" turns a routing config the records cannot serve (a variant it names did not
    run) into a warning: after the calls were paid for, the run still reports; "raise" refuses, as a
    command asked to route does."""
    analysis = analyze_records(summaries, records, metrics, baseline, gate, settings, sequential, value)
    if routing is not None:
        try:
            attach_routing(analysis, routing, summaries, records, metrics, settings, source)
        except ConfigError as exc:
            if routing_errors != "warn":
                raise
            analysis.warnings.append(f"routing not simulated: {exc.field}: {exc.problem}")
    attach_levers(analysis, records, prices, prefixes, requests_per_day)
    return analysis
