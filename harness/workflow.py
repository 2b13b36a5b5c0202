"""The commands' shared sequence: prepare, run, score, summarise, analyse, show, track.

Kept out of the CLI so that `run`, `gate` and `report` share one path and the CLI stays argument parsing.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from harness.analysis import Analysis, MetricInfo, analyze
from harness.cache import ResponseCache
from harness.config import AnalysisConfig, ConfigError, Experiment, GateConfig, RoutingConfig
from harness.estimate import VariantEstimate
from harness.plan import Plan
from harness.records import Record
from harness.runner import RunResult
from harness.summary import VariantInfo, VariantSummary, summarize, summarize_records
from harness.tracking_process import TrackingProcess, portable

if TYPE_CHECKING:
    from harness.scorers import Scorer

PLOT_NAME = "frontier.png"
REPORT_NAME = "report.md"


@dataclass(frozen=True)
class RunOptions:
    """How a run treats keys, the cache, the budget and the question before spending."""

    strict: bool = False
    tracking: bool = True
    use_cache: bool = True
    refresh: bool = False
    """Call the models again even when the cache has an answer (and store the new answers)."""
    max_usd: float | None = None
    assume_yes: bool = False
    interactive: bool = False


@dataclass
class RunOutcome:
    """What a run produced."""

    plan: Plan
    records: list[Record]
    summaries: list[VariantSummary]
    analysis: Analysis
    run_id: str | None
    result: RunResult


def open_cache(experiment: Experiment, options: RunOptions) -> ResponseCache | None:
    """The response cache at `HARNESS_CACHE`, else the config's path; None with --no-cache."""
    if not options.use_cache or not experiment.cache.enabled:
        return None
    override = os.environ.get("HARNESS_CACHE")
    return ResponseCache(Path(override) if override else experiment.resolve(experiment.cache.path))


def run_experiment(
    experiment: Experiment,
    console: Console,
    options: RunOptions | None = None,
    only: set[str] | None = None,
    prior: dict[str, list[Record]] | None = None,
) -> RunOutcome:
    """Validate, estimate, call every variant (cache first, within budget), score, analyse, print, track.

    `only` restricts the variants; `prior` supplies a variant's records directly (a stored baseline).
    MLflow work runs in a tracking process started first, so its import overlaps the preparation.
    """
    options = options or RunOptions()
    started_at = time.time()
    tracker = TrackingProcess() if options.tracking else None
    try:
        return _run(experiment, console, options, only, prior, started_at, tracker)
    finally:
        if tracker is not None:
            tracker.close()


def _run(
    experiment: Experiment,
    console: Console,
    options: RunOptions,
    only: set[str] | None,
    prior: dict[str, list[Record]] | None,
    started_at: float,
    tracker: TrackingProcess | None,
) -> RunOutcome:
    from harness.preflight import prepare
    from harness.report import print_analysis, print_results
    from harness.runner import run_plan
    from harness.scorers import score_records

    plan = prepare(experiment, strict=options.strict, only=only)
    max_usd = options.max_usd if options.max_usd is not None else experiment.budget.max_usd
    check_budget_bounds(plan, max_usd)
    console.print(
        f"[bold]{experiment.name}[/]: {len(plan.eval_set.items)} items x {len(plan.runnable)} variants "
        f"(dataset {plan.eval_set.source}, fingerprint {plan.eval_set.fingerprint})"
    )
    for variant in plan.variants:
        if variant.skipped:
            console.print(f"[bold yellow]WARNING[/] {variant.name}: {variant.skipped}")
    for warning in self_preference_warnings(plan):
        console.print(f"[bold yellow]WARNING[/] {warning}")
    cache = open_cache(experiment, options)
    ready = dict(prior or {})
    for name in ready:
        console.print(f"using stored records for {name} (no model calls)")
    estimates = show_estimate(plan, console, cache if not options.refresh else None, tracker, set(ready))
    confirm_spend(plan, estimates, options)
    result = run_plan(
        plan, console=console, exclude=set(ready), cache=cache, read_cache=not options.refresh, max_usd=max_usd
    )
    records = [r.model_copy(update={"cache_hit": True}) for name in ready for r in ready[name]] + result.records
    console.print(
        f"{result.calls_made} calls made, {result.cache_hits} served from the response cache, "
        f"${result.spent_usd:.4f} spent"
    )
    if result.budget_exhausted:
        console.print(
            f"[bold red]BUDGET EXHAUSTED[/]: the cap of ${max_usd:g} would have been passed; "
            f"{result.not_run} calls were not started. Raise the cap and run again: finished calls are cached."
        )
    score_records(records, {i.id: i for i in plan.eval_set.items}, plan.scorers, cache, console)
    for warning in scorer_error_warnings(records, plan.scorers):
        console.print(f"[bold yellow]WARNING[/] {warning}")
    eval_cost = sum(r.eval_cost_usd for r in records)
    if eval_cost or any(s.batch is not None for s in plan.scorers):
        console.print(f"scoring cost ${eval_cost:.4f} (judge and embedding calls, apart from the variants' cost)")
    summaries = summarize(plan, records)
    metrics = [MetricInfo(s.name, s.kind) for s in plan.scorers]
    analysis = analyze(summaries, records, metrics, plan.baseline, experiment.gate, experiment.analysis)
    if experiment.routing is not None:
        add_routing(
            analysis, experiment.routing, summaries, records, metrics, experiment.analysis, str(experiment.source_path)
        )
    print_results(console, summaries, plan.baseline, f"{experiment.name}: results")
    print_analysis(console, analysis)
    run_id = None
    if tracker is not None:
        from harness.tracking import tracking_uri

        status = {
            "spent_usd": result.spent_usd,
            "calls_made": float(result.calls_made),
            "cache_hits": float(result.cache_hits),
            "calls_not_run": float(result.not_run),
        }
        state = "budget_exhausted" if result.budget_exhausted else "finished"
        run_id = tracker.call(track_run, portable(plan), records, summaries, started_at, analysis, status, state)
        console.print(
            f"MLflow: run [bold]{run_id}[/] in {tracking_uri(experiment)} (see it with: python -m harness ui)"
        )
    return RunOutcome(plan, records, summaries, analysis, run_id, result)


def add_routing(
    analysis: Analysis,
    config: RoutingConfig | None,
    summaries: list[VariantSummary],
    records: list[Record],
    metrics: list[MetricInfo],
    settings: AnalysisConfig,
    source: str,
) -> None:
    """Simulate the routing policies from the records (no model call) and attach them to the analysis."""
    from harness.routing import resolve, simulate

    metric = (config.metric if config else None) or analysis.metric
    ran = [
        (s.variant, s.cost_per_item_usd, s.quality.get(metric, math.nan))
        for s in summaries
        if s.skipped is None and s.n_items
    ]
    routing = resolve(config, ran, analysis.baseline, metric, [m.name for m in metrics], source)
    analysis.routing = routing
    analysis.policies = simulate(
        records,
        routing.metric,
        routing.weak,
        routing.strong,
        routing.policies,
        settings.resamples,
        settings.seed,
        analysis.confidence,
    )


def scorer_error_warnings(records: list[Record], scorers: list[Scorer]) -> list[str]:
    """One line per scorer that could not score some outputs (an unparseable judge shows up here)."""
    answered = [r for r in records if r.error is None and r.output is not None]
    out = []
    for sc in scorers:
        failed = [r.score_errors[sc.name] for r in answered if sc.name in r.score_errors]
        if failed:
            out.append(
                f"scorer {sc.name} could not score {len(failed)} of {len(answered)} outputs "
                f"(left out of its mean, not counted as 0); e.g. {failed[0][:160]}"
            )
    return out


def self_preference_warnings(plan: Plan) -> list[str]:
    """A judge that is also a candidate tends to favour its own outputs (self-preference bias)."""
    candidates = {v.model.model for v in plan.runnable}
    out = []
    for sc in plan.scorers:
        model = sc.options.get("model")
        name = model.get("model") if isinstance(model, dict) else model
        if sc.batch is not None and name in candidates:
            out.append(
                f"scorer {sc.name} uses {name}, which is also a candidate: judges tend to prefer their own "
                "outputs; use a judge from another model family for decisions"
            )
    return out


def track_run(
    plan: Plan,
    records: list[Record],
    summaries: list[VariantSummary],
    started_at: float,
    analysis: Analysis,
    status: dict[str, float],
    state: str,
) -> str:
    """Plot, report and log one run to MLflow (in the tracking process); returns the parent run id."""
    from harness.tracking import log_run

    with tempfile.TemporaryDirectory() as tmp:
        files = write_outputs(Path(tmp), plan.experiment.name, plan.experiment.description, summaries, analysis)
        return log_run(plan, records, summaries, started_at, analysis, files, status, state)


def check_budget_bounds(plan: Plan, max_usd: float | None) -> None:
    """With a budget, every priced call needs an output limit, or its worst case is unbounded."""
    from harness.runner import max_output_tokens

    if max_usd is None:
        return
    for variant in plan.runnable:
        priced = variant.price.output > 0 or variant.price.usd_per_hour > 0
        if priced and max_output_tokens(variant) is None:
            raise ConfigError(
                plan.experiment.source_path,
                "params.max_tokens",
                f"a budget is set but {variant.name} has no output limit, so a call's worst case is unbounded",
                "set params.max_tokens (or the model's own params.max_tokens)",
            )


def estimates_for(
    plan: Plan, cache: ResponseCache | None, tracking: bool | TrackingProcess, exclude: set[str] | None = None
) -> tuple[list[VariantEstimate], float | None]:
    """Per-variant estimates and the expected wall time (history from MLflow when tracking, read in the
    tracking process when one is given)."""
    from harness.estimate import estimate_plan, expected_wall_seconds
    from harness.tracking import variant_history

    history = {}
    if isinstance(tracking, TrackingProcess):
        history = tracking.call(variant_history, portable(plan))
    elif tracking:
        history = variant_history(plan)
    estimates = [e for e in estimate_plan(plan, cache, history) if e.variant not in (exclude or set())]
    return estimates, expected_wall_seconds(plan, estimates)


def show_estimate(
    plan: Plan,
    console: Console,
    cache: ResponseCache | None,
    tracking: bool | TrackingProcess,
    exclude: set[str] | None = None,
) -> list[VariantEstimate]:
    """Print the estimate table; returns the estimates."""
    from harness.report import estimate_table

    estimates, wall = estimates_for(plan, cache, tracking, exclude)
    console.print(estimate_table(estimates, wall))
    return estimates


def confirm_spend(plan: Plan, estimates: list[VariantEstimate], options: RunOptions) -> None:
    """Ask before spending above `budget.confirm_above_usd`; never hang when nobody can answer."""
    threshold = plan.experiment.budget.confirm_above_usd
    worst = sum(e.max_usd for e in estimates)
    if options.assume_yes or worst <= threshold:
        return
    fix = "pass --yes, lower the item count, or raise budget.confirm_above_usd"
    if not options.interactive:
        raise ConfigError(
            plan.experiment.source_path,
            "budget.confirm_above_usd",
            f"this run may cost up to ${worst:.4f}, above ${threshold:g}, and nobody is at the terminal to confirm",
            fix,
        )
    from rich.prompt import Confirm

    if not Confirm.ask(f"This run may cost up to ${worst:.4f}. Spend it?", default=False):
        raise ConfigError(plan.experiment.source_path, "budget.confirm_above_usd", "declined at the prompt", fix)


def write_outputs(
    folder: Path, title: str, description: str, summaries: list[VariantSummary], analysis: Analysis
) -> list[Path]:
    """The frontier plot and the markdown report, written into `folder`."""
    from harness.plots import frontier_plot
    from harness.report import markdown_report

    files = []
    plot = None
    if analysis.points:
        plot = frontier_plot(analysis, folder / PLOT_NAME, f"{title}: cost vs {analysis.metric}")
        files.append(plot)
    report = folder / REPORT_NAME
    report.write_text(
        markdown_report(title, summaries, analysis, plot.name if plot else None, description), encoding="utf-8"
    )
    files.append(report)
    return files


def analysis_from_records(
    manifest: dict, records: list[Record], gate: GateConfig | None = None, routing: RoutingConfig | None = None
) -> tuple[list[VariantSummary], Analysis]:
    """Rebuild summaries and analysis from a stored run's manifest and records (no model call).

    Routing policies come from `routing`, else from the run's own config.
    """
    variants = [VariantInfo(**v) for v in manifest["variants"]]
    metrics = [MetricInfo(**m) for m in manifest["metrics"]]
    traffic = manifest.get("traffic") or {}
    summaries = summarize_records(
        variants, records, [m.name for m in metrics], None, None, traffic.get("requests_per_day")
    )
    gate = gate or GateConfig(**manifest["gate"])
    settings = AnalysisConfig(**manifest["analysis"])
    analysis = analyze(summaries, records, metrics, manifest["baseline"], gate, settings)
    if routing is not None or manifest.get("routing"):
        config = routing or RoutingConfig(**manifest["routing"])
        add_routing(analysis, config, summaries, records, metrics, settings, f"run {manifest['experiment']}")
    return summaries, analysis
