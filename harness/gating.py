"""The CI decision for a model or prompt swap.

Exit codes (`harness.exit_codes`): 0 every candidate is non-inferior; 1 a quality regression
(non-inferiority not shown with enough evidence); 2 configuration or usage error; 3 could not decide
(too many errors, eval too small, budget exhausted); 4 could not complete. A failure outranks an
undecided candidate, which outranks a pass.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from harness.analysis import Analysis
from harness.config import ConfigError
from harness.exit_codes import EXIT_INCOMPLETE, EXIT_PASS, EXIT_REGRESSION, EXIT_UNDECIDED
from harness.plan import Plan


@dataclass(frozen=True)
class GateResult:
    """The decision, and the line that explains it."""

    exit_code: int
    summary: str


def gate_variants(plan: Plan, candidate: str | None) -> tuple[str, set[str]]:
    """The baseline's variant name and the candidates': `candidate` resolved by `Plan.variant` (after
    `vars` expansion, the prompt defaulting to the baseline's), or every other variant of the plan."""
    file = str(plan.experiment.source_path)
    if plan.baseline is None:
        raise ConfigError(file, "baseline", "the gate needs a baseline", "add baseline: {model: ..., prompt: ...}")
    if candidate is None:
        return plan.baseline, {v.name for v in plan.variants} - {plan.baseline}
    name = plan.variant(candidate, "--candidate").name
    if name == plan.baseline:
        raise ConfigError(file, "--candidate", "the candidate is the baseline", "name another model or prompt")
    return plan.baseline, {name}


def gate_result(
    analysis: Analysis, candidates: set[str], budget_exhausted: bool = False, incomplete: str | None = None
) -> GateResult:
    """Combine the candidates' verdicts into one exit code. A regression found stands even when the run
    could not complete afterwards (tracking failed); anything else incomplete exits 4."""
    result = _exit_code(analysis, candidates, budget_exhausted)
    if analysis.sequential is not None:
        result = GateResult(result.exit_code, f"{result.summary}\n{analysis.sequential.summary()}")
    if incomplete is None or result.exit_code == EXIT_REGRESSION:
        return result
    return GateResult(EXIT_INCOMPLETE, f"GATE INCOMPLETE: {incomplete}\n" + result.summary)


def _exit_code(analysis: Analysis, candidates: set[str], budget_exhausted: bool) -> GateResult:
    decided_fail = analysis.sequential is not None and any(
        analysis.verdicts.get(c) is not None and analysis.verdicts[c].status == "fail" for c in candidates
    )
    if budget_exhausted and not decided_fail:  # a look that showed a regression before the money ran out stands
        return GateResult(EXIT_UNDECIDED, "GATE UNDECIDED: the budget ran out before every call was made")
    verdicts = {c: analysis.verdicts.get(c) for c in sorted(candidates)}
    missing = [c for c, v in verdicts.items() if v is None]
    if analysis.baseline is None or missing or not verdicts:
        why = "the baseline did not run" if analysis.baseline is None else f"not run: {', '.join(missing)}"
        return GateResult(EXIT_UNDECIDED, f"GATE UNDECIDED: {why}")
    lines = [f"{c}: {v.status} ({v.reason})" for c, v in verdicts.items() if v is not None]
    statuses = {v.status for v in verdicts.values() if v is not None}
    if "fail" in statuses:
        return GateResult(EXIT_REGRESSION, "GATE FAIL: quality regression\n" + "\n".join(lines))
    if "undecided" in statuses:
        return GateResult(EXIT_UNDECIDED, "GATE UNDECIDED: could not decide\n" + "\n".join(lines))
    return GateResult(EXIT_PASS, "GATE PASS: non-inferior to the baseline\n" + "\n".join(lines))


def publish(result: GateResult, report_markdown: str, console: Console) -> None:
    """Print the decision; append it and the report to $GITHUB_STEP_SUMMARY when CI provides one."""
    style = {EXIT_PASS: "green", EXIT_REGRESSION: "red"}.get(result.exit_code, "yellow")
    console.print(f"[bold {style}]{escape(result.summary)}[/]")
    summary_file = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary_file:
        with Path(summary_file).open("a", encoding="utf-8") as handle:
            headline, *details = result.summary.splitlines()
            handle.write(f"## {headline}\n\n" + "".join(f"- {d}\n" for d in details) + "\n" + report_markdown + "\n")
