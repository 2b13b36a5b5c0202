"""Every figure harness shows, formatted in one place: the terminal, report.md/html, MLflow's run
description and the results files print the same figure the same way (tests/test_outputs.py compares
them), so a reader never sees $0.0026 in one and $0.003 in another."""

from __future__ import annotations

import math

MISSING = "–"
"""A figure that does not exist (no traffic, no baseline, nothing scored)."""


def _missing(value: float | None) -> bool:
    return value is None or math.isnan(value)


def usd(value: float | None) -> str:
    """A cost: six decimals below a cent (per-item costs of cheap models), else four."""
    if value is None or _missing(value):
        return MISSING
    return f"${value:.6f}" if abs(value) < 0.01 else f"${value:,.4f}"


def usd_month(value: float | None) -> str:
    """A monthly projection: cents are enough."""
    if value is None or _missing(value):
        return MISSING
    return f"${value:,.2f}"


def score(value: float | None) -> str:
    """A quality mean or bound on the scorer's scale."""
    if value is None or _missing(value):
        return MISSING
    return f"{value:.3f}"


def delta(value: float | None) -> str:
    """A signed difference in quality (candidate minus baseline)."""
    if value is None or _missing(value):
        return MISSING
    return f"{value:+.3f}"


def interval(mean: float | None, low: float | None, high: float | None) -> str:
    """A mean with its confidence interval: `0.219 [0.176, 0.258]`."""
    if mean is None or _missing(mean):
        return MISSING
    return f"{score(mean)} [{score(low)}, {score(high)}]"


def delta_interval(mean: float | None, low: float | None, high: float | None) -> str:
    """A difference with its interval: `-0.011 [-0.190, +0.060]`."""
    if mean is None or _missing(mean):
        return MISSING
    return f"{delta(mean)} [{delta(low)}, {delta(high)}]"


def p_value(value: float | None) -> str:
    if value is None or _missing(value):
        return MISSING
    return format(value, ".3g")


def share(value: float | None) -> str:
    """A proportion as a percentage."""
    if value is None or _missing(value):
        return MISSING
    return f"{value:.0%}"
