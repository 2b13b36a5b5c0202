"""Argument parsing only: arguments -> the public API (`harness.api`) -> an exit code.

Heavy libraries (litellm, mlflow, datasets) are imported inside commands so `--help` stays fast.
Expected mistakes (ConfigError) become one line on stderr and exit code 2, never a traceback; anything
unexpected becomes one line and exit code 4 ("could not complete"), never 1, which means a regression.
Questions to the user (the spend confirmation) are asked here and nowhere else.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from harness.exit_codes import EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_OK, EXIT_TERMINATED, EXIT_USAGE
from harness.offline import apply_offline_defaults, short_lived_process

if TYPE_CHECKING:
    from pydantic import ValidationError
    from rich.console import Console

    from harness.config import RoutingConfig
    from harness.rebuild import Rebuilt
    from harness.tracking.read import StoredRun
    from harness.workflow import RunOptions


class Terminated(KeyboardInterrupt):
    """SIGTERM (sent by `timeout`, CI runners and Kubernetes), handled like Ctrl-C.

    A KeyboardInterrupt, so asyncio treats it as one: raised inside one of the event loop's callbacks, any
    other BaseException is logged with a traceback and swallowed there, while these end the loop, which
    cancels its tasks on the way out."""


def _quiet_teardown() -> None:
    """After an interrupt, the tasks it cut short are reported as they are collected ("coroutine ... was
    never awaited", "Task was destroyed but it is pending"): nothing is lost by them, so say nothing."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", message="coroutine .* was never awaited", category=RuntimeWarning)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def entry() -> NoReturn:
    """The `harness` command and `python -m harness`: `main` in a process that ends with the command.

    Before the interpreter tears down, everything still alive is put out of the garbage collector's sight
    (`gc.freeze`): its last full collection walked every record, response and imported module only to
    free memory the process was about to return (benchmarks/README.md has what it cost). Exit handlers and
    module teardown still run as before.
    """
    short_lived_process()
    code = main()
    # The command is over: a SIGTERM now (exit handlers, module teardown) ends the process at once and
    # quietly, instead of raising into whatever teardown code happens to run.
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(EXIT_TERMINATED))
    gc.freeze()
    sys.exit(code)


def main(argv: list[str] | None = None) -> int:
    """The command line: `entry` in a process of its own, or called in-process (tests, programs)."""
    apply_offline_defaults()
    with contextlib.suppress(ValueError):  # not the main thread (an embedding program): leave it alone
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:  # from here on, a signal at any moment (even mid-import) ends in the one resume line
        return _dispatch(argv)
    except Terminated:
        _quiet_teardown()
        print(
            "terminated (SIGTERM): every call that finished is in the response cache; run the same command again "
            "to resume",
            file=sys.stderr,
        )
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        _quiet_teardown()
        print(
            "interrupted: every call that finished is in the response cache; run the same command again to resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED


def _dispatch(argv: list[str] | None) -> int:
    """Parse the arguments and run the command; a config mistake is one line (exit 2), anything unexpected
    "could not complete" (exit 4, never mistaken for a regression)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return EXIT_USAGE
    from harness.config import ConfigError

    try:
        return int(args.handler(args))
    except ConfigError as exc:
        from harness.secrets import scrub

        print(f"error: {scrub(exc.line())}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        from harness.secrets import scrub

        first = scrub(str(exc)).strip().splitlines()[0][:400] if str(exc).strip() else ""
        print(
            f"error: could not complete ({type(exc).__name__}: {first}). Every call that finished is in the "
            "response cache; fix the cause and run the same command again.",
            file=sys.stderr,
        )
        return EXIT_INCOMPLETE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Run controlled LLM experiments that put cost and quality side by side.",
    )
    sub = parser.add_subparsers(metavar="COMMAND")
    run = sub.add_parser("run", help="run every variant of an experiment and track it in MLflow")
    run.add_argument("config", type=Path, help="experiment YAML, e.g. experiments/summarize.yaml")
    run.add_argument("--strict", action="store_true", help="a model without its API key is an error, not a skip")
    run.add_argument("--limit", type=int, default=None, help="override dataset.limit for a quick look")
    run.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    logging_mode = run.add_mutually_exclusive_group()
    logging_mode.add_argument(
        "--background-logging",
        dest="background_logging",
        action="store_true",
        default=None,
        help="return once the results are printed; MLflow logging finishes in a process of its own "
        "(the default at a terminal outside CI)",
    )
    logging_mode.add_argument(
        "--wait-for-logging",
        dest="background_logging",
        action="store_false",
        help="wait for MLflow logging and print the run id (the default in CI, scripts and pipes)",
    )
    _shard_flag(run)
    _spending_flags(run)
    run.set_defaults(handler=_cmd_run)
    init = sub.add_parser("init", help="write a first experiment (config and prompt) for a dataset file")
    init.add_argument("dataset", type=Path, help="a .jsonl, .json, .csv or .parquet file")
    init.add_argument("--name", default=None, help="experiment name (default: the file's name)")
    init.add_argument("--reference", default=None, help="the column holding the expected output")
    init.add_argument("--input", default=None, help="the column the prompt shows the model")
    init.set_defaults(handler=_cmd_init)
    estimate = sub.add_parser("estimate", help="print min / expected / max cost and wall time without any call")
    estimate.add_argument("config", type=Path)
    estimate.add_argument("--limit", type=int, default=None)
    estimate.add_argument("--no-cache", action="store_true", help="count cached calls as new")
    estimate.add_argument(
        "--pilot", default=None, metavar="RUN_ID", help="size the gate's decision from this run (default: the newest)"
    )
    estimate.set_defaults(handler=_cmd_estimate)
    reprice = sub.add_parser("reprice", help="recompute a stored run's costs under current or given prices")
    reprice.add_argument("run_id")
    reprice.add_argument("--prices", type=Path, default=None, help="YAML: model string -> price fields")
    reprice.add_argument(
        "--tier",
        choices=("batch", "flex", "priority"),  # pricing.TIERS, spelled out so --help imports nothing
        default=None,
        help="bill every call at this service tier's prices (where priced)",
    )
    reprice.add_argument("--tracking-uri", default=None)
    reprice.set_defaults(handler=_cmd_reprice)
    levers = sub.add_parser(
        "levers", help="what a stored run's calls would cost bought otherwise: batch, flex, priority, caching, a cap"
    )
    levers.add_argument("run_id")
    levers.add_argument("--prices", type=Path, default=None, help="YAML: model string -> price fields (or like:)")
    levers.add_argument("--tracking-uri", default=None)
    levers.set_defaults(handler=_cmd_levers)
    gate = sub.add_parser("gate", help="decide by non-inferiority whether a candidate may replace the baseline")
    gate.add_argument("config", type=Path)
    gate.add_argument("--candidate", default=None, help="MODEL[:PROMPT]; default: every non-baseline variant")
    gate.add_argument("--against", default=None, metavar="RUN_ID", help="take the baseline from a stored MLflow run")
    gate.add_argument("--limit", type=int, default=None, help="override dataset.limit")
    gate.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    design = gate.add_mutually_exclusive_group()
    design.add_argument(
        "--sequential",
        action="store_true",
        default=None,
        help="decide in stages and stop once decided (gate.sequential, else 5 looks with Pocock-type spending)",
    )
    design.add_argument(
        "--fixed", dest="sequential", action="store_false", help="one fixed design, even if gate.sequential is set"
    )
    _shard_flag(gate)
    _spending_flags(gate)
    gate.set_defaults(handler=_cmd_gate)
    report = sub.add_parser("report", help="rebuild the analysis, plot and report of a stored run (no model calls)")
    report.add_argument("run_id")
    report.add_argument("--out", default=None, help="folder for report.md and frontier.png (default reports/RUN_ID)")
    report.add_argument("--tracking-uri", default=None)
    report.set_defaults(handler=_cmd_report)
    route = sub.add_parser("route", help="simulate routers and cascades from a stored run's records (no model calls)")
    route.add_argument("run_id")
    route.add_argument(
        "--policy",
        action="append",
        default=None,
        metavar="YAML",
        help="a policy as YAML, e.g. '{kind: cascade, check: {min_words: 8}}' (repeatable; "
        "default: the run's routing config, else oracle and random p=0.5)",
    )
    route.add_argument("--weak", default=None, help="the cheap variant (default: the cheapest that ran)")
    route.add_argument("--strong", default=None, help="the strong variant (default: the baseline)")
    route.add_argument("--metric", default=None, help="the quality metric (default: the gate's)")
    route.add_argument("--out", default=None, help="folder for report.md and frontier.png (default reports/RUN_ID)")
    route.add_argument("--tracking-uri", default=None)
    route.set_defaults(handler=_cmd_route)
    ui = sub.add_parser("ui", help="serve the MLflow UI on 127.0.0.1 over the tracking store")
    ui.add_argument("config", nargs="?", default=None, help="an experiment config: print the link to its runs")
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes (default 1: a local viewer serves one person; MLflow's own default is 4)",
    )
    ui.add_argument(
        "--backend-store-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db"
    )
    ui.set_defaults(handler=_cmd_ui)
    return parser


def _shard_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--shard",
        default=None,
        metavar="I/N",
        help="call only the I-th of N disjoint parts of the items into the shared cache (a CI matrix); "
        "the same command without --shard then makes no calls and logs (and decides on) the whole",
    )


def _spending_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the response cache")
    parser.add_argument("--refresh", action="store_true", help="call the models again and overwrite the cache")
    parser.add_argument("--max-usd", type=float, default=None, help="hard spending cap for this invocation")
    parser.add_argument("--yes", action="store_true", help="do not ask before spending above the threshold")


def _options(args: argparse.Namespace, strict: bool) -> RunOptions:
    from harness.workflow import RunOptions

    if args.max_usd is not None and not (math.isfinite(args.max_usd) and args.max_usd > 0):
        from harness.config import ConfigError

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
        assume_yes=args.yes,
        confirm=_ask if sys.stdin.isatty() else None,
        background_logging=_background_logging(getattr(args, "background_logging", False)),
    )


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
        from harness.config import ConfigError

        raise ConfigError("command line", "--shard", f"must be I/N with 1 <= I <= N (got {text!r})", "e.g. --shard 2/4")
    return int(match[1]), int(match[2])


def _ask(question: str) -> bool:
    from rich.prompt import Confirm

    return Confirm.ask(question, default=False)


def escape(text: str) -> str:
    """User and model text printed as written: `[/]x[bold` is a name, not markup (rich, imported late)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def _console() -> Console:
    from rich.console import Console

    # emoji off: a model or prompt named ":b:" prints as written
    console = Console(emoji=False)
    return console if console.is_terminal else Console(width=max(console.width, 200), emoji=False)


def _incomplete(reason: str | None) -> None:
    if reason is not None:
        print(f"error: could not complete: {reason}", file=sys.stderr)


def _cmd_run(args: argparse.Namespace) -> int:
    from harness.api import run

    console = _console()
    started = time.perf_counter()
    outcome = run(args.config, _options(args, args.strict), console, args.limit)
    console.print(f"done in {time.perf_counter() - started:.1f} s")
    _incomplete(outcome.incomplete)
    return outcome.exit_code


def _cmd_init(args: argparse.Namespace) -> int:
    from rich.table import Table

    from harness.scaffold import preview, propose, write_experiment

    console = _console()
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
    console.print(f"wrote {config} and {prompt}; next: python -m harness run {config.relative_to(Path.cwd())}")
    return EXIT_OK


def _names(scorers: list[Any]) -> list[str]:
    return [s if isinstance(s, str) else next(iter(s)) for s in scorers]


def _cmd_estimate(args: argparse.Namespace) -> int:
    from harness.api import load_experiment
    from harness.preflight import prepare
    from harness.workflow import RunOptions, open_cache, show_estimate

    console = _console()
    experiment = load_experiment(args.config, args.limit)
    plan = prepare(experiment)
    cache = open_cache(experiment, RunOptions(use_cache=not args.no_cache))
    show_estimate(plan, console, cache, tracking=True, unrunnable=True)
    console.print(f"at concurrency {experiment.concurrency}; cached calls cost nothing and take no time")
    from harness.api import size_decisions
    from harness.report import decision_size_lines

    for line in decision_size_lines(size_decisions(plan, args.pilot), experiment.gate, len(plan.eval_set.items)):
        console.print(line)
    return EXIT_OK


def _cmd_reprice(args: argparse.Namespace) -> int:
    from harness.api import load_run, reprice
    from harness.report import print_analysis, print_results

    console = _console()
    _check_prices(args.prices)
    stored = load_run(args.run_id, args.tracking_uri)
    repriced = reprice(stored, args.prices, args.tier)
    tier = f" at {args.tier} prices" if args.tier else ""
    title = f"{stored.manifest.experiment}: repriced{tier} (run {stored.run_id})"
    print_results(console, repriced.rebuilt.summaries, stored.manifest.baseline, title)
    print_analysis(console, repriced.rebuilt.analysis)
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
        from harness.pricing import load_price_file

        load_price_file(path)


def _cmd_levers(args: argparse.Namespace) -> int:
    from harness.api import load_run, reprice
    from harness.report import NO_PRICED_VARIANT, lever_notes, lever_table

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


def _cmd_gate(args: argparse.Namespace) -> int:
    from harness.api import gate
    from harness.gating import publish
    from harness.report import markdown_report

    console = _console()
    options = _options(args, strict=True)
    outcome = gate(args.config, args.candidate, args.against, options, console, args.limit, args.sequential)
    run = outcome.run
    if outcome.shard is not None:
        _incomplete(run.incomplete)
        return outcome.exit_code
    experiment = run.plan.experiment
    report = markdown_report(experiment.name, run.summaries, run.analysis, None, experiment.description, run.status)
    publish(outcome.result, report, console)
    return outcome.exit_code


def _cmd_report(args: argparse.Namespace) -> int:
    from harness.api import analyze, load_run
    from harness.report import print_analysis, print_results

    console = _console()
    stored = load_run(args.run_id, args.tracking_uri)
    rebuilt = analyze(stored)
    title = f"{stored.manifest.experiment}: results (from run {stored.run_id})"
    print_results(console, rebuilt.summaries, stored.manifest.baseline, title)
    print_analysis(console, rebuilt.analysis)
    _print_notes(console, stored, rebuilt)
    files = _republish(args, stored, rebuilt)
    console.print(f"report: {', '.join(str(f) for f in files)} (also logged to run {stored.run_id} under rebuilt/)")
    return EXIT_OK


def _print_notes(console: Console, stored: StoredRun, rebuilt: Rebuilt) -> None:
    for note in stored.manifest.status.notes():
        console.print(escape(f"as run: {note}"))
    for note in rebuilt.notes:
        console.print(f"[bold yellow]NOTE[/] {escape(note)}")


def _cmd_route(args: argparse.Namespace) -> int:
    from harness.api import load_run, route
    from harness.report import policy_notes, policy_table
    from harness.tracking.write import add_policy_runs

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
    import yaml
    from pydantic import ValidationError

    from harness.config import ConfigError, PolicyConfig, RoutingConfig

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
    from harness.api import write_report
    from harness.tracking.store import find_project_root

    return write_report(stored, rebuilt, Path(args.out or find_project_root() / "reports" / stored.run_id))


def _cmd_ui(args: argparse.Namespace) -> int:
    from harness.secrets import redact_url
    from harness.tracking.store import experiment_page, stored_run_uri

    if not 1 <= args.port <= 65535:
        from harness.config import ConfigError

        raise ConfigError("command line", "--port", f"{args.port} is not a TCP port", "give 1-65535, e.g. 5000")
    if not 1 <= args.workers <= 64:
        from harness.config import ConfigError

        raise ConfigError("command line", "--workers", f"{args.workers} server processes", "give 1-64, e.g. 1")
    from harness.config import load_config

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
    # viewer needs none of them, and without them the UI is up in about 7 s here instead of 20. A user who
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
