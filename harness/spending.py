"""What a run may spend, settled before its first paid call: output limits under a cap, the estimate
(with what earlier runs measured), and the question a person answers before a large spend.

The run sequence (`harness.workflow`) and the `estimate` command both come here, so the figure a user is
asked to approve is the figure `estimate` printed.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console
from rich.markup import escape

import harness.tracking
from harness.batch_ledger import batch_durations
from harness.cache import ResponseCache
from harness.config import ConfigError, Experiment
from harness.estimate import VariantEstimate, batch_note, estimate_plan, estimate_scorers, expected_wall_seconds
from harness.plan import Plan
from harness.pool import ledger_path
from harness.report import estimate_table
from harness.secrets import scrub
from harness.tracking_process import TrackingProcess, portable


def check_budget_bounds(plan: Plan, max_usd: float | None) -> None:
    """With a budget, every priced call needs an output limit, or its worst case is unbounded."""

    if max_usd is None:
        return
    for variant in plan.called:
        priced = variant.price.output > 0 or variant.price.usd_per_hour > 0
        if priced and variant.limits.output_tokens is None:
            raise ConfigError(
                plan.experiment.source_path,
                "params.max_tokens",
                f"a budget is set but {variant.name} has no output limit, so a call's worst case is unbounded",
                "set params.max_tokens (or the model's own params.max_tokens)",
            )


def estimates_for(
    plan: Plan,
    cache: ResponseCache | None,
    tracking: bool | TrackingProcess,
    exclude: set[str] | None = None,
    warnings_out: list[str] | None = None,
    unrunnable: bool = False,
) -> tuple[list[VariantEstimate], float | None]:
    """Per-variant estimates and the expected wall time (history from MLflow when tracking, read in the
    tracking process when one is given). A store that cannot be read adds a line to `warnings_out`."""
    warnings_out = [] if warnings_out is None else warnings_out

    history = {}
    estimates = [e for e in estimate_plan(plan, cache, {}) if e.variant not in (exclude or set())]
    if any(e.calls > 0 for e in estimates):  # history sharpens only the calls still to make
        try:
            if isinstance(tracking, TrackingProcess):
                history = tracking.call(harness.tracking.variant_history, portable(plan))
            elif tracking:
                history = harness.tracking.variant_history(plan)
        except Exception as exc:  # history only sharpens the estimate; never stop a run for it
            warnings_out.append(f"no history from MLflow for the estimate ({scrub(str(exc))[:200]})")
    if history or unrunnable:
        estimates = [e for e in estimate_plan(plan, cache, history, unrunnable) if e.variant not in (exclude or set())]
    wall = expected_wall_seconds(plan, [e for e in estimates if not e.needs])
    return estimates + estimate_scorers(plan, exclude), wall


def show_estimate(
    plan: Plan,
    console: Console,
    cache: ResponseCache | None,
    tracking: bool | TrackingProcess,
    exclude: set[str] | None = None,
    unrunnable: bool = False,
) -> list[VariantEstimate]:
    """Print the estimate table; returns the estimates of the variants that will run. With `unrunnable`
    (the `estimate` command) the variants that need a key are priced too, in rows of their own."""

    warnings: list[str] = []
    estimates, wall = estimates_for(plan, cache, tracking, exclude, warnings, unrunnable)
    for warning in warnings:
        console.print(f"[bold yellow]WARNING[/] {escape(warning)}")
    console.print(estimate_table(estimates, wall))
    note = batch_note(estimates, batch_durations(ledger_path(plan.experiment, cache)))
    if note is not None:
        console.print(escape(note))
    return [e for e in estimates if not e.needs]


def confirm_spend(
    plan: Plan, estimates: list[VariantEstimate], assume_yes: bool, confirm: Callable[[str], bool] | None
) -> None:
    """Ask before spending above `budget.confirm_above_usd`; never hang when nobody can answer."""
    confirm_spend_usd(plan.experiment, sum(e.max_usd for e in estimates), assume_yes, confirm)


def confirm_spend_usd(
    experiment: Experiment, worst: float, assume_yes: bool, confirm: Callable[[str], bool] | None = None
) -> None:
    """`confirm_spend` for a worst case already summed (a prompt search's)."""
    threshold = experiment.budget.confirm_above_usd
    if assume_yes or worst <= threshold:
        return
    fix = "pass --yes, lower the item count, or raise budget.confirm_above_usd"
    if confirm is None:
        raise ConfigError(
            experiment.source_path,
            "budget.confirm_above_usd",
            f"this run may cost up to ${worst:.4f}, above ${threshold:g}, and nobody is at the terminal to confirm",
            fix,
        )
    if not confirm(f"This run may cost up to ${worst:.4f}. Spend it?"):
        raise ConfigError(experiment.source_path, "budget.confirm_above_usd", "declined at the prompt", fix)
