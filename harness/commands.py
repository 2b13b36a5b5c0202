"""The commands: parsed arguments -> the public API (`harness.api`) -> an exit code.

`harness.cli` parses and loads this module only once a command is chosen, so `--help` imports nothing
heavy; here every import is at the top. Expected mistakes (ConfigError) become one line on stderr and exit
code 2, never a traceback; anything unexpected becomes one line and exit code 4 ("could not complete"),
never 1, which means a regression. Questions to the user (the spend confirmation) are asked here and
nowhere else.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.prompt import Confirm
from rich.table import Table

from harness import __version__, results
from harness.api import analyze, gate, load_experiment, load_run, reprice, route, run, size_decisions, write_report
from harness.caches import open_cache
from harness.config import ConfigError, PolicyConfig, RoutingConfig, load_config
from harness.exit_codes import EXIT_INCOMPLETE, EXIT_OK, EXIT_REGRESSION, EXIT_USAGE
from harness.focus import focus_csv, focus_rows
from harness.gating import publish
from harness.invocation import command
from harness.model_map import MAP_ENV, use_map
from harness.planner import prepare
from harness.pricing import litellm_version, load_price_file
from harness.report import (
    NO_PRICED_VARIANT,
    decision_size_lines,
    lever_notes,
    lever_table,
    markdown_report,
    policy_notes,
    policy_table,
    print_run,
)
from harness.savings import document as savings_document
from harness.savings import portfolio, savings_markdown, savings_table
from harness.scaffold import preview, propose, propose_logs, write_experiment, write_log_experiment
from harness.secrets import redact_url, scrub
from harness.shorten import diff_text, log_shortening, shorten, summary_lines, write_shortening
from harness.spending import show_estimate
from harness.summary import projected_rate
from harness.tracking.production import trace_reader
from harness.tracking.read import run_times
from harness.tracking.store import experiment_page, find_project_root, stored_run_uri
from harness.tracking.write import add_policy_runs
from harness.watch import document as watch_document
from harness.watch import experiments_with_runs, markdown_summary, watch, watch_lines
from harness.workflow import RunOptions, RunOutcome

if TYPE_CHECKING:
    from harness.rebuild import Rebuilt
    from harness.tracking.read import StoredRun


def execute(args: argparse.Namespace) -> int:
    """Run the chosen command; a config mistake is one line (exit 2), anything unexpected "could not
    complete" (exit 4, never mistaken for a regression)."""
    try:
        return COMMANDS[args.handler](args)
    except ConfigError as exc:
        print(f"error: {scrub(exc.line())}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        first = scrub(str(exc)).strip().splitlines()[0][:400] if str(exc).strip() else ""
        print(
            f"error: could not complete ({type(exc).__name__}: {first}). Every call that finished is in the "
            "response cache; fix the cause and run the same command again.",
            file=sys.stderr,
        )
        return EXIT_INCOMPLETE


def _options(args: argparse.Namespace, strict: bool) -> RunOptions:
    if args.max_usd is not None and not (math.isfinite(args.max_usd) and args.max_usd > 0):
        raise ConfigError(
            "command line", "--max-usd", f"must be a positive number of dollars (got {args.max_usd:g})", "e.g. 5"
        )
    return RunOptions(
        shard=_shard(getattr(args, "shard", None)),
        strict=strict,
        tracking=not getattr(args, "no_tracking", False),
        use_cache=not args.no_cache,
        refresh=args.refresh,
        max_usd=args.max_usd,
        batch=getattr(args, "batch", False),
        assume_yes=args.yes,
        confirm=_ask if sys.stdin.isatty() else None,
        background_logging=_background_logging(getattr(args, "background_logging", False)),
        wide=getattr(args, "wide", False),
        quiet=getattr(args, "quiet", False),
        only=tuple(getattr(args, "only", None) or ()),
    )


OUTPUT_SUFFIXES = (".json", ".csv", ".md")


def _check_output(path: Path | None, flag: str = "--output", suffixes: tuple[str, ...] = OUTPUT_SUFFIXES) -> None:
    """A results file the run cannot write is named before the first call, not after the money is spent."""
    if path is None:
        return
    if path.suffix.lower() not in suffixes:
        raise ConfigError(
            "command line", flag, f"{path} is not a {', '.join(suffixes)} file", f"e.g. {flag} results{suffixes[0]}"
        )
    if not path.parent.resolve().is_dir():
        raise ConfigError("command line", flag, f"no folder {path.parent}", "create it first or give another path")
    if path.is_dir():
        raise ConfigError("command line", flag, f"{path} is a folder", "give a file path")


def _write_results(path: Path | None, outcome: RunOutcome) -> None:
    """`--output FILE`: the results document as JSON, its variants as CSV, or the report as markdown."""
    if path is None:
        return
    experiment = outcome.plan.experiment
    if path.suffix.lower() == ".md":
        text = markdown_report(
            experiment.name, outcome.summaries, outcome.analysis, None, experiment.description, outcome.status
        )
    else:
        doc = results.document(
            experiment.name,
            outcome.summaries,
            outcome.analysis,
            outcome.run_id,
            outcome.status,
            {
                "harness_version": __version__,
                "litellm_version": litellm_version(),
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "config": str(experiment.source_path),
                "dataset": outcome.plan.eval_set.source,
                "dataset_fingerprint": outcome.plan.eval_set.fingerprint,
                "items": len(outcome.plan.eval_set.items),
                "requests_per_day": projected_rate(experiment.traffic, outcome.plan.eval_set.log),
                "log": None if outcome.plan.eval_set.log is None else outcome.plan.eval_set.log.model_dump(),
            },
        )
        text = results.json_text(doc) if path.suffix.lower() == ".json" else results.csv_text(doc)
    path.write_text(text, encoding="utf-8")


def _background_logging(flag: bool | None) -> bool:
    """A person at a terminal gets the prompt back as soon as the results are printed; CI jobs and
    scripts, which read the run id or trust the exit code to cover logging, wait unless they ask."""
    if flag is not None:
        return flag
    return sys.stdout.isatty() and not os.environ.get("CI")


def _shard(text: str | None) -> tuple[int, int] | None:
    """`--shard I/N` as (I, N); the range is checked where the API checks it (`workflow._shard`)."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None:
        raise ConfigError("command line", "--shard", f"must be I/N with 1 <= I <= N (got {text!r})", "e.g. --shard 2/4")
    return int(match[1]), int(match[2])


def _ask(question: str) -> bool:
    return Confirm.ask(question, default=False)


def _console(wide: bool = False) -> Console:
    """The terminal as it is; into a pipe or a file, 100 columns (`COLUMNS` to change), 200 for `--wide`.
    Emoji off: a model or prompt named ":b:" prints as written."""
    console = Console(emoji=False)
    if console.is_terminal:
        return console
    return Console(width=200 if wide else int(os.environ.get("COLUMNS") or 100), emoji=False)


def _incomplete(reason: str | None) -> None:
    if reason is not None:
        print(f"error: could not complete: {reason}", file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    console = _console(args.wide)
    _check_output(args.output)
    started = time.perf_counter()
    outcome = run(args.config, _options(args, args.strict), console, args.limit)
    if not args.quiet:
        console.print(f"done in {time.perf_counter() - started:.1f} s")
    _write_results(args.output, outcome)
    _incomplete(outcome.incomplete)
    return outcome.exit_code


def cmd_init(args: argparse.Namespace) -> int:
    console = _console()
    if args.from_logs is not None:
        return _init_from_logs(args, console)
    if args.dataset is None:
        raise ConfigError("command line", "init", "no dataset given", "harness init DATASET or init --from-logs LOG")
    proposal = propose(args.dataset, args.reference, args.input)
    table = Table(title=escape(f"{args.dataset}: {len(proposal.rows)} rows"), title_justify="left")
    for column in proposal.columns:
        table.add_column(escape(column))
    for row in preview(proposal):
        table.add_row(*(escape(cell) for cell in row))
    console.print(table)
    console.print(
        escape(
            f"input <- column '{proposal.input}', reference <- column '{proposal.reference}'"
            + (f", id <- column '{proposal.id}'" if proposal.id else ", id: the row number")
        )
    )
    what = {"labels": f"{len(proposal.labels)} labels", "numbers": "numbers", "text": "free text"}[proposal.kind]
    console.print(f"the references are {what}: scorers {', '.join(_names(proposal.scorers))}")
    name = args.name or re.sub(r"[^A-Za-z0-9_.-]+", "-", args.dataset.stem).strip("-.") or "experiment"
    config, prompt = write_experiment(proposal, args.dataset, name, Path.cwd())
    console.print(f"wrote {config} and {prompt}; next: {command()} run {config.relative_to(Path.cwd())}")
    return EXIT_OK


def _init_from_logs(args: argparse.Namespace, console: Console) -> int:
    log = args.from_logs
    found = propose_logs(log)
    models = ", ".join(f"{m or '?'} ({n})" for m, n in found.models.items())
    console.print(escape(f"{log}: {found.calls} calls ({found.format}); models {models}"))
    if found.segment_by:
        segments = ", ".join(f"{k} ({v})" for k, v in sorted(found.segments.items()))
        console.print(escape(f"segments by '{found.segment_by}': {segments}"))
    else:
        console.print("no tag splits the calls into a few segments: one segment")
    name = args.name or re.sub(r"[^A-Za-z0-9_.-]+", "-", log.stem).strip("-.") or "replay"
    config, prompts = write_log_experiment(found, log, name, Path.cwd())
    config = config.relative_to(Path.cwd())
    shown = ", ".join(str(p.relative_to(Path.cwd())) for p in prompts)
    console.print(escape(f"wrote {config} and {shown}; next: {command()} run {config}"))
    return EXIT_OK


def _names(scorers: list[Any]) -> list[str]:
    return [s if isinstance(s, str) else next(iter(s)) for s in scorers]


def cmd_estimate(args: argparse.Namespace) -> int:
    console = _console()
    experiment = load_experiment(args.config, args.limit, args.batch)
    plan = prepare(experiment, traces=trace_reader(experiment.root, experiment.source_path))
    cache = open_cache(experiment, not args.no_cache)
    show_estimate(plan, console, cache, tracking=True, unrunnable=True)
    console.print(f"at concurrency {experiment.concurrency}; cached calls cost nothing and take no time")

    for line in decision_size_lines(size_decisions(plan, args.pilot), experiment.gate, len(plan.eval_set.items)):
        console.print(line)
    return EXIT_OK


def cmd_reprice(args: argparse.Namespace) -> int:
    console = _console(args.wide)
    _check_prices(args.prices)
    stored = load_run(args.run_id, args.tracking_uri)
    repriced = reprice(stored, args.prices, args.tier)
    tier = f" at {args.tier} prices" if args.tier else ""
    title = f"{stored.manifest.experiment}: repriced{tier} (run {stored.run_id})"
    print_run(console, repriced.rebuilt.summaries, repriced.rebuilt.analysis, title, args.wide)
    console.print(
        f"total list cost: ${repriced.before_usd:.6f} as recorded -> "
        f"${repriced.after_usd:.6f} repriced{tier} (no model calls)"
    )
    for model in repriced.unpriced_tier:
        console.print(f"[bold yellow]WARNING[/] {model} has no {args.tier} prices: its calls stay at standard prices")
    return EXIT_OK


def _check_prices(path: Path | None) -> None:
    """A `--prices` file is read before the run, so a mistake in it is named first (file, field, fix)."""
    if path is not None:
        load_price_file(path)


def cmd_levers(args: argparse.Namespace) -> int:
    console = _console()
    _check_prices(args.prices)
    stored = load_run(args.run_id, args.tracking_uri)
    analysis = reprice(stored, args.prices).rebuilt.analysis
    if not analysis.levers:
        console.print(NO_PRICED_VARIANT)
        return EXIT_OK
    console.print(lever_table(analysis))
    for note in lever_notes(analysis):
        console.print(escape(f"  {note}"))
    return EXIT_OK


def cmd_gate(args: argparse.Namespace) -> int:
    console = _console(args.wide)
    _check_output(args.output)
    _check_output(args.junit, "--junit", (".xml",))
    options = _options(args, strict=True)
    outcome = gate(args.config, args.candidate, args.against, options, console, args.limit, args.sequential)
    finished = outcome.run
    if outcome.shard is not None:
        _incomplete(finished.incomplete)
        return outcome.exit_code
    experiment = finished.plan.experiment
    report = markdown_report(
        experiment.name, finished.summaries, finished.analysis, None, experiment.description, finished.status
    )
    publish(outcome.result, report, console if not args.quiet else _console())
    _write_results(args.output, finished)
    if args.junit is not None:
        junit = results.junit_xml(experiment.name, finished.analysis, outcome.candidates, outcome.result.summary)
        args.junit.write_text(junit, encoding="utf-8")
    return outcome.exit_code


def cmd_report(args: argparse.Namespace) -> int:
    console = _console(args.wide)
    stored = load_run(args.run_id, args.tracking_uri)
    rebuilt = analyze(stored)
    title = f"{stored.manifest.experiment}: results (from run {stored.run_id})"
    print_run(console, rebuilt.summaries, rebuilt.analysis, title, args.wide)
    _print_notes(console, stored, rebuilt)
    files = _republish(args, stored, rebuilt)
    console.print(f"report: {', '.join(str(f) for f in files)} (also logged to run {stored.run_id} under rebuilt/)")
    return EXIT_OK


def _print_notes(console: Console, stored: StoredRun, rebuilt: Rebuilt) -> None:
    for note in stored.manifest.status.notes():
        console.print(escape(f"as run: {note}"))
    for note in rebuilt.notes:
        console.print(f"[bold yellow]NOTE[/] {escape(note)}")


def cmd_route(args: argparse.Namespace) -> int:
    console = _console()
    stored = load_run(args.run_id, args.tracking_uri)
    rebuilt = route(stored, _routing_config(args, stored.manifest.routing))
    console.print(policy_table(rebuilt.analysis))
    for note in policy_notes(rebuilt.analysis):
        console.print(escape(f"  {note}"))
    files = _republish(args, stored, rebuilt)
    add_policy_runs(stored.run_id, stored.uri, rebuilt.analysis)
    console.print(
        f"plot and report: {', '.join(str(f) for f in files)}; policies logged as child runs of {stored.run_id}"
    )
    return EXIT_OK


def _routing_config(args: argparse.Namespace, stored: RoutingConfig | None) -> RoutingConfig:
    """The routing to simulate: flags over the run's own routing config."""

    base = stored.model_dump() if stored is not None else {}
    for key in ("weak", "strong", "metric"):
        if getattr(args, key):
            base[key] = getattr(args, key)
    if args.policy:
        policies = []
        for text in args.policy:
            try:
                policies.append(PolicyConfig.model_validate(yaml.safe_load(text)))
            except (yaml.YAMLError, ValidationError) as exc:
                problem = str(exc).splitlines()[0] if isinstance(exc, yaml.YAMLError) else _first_error(exc)
                raise ConfigError(
                    "--policy",
                    text,
                    problem,
                    "e.g. '{kind: cascade, check: {min_words: 8}}', '{kind: oracle}' or '{kind: random, p: 0.3}'",
                ) from None
        base["policies"] = policies
    return RoutingConfig.model_validate(base)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else err["msg"]


def _republish(args: argparse.Namespace, stored: StoredRun, rebuilt: Rebuilt) -> list[Path]:
    """Plot and report into `--out` (default reports/RUN_ID in the project), also attached to the run."""

    return write_report(stored, rebuilt, Path(args.out or find_project_root() / "reports" / stored.run_id))


def cmd_ui(args: argparse.Namespace) -> int:
    if not 1 <= args.port <= 65535:
        raise ConfigError("command line", "--port", f"{args.port} is not a TCP port", "give 1-65535, e.g. 5000")
    if not 1 <= args.workers <= 64:
        raise ConfigError("command line", "--workers", f"{args.workers} server processes", "give 1-64, e.g. 1")

    name = load_config(Path(args.config)).name if args.config else None
    uri = stored_run_uri(args.backend_store_uri, Path(args.config).resolve().parent if args.config else None)
    if uri.startswith(("http://", "https://", "databricks")):
        print(f"the tracking store is a server already: {redact_url(uri)}", file=sys.stderr)
        print(experiment_page(uri, uri, name), file=sys.stderr)
        return EXIT_OK
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(args.port),
        "--backend-store-uri",
        uri,
        "--workers",
        str(args.workers),
    ]
    # MLflow's background jobs (scheduled judges, trace rollups) start their own consumer processes; a
    # viewer needs none of them, and without them the UI comes up in a fraction of the time. A user who
    # wants them sets MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true.
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    if uri.startswith("sqlite:///"):
        artifacts = Path(uri.removeprefix("sqlite:///")).parent / "artifacts"
        command += ["--default-artifact-root", artifacts.resolve().as_uri()]
    address = f"http://127.0.0.1:{args.port}"
    print(f"MLflow UI on {address} over {redact_url(uri)} (Ctrl-C stops it)", file=sys.stderr)
    print(experiment_page(address, uri, name), file=sys.stderr)
    os.execv(sys.executable, command)
    return EXIT_OK  # pragma: no cover - execv does not return


def cmd_watch(args: argparse.Namespace) -> int:
    with _priced_with(args.map):
        return _watch(args)


def _watch(args: argparse.Namespace) -> int:
    console = _console()
    _check_prices(args.prices)
    found = watch(experiments_with_runs(args.experiments, Path.cwd()), args.prices, args.days)
    watched, without = found.watched, found.without + found.failed
    for w in watched:
        for line in watch_lines(w, args.days):
            console.print(escape(line), highlight=False)
    for line in found.without:
        console.print(f"[dim]{escape(line)}[/]")
    for line in found.failed:
        console.print(f"[bold red]{escape(line)}[/]")
    _summary(args.summary, markdown_summary(watched, without, args.days))
    if args.json is not None:
        args.json.write_text(json.dumps(watch_document(watched, args.days), indent=1) + "\n", encoding="utf-8")
    alarms = [w.experiment for w in watched if w.alarming(args.days)]
    if alarms:
        console.print(escape(f"watch: {len(alarms)} of {len(watched)} decisions need a look: {', '.join(alarms)}"))
        return EXIT_REGRESSION
    if found.failed:
        console.print(f"watch: {len(found.failed)} stores could not be read; {len(watched)} decisions checked")
        return EXIT_INCOMPLETE
    console.print(f"watch: {len(watched)} decisions checked, none changed")
    return EXIT_OK


@contextlib.contextmanager
def _priced_with(path: Path | None) -> Iterator[None]:
    """`--map FILE` for the length of one command (the API and the tests run several in one process)."""
    before = os.environ.get(MAP_ENV)
    _use_map(path)
    try:
        yield
    finally:
        use_map(Path(before) if before else None)


def _use_map(path: Path | None) -> None:
    """`--map FILE`: a price map in litellm's format, checked before anything is priced with it."""
    if path is None:
        return
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(
            "command line", "--map", f"cannot read {path}: {exc}", "give litellm's price map JSON"
        ) from None
    if not isinstance(data, dict) or not any(
        isinstance(v, dict) and "input_cost_per_token" in v for v in data.values()
    ):
        raise ConfigError(
            "command line",
            "--map",
            f"{path} is not a price map",
            "give a file like litellm's model_prices_and_context_window.json",
        )
    use_map(path)


def _summary(path: Path | None, markdown: str) -> None:
    """The markdown page: to `--summary FILE`, else appended to `$GITHUB_STEP_SUMMARY` in a GitHub job."""
    target = path or (Path(os.environ["GITHUB_STEP_SUMMARY"]) if os.environ.get("GITHUB_STEP_SUMMARY") else None)
    if target is None:
        return
    with target.open("a" if path is None else "w", encoding="utf-8") as out:
        out.write(markdown)


def cmd_savings(args: argparse.Namespace) -> int:
    with _priced_with(args.map):
        return _savings(args)


def _savings(args: argparse.Namespace) -> int:
    console = _console()
    _check_output(args.output, "--output", (".json", ".md"))
    found = watch(experiments_with_runs(args.experiments, Path.cwd()), args.prices, args.days)
    lines = portfolio(found.watched, args.days)
    console.print(savings_table(lines))
    for line in found.without + found.failed:
        console.print(f"[dim]{escape(line)}[/]")
    if args.output is not None:
        text = (
            json.dumps(savings_document(lines), indent=1) + "\n"
            if args.output.suffix.lower() == ".json"
            else savings_markdown(lines)
        )
        args.output.write_text(text, encoding="utf-8")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    console = _console()
    _check_output(args.focus, "--focus", (".csv",))
    runs = args.run_ids or [w.run_id for w in watch(experiments_with_runs([], Path.cwd()), None, 30).watched]
    rows = []
    for run_id in runs:
        stored = load_run(run_id, args.tracking_uri)
        start, end = run_times(stored.uri, stored.run_id)
        segments = {i.id: i.segment for i in stored.items if i.segment}
        rebuilt = analyze(stored)
        rows += focus_rows(
            stored.run_id,
            stored.manifest,
            stored.records,
            rebuilt.summaries,
            datetime.fromtimestamp(start / 1000, UTC),
            datetime.fromtimestamp(end / 1000, UTC),
            segments,
        )
    args.focus.write_text(focus_csv(rows), encoding="utf-8")
    billed = sum(r["BilledCost"] for r in rows)
    console.print(
        escape(f"wrote {len(rows)} FOCUS rows for {len(runs)} runs to {args.focus} (BilledCost ${billed:.6f})")
    )
    return EXIT_OK


def cmd_shorten(args: argparse.Namespace) -> int:
    console = _console()
    experiment = load_experiment(args.config, args.limit, args.batch)
    outcome = shorten(experiment, args.prompt, args.model, console, args.max_usd, args.yes)
    write_shortening(outcome, outcome.template_path, experiment.root / "reports")
    if not args.no_tracking and outcome.search.confirmation is not None:
        run_id = log_shortening(experiment, outcome)
        console.print(escape(f"logged to MLflow as run {run_id} (harness.kind shorten)"))
    for line in summary_lines(outcome):
        console.print(escape(line))
    if outcome.report is not None:
        console.print(escape(diff_text(outcome)))
    if outcome.path is not None:
        console.print(escape(f"wrote {outcome.path} (the original is unchanged) and {outcome.report}"))
    elif outcome.report is not None:
        console.print(
            escape(
                f"not shown as good on the unseen items, so no template was written; the diff is in {outcome.report} "
                "(more items, --limit, can decide it)"
            )
        )
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "shorten": cmd_shorten,
    "watch": cmd_watch,
    "savings": cmd_savings,
    "export": cmd_export,
    "run": cmd_run,
    "init": cmd_init,
    "estimate": cmd_estimate,
    "reprice": cmd_reprice,
    "levers": cmd_levers,
    "gate": cmd_gate,
    "report": cmd_report,
    "route": cmd_route,
    "ui": cmd_ui,
}
