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

from harness.offline import apply_offline_defaults

EXIT_OK = 0
EXIT_USAGE = 2
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
        print(f"error: {exc.line()}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
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
    run.set_defaults(handler=_cmd_run)
    ui = sub.add_parser("ui", help="serve the MLflow UI on 127.0.0.1 over the tracking store")
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument(
        "--backend-store-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db"
    )
    ui.set_defaults(handler=_cmd_ui)
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from harness.config import load_config
    from harness.preflight import prepare
    from harness.report import print_results
    from harness.runner import run_plan
    from harness.scorers import score_records
    from harness.summary import summarize

    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 200))
    started = time.perf_counter()
    started_at = time.time()
    experiment = load_config(args.config)
    if args.limit is not None:
        dataset = experiment.dataset.model_copy(update={"limit": args.limit})
        experiment = experiment.model_copy(update={"dataset": dataset})
    plan = prepare(experiment, strict=args.strict)
    console.print(
        f"[bold]{experiment.name}[/]: {len(plan.eval_set.items)} items x {len(plan.runnable)} variants "
        f"(dataset {plan.eval_set.source}, fingerprint {plan.eval_set.fingerprint})"
    )
    for variant in plan.variants:
        if variant.skipped:
            console.print(f"[bold yellow]WARNING[/] {variant.name}: {variant.skipped}")
    records = run_plan(plan, console=console)
    score_records(records, {i.id: i for i in plan.eval_set.items}, plan.scorers)
    summaries = summarize(plan, records)
    print_results(console, summaries, plan.baseline, f"{experiment.name}: results")
    if not args.no_tracking:
        from harness.tracking import log_run, tracking_uri

        run_id = log_run(plan, records, summaries, started_at)
        console.print(
            f"MLflow: run [bold]{run_id}[/] in {tracking_uri(experiment)} (see it with: python -m harness ui)"
        )
    console.print(f"done in {time.perf_counter() - started:.1f} s")
    return EXIT_OK


def _cmd_ui(args: argparse.Namespace) -> int:
    uri = args.backend_store_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        store = Path("mlruns").resolve()
        store.mkdir(exist_ok=True)
        uri = f"sqlite:///{store / 'mlflow.db'}"
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
