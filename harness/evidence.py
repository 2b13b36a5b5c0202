"""The evidence for a set of records, the same way for a run that just finished and for a stored one:
the engine's analysis, then the routing policies simulated from the records, then the levers (the same
answers bought otherwise). `workflow` calls it live, `rebuild` for `report`, `route`, `reprice` and
`gate --against`, so what a run printed and what its stored copy rebuilds cannot drift apart."""

from __future__ import annotations

from harness.analysis import Analysis, MetricInfo, analyze_records, attach_routing
from harness.config import AnalysisConfig, ConfigError, DecisionConfig, GateConfig, RoutingConfig
from harness.datasets import Item
from harness.decision import SequentialOutcome
from harness.levers import attach_levers
from harness.logs import LogFacts
from harness.pricing import ModelPrice
from harness.projection import project
from harness.records import Record
from harness.summary import VariantSummary, item_weights


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
    items: list[Item] | None = None,
    log: LogFacts | None = None,
) -> Analysis:
    """The analysis of these records with its routing policies and levers attached.

    `routing_errors` "warn" turns a routing config the records cannot serve (a variant it names did not
    run) into a warning: after the calls were paid for, the run still reports; "raise" refuses, as a
    command asked to route does. `items` and `log`, for a run over production logs, weight every figure by
    the calls each item stands for and project the month on the log's segments."""
    weights = item_weights(items) if items else None
    analysis = analyze_records(summaries, records, metrics, baseline, gate, settings, sequential, value, weights)
    if log is not None and items and analysis.baseline is not None:
        ran = [s.variant for s in summaries if s.skipped is None and s.n_items > 0]
        analysis.projection = project(
            records,
            items,
            log,
            analysis.baseline,
            ran,
            analysis.metric,
            gate,
            settings.resamples,
            settings.seed,
            requests_per_day,
        )
    if routing is not None:
        try:
            attach_routing(analysis, routing, summaries, records, metrics, settings, source)
        except ConfigError as exc:
            if routing_errors != "warn":
                raise
            analysis.warnings.append(f"routing not simulated: {exc.field}: {exc.problem}")
    attach_levers(analysis, records, prices, prefixes, requests_per_day)
    return analysis
