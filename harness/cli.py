"""Argument parsing only: each command is a few lines that call the modules that own the work.

Heavy libraries (litellm, mlflow, datasets) are imported inside commands so `--help` stays fast.
Expected mistakes (ConfigError) become one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from harness.offline import apply_offline_defaults

if TYPE_CHECKING:
    from pydantic import ValidationError
    from rich.console import Console

    from harness.analysis import Analysis
    from harness.config import Experiment, RoutingConfig
    from harness.records import Record
    from harness.summary import VariantSummary
    from harness.tracking import StoredRun
    from harness.workflow import RunOptions

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_BUDGET = 3
EXIT_INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    """Entry point of `harness` and `python -m harness`."""
    apply_offline_defaults()
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
    except KeyboardInterrupt:
        print(
            "interrupted: every call that finished is in the response cache; run the same command again to resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED


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
    _spending_flags(run)
    run.set_defaults(handler=_cmd_run)
    estimate = sub.add_parser("estimate", help="print min / expected / max cost and wall time without any call")
    estimate.add_argument("config", type=Path)
    estimate.add_argument("--limit", type=int, default=None)
    estimate.add_argument("--no-cache", action="store_true", help="count cached calls as new")
    estimate.set_defaults(handler=_cmd_estimate)
    reprice = sub.add_parser("reprice", help="recompute a stored run's costs under current or given prices")
    reprice.add_argument("run_id")
    reprice.add_argument("--prices", type=Path, default=None, help="YAML: model string -> price fields")
    reprice.add_argument("--tracking-uri", default=None)
    reprice.set_defaults(handler=_cmd_reprice)
    gate = sub.add_parser("gate", help="decide by non-inferiority whether a candidate may replace the baseline")
    gate.add_argument("config", type=Path)
    gate.add_argument("--candidate", default=None, help="MODEL[:PROMPT]; default: every non-baseline variant")
    gate.add_argument("--against", default=None, metavar="RUN_ID", help="take the baseline from a stored MLflow run")
    gate.add_argument("--limit", type=int, default=None, help="override dataset.limit")
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
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument(
        "--backend-store-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db"
    )
    ui.set_defaults(handler=_cmd_ui)
    return parser


def _spending_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the response cache")
    parser.add_argument("--refresh", action="store_true", help="call the models again and overwrite the cache")
    parser.add_argument("--max-usd", type=float, default=None, help="hard spending cap for this invocation")
    parser.add_argument("--yes", action="store_true", help="do not ask before spending above the threshold")


def _options(args: argparse.Namespace, strict: bool) -> RunOptions:
    from harness.workflow import RunOptions

    if args.max_usd is not None and args.max_usd <= 0:
        from harness.config import ConfigError

        raise ConfigError("command line", "--max-usd", f"must be positive (got {args.max_usd:g})", "give dollars > 0")
    return RunOptions(
        strict=strict,
        tracking=not getattr(args, "no_tracking", False),
        use_cache=not args.no_cache,
        refresh=args.refresh,
        max_usd=args.max_usd,
        assume_yes=args.yes,
        interactive=sys.stdin.isatty(),
    )


def _console() -> Console:
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=max(console.width, 200))


def _load(path: Path, limit: int | None) -> Experiment:
    from harness.config import load_config

    experiment = load_config(path)
    if limit is not None:
        experiment = experiment.model_copy(update={"dataset": experiment.dataset.model_copy(update={"limit": limit})})
    return experiment


def _cmd_run(args: argparse.Namespace) -> int:
    from harness.workflow import run_experiment

    console = _console()
    started = time.perf_counter()
    outcome = run_experiment(_load(args.config, args.limit), console, _options(args, args.strict))
    console.print(f"done in {time.perf_counter() - started:.1f} s")
    return EXIT_BUDGET if outcome.result.budget_exhausted else EXIT_OK


def _cmd_estimate(args: argparse.Namespace) -> int:
    from harness.preflight import prepare
    from harness.workflow import RunOptions, open_cache, show_estimate

    console = _console()
    experiment = _load(args.config, args.limit)
    plan = prepare(experiment)
    cache = open_cache(experiment, RunOptions(use_cache=not args.no_cache))
    show_estimate(plan, console, cache, tracking=True)
    console.print(f"at concurrency {experiment.concurrency}; cached calls cost nothing and take no time")
    return EXIT_OK


def _cmd_reprice(args: argparse.Namespace) -> int:
    from harness.pricing import ModelPrice, load_price_file, reprice_records
    from harness.report import print_analysis, print_results
    from harness.workflow import analysis_from_records

    console = _console()
    _, stored = _stored_run(args)
    overrides = load_price_file(args.prices) if args.prices else {}
    stored_prices = {m: ModelPrice(**p) for m, p in (stored.manifest.get("prices") or {}).items()}
    records = reprice_records(stored.records, overrides, str(args.prices or "prices"), stored_prices)
    before = sum(r.cost_usd for r in stored.records)
    after = sum(r.cost_usd for r in records)
    summaries, analysis = analysis_from_records(stored.manifest, records)
    title = f"{stored.manifest['experiment']}: repriced (run {stored.run_id})"
    print_results(console, summaries, stored.manifest["baseline"], title)
    print_analysis(console, analysis)
    console.print(f"total list cost: ${before:.6f} as recorded -> ${after:.6f} repriced (no model calls)")
    return EXIT_OK


def _cmd_gate(args: argparse.Namespace) -> int:
    from harness.gate import EXIT_USAGE, decide, gate_variants, publish
    from harness.report import markdown_report
    from harness.workflow import run_experiment

    console = _console()
    experiment = _load(args.config, args.limit)
    baseline, candidates = gate_variants(experiment, args.candidate)
    prior = None
    if args.against:
        prior = _stored_baseline(experiment, args.against, baseline)
        if prior is None:
            console.print(f"error: run {args.against} has no records for the baseline {baseline}")
            return EXIT_USAGE
    outcome = run_experiment(
        experiment, console, _options(args, strict=True), only={baseline, *candidates}, prior=prior
    )
    result = decide(outcome.analysis, candidates, outcome.result.budget_exhausted)
    report = markdown_report(experiment.name, outcome.summaries, outcome.analysis, None, experiment.description)
    publish(result, report, console)
    return result.exit_code


def _stored_baseline(experiment: Experiment, run_id: str, baseline: str) -> dict[str, list[Record]] | None:
    from harness.config import ConfigError
    from harness.tracking import load_run, tracking_uri

    try:
        stored = load_run(run_id, tracking_uri(experiment))
    except Exception as exc:
        raise ConfigError(
            str(experiment.source_path),
            "--against",
            f"cannot read MLflow run {run_id}: {exc}",
            "give the id of a parent or variant run in this tracking store",
        ) from None
    records = [r for r in stored.records if r.variant == baseline]
    return {baseline: records} if records else None


def _cmd_report(args: argparse.Namespace) -> int:
    from harness.report import print_analysis, print_results
    from harness.workflow import analysis_from_records

    console = _console()
    uri, stored = _stored_run(args)
    summaries, analysis = analysis_from_records(stored.manifest, stored.records)
    title = stored.manifest["experiment"]
    print_results(console, summaries, stored.manifest["baseline"], f"{title}: results (from run {stored.run_id})")
    print_analysis(console, analysis)
    files = _republish(args, uri, stored, summaries, analysis)
    console.print(f"report: {', '.join(str(f) for f in files)} (also logged to run {stored.run_id})")
    return EXIT_OK


def _cmd_route(args: argparse.Namespace) -> int:
    from harness.report import policy_table
    from harness.tracking import add_policy_runs
    from harness.workflow import analysis_from_records

    console = _console()
    uri, stored = _stored_run(args)
    routing = _routing_config(args, stored.manifest.get("routing"))
    summaries, analysis = analysis_from_records(stored.manifest, stored.records, routing=routing)
    console.print(policy_table(analysis))
    files = _republish(args, uri, stored, summaries, analysis)
    add_policy_runs(stored.run_id, uri, analysis)
    console.print(
        f"plot and report: {', '.join(str(f) for f in files)}; policies logged as child runs of {stored.run_id}"
    )
    return EXIT_OK


def _routing_config(args: argparse.Namespace, stored: dict | None) -> RoutingConfig:
    """The routing to simulate: flags over the run's own routing config."""
    import yaml
    from pydantic import ValidationError

    from harness.config import ConfigError, PolicyConfig, RoutingConfig

    base = dict(stored or {})
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


def _stored_run(args: argparse.Namespace) -> tuple[str, StoredRun]:
    """The tracking URI (flag, environment, embedded default) and the stored run `args.run_id`."""
    from harness.tracking import load_run

    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or _default_store_uri()
    return uri, load_run(args.run_id, uri)


def _republish(
    args: argparse.Namespace, uri: str, stored: StoredRun, summaries: list[VariantSummary], analysis: Analysis
) -> list[Path]:
    """Plot and report into `--out` (default reports/RUN_ID), also attached to the stored run."""
    from harness.tracking import add_artifacts
    from harness.workflow import write_outputs

    out = Path(args.out or Path("reports") / stored.run_id)
    out.mkdir(parents=True, exist_ok=True)
    title = stored.manifest["experiment"]
    files = write_outputs(out, title, stored.manifest.get("description", ""), summaries, analysis)
    add_artifacts(stored.run_id, uri, files)
    return files


def _default_store_uri() -> str:
    store = Path("mlruns").resolve()
    store.mkdir(exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}"


def _cmd_ui(args: argparse.Namespace) -> int:
    uri = args.backend_store_uri or os.environ.get("MLFLOW_TRACKING_URI") or _default_store_uri()
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
    ]
    if uri.startswith("sqlite:///"):
        artifacts = Path(uri.removeprefix("sqlite:///")).parent / "artifacts"
        command += ["--default-artifact-root", artifacts.resolve().as_uri()]
    print(f"MLflow UI on http://127.0.0.1:{args.port} over {uri} (Ctrl-C stops it)", file=sys.stderr)
    os.execv(sys.executable, command)
    return EXIT_OK  # pragma: no cover - execv does not return
