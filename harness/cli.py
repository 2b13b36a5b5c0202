"""Argument parsing and the process: signals, exit codes; the commands themselves are `harness.commands`.

This module imports nothing heavy, so `--help` and a mistyped flag answer at once; the commands (and with
them pydantic, rich, numpy, scipy) are loaded once a command is chosen.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import signal
import sys
from pathlib import Path
from typing import NoReturn

from harness import __version__
from harness.exit_codes import EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_USAGE
from harness.offline import apply_offline_defaults, short_lived_process


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
    # quiet from the moment the signal lands: asyncio collects the calls it cuts short while the loop
    # winds down, before the exception reaches `main`
    _quiet_teardown()
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


TERMINATED_LINE = (
    "terminated (SIGTERM): every call that finished is in the response cache; run the same command again to resume"
)
INTERRUPTED_LINE = (
    "interrupted: every call that finished is in the response cache; run the same command again to resume"
)


def main(argv: list[str] | None = None) -> int:
    """The command line: `entry` in a process of its own, or called in-process (tests, programs)."""
    apply_offline_defaults()
    with contextlib.suppress(ValueError):  # not the main thread (an embedding program): leave it alone
        signal.signal(signal.SIGTERM, _on_sigterm)
    previous = sys.unraisablehook
    sys.unraisablehook = _interrupt_where_python_ignores_it
    try:  # from here on, a signal at any moment (even mid-import) ends in the one resume line
        return _dispatch(argv)
    except Terminated:
        _quiet_teardown()
        print(TERMINATED_LINE, file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        _quiet_teardown()
        print(INTERRUPTED_LINE, file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        sys.unraisablehook = previous


def _interrupt_where_python_ignores_it(unraisable: sys.UnraisableHookArgs) -> None:
    """A signal whose exception lands where Python cannot raise it (a finalizer, a weakref callback)
    would be printed as "Exception ignored" with a traceback, and the command would go on as if it had
    not come. It ends the process instead, with the same resume line: every finished call is already
    committed to the cache, and the claims of this process lapse with it."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        terminated = isinstance(unraisable.exc_value, Terminated)
        print(TERMINATED_LINE if terminated else INTERRUPTED_LINE, file=sys.stderr, flush=True)
        os._exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED)
    sys.__unraisablehook__(unraisable)


def _dispatch(argv: list[str] | None) -> int:
    """Parse the arguments and run the command; a config mistake is one line (exit 2), anything unexpected
    "could not complete" (exit 4, never mistaken for a regression)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return EXIT_USAGE
    # The one late import of the package: --help and a usage error stop before it.
    from harness.commands import execute

    return execute(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Run controlled LLM experiments that put cost and quality side by side.",
    )
    parser.add_argument("--version", action="version", version=f"harness {__version__}")
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
    run.add_argument(
        "--only",
        action="append",
        default=None,
        metavar="GLOB",
        help="run only the variants matching this glob, e.g. 'local/*' (repeatable; the baseline is kept)",
    )
    _output_flags(run)
    _shard_flag(run)
    _spending_flags(run)
    run.set_defaults(handler="run")
    init = sub.add_parser("init", help="write a first experiment (config and prompt) for a dataset file")
    init.add_argument("dataset", type=Path, nargs="?", help="a .jsonl, .json, .csv or .parquet file")
    init.add_argument(
        "--from-logs",
        type=Path,
        default=None,
        metavar="LOG",
        help="a production log (OpenAI-format JSONL or litellm spend logs) in the project: replay it",
    )
    init.add_argument("--name", default=None, help="experiment name (default: the file's name)")
    init.add_argument("--reference", default=None, help="the column holding the expected output")
    init.add_argument("--input", default=None, help="the column the prompt shows the model")
    init.set_defaults(handler="init")
    estimate = sub.add_parser("estimate", help="print min / expected / max cost and wall time without any call")
    estimate.add_argument("config", type=Path)
    estimate.add_argument("--limit", type=int, default=None)
    estimate.add_argument("--no-cache", action="store_true", help="count cached calls as new")
    _batch_flag(estimate)
    estimate.add_argument(
        "--pilot", default=None, metavar="RUN_ID", help="size the gate's decision from this run (default: the newest)"
    )
    estimate.set_defaults(handler="estimate")
    watch = sub.add_parser(
        "watch", help="re-decide each experiment's latest run under today's prices, models and deprecations"
    )
    watch.add_argument("experiments", type=Path, nargs="*", help="configs (default: every experiments/*.yaml)")
    _watch_flags(watch)
    watch.add_argument("--summary", type=Path, default=None, help="write the markdown summary here")
    watch.add_argument("--json", type=Path, default=None, help="write the findings as JSON (for a scheduled job)")
    watch.set_defaults(handler="watch")
    savings = sub.add_parser("savings", help="the portfolio: each experiment's saving per month, with totals")
    savings.add_argument("experiments", type=Path, nargs="*", help="configs (default: every experiments/*.yaml)")
    _watch_flags(savings)
    savings.add_argument("-o", "--output", type=Path, default=None, help="write FILE.json or FILE.md as well")
    savings.set_defaults(handler="savings")
    export = sub.add_parser("export", help="stored runs' spend and projected months as FinOps FOCUS 1.2 rows")
    export.add_argument("run_ids", nargs="*", help="runs (default: every experiment's latest)")
    export.add_argument("--focus", type=Path, required=True, metavar="FILE.csv", help="the FOCUS CSV to write")
    export.add_argument("--tracking-uri", default=None)
    export.set_defaults(handler="export")
    shorten = sub.add_parser(
        "shorten", help="find the shortest prompt non-inferior to one of the experiment's, confirmed on unseen items"
    )
    shorten.add_argument("config", type=Path)
    shorten.add_argument("--prompt", required=True, help="the prompt to shorten (its name in the config)")
    shorten.add_argument("--model", default=None, help="the model to search with (default: the baseline's)")
    shorten.add_argument("--limit", type=int, default=None)
    shorten.add_argument("--max-usd", type=float, default=None, help="hard spending cap for the search")
    shorten.add_argument("--yes", action="store_true", help="do not ask before spending above the threshold")
    shorten.add_argument("--no-tracking", action="store_true", help="do not log the search to MLflow")
    _batch_flag(shorten)
    shorten.set_defaults(handler="shorten")
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
    reprice.add_argument("--wide", action="store_true", help="every column: tokens, latency, tests, intervals")
    reprice.set_defaults(handler="reprice")
    levers = sub.add_parser(
        "levers", help="what a stored run's calls would cost bought otherwise: batch, flex, priority, caching, a cap"
    )
    levers.add_argument("run_id")
    levers.add_argument("--prices", type=Path, default=None, help="YAML: model string -> price fields (or like:)")
    levers.add_argument("--tracking-uri", default=None)
    levers.set_defaults(handler="levers")
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
    gate.add_argument("--junit", type=Path, default=None, metavar="FILE", help="write the decision as JUnit XML")
    _output_flags(gate)
    _shard_flag(gate)
    _spending_flags(gate)
    gate.set_defaults(handler="gate")
    report = sub.add_parser("report", help="rebuild the analysis, plot and report of a stored run (no model calls)")
    report.add_argument("run_id")
    report.add_argument("--out", default=None, help="folder for report.md and frontier.png (default reports/RUN_ID)")
    report.add_argument("--tracking-uri", default=None)
    report.add_argument("--wide", action="store_true", help="every column: tokens, latency, tests, intervals")
    report.set_defaults(handler="report")
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
    route.set_defaults(handler="route")
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
    ui.set_defaults(handler="ui")
    return parser


def _watch_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--map", type=Path, default=None, help="a newer litellm price map JSON to price with")
    parser.add_argument("--prices", type=Path, default=None, help="YAML: model string -> price fields")
    parser.add_argument(
        "--days", type=int, default=30, help="flag models deprecated within this many days (default 30)"
    )


def _output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write the results to FILE: .json (docs/outputs.md), .csv (a line per variant) or .md",
    )
    parser.add_argument("--wide", action="store_true", help="every column: tokens, latency, tests, intervals")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors (and the gate's line)")


def _shard_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--shard",
        default=None,
        metavar="I/N",
        help="call only the I-th of N disjoint parts of the items into the shared cache (a CI matrix); "
        "the same command without --shard then makes no calls and logs (and decides on) the whole",
    )


def _batch_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--batch",
        action="store_true",
        help="buy the calls through the providers' Batch APIs: batch prices, results within 24 h, resumable",
    )


def _spending_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the response cache")
    parser.add_argument("--refresh", action="store_true", help="call the models again and overwrite the cache")
    parser.add_argument("--max-usd", type=float, default=None, help="hard spending cap for this invocation")
    _batch_flag(parser)
    parser.add_argument("--yes", action="store_true", help="do not ask before spending above the threshold")
