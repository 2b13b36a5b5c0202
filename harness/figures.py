"""Every figure harness shows, formatted in one place: the terminal, report.md/html, MLflow's run
description and the results files print the same figure the same way (tests/test_outputs.py compares
them), so a reader never sees $0.0026 in one and $0.003 in another."""

from __future__ import annotations

import math
from collections.abc import Callable

MISSING = "–"
"""A figure that does not exist (no traffic, no baseline, nothing scored)."""


def _or_missing(form: Callable[[float], str]) -> Callable[[float | None], str]:
    """`form` for a figure that exists, `MISSING` for None or NaN."""

    def shown(value: float | None) -> str:
        return MISSING if value is None or math.isnan(value) else form(value)

    shown.__doc__ = form.__doc__
    return shown


@_or_missing
def usd(value: float) -> str:
    """A cost: six decimals below a cent (per-item costs of cheap models), else four."""
    return f"${value:.6f}" if abs(value) < 0.01 else f"${value:,.4f}"


@_or_missing
def usd_month(value: float) -> str:
    """A monthly projection: cents are enough."""
    return f"${value:,.2f}"


@_or_missing
def score(value: float) -> str:
    """A quality mean or bound on the scorer's scale."""
    return f"{value:.3f}"


@_or_missing
def delta(value: float) -> str:
    """A signed difference in quality (candidate minus baseline)."""
    return f"{value:+.3f}"


@_or_missing
def p_value(value: float) -> str:
    return format(value, ".3g")


@_or_missing
def share(value: float) -> str:
    """A proportion as a percentage."""
    return f"{value:.0%}"


def usd_month_interval(mean: float | None, low: float | None, high: float | None) -> str:
    """A monthly projection with its interval: `$1,234.56 [$1,100.00, $1,300.00]`."""
    return MISSING if usd_month(mean) == MISSING else f"{usd_month(mean)} [{usd_month(low)}, {usd_month(high)}]"


def interval(mean: float | None, low: float | None, high: float | None) -> str:
    """A mean with its confidence interval: `0.219 [0.176, 0.258]`."""
    return MISSING if score(mean) == MISSING else f"{score(mean)} [{score(low)}, {score(high)}]"


def delta_interval(mean: float | None, low: float | None, high: float | None) -> str:
    """A difference with its interval: `-0.011 [-0.190, +0.060]`."""
    return MISSING if delta(mean) == MISSING else f"{delta(mean)} [{delta(low)}, {delta(high)}]"
