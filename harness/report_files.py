"""The files a run's report is made of (the frontier plot, report.md and report.html), wherever they go:
into MLflow through a temporary folder, under `reports/` when logging failed, or where `report` is told."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from harness.plots import frontier_plot, plottable
from harness.report import html_report, markdown_report
from harness.secrets import scrub

if TYPE_CHECKING:
    from harness.analysis import Analysis
    from harness.manifest import RunStatus
    from harness.plan import Plan
    from harness.summary import VariantSummary

PLOT_NAME = "frontier.png"
REPORT_NAME = "report.md"
HTML_REPORT_NAME = "report.html"


def write_outputs(
    folder: Path,
    title: str,
    description: str,
    summaries: list[VariantSummary],
    analysis: Analysis,
    status: RunStatus | None = None,
) -> list[Path]:
    """The frontier plot and the markdown report, written into `folder`."""

    files = []
    plot = None
    if plottable(analysis):
        plot = frontier_plot(analysis, folder / PLOT_NAME, f"{title}: cost vs {analysis.metric}")
        files.append(plot)
    report = folder / REPORT_NAME
    report.write_text(
        scrub(markdown_report(title, summaries, analysis, plot.name if plot else None, description, status)),
        encoding="utf-8",
    )
    files.append(report)
    page = folder / HTML_REPORT_NAME
    page.write_text(html_report(report.read_text(encoding="utf-8"), folder), encoding="utf-8")
    files.append(page)
    return files


def report_locally(
    plan: Plan, summaries: list[VariantSummary], started_at: float, analysis: Analysis, status: RunStatus
) -> list[Path]:
    """The report a failed logging leaves under the project's `reports/`, named for the run's start."""
    experiment = plan.experiment
    folder = experiment.root / "reports" / time.strftime("%Y%m%d-%H%M%S", time.localtime(started_at))
    folder.mkdir(parents=True, exist_ok=True)
    return write_outputs(folder, experiment.name, experiment.description, summaries, analysis, status)
