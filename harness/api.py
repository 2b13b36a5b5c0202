"""The public Python API: everything the CLI does, without a terminal.

The CLI is arguments -> these functions -> an exit code; notebooks, scripts and other tools call the same
functions. Each returns plain data (outcomes, summaries, analyses); none asks a question or exits.

    import harness
    outcome = harness.run("experiments/summarize.yaml", options=harness.RunOptions(tracking=False))
    stored = harness.load_run(outcome.run_id)          # a run tracked earlier
    rebuilt = harness.analyze(stored)                  # CIs, paired tests, verdicts, frontier
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from harness.config import (
    ConfigError,
    DatasetConfig,
    Experiment,
    GateConfig,
    RoutingConfig,
    SequentialConfig,
    load_config,
)
from harness.estimate import Sizing, decision_sizes
from harness.gating import GateResult, gate_result, gate_variants
from harness.pricing import ModelPrice, load_price_file, reprice_records, repricing, tier_name
from harness.rebuild import Rebuilt, analyze_stored, comparable_records
from harness.records import Record
from harness.report_files import write_outputs
from harness.secrets import scrub
from harness.tracking.read import StoredRun, pilot_run, read_run
from harness.tracking.store import check_store, stored_run_uri, tracking_uri
from harness.tracking.write import add_artifacts
from harness.workflow import RunOptions, RunOutcome, execute, prepare_tracked

if TYPE_CHECKING:
    from harness.levers import VariantLevers
    from harness.plan import Plan


def load_experiment(config: Experiment | str | Path, limit: int | None = None, batch: bool = False) -> Experiment:
    """An experiment from a YAML path (or as given), with `limit` items at most when set, and every call
    bought through the providers' Batch APIs with `batch` (`--batch`; a model's own `execution` stays).

    `limit` follows the schema's rule for `dataset.limit` (a positive whole number): 0 or a negative
    number is a usage error, never "the whole dataset" or "all but two".
    """
    experiment = config if isinstance(config, Experiment) else load_config(config)
    if batch:
        execution = experiment.execution.model_copy(update={"mode": "batch"})
        experiment = experiment.model_copy(update={"execution": execution})
    if limit is None:
        return experiment
    from pydantic import ValidationError

    try:
        dataset = DatasetConfig.model_validate({**experiment.dataset.model_dump(), "limit": limit})
    except ValidationError:
        raise ConfigError(
            "command line", "--limit", f"must be a positive whole number (got {limit})", "give 1 or more, or omit it"
        ) from None
    return experiment.model_copy(update={"dataset": dataset})


def run(
    experiment: Experiment | str | Path,
    options: RunOptions | None = None,
    console: Console | None = None,
    limit: int | None = None,
) -> RunOutcome:
    """Run every variant of an experiment: validate, estimate, call (cache first, within budget), score,
    analyse, print to `console` (stderr by default) and track in MLflow. See `RunOutcome.exit_code`."""
    options = options or RunOptions()
    session = prepare_tracked(load_experiment(experiment, limit, options.batch), options, strict=options.strict)
    if options.only:
        try:
            session = session.select(_only(session.plan, options.only), strict=options.strict)
        except BaseException:
            session.discard()
            raise
    return execute(session, _console(console, options), options)


def _console(console: Console | None, options: RunOptions) -> Console:
    """Where a run prints: nowhere with `quiet`, else the caller's console, else stderr."""
    if options.quiet:
        return Console(quiet=True)
    return console or Console(stderr=True, emoji=False)


def _only(plan: Plan, patterns: tuple[str, ...]) -> set[str]:
    """The variants `--only` keeps: those matching a glob, and the baseline they are compared with."""
    chosen = {v.name for v in plan.variants if any(fnmatch.fnmatchcase(v.name, p) for p in patterns)}
    if not chosen:
        names = ", ".join(v.name for v in plan.variants)
        raise ConfigError(
            "command line", "--only", f"no variant matches {', '.join(patterns)}", f"the variants are: {names}"
        )
    return chosen | ({plan.baseline} if plan.baseline else set())


def load_run(run_id: str, tracking_uri: str | None = None) -> StoredRun:
    """A stored run (manifest, items, records) by its parent or variant run id.

    The store is `tracking_uri`, else `MLFLOW_TRACKING_URI`, else the embedded store of the project the
    current folder belongs to (found the same way `run` writes it).
    """

    uri = stored_run_uri(tracking_uri)
    check_store(uri, "--tracking-uri" if tracking_uri else "MLFLOW_TRACKING_URI")
    try:
        return read_run(run_id, uri)
    except Exception as exc:
        raise ConfigError(
            uri, "RUN_ID", f"cannot read run {run_id}: {scrub(str(exc)).splitlines()[0][:300]}", _run_fix()
        ) from None


def _run_fix() -> str:
    return "give the id of a run in this store (the line 'MLflow: run ...' after a run), or --tracking-uri"


def analyze(stored: StoredRun, gate: GateConfig | None = None, routing: RoutingConfig | None = None) -> Rebuilt:
    """CIs, paired tests, verdicts, frontier, aggregates and routing of a stored run (no model call)."""
    return analyze_stored(stored.manifest, stored.records, stored.items, gate, routing)


def route(stored: StoredRun, routing: RoutingConfig | None = None) -> Rebuilt:
    """Routing policies simulated on a stored run's records (the run's own routing config by default)."""
    config = routing or stored.manifest.routing or RoutingConfig()
    return analyze_stored(stored.manifest, stored.records, stored.items, routing=config)


@dataclass
class Repriced:
    """A stored run under other prices: new records, analysis, and the totals before and after."""

    records: list[Record]
    rebuilt: Rebuilt
    before_usd: float
    after_usd: float
    unpriced_tier: list[str] = field(default_factory=list)
    """Models with no prices for the tier asked for (billed at their standard prices)."""


def reprice(stored: StoredRun, prices: Path | None = None, tier: str | None = None) -> Repriced:
    """Recompute a stored run's costs under the prices in `prices` (YAML: model -> price fields), else
    the current litellm map and the prices the run was billed at, under a service `tier` (batch, flex,
    priority) when given; no model call. The levers of the result are computed at those prices."""

    overrides = load_price_file(prices) if prices else {}
    stored_prices = {m: ModelPrice.from_stored(p) for m, p in stored.manifest.prices.items()}
    for v in stored.manifest.variants:
        if v.price is not None:
            stored_prices.setdefault(v.model, ModelPrice.from_stored(v.price))
    models = {r.model for r in stored.records} | {v.model for v in stored.manifest.variants}
    by_model = repricing(models, overrides, str(prices or "prices"), stored_prices)
    records = reprice_records(stored.records, by_model, tier)
    rebuilt = analyze_stored(stored.manifest, records, stored.items, prices=by_model)
    wanted = tier_name(tier)
    unpriced = sorted(m for m, p in by_model.items() if wanted is not None and wanted not in p.tiers())
    before, after = sum(r.cost_usd for r in stored.records), sum(r.cost_usd for r in records)
    return Repriced(records, rebuilt, before, after, unpriced)


def levers_of(stored: StoredRun, prices: Path | None = None) -> dict[str, VariantLevers]:
    """What each priced variant's stored calls would cost bought otherwise (batch, flex, priority, prompt
    caching, an output cap), at the prices the run was billed at or those in `prices`; no model call."""
    return reprice(stored, prices).rebuilt.analysis.levers


@dataclass
class GateOutcome:
    """The gate's decision and the run behind it."""

    result: GateResult
    run: RunOutcome
    baseline: str
    candidates: set[str] = field(default_factory=set)

    shard: tuple[int, int] | None = None
    """Set when this was one worker's part of the items (`--shard I/N`): then `result` decides nothing."""

    @property
    def exit_code(self) -> int:
        """0 pass, 1 regression, 3 undecided, 4 incomplete (see `harness.exit_codes`). A shard saw part of
        the items, so it decides nothing: its code is its run's (0 once its calls are done)."""
        return self.run.exit_code if self.shard is not None else self.result.exit_code


def gate(
    experiment: Experiment | str | Path,
    candidate: str | None = None,
    against: str | None = None,
    options: RunOptions | None = None,
    console: Console | None = None,
    limit: int | None = None,
    sequential: bool | None = None,
) -> GateOutcome:
    """Decide by non-inferiority whether `candidate` (`MODEL[:PROMPT]`, as `Plan.variant` reads it) may
    replace the baseline; every other variant when None. API keys are required (strict) for exactly the
    variants gated. `against` takes the baseline's records from a stored run made on the same eval.
    `sequential` True decides in stages (the config's `gate.sequential`, else its defaults), False in one
    fixed design, None as the config says."""

    options = options or RunOptions(strict=True)
    loaded = load_experiment(experiment, limit, options.batch)
    configured = loaded.gate.sequential
    if sequential is not None:
        configured = (configured or SequentialConfig()) if sequential else None
    # A shard pays for its part of every item up front, so the gate that follows (sequential or not)
    # finds them all in the cache.
    options = replace(options, sequential=configured if options.shard is None else None)
    full = prepare_tracked(loaded, options, strict=False)
    try:
        baseline, candidates = gate_variants(full.plan, candidate)
        session = full.select({baseline, *candidates}, strict=options.strict)
        plan = session.plan
        prior = None
        if against:
            stored = load_run(against, _uri(plan))
            base = plan.variant(baseline)
            prior = {baseline: comparable_records(stored.manifest, stored.records, plan, base, stored.run_id)}
    except BaseException:
        full.discard()
        raise
    outcome = execute(session, _console(console, options), options, prior)
    result = gate_result(outcome.analysis, candidates, outcome.status.budget_exhausted, outcome.incomplete)
    return GateOutcome(result, outcome, baseline, candidates, options.shard)


def size_decisions(plan: Plan, pilot: str | None = None) -> Sizing:
    """How many items each candidate's gate decision needs at this config's margin and confidence (80%
    power) and what they would cost, from `pilot` or the newest earlier run of the baseline and a candidate.
    No model call: the run's records are re-analysed under this config's gate."""

    if plan.baseline is None:
        return Sizing(None, note="no baseline is configured, so there is no gate decision to size")
    baseline, candidates = gate_variants(plan, None)
    run_id = pilot or pilot_run(plan, baseline, candidates) or pilot_run(plan, None, candidates | {baseline})
    if run_id is None:
        return Sizing(
            None,
            note="no earlier run of the baseline and a candidate to size the decision from: run a pilot "
            "(e.g. --limit 30), then estimate again",
        )
    stored = load_run(run_id, _uri(plan))
    rebuilt = analyze_stored(stored.manifest, stored.records, stored.items, gate=plan.experiment.gate)
    analysis = rebuilt.analysis
    if analysis.metric not in analysis.paired or analysis.baseline is None:
        return Sizing(run_id, note=f"run {run_id} has no scores on {analysis.metric}")
    note = ""
    if analysis.baseline != baseline:  # the configured baseline did not run there (no key): as its analysis did
        note = f"{baseline} did not run there; sized against that run's reference {analysis.baseline}"
        candidates = ({baseline} | candidates) - {analysis.baseline}
        baseline = analysis.baseline
    sizes = decision_sizes(baseline, sorted(candidates), stored.records, analysis)
    return Sizing(run_id, sizes, note if sizes else f"run {run_id} has no candidate of this config")


def _uri(plan: Any) -> str:

    return tracking_uri(plan.experiment)


def write_report(stored: StoredRun, rebuilt: Rebuilt, out: Path) -> list[Path]:
    """The rebuilt plot and report into `out`, also attached to the stored run under `rebuilt/` (the
    run's own `report.md` stays as it was)."""

    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".harness-write-check"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(str(out), "--out", f"cannot write there ({exc.strerror})", "give a writable folder") from None
    manifest = stored.manifest
    files = write_outputs(
        out, manifest.experiment, manifest.description, rebuilt.summaries, rebuilt.analysis, manifest.status
    )
    add_artifacts(stored.run_id, stored.uri, files, "rebuilt")
    return files
