"""The cost/quality frontier plot: where people would rather look than read."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from harness.analysis import Analysis
from harness.frontier import Point


def frontier_plot(analysis: Analysis, path: Path, title: str) -> Path:
    """Cost per item (log axis; symlog when a variant costs $0) against quality with CI error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    estimates = analysis.estimates.get(analysis.metric, {})
    points = plottable(analysis)
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=120)
    for p in points:
        est = estimates[p.variant]
        on_front = p.variant in analysis.pareto
        yerr = [[max(est.mean - est.ci_low, 0)], [max(est.ci_high - est.mean, 0)]]
        ax.errorbar(
            p.cost_per_item,
            est.mean,
            yerr=yerr,
            fmt="o",
            capsize=4,
            color="#1f77b4" if on_front else "#9a9a9a",
            markersize=8 if on_front else 6,
            zorder=3,
        )
    labels: dict[tuple[float, float], list[str]] = {}
    for p in points:
        labels.setdefault((p.cost_per_item, p.quality), []).append(p.variant)
    for (cost, quality), names in labels.items():
        ax.annotate("\n".join(names), (cost, quality), textcoords="offset points", xytext=(8, 4), fontsize=8)
    front = [p for v in analysis.pareto for p in points if p.variant == v]
    if len(front) > 1:
        ax.plot(
            [p.cost_per_item for p in front],
            [p.quality for p in front],
            "-",
            color="#1f77b4",
            alpha=0.6,
            label="Pareto frontier",
            zorder=2,
        )
    _policies(ax, analysis, points)
    _mark(ax, points, analysis.baseline, "*", 320, "#d62728", "baseline")
    if analysis.recommendation is not None:
        _mark(ax, points, analysis.recommendation.variant, "o", 420, "#2ca02c", "recommended", hollow=True)
    _cost_axis(ax, [p.cost_per_item for p in points] + [p.cost_per_item for p in analysis.policies])
    ax.set_ylabel(f"{analysis.metric} (mean, {analysis.confidence:.0%} CI)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plottable(analysis: Analysis) -> list[Point]:
    """Variants with a measured quality and cost: one with no score at all has no place on the axes
    (and a log axis with no finite point cannot be drawn)."""
    estimates = analysis.estimates.get(analysis.metric, {})
    return [
        p
        for p in analysis.points
        if p.variant in estimates and math.isfinite(p.quality) and math.isfinite(p.cost_per_item)
    ]


def _policies(ax: Any, analysis: Analysis, points: list[Point]) -> None:
    """Simulated policies as diamonds with CIs, and the random-mixing line from weak to strong."""
    routing = analysis.routing
    if not analysis.policies or routing is None:
        return
    ends = {p.variant: p for p in points}
    if routing.weak in ends and routing.strong in ends:
        weak, strong = ends[routing.weak], ends[routing.strong]
        ax.plot(
            [weak.cost_per_item, strong.cost_per_item],
            [weak.quality, strong.quality],
            "--",
            color="#ff7f0e",
            alpha=0.5,
            label="random mixing (weak to strong)",
            zorder=1,
        )
    for i, p in enumerate(analysis.policies):
        ax.errorbar(
            p.cost_per_item,
            p.quality,
            yerr=[[max(p.quality - p.quality_ci[0], 0)], [max(p.quality_ci[1] - p.quality, 0)]],
            fmt="D",
            capsize=3,
            color="#ff7f0e",
            markersize=7,
            zorder=3,
            label="routing policy (simulated)" if i == 0 else None,
        )
        ax.annotate(
            p.name,
            (p.cost_per_item, p.quality),
            textcoords="offset points",
            xytext=(8, -10),
            fontsize=8,
            color="#b35900",
        )


def _mark(
    ax: Any,
    points: list[Point],
    variant: str | None,
    marker: str,
    size: int,
    color: str,
    label: str,
    hollow: bool = False,
) -> None:
    for p in points:
        if p.variant == variant:
            ax.scatter(
                [p.cost_per_item],
                [p.quality],
                marker=marker,
                s=size,
                label=label,
                zorder=4,
                facecolors="none" if hollow else color,
                edgecolors=color,
                linewidths=2,
            )


def _cost_axis(ax: Any, costs: list[float]) -> None:
    positive = [c for c in costs if c > 0 and math.isfinite(c)]
    if positive and len(positive) == len(costs):
        ax.set_xscale("log")
    elif positive:
        ax.set_xscale("symlog", linthresh=min(positive) / 10)
    ax.set_xlabel("cost per item, USD (log scale)" if positive else "cost per item, USD (all variants cost $0)")
