"""The run sequence every command shares: prepare, estimate, run, score, summarise, analyse, show, track.

Kept out of the CLI so that `run` and `gate` share one path; the public API (`harness.api`) calls it and
the CLI calls the API. Questions to the user come in through `RunOptions.confirm`, which the CLI sets.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

from harness.analysis import Analysis, MetricInfo
from harness.cache import ResponseCache
from harness.caches import open_cache
from harness.config import ConfigError, Experiment, SequentialConfig
from harness.evidence import analyze_run
from harness.exit_codes import EXIT_BUDGET, EXIT_INCOMPLETE, EXIT_OK
from harness.invocation import command
from harness.manifest import RunStatus
from harness.plan import Plan
from harness.planner import prepare, self_preference_warnings
from harness.pool import ModelPool, can_batch, distrust_lines
from harness.records import Record
from harness.report import print_run
from harness.report_files import report_locally
from harness.runner import RunResult, run_plan
from harness.scorers import score_records, scorer_error_warnings
from harness.secrets import redact_url, scrub
from harness.spending import check_budget_bounds, confirm_spend, show_estimate
from harness.stages import run_stages
from harness.summary import VariantSummary, projected_rate, summarize
from harness.tracking.job import track_run
from harness.tracking.production import trace_reader
from harness.tracking.store import check_store, tracking_uri, warm
from harness.tracking_process import TrackingError, TrackingProcess, portable

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class RunOptions:
    """How a run treats keys, the cache, the budget and the question before spending."""

    strict: bool = False
    tracking: bool = True
    use_cache: bool = True
    refresh: bool = False
    """Call the models again even when the cache has an answer (and store the new answers)."""
    max_usd: float | None = None
    batch: bool = False
    """Buy the calls through the providers' Batch APIs (`--batch`: `execution.mode: batch` for the run)."""
    assume_yes: bool = False
    confirm: Callable[[str], bool] | None = None
    """Asks a person before spending above `budget.confirm_above_usd` (the CLI's prompt at a terminal);
    None where nobody can answer, and then such a run stops with a config error."""
    sequential: SequentialConfig | None = None
    """Run in stages and stop once the gate is decided (`harness.stages`); the gate sets it."""
    background_logging: bool = False
    """Hand MLflow logging to the tracking process and return once the results are printed: the
    iteration loop at a terminal. The run id is then not known here (`RunOutcome.logging_pid`), and a
    logging failure is reported by that process (message and report under `reports/`), not by the exit
    code; so CI and scripts, which read the id or trust the exit code, wait (the default)."""
    shard: tuple[int, int] | None = None
    """(I, N): call and score only the I-th of N parts of the items (`Plan.shard`), into the shared cache,
    under 1/N of the budget cap; never tracked. The same run without a shard then makes no call and logs
    the whole analysis."""

    wide: bool = False
    """Print every column (tokens, latency, the tests and the intervals of the differences), not the
    compact table."""
    quiet: bool = False
    """Print nothing (`harness.run` and `harness.gate` then write to a silent console); the outcome
    holds everything."""
    only: tuple[str, ...] = ()
    """Run only the variants whose names match one of these globs (`fnmatch`), and the baseline."""

    @property
    def tracked(self) -> bool:
        """Whether the run logs to MLflow: a shard never does (the assembling run logs the whole)."""
        return self.tracking and self.shard is None


@dataclass
class RunOutcome:
    """What a run produced, and whether it completed."""

    plan: Plan
    records: list[Record]
    summaries: list[VariantSummary]
    analysis: Analysis
    run_id: str | None
    result: RunResult
    status: RunStatus = field(default_factory=RunStatus)
    tracking_error: str | None = None
    """Why MLflow logging failed (the report was then written to `report_files`)."""
    report_files: list[Path] = field(default_factory=list)
    logging_pid: int | None = None
    """The process still logging this run to MLflow (`RunOptions.background_logging`); `run_id` is None."""

    @property
    def incomplete(self) -> str | None:
        """Why the run could not complete (every call failed, nothing ran, tracking failed), or None."""
        called = self.result.records
        if called and all(r.error is not None for r in called):
            first = called[0].error
            example = f" (e.g. {first.type}: {first.message[:200]})" if first is not None else ""
            return f"every one of the {len(called)} calls failed{example}"
        if not self.records and not self.status.budget_exhausted:
            return "no variant ran (each was skipped, see the warnings above)"
        if self.tracking_error is not None:
            return f"tracking failed: {self.tracking_error}"
        return None

    @property
    def exit_code(self) -> int:
        """4 when incomplete, 3 when the budget ran out, else 0 (see `harness.exit_codes`)."""
        if self.incomplete is not None:
            return EXIT_INCOMPLETE
        return EXIT_BUDGET if self.status.budget_exhausted else EXIT_OK


@dataclass
class Session:
    """A prepared plan and the tracking process started for it before preparation, which `execute` takes
    over: its MLflow import and store check overlap the preparation instead of the end of the run. A
    session that will not run is `discard`ed, which stops that process."""

    plan: Plan
    tracker: TrackingProcess | None = None
    uri: str | None = None
    """The store the tracker was warmed for (a plan whose store differs starts its own)."""

    def select(self, names: set[str], strict: bool) -> Session:
        """The same session over only these variants (the gate's baseline and candidates)."""
        return Session(self.plan.select(names, strict=strict), self.tracker, self.uri)

    def discard(self) -> None:
        if self.tracker is not None:
            self.tracker.abandon()
            self.tracker = None

    def take_tracker(self, uri: str) -> TrackingProcess | None:
        """The warmed tracking process, handed over once, if it was warmed for `uri` (else stopped)."""
        tracker, self.tracker = self.tracker, None
        if tracker is not None and self.uri != uri:
            tracker.abandon()
            return None
        return tracker


def prepare_tracked(experiment: Experiment, options: RunOptions, strict: bool) -> Session:
    """`prepare`, with the tracking process started first: its MLflow import and store check overlap the
    preparation (litellm's import, token counts), not the end of the run."""

    tracker, uri = None, None
    if options.tracked:
        uri = tracking_uri(experiment)
        try:
            check_store(uri)
        except ConfigError:
            uri = None  # `execute` refuses the store, before any call
        else:
            tracker = TrackingProcess()
            tracker.start(warm, uri)
    try:
        traces = trace_reader(experiment.root, experiment.source_path)
        return Session(prepare(experiment, strict=strict, traces=traces), tracker, uri)
    except BaseException:
        if tracker is not None:
            tracker.abandon()
        raise


def execute(
    prepared: Session | Plan, console: Console, options: RunOptions, prior: dict[str, list[Record]] | None = None
) -> RunOutcome:
    """Run a prepared plan: the sequence every command shares.

    MLflow work runs in a tracking process, started before preparation when `prepare_tracked` made the
    session (else here), so its import and store check overlap the work before the calls. A tracking
    failure loses nothing: the records are in the response cache, the report is written under
    `reports/` and the outcome says what failed.
    """
    started_at = time.time()
    session = prepared if isinstance(prepared, Session) else Session(prepared)
    plan = session.plan
    tracker = None
    cache = None
    finished = False
    if options.shard is not None:
        plan = _shard(plan, options, console)
        ids = {item.id for item in plan.eval_set.items}
        prior = {name: [r for r in records if r.item_id in ids] for name, records in (prior or {}).items()}
    if options.tracked:
        tracker = session.take_tracker(tracking_uri(plan.experiment))
    else:
        session.discard()
    try:
        if not plan.runnable:
            skipped = "; ".join(f"{v.name}: {v.skipped}" for v in plan.variants)
            raise ConfigError(
                plan.experiment.source_path, "models", f"no variant can run ({skipped})", "export the keys they need"
            )
        if options.tracked:
            uri = tracking_uri(plan.experiment)
            check_store(uri)
            if tracker is None:
                tracker = TrackingProcess()
                tracker.start(warm, uri)
        cache = open_cache(plan.experiment, options.use_cache)
        outcome = _execute(plan, console, options, prior or {}, started_at, tracker, cache)
        finished = True
        return outcome
    finally:
        if cache is not None:
            cache.close()  # releases claims still held (an interrupted run), so no other process waits for them
        if tracker is not None:
            if finished:
                tracker.close()
            else:
                tracker.abandon()


def _shard(plan: Plan, options: RunOptions, console: Console) -> Plan:
    """The plan's part for `options.shard`, refused where a shard could not work."""
    assert options.shard is not None
    index, count = options.shard
    experiment = plan.experiment
    if not (1 <= index <= count):
        raise ConfigError("command line", "--shard", f"{index}/{count} is not a part", "give I/N with 1 <= I <= N")
    if options.sequential is not None:
        raise ConfigError(
            "command line",
            "--shard",
            "a sequential gate looks at all items in stages, so it cannot run as shards",
            "run the shards with `run --shard I/N`, then `gate` (it makes no calls)",
        )
    if not options.use_cache or not experiment.cache.enabled:
        raise ConfigError(
            experiment.source_path,
            "cache.enabled",
            "a shard's answers reach the assembling run only through the response cache, which is off",
            "drop --no-cache (and set cache.enabled: true); share it with cache.url or HARNESS_CACHE",
        )
    total = len(plan.eval_set.items)
    part = plan.shard(index, count)
    console.print(
        f"shard {index}/{count}: {len(part.eval_set.items)} of {total} items, {1 / count:.0%} of any budget cap, "
        "not tracked (the run without --shard assembles and logs the whole)"
    )
    return part


def _execute(
    plan: Plan,
    console: Console,
    options: RunOptions,
    ready: dict[str, list[Record]],
    started_at: float,
    tracker: TrackingProcess | None,
    cache: ResponseCache | None,
) -> RunOutcome:

    experiment = plan.experiment
    max_usd = options.max_usd if options.max_usd is not None else experiment.budget.max_usd
    if max_usd is not None and options.shard is not None:
        max_usd /= options.shard[1]  # N shards together never pass the cap
    check_budget_bounds(plan, max_usd)
    _announce(plan, console, ready, cache)
    pool = ModelPool.for_experiment(experiment, cache, read_cache=not options.refresh, max_usd=max_usd)
    estimates = show_estimate(plan, console, cache if not options.refresh else None, tracker, set(ready))
    confirm_spend(plan, estimates, options.assume_yes, options.confirm)
    sequential = None
    if options.sequential is not None:
        staged = run_stages(
            plan, console, pool, ready, options.sequential, estimates, lambda p, rs: _score(p, rs, pool, console)
        )
        result, records, sequential = staged.result, staged.records, staged.outcome
    else:
        result = run_plan(plan, console=console, exclude=set(ready), pool=pool)
        records = [r.model_copy(update={"cache_hit": True}) for name in ready for r in ready[name]] + result.records
    console.print(
        f"{result.calls_made} calls made, {result.cache_hits} served from the response cache, "
        f"${result.spent_usd:.4f} spent"
    )
    _batch_warnings(pool, console)
    if sequential is None:
        _score(plan, records, pool, console)
    status = RunStatus(
        calls_made=result.calls_made,
        cache_hits=result.cache_hits,
        calls_not_run=pool.counts.not_run,
        spent_usd=pool.budget.spent,
        eval_cost_usd=sum(r.eval_cost_usd for r in records),
        budget_exhausted=pool.budget.exhausted,
        estimated_usd=sum(e.expected_usd for e in estimates),
        estimated_max_usd=sum(e.max_usd for e in estimates),
        sequential=sequential.summary() if sequential is not None else "",
    )
    if status.budget_exhausted:
        console.print(
            f"[bold red]BUDGET EXHAUSTED[/]: the cap of ${max_usd:g} would have been passed; "
            f"{status.calls_not_run} calls were not started. Raise the cap and run again: finished calls are cached."
        )
    for line in distrust_lines(pool, max_usd):
        console.print(line, markup=False, highlight=False)
    summaries = summarize(plan, records)
    metrics = [MetricInfo(s.label, s.kind) for s in plan.scorers]
    analysis = analyze_run(
        summaries,
        records,
        metrics,
        plan.baseline,
        experiment.gate,
        experiment.analysis,
        experiment.decision,
        experiment.routing,
        str(experiment.source_path),
        {v.name: v.price for v in plan.runnable},
        {v.name: plan.shared_prefix_tokens(v) for v in plan.runnable},
        projected_rate(experiment.traffic, plan.eval_set.log),
        sequential,
        # after the calls were paid for, a policy naming a variant that did not run (a gate runs only
        # some; one skipped for its key cannot be routed to) is a warning, never an error
        routing_errors="warn",
        items=plan.eval_set.items,
        log=plan.eval_set.log,
    )
    outcome = RunOutcome(plan, records, summaries, analysis, None, result, status)
    if options.shard is not None:
        where = cache.describe() if cache is not None else "the response cache"
        console.print(
            f"shard {options.shard[0]}/{options.shard[1]} done: its answers and scores are in {where}. Once every "
            "shard is done, run the same command without --shard: it makes no calls and logs the whole analysis."
        )
        return outcome

    print_run(console, summaries, analysis, f"{experiment.name}: results", options.wide)
    if tracker is not None:
        _track(outcome, tracker, started_at, console, options.background_logging)
    return outcome


def _announce(plan: Plan, console: Console, ready: dict[str, list[Record]], cache: ResponseCache | None) -> None:
    experiment = plan.experiment
    where = f"response cache {cache.describe()}" if cache is not None else "no response cache"
    console.print(
        f"[bold]{escape(experiment.name)}[/]: {len(plan.eval_set.items)} items x {len(plan.runnable)} variants "
        f"(dataset {escape(plan.eval_set.source)}, fingerprint {plan.eval_set.fingerprint}; {escape(where)})"
    )
    if plan.eval_set.conventional:
        roles = ", ".join(f"{role} <- column '{column}'" for role, column in plan.eval_set.conventional.items())
        console.print(escape(f"dataset roles by conventional column names: {roles} (map dataset.fields to change)"))
    for variant in plan.variants:
        if variant.skipped:
            console.print(f"[bold yellow]WARNING[/] {escape(variant.name)}: {escape(variant.skipped)}")
    for warning in self_preference_warnings(plan):
        console.print(f"[bold yellow]WARNING[/] {escape(warning)}")
    for name in ready:
        console.print(escape(f"using stored records for {name} (no model calls)"))
    if experiment.execution.mode == "batch":
        models = {v.model.display_name: v.model for v in plan.called}
        direct = sorted(name for name, m in models.items() if m.execution is None and not can_batch(m))
        if direct:
            console.print(escape(f"called directly, with no batch API to buy through: {', '.join(direct)}"))


def _batch_warnings(pool: ModelPool, console: Console) -> None:
    """What happened to batches that did not simply complete (expired, failed, still running)."""
    for note in pool.take_batch_notes():
        console.print(f"[bold yellow]WARNING[/] {escape(note)}")


def _score(plan: Plan, records: list[Record], pool: ModelPool, console: Console) -> None:
    """Score every record; judge and embedding calls go through the run's pool (cache, budget)."""

    before = pool.budget.spent
    score_records(records, {i.id: i for i in plan.eval_set.items}, plan.scorers, pool, console)
    _batch_warnings(pool, console)
    for warning in scorer_error_warnings(records, plan.scorers):
        console.print(f"[bold yellow]WARNING[/] {escape(warning)}")
    eval_cost = sum(r.eval_cost_usd for r in records)
    if eval_cost or any(s.batch is not None for s in plan.scorers):
        console.print(
            f"scoring cost ${eval_cost:.4f} (judge and embedding calls, apart from the variants' cost; "
            f"${pool.budget.spent - before:.4f} of it paid now)"
        )


def _track(
    outcome: RunOutcome, tracker: TrackingProcess, started_at: float, console: Console, background: bool
) -> None:
    """Log to MLflow in the tracking process; on failure, write the report locally and say what failed."""

    plan = outcome.plan
    state = "budget_exhausted" if outcome.status.budget_exhausted else "finished"
    args = (portable(plan), outcome.records, outcome.summaries, started_at, outcome.analysis, outcome.status, state)

    uri = tracking_uri(plan.experiment)
    source = plan.experiment.source_path
    shown = shlex.quote(_relative(source)) if source.is_file() else ""
    try:
        if background:
            tracker.hand_off(track_run, *args, True)
            outcome.logging_pid = tracker.pid
        else:
            outcome.run_id = tracker.call(track_run, *args)
    except TrackingError as exc:
        outcome.tracking_error = scrub(str(exc))
        outcome.report_files = report_locally(plan, outcome.summaries, started_at, outcome.analysis, outcome.status)
        folder = outcome.report_files[0].parent
        console.print(
            f"[bold red]TRACKING FAILED[/]: {escape(outcome.tracking_error)}. Nothing is lost: every answer is in the "
            f"response cache, and the report is in {folder}. Fix the store and run the same command again."
        )
        return
    if background:
        console.print(
            f"MLflow: logging in the background (process {tracker.pid}) to {redact_url(uri)}; the run shows in "
            f"{command()} ui {shown} within seconds (--wait-for-logging prints its id instead)"
        )
        return
    console.print(
        f"MLflow: run [bold]{outcome.run_id}[/] in {redact_url(uri)} (see it with: {command()} ui {shown}".rstrip()
        + ")"
    )


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
