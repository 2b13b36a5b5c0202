"""The job the tracking process runs for each finished run: write the report's files, log everything.

It lives with tracking, not with the run sequence, so the tracking process imports nothing of `workflow`
and tracking never imports the code that calls it."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from harness.report_files import report_locally, write_outputs
from harness.secrets import scrub
from harness.tracking.write import log_run

if TYPE_CHECKING:
    from harness.analysis import Analysis
    from harness.manifest import RunStatus
    from harness.plan import Plan
    from harness.records import Record
    from harness.summary import VariantSummary


def track_run(
    plan: Plan,
    records: list[Record],
    summaries: list[VariantSummary],
    started_at: float,
    analysis: Analysis,
    status: RunStatus,
    state: str,
    background: bool = False,
) -> str | None:
    """Plot, report and log one run to MLflow (in the tracking process); returns the parent run id.

    In the `background` the calling process has gone on: nobody reads an exception, so a failure is said
    on the run's stderr (still the terminal) and kept beside the local report, as a waiting run would."""

    try:
        with tempfile.TemporaryDirectory() as tmp:
            experiment = plan.experiment
            files = write_outputs(Path(tmp), experiment.name, experiment.description, summaries, analysis, status)
            return log_run(plan, records, summaries, started_at, analysis, files, status, state)
    except Exception as exc:
        if not background:
            raise
        problem = scrub(f"{type(exc).__name__}: {exc}")
        folder = report_locally(plan, summaries, started_at, analysis, status)[0].parent
        (folder / "tracking-error.txt").write_text(problem + "\n")
        print(
            f"harness: TRACKING FAILED in the background logging of {plan.experiment.name}: {problem}. Nothing is "
            f"lost: every answer is in the response cache, and the report is in {folder}. Fix the store and run "
            "the same command again.",
            file=sys.stderr,
        )
        return None


def import_logging() -> None:
    """MLflow, the logging code and the plotting library, imported, opening nothing: a
    tracking launcher does this once, and every tracking process it forks starts with them."""
    import markdown_it  # noqa: F401 - the HTML report
    import matplotlib
    import mlflow.store.tracking.sqlalchemy_store  # the store an sqlite or database URI opens
    import mlflow.tracing.processor.base_mlflow  # noqa: F401 - traces
    import sqlalchemy.dialects.sqlite  # noqa: F401

    import harness.tracking  # noqa: F401 - the reads and writes the jobs use

    matplotlib.use("Agg")
    import matplotlib.pyplot
