"""`harness savings`: the portfolio a finance lead asks for, one row per experiment (a feature).

What runs today (the baseline), what is recommended, the verdict with its interval, $/month now and
after, the saving with its interval, when it was decided and whether the decision is stale (changed under
today's prices, or a model in use is deprecated), sorted by saving, with totals. The month is projected
from the config's `traffic:` or, for an experiment over production logs, the log's real volume; the
saving's interval is a bootstrap over the stored items of the per-item cost difference (per segment for
logs, `harness.projection`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from rich import box
from rich.markup import escape
from rich.table import Table

from harness import figures
from harness.report import fit
from harness.watch import Watched


@dataclass(frozen=True)
class Saving:
    """One experiment's line of the portfolio."""

    experiment: str
    run_id: str
    decided: datetime
    today: str
    """The variant that runs today: the baseline."""
    recommended: str
    verdict: str
    delta: tuple[float, float, float] | None
    """The recommended variant's difference from the baseline on the gate metric, with its interval."""
    metric: str
    now_usd_month: float
    after_usd_month: float
    saving: tuple[float, float, float]
    """(saving, low, high), $/month."""
    stale: bool
    why_stale: str
    estimate_error: float | None


def saving_of(w: Watched, days: int, resamples: int = 2000, seed: int = 0) -> Saving:
    """The portfolio line of one watched experiment, at today's prices."""
    analysis = w.after.analysis
    baseline = analysis.baseline or ""
    recommended = w.recommended_after or baseline
    summaries = {s.variant: s for s in w.after.summaries}
    now = summaries[baseline].monthly_cost_usd if baseline in summaries else math.nan
    after = summaries[recommended].monthly_cost_usd if recommended in summaries else math.nan
    if analysis.projection is not None:
        p = analysis.projection
        now, after, saving = p.now[0], p.recommended[0], p.saving
    elif math.isfinite(now) and math.isfinite(after):
        saving = (now - after, *_interval(w, baseline, recommended, now, resamples, seed))
    else:
        saving = (math.nan, math.nan, math.nan)
    verdict = analysis.verdicts.get(recommended)
    paired = analysis.paired.get(analysis.metric, {}).get(recommended)
    delta = None if paired is None or recommended == baseline else (paired.mean_diff, paired.ci_low, paired.ci_high)
    reasons = []
    if w.decision_changed:
        reasons.append(f"the decision changed under today's prices (was {w.recommended_before})")
    reasons += [f"{d.model} deprecated {d.on}" for d in w.deprecations if d.days_left <= days]
    return Saving(
        experiment=w.experiment,
        run_id=w.run_id,
        decided=w.started,
        today=baseline,
        recommended=recommended,
        verdict=verdict.status if verdict is not None else "",
        delta=delta,
        metric=analysis.metric,
        now_usd_month=now,
        after_usd_month=after,
        saving=saving,
        stale=bool(reasons),
        why_stale="; ".join(reasons),
        estimate_error=w.estimate_error,
    )


def _interval(
    w: Watched, baseline: str, recommended: str, now: float, resamples: int, seed: int
) -> tuple[float, float]:
    """A bootstrap over the items both variants answered of the per-item cost difference, scaled to the
    month as the summaries scale it (the baseline's monthly over its mean cost per item)."""
    base = {r.item_id: r.cost_usd for r in w.after_records if r.variant == baseline and r.sample == 0}
    rec = {r.item_id: r.cost_usd for r in w.after_records if r.variant == recommended and r.sample == 0}
    shared = sorted(set(base) & set(rec))
    if not shared or recommended == baseline:
        return (0.0, 0.0)
    diffs = np.array([base[i] - rec[i] for i in shared])
    per_item = float(np.mean(list(base.values())))
    scale = now / per_item if per_item > 0 else 0.0
    draws = np.random.default_rng(seed).choice(diffs, size=(resamples, diffs.size)).mean(axis=1) * scale
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(low), float(high)


def portfolio(watched: list[Watched], days: int) -> list[Saving]:
    """Every experiment's line, largest saving first (an unknown saving last)."""
    lines = [saving_of(w, days) for w in watched]
    return sorted(lines, key=lambda s: -s.saving[0] if math.isfinite(s.saving[0]) else math.inf)


def totals(lines: list[Saving]) -> dict[str, float]:
    """Now, after and saving summed over the experiments whose month is known."""
    known = [s for s in lines if math.isfinite(s.saving[0])]
    return {
        "now_usd_month": sum(s.now_usd_month for s in known),
        "after_usd_month": sum(s.after_usd_month for s in known),
        "saving_usd_month": sum(s.saving[0] for s in known),
    }


def document(lines: list[Saving]) -> dict[str, Any]:
    """The JSON of `savings -o FILE.json` (numbers as numbers, an unknown figure as null)."""

    def num(value: float) -> float | None:
        return value if math.isfinite(value) else None

    return {
        "schema": "harness.savings/1",
        "experiments": [
            {
                "experiment": s.experiment,
                "run_id": s.run_id,
                "decided": s.decided.isoformat(timespec="seconds"),
                "today": s.today,
                "recommended": s.recommended,
                "verdict": s.verdict,
                "metric": s.metric,
                "delta": None if s.delta is None else dict(zip(("diff", "low", "high"), s.delta, strict=True)),
                "now_usd_month": num(s.now_usd_month),
                "after_usd_month": num(s.after_usd_month),
                "saving_usd_month": num(s.saving[0]),
                "saving_low": num(s.saving[1]),
                "saving_high": num(s.saving[2]),
                "stale": s.stale,
                "why_stale": s.why_stale,
                "estimate_error": s.estimate_error,
            }
            for s in lines
        ],
        "totals": totals(lines),
    }


def savings_table(lines: list[Saving]) -> Table:
    """The portfolio in the terminal: one row per experiment, then the totals."""
    table = Table(title="savings: each feature's decision at today's prices, $/month", title_justify="left")
    table.box = box.SIMPLE_HEAD
    for name in ("experiment", "today", "recommended", "verdict [Δ]", "now", "after", "saving [95%]", "decided"):
        table.add_column(name, justify="left" if name in ("experiment", "today", "recommended") else "right")
    for s in lines:
        delta = "" if s.delta is None else " " + figures.delta_interval(*s.delta)
        table.add_row(
            escape(s.experiment),
            escape(s.today),
            escape(s.recommended),
            escape(f"{s.verdict}{delta}"),
            figures.usd_month(s.now_usd_month),
            figures.usd_month(s.after_usd_month),
            figures.usd_month_interval(*s.saving),
            s.decided.strftime("%Y-%m-%d") + (" STALE" if s.stale else ""),
        )
    total = totals(lines)
    table.add_row(
        "[bold]total[/]",
        "",
        "",
        "",
        figures.usd_month(total["now_usd_month"]),
        figures.usd_month(total["after_usd_month"]),
        figures.usd_month(total["saving_usd_month"]),
        "",
    )
    return fit(table)


def savings_markdown(lines: list[Saving]) -> str:
    """The portfolio as a markdown page (`savings -o FILE.md`)."""
    rows = [
        "| experiment | today | recommended | verdict | now $/month | after $/month | saving $/month [95%] "
        "| decided | stale |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in lines:
        delta = "" if s.delta is None else " " + figures.delta_interval(*s.delta)
        rows.append(
            f"| {s.experiment} | {s.today} | {s.recommended} | {s.verdict}{delta} | "
            f"{figures.usd_month(s.now_usd_month)} | "
            f"{figures.usd_month(s.after_usd_month)} | {figures.usd_month_interval(*s.saving)} | "
            f"{s.decided:%Y-%m-%d} | {s.why_stale or 'no'} |"
        )
    total = totals(lines)
    rows.append(
        f"| **total** | | | | {figures.usd_month(total['now_usd_month'])} | "
        f"{figures.usd_month(total['after_usd_month'])} | "
        f"{figures.usd_month(total['saving_usd_month'])} | | |"
    )
    return "# Savings\n\n" + "\n".join(rows) + "\n"
