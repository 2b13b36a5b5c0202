"""The commands' shared sequence: prepare, run, score, summarise, analyse, show, track.

Kept out of the CLI so that `run`, `gate` and `report` share one path and the CLI stays argument parsing.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from harness.analysis import Analysis, MetricInfo, analyze
from harness.config import AnalysisConfig, Experiment, GateConfig
from harness.plan import Plan
from harness.records import Record
from harness.summary import VariantInfo, VariantSummary, summarize, summarize_records

PLOT_NAME = "frontier.png"
REPORT_NAME = "report.md"


@dataclass
class RunOutcome:
    """What a run produced."""

    plan: Plan
    records: list[Record]
    summaries: list[VariantSummary]
    analysis: Analysis
    run_id: str | None


def run_experiment(
    experiment: Experiment,
    console: Console,
    strict: bool = False,
    tracking: bool = True,
    only: set[str] | None = None,
    reuse: bool = False,
    prior: dict[str, list[Record]] | None = None,
) -> RunOutcome:
    """Validate, call every variant, score, analyse, print, and log to MLflow.

    `only` restricts the variants; `reuse` takes a variant's records from its newest identical finished
    run instead of calling the model again; `prior` supplies records directly (a stored baseline).
    """
    from harness.preflight import prepare
    from harness.report import print_analysis, print_results
    from harness.runner import run_plan
    from harness.scorers import score_records

    started_at = time.time()
    plan = prepare(experiment, strict=strict, only=only)
    console.print(
        f"[bold]{experiment.name}[/]: {len(plan.eval_set.items)} items x {len(plan.runnable)} variants "
        f"(dataset {plan.eval_set.source}, fingerprint {plan.eval_set.fingerprint})"
    )
    for variant in plan.variants:
        if variant.skipped:
            console.print(f"[bold yellow]WARNING[/] {variant.name}: {variant.skipped}")
    ready = dict(prior or {})
    if reuse and tracking:
        from harness.tracking import find_reusable

        for variant in plan.runnable:
            if variant.name not in ready and (found := find_reusable(plan, variant)) is not None:
                ready[variant.name] = found
    for name in ready:
        console.print(f"reusing stored records for {name} (no model calls)")
    reused = [r.model_copy(update={"cache_hit": True}) for name in ready for r in ready[name]]
    records = reused + run_plan(plan, console=console, exclude=set(ready))
    score_records(records, {i.id: i for i in plan.eval_set.items}, plan.scorers)
    summaries = summarize(plan, records)
    metrics = [MetricInfo(s.name, s.kind) for s in plan.scorers]
    analysis = analyze(summaries, records, metrics, plan.baseline, experiment.gate, experiment.analysis)
    print_results(console, summaries, plan.baseline, f"{experiment.name}: results")
    print_analysis(console, analysis)
    run_id = None
    if tracking:
        from harness.tracking import log_run, tracking_uri

        with tempfile.TemporaryDirectory() as tmp:
            files = write_outputs(Path(tmp), experiment.name, experiment.description, summaries, analysis)
            run_id = log_run(plan, records, summaries, started_at, analysis, files)
        console.print(
            f"MLflow: run [bold]{run_id}[/] in {tracking_uri(experiment)} (see it with: python -m harness ui)"
        )
    return RunOutcome(plan, records, summaries, analysis, run_id)


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
    manifest: dict, records: list[Record], gate: GateConfig | None = None
) -> tuple[list[VariantSummary], Analysis]:
    """Rebuild summaries and analysis from a stored run's manifest and records (no model call)."""
    variants = [VariantInfo(**v) for v in manifest["variants"]]
    metrics = [MetricInfo(**m) for m in manifest["metrics"]]
    summaries = summarize_records(variants, records, [m.name for m in metrics])
    gate = gate or GateConfig(**manifest["gate"])
    settings = AnalysisConfig(**manifest["analysis"])
    return summaries, analyze(summaries, records, metrics, manifest["baseline"], gate, settings)
