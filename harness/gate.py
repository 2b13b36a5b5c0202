"""The CI decision for a model or prompt swap, and its exit codes.

Exit codes: 0 every candidate is non-inferior; 1 a quality regression (non-inferiority not shown with
enough evidence); 2 configuration or usage error; 3 could not decide (too many errors, eval too small).
A failure outranks an undecided candidate, which outranks a pass.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from harness.analysis import Analysis
from harness.config import ConfigError, Experiment
from harness.plan import variant_name

EXIT_PASS = 0
EXIT_REGRESSION = 1
EXIT_USAGE = 2
EXIT_UNDECIDED = 3


@dataclass(frozen=True)
class GateResult:
    """The decision, and the line that explains it."""

    exit_code: int
    summary: str


def gate_variants(experiment: Experiment, candidate: str | None) -> tuple[str, set[str]]:
    """The baseline's variant name and the candidates' (`MODEL[:PROMPT]`, prompt defaulting to the baseline's)."""
    file = str(experiment.source_path)
    if experiment.baseline is None:
        raise ConfigError(file, "baseline", "the gate needs a baseline", "add baseline: {model: ..., prompt: ...}")
    base_model = experiment.model_by_ref(experiment.baseline.model)
    assert base_model is not None  # checked by preflight, but the gate names variants before it runs
    baseline = variant_name(base_model, experiment.baseline.prompt)
    if candidate is None:
        every = {variant_name(m, p.name) for m in experiment.models for p in experiment.prompts}
        return baseline, every - {baseline}
    model_ref, _, prompt = candidate.rpartition(":") if _has_prompt(candidate, experiment) else (candidate, "", "")
    model = experiment.model_by_ref(model_ref)
    if model is None:
        names = ", ".join(m.display_name for m in experiment.models)
        raise ConfigError(file, "--candidate", f"'{model_ref}' is not one of the models", f"use one of: {names}")
    prompt = prompt or experiment.baseline.prompt
    if prompt not in {p.name for p in experiment.prompts}:
        names = ", ".join(p.name for p in experiment.prompts)
        raise ConfigError(file, "--candidate", f"'{prompt}' is not one of the prompts", f"use one of: {names}")
    name = variant_name(model, prompt)
    if name == baseline:
        raise ConfigError(file, "--candidate", "the candidate is the baseline", "name another model or prompt")
    return baseline, {name}


def _has_prompt(candidate: str, experiment: Experiment) -> bool:
    _, sep, prompt = candidate.rpartition(":")
    return bool(sep) and prompt in {p.name for p in experiment.prompts}


def decide(analysis: Analysis, candidates: set[str], budget_exhausted: bool = False) -> GateResult:
    """Combine the candidates' verdicts into one exit code."""
    if budget_exhausted:
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
    console.print(f"[bold {style}]{result.summary}[/]")
    summary_file = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary_file:
        with Path(summary_file).open("a", encoding="utf-8") as handle:
            headline, *details = result.summary.splitlines()
            handle.write(f"## {headline}\n\n" + "".join(f"- {d}\n" for d in details) + "\n" + report_markdown + "\n")
