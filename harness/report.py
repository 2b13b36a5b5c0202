"""The terminal results table: one row per variant, quality next to cost."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from harness import figures
from harness.analysis import Analysis
from harness.estimate import Sizing, VariantEstimate
from harness.manifest import RunStatus
from harness.projection import Projection
from harness.results import (
    RECOMMENDED_MARK,
    compact_header,
    markdown_table,
    recommendation_line,
    result_rows,
    skipped_line,
)
from harness.summary import VariantSummary

if TYPE_CHECKING:
    from harness.config import GateConfig
    from harness.routing import PolicyResult


def _fmt(value: float, spec: str) -> str:
    return figures.MISSING if math.isnan(value) else format(value, spec)


_usd = figures.usd


def fit(table: Table) -> Table:
    """Every column after the first as wide as its widest cell or header word, so a narrow terminal
    wraps names and headers, never a figure; the first column (names) folds into what is left."""
    for index, column in enumerate(table.columns):
        column.overflow = "fold"
        if index == 0:
            column.no_wrap = False
            continue
        cells = [Text.from_markup(c).cell_len if isinstance(c, str) else 1 for c in column.cells]
        words = [len(w) for w in str(column.header).split()]
        column.width = max(cells + words + [1])
    return table


def wide_rows(summaries: list[VariantSummary], baseline: str | None) -> tuple[list[str], list[list[str]]]:
    """Every figure as plain cells, one row per variant (`--wide` and the report's full table)."""
    keys: list[str] = []
    for s in summaries:
        keys += [k for k in s.quality if k not in keys]
    monthly = any(not math.isnan(s.monthly_cost_usd) for s in summaries)
    base_monthly = next((s.monthly_cost_usd for s in summaries if s.variant == baseline), math.nan)
    header = [
        "variant",
        *keys,
        "cost/item",
        "cost total",
        *(["monthly", "vs baseline/mo"] if monthly else []),
        "in tok",
        "out tok",
        "p50 s",
        "p95 s",
        "errors",
        "notes",
    ]
    rows = []
    for s in summaries:
        if s.skipped:
            rows.append([s.variant, *[""] * (len(header) - 2), s.skipped])
            continue
        projection = []
        if monthly:
            saving = base_monthly - s.monthly_cost_usd
            projection = [_usd(s.monthly_cost_usd), "–" if math.isnan(saving) else f"{-saving:+,.2f}"]
        notes = [
            f"{s.retries} retries" if s.retries else "",
            f"{s.n_cache_hits} cached" if s.n_cache_hits else "",
            f"eval cost {_usd(s.eval_cost_usd)}" if s.eval_cost_usd else "",
        ]
        rows.append(
            [
                s.variant,
                *[_fmt(s.quality.get(k, math.nan), ".3f") for k in keys],
                _usd(s.cost_per_item_usd),
                _usd(s.cost_total_usd),
                *projection,
                _fmt(s.mean_input_tokens, ".0f"),
                _fmt(s.mean_output_tokens, ".0f"),
                _fmt(s.latency_p50_s, ".2f"),
                _fmt(s.latency_p95_s, ".2f"),
                str(s.n_errors),
                ", ".join(n for n in notes if n),
            ]
        )
    return header, rows


def results_table(summaries: list[VariantSummary], baseline: str | None, title: str) -> Table:
    """A rich table of every variant; skipped ones stay visible, in yellow, with the reason."""
    header, rows = wide_rows(summaries, baseline)
    table = Table(title=escape(title), title_justify="left", header_style="bold")
    table.add_column(header[0], no_wrap=True)
    for name in header[1:-1]:
        table.add_column(escape(name), justify="right")
    table.add_column(header[-1], min_width=30)
    for s, row in zip(summaries, rows, strict=True):
        cells = [escape(cell) for cell in row]  # names and notes come from configs and providers
        if s.variant == baseline:
            cells[0] += " [dim](baseline)[/]"
        if s.skipped:
            cells[0], cells[-1] = f"[yellow]{cells[0]}[/]", f"[bold yellow]{cells[-1]}[/]"
        elif s.n_errors:
            cells[-2] = f"[red]{cells[-2]}[/]"
        table.add_row(*cells)
    return table


def print_results(console: Console, summaries: list[VariantSummary], baseline: str | None, title: str) -> None:
    """The wide table of every variant, then a loud line for each skipped variant (`--wide`)."""
    console.print(results_table(summaries, baseline, title))
    for s in summaries:
        if s.skipped:
            console.print(f"[bold yellow]WARNING[/] {escape(s.variant)} was not run: {escape(s.skipped)}")


def compact_table(summaries: list[VariantSummary], analysis: Analysis, title: str) -> Table:
    """The default results table: per variant that ran, the gate metric with its interval, $/item,
    $/month, the difference from the baseline and the verdict. Every figure column is as wide as its
    widest figure, so a narrow terminal wraps names, never a figure."""
    rows = result_rows(summaries, analysis)
    cells = [row.cells() for row in rows]
    table = Table(
        title=escape(title),
        title_justify="left",
        header_style="bold",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    header = compact_header(analysis.metric)
    table.add_column(escape(header[0]), overflow="fold", min_width=min(12, max((len(c[0]) for c in cells), default=8)))
    for index, name in enumerate(header[1:], start=1):
        # as wide as the widest figure or header word: the header wraps before a figure does
        width = max([len(c[index]) for c in cells] + [len(word) for word in name.split()])
        table.add_column(escape(name), justify="right" if index < 5 else "left", width=width, overflow="fold")
    for row, texts in zip(rows, cells, strict=True):
        shown = [escape(t) for t in texts]
        if row.baseline:
            shown[0] = shown[0].replace(" (baseline)", " [dim](baseline)[/]")
        style = _STATUS_STYLE.get(row.verdict.split(" ")[0], "white")
        shown[-1] = f"[{style}]{shown[-1]}[/]"
        table.add_row(*shown)
    return table


def print_run(
    console: Console, summaries: list[VariantSummary], analysis: Analysis, title: str, wide: bool = False
) -> None:
    """What a run shows: the results (compact, or every column with `wide`), what did not run, then the
    evidence, the recommendation and the warnings."""
    if wide:
        print_results(console, summaries, analysis.baseline, title)
    else:
        console.print(compact_table(summaries, analysis, title))
        legend = [RECOMMENDED_MARK] if analysis.recommendation else []
        if analysis.baseline:
            legend.append(
                f"verdicts: {analysis.metric} vs {analysis.baseline}, margin {analysis.margin:g}, "
                f"{analysis.confidence:.0%} confidence; --wide for tokens, latency, tests and intervals of Δ"
            )
        if legend:
            console.print(f"[dim]{escape('; '.join(legend))}[/]")
        skipped = skipped_line(summaries)
        if skipped:
            console.print(f"[yellow]{escape(skipped)}[/]")
    print_analysis(console, analysis, wide)


_STATUS_STYLE = {"pass": "green", "fail": "red", "undecided": "yellow", "baseline": "cyan"}


def analysis_table(analysis: Analysis) -> Table:
    """Quality with CIs, the paired comparison with the baseline, and the verdict, per variant."""
    metric = analysis.metric
    table = Table(
        title=f"{escape(metric)}: {analysis.confidence:.0%} CIs and paired comparison with the baseline "
        f"(margin {analysis.margin:g})",
        title_justify="left",
        header_style="bold",
    )
    for name, justify in (
        ("variant", "left"),
        (escape(metric), "right"),
        ("vs baseline", "right"),
        ("p", "right"),
        ("test", "left"),
        ("excluded", "right"),
        ("MDD", "right"),
        ("frontier", "center"),
        ("verdict", "left"),
    ):
        table.add_column(name, justify=justify, no_wrap=name == "variant")  # type: ignore[arg-type]
    for variant, est in analysis.estimates.get(metric, {}).items():
        paired = analysis.paired[metric][variant]
        verdict = analysis.verdicts.get(variant)
        is_base = variant == analysis.baseline
        status = verdict.status if verdict else ""
        label = f"{status} (better)" if verdict is not None and verdict.better else status
        table.add_row(
            escape(variant)
            + (" (recommended)" if analysis.recommendation and analysis.recommendation.variant == variant else ""),
            figures.interval(est.mean, est.ci_low, est.ci_high),
            "–" if is_base else figures.delta_interval(paired.mean_diff, paired.ci_low, paired.ci_high),
            "–" if is_base else _fmt(paired.p_value, ".3g"),
            "" if is_base else escape(paired.test),
            str(paired.n_excluded),
            "–" if is_base else _fmt(paired.mdd, ".3f"),
            "★" if variant in analysis.pareto else "",
            f"[{_STATUS_STYLE.get(status, 'white')}]{label}[/]",
        )
    return fit(table)


def print_analysis(console: Console, analysis: Analysis, wide: bool = True) -> None:
    """The evidence after the results table: CIs and paired tests (`wide`), frontier, recommendation,
    warnings."""
    if analysis.baseline_note:
        console.print(f"[bold yellow]NOTE[/] {escape(analysis.baseline_note)}")
    if analysis.estimates:
        if wide:
            console.print(analysis_table(analysis))
        console.print(escape(f"Pareto frontier (cost vs {analysis.metric}): {', '.join(analysis.pareto)}"))
        for name, verdict in analysis.verdicts.items():
            if verdict.more_items:
                console.print(escape(f"{name}: undecided; to decide, {verdict.more_items}"))
    for line in sequential_lines(analysis):
        console.print(escape(line))
    if analysis.agreement and wide:
        console.print(agreement_table(analysis))
    if analysis.policies:
        console.print(policy_table(analysis))
        for note in policy_notes(analysis):
            console.print(escape(f"  {note}"))
    for line in pairwise_lines(analysis):
        console.print(escape(line))
    if analysis.projection is not None:
        console.print(projection_table(analysis.projection))
        for line in projection_lines(analysis.projection):
            console.print(escape(line))
    if analysis.levers:
        console.print(lever_table(analysis))
    elif analysis.estimates:
        console.print(NO_PRICED_VARIANT)
    console.print(f"[bold]{escape(recommendation_line(analysis))}[/]")
    for warning in analysis.warnings:
        console.print(f"[bold yellow]WARNING[/] {escape(warning)}")


def pairwise_lines(analysis: Analysis) -> list[str]:
    """The pairwise judge's wins, ties and losses against the baseline, and its position bias."""
    lines = []
    for variant, c in analysis.pairwise.items():
        pairs = c["win"] + c["tie"] + c["loss"]
        lines.append(
            f"{variant} vs {analysis.baseline} ({analysis.metric}, both orders): {c['win']} wins, {c['tie']} ties, "
            f"{c['loss']} losses of {pairs}; the judge chose by position alone in {c['by_position']} "
            f"({figures.share(c['by_position'] / pairs) if pairs else '–'}), counted as ties"
        )
    return lines


def projection_table(projection: Projection) -> Table:
    """Per segment of the log: its traffic, the month on production and on the segment's pick."""
    table = Table(
        title=f"the month on the log's traffic: {projection.per_day:,.0f} calls/day over {projection.days:.1f} days "
        "($/month, 95% interval)",
        title_justify="left",
        header_style="bold",
        box=box.SIMPLE_HEAD,
    )
    for name in ("segment", "calls/day", "sampled", "tokens in/out", projection.baseline, "pick", "pick $/month"):
        table.add_column(escape(name), justify="left" if name in ("segment", "pick") else "right")
    for s in projection.segments:
        table.add_row(
            escape(s.segment),
            f"{s.per_day:,.1f}",
            str(s.sampled),
            f"{s.mean_input_tokens:,.0f}/{s.mean_output_tokens:,.0f}",
            figures.usd_month_interval(*s.monthly[projection.baseline]),
            escape(s.recommended),
            figures.usd_month_interval(*s.monthly[s.recommended]),
        )
    return fit(table)


def projection_lines(projection: Projection) -> list[str]:
    """The month today, with each segment's pick, and the saving."""
    lines = [
        f"on the log's mix: {projection.baseline} {figures.usd_month_interval(*projection.now)} a month; each "
        f"segment on its pick {figures.usd_month_interval(*projection.recommended)}; saving "
        f"{figures.usd_month_interval(*projection.saving)} a month"
    ]
    lines += [f"  {s.segment}: {s.recommended} ({s.why})" for s in projection.segments]
    return lines


def sequential_lines(analysis: Analysis) -> list[str]:
    """How a sequential gate ended, then each candidate's deciding look (empty for a fixed design)."""
    outcome = analysis.sequential
    if outcome is None:
        return []
    lines = [outcome.summary()]
    for name, decision in outcome.decisions.items():
        at = outcome.decided_at.get(name)
        when = f"decided at look {at}" if at else "not decided"
        lines.append(f"{name}: {when}, {decision.n_pairs} pairs, {decision.status}: {decision.reason}")
    return lines


def agreement_table(analysis: Analysis) -> Table:
    """How the scorers rank the same outputs (Spearman), and how each tracks output length."""
    table = Table(title="Scorer agreement: Spearman rank correlation over the same outputs", title_justify="left")
    for column in ("scorer", "compared with", "rho", "outputs"):
        table.add_column(column, justify="right" if column in ("rho", "outputs") else "left")
    for a in analysis.agreement:
        table.add_row(escape(a.first), escape(a.second), f"{a.rho:+.3f}", str(a.n))
    return fit(table)


POLICY_HEADER = [
    "policy",
    "cost/item [CI]",
    "quality [CI]",
    "vs strong [CI]",
    "to strong",
    "PGR",
    "APGR",
    "CPT(50%)",
    "CPT(80%)",
]


def policy_rows(analysis: Analysis) -> list[list[str]]:
    """One row per simulated policy: the terminal table and the report both show these."""
    rows = []
    for p in analysis.policies:
        rows.append(
            [
                p.name,
                f"{_usd(p.cost_per_item)} [{_usd(p.cost_ci[0])}, {_usd(p.cost_ci[1])}]",
                f"{p.quality:.3f} [{p.quality_ci[0]:.3f}, {p.quality_ci[1]:.3f}]",
                _policy_verdict(p),
                f"{p.strong_share:.0%}",
                _fmt(p.pgr, ".2f"),
                _fmt(p.apgr, ".3f"),
                "–" if math.isnan(p.cpt50) else f"{p.cpt50:.0%}",
                "–" if math.isnan(p.cpt80) else f"{p.cpt80:.0%}",
            ]
        )
    return rows


def _policy_verdict(policy: PolicyResult) -> str:
    """May the policy replace the strong variant: the engine's status, its difference and interval."""
    v = policy.verdict
    if v is None or math.isnan(v.mean_diff):
        return "–"
    status = f"{v.status} (better)" if v.better else v.status
    return f"{status}: {v.mean_diff:+.3f} [{v.ci_low:+.3f}, {v.ci_high:+.3f}]"


def policy_notes(analysis: Analysis) -> list[str]:
    """How each fitted policy was fitted (a cross-fitted threshold), under the policy table."""
    return [f"{p.name}: {p.note}" for p in analysis.policies if p.note]


def policy_table(analysis: Analysis) -> Table:
    """Simulated routers and cascades beside the weak and strong variants."""
    routing = analysis.routing
    title = "Routing simulated from the records (no model calls)"
    if routing is not None:
        title += f": weak {routing.weak}, strong {routing.strong}, quality = {routing.metric}"
    table = Table(title=title, title_justify="left")
    for column in POLICY_HEADER:
        table.add_column(column, justify="left" if column == "policy" else "right")
    for row in policy_rows(analysis):
        table.add_row(*(escape(cell) for cell in row))
    return fit(table)


LEVER_NAMES = {
    "batch": "batch API",
    "flex": "flex tier",
    "priority": "priority tier",
    "prompt_cache": "prompt cache",
    "output_cap": "output cap",
}
NO_PRICED_VARIANT = (
    "Levers: none apply to these variants: each is free or priced by the hour, which batch, flex, priority "
    "and prompt caching do not change. Price a token-billed model (e.g. price: {like: gpt-4o-mini}) or run "
    "`levers RUN_ID --prices FILE` to see what buying it otherwise would save."
)


def lever_header(analysis: Analysis) -> list[str]:
    monthly = any(v.monthly_usd is not None for v in analysis.levers.values())
    return ["variant", "now/month" if monthly else "now", *LEVER_NAMES.values()]


def lever_rows(analysis: Analysis) -> list[list[str]]:
    """One row per priced variant: its cost now, and each lever's saving (a premium shows as +)."""
    rows = []
    for levers in analysis.levers.values():
        monthly = levers.monthly_usd is not None
        now = levers.monthly_usd if monthly and levers.monthly_usd is not None else levers.cost_usd
        cells = [levers.variant, _usd(now)]
        for name in LEVER_NAMES:
            lever = levers.lever(name)
            if lever is None or lever.saving_usd is None:
                cells.append("–")
                continue
            saving = lever.monthly_saving_usd if monthly and lever.monthly_saving_usd is not None else lever.saving_usd
            share = lever.saving_usd / levers.cost_usd if levers.cost_usd else 0.0
            if saving == 0:
                cells.append("$0")
                continue
            sign = "-" if saving > 0 else "+"
            cells.append(f"{sign}{_usd(abs(saving))} ({sign}{abs(share):.0%})")
        rows.append(cells)
    return rows


def lever_notes(analysis: Analysis) -> list[str]:
    """How each lever was computed, or why it is not available, per variant."""
    return [
        f"{levers.variant}, {LEVER_NAMES[lever.name]}: {lever.how}"
        for levers in analysis.levers.values()
        for lever in levers.levers
    ]


def lever_table(analysis: Analysis) -> Table:
    """What each priced variant's calls would cost bought otherwise (from the records, no new call)."""
    monthly = any(v.monthly_usd is not None for v in analysis.levers.values())
    per = "per month at traffic:" if monthly else "for this run's calls"
    title = f"Levers: the same outputs bought otherwise, {per} (- saves, + costs more)"
    table = Table(title=title, title_justify="left")
    for column in lever_header(analysis):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for row in lever_rows(analysis):
        table.add_row(*(escape(cell) for cell in row))
    return fit(table)


def markdown_report(
    title: str,
    summaries: list[VariantSummary],
    analysis: Analysis,
    plot_name: str | None,
    description: str = "",
    status: RunStatus | None = None,
) -> str:
    """The report artifact: results, the plot, the paired tests and the verdict, in markdown.

    `status` adds the run's cache and budget notes, as `run` printed them.
    """
    lines = [f"# {title}", ""]
    if description:
        lines += [description.strip(), ""]
    lines += [f"**{recommendation_line(analysis)}**", ""]
    if status is not None:
        lines += [f"Run: {'; '.join(status.notes())}.", ""]
    if analysis.baseline_note:
        lines += [f"> Note: {analysis.baseline_note}", ""]
    lines += ["## Results", "", markdown_table(summaries, analysis), ""]
    lines += ["## Every figure", "", _md_results(summaries, analysis.baseline), ""]
    if plot_name:
        lines += [f"![cost vs {analysis.metric}]({plot_name})", ""]
    lines += [
        f"## {analysis.metric}: paired comparison with {analysis.baseline}",
        "",
        f"Confidence {analysis.confidence:.0%}, non-inferiority margin {analysis.margin:g}. A candidate passes when "
        "the lower bound of the one-sided CI of (candidate - baseline) is above -margin. MDD is the minimum "
        "detectable difference at 80% power for the number of paired items.",
        "",
        "| variant | mean [CI] | diff vs baseline [CI] | one-sided lower | p (test) | excluded | MDD | frontier "
        "| verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for variant, est in analysis.estimates.get(analysis.metric, {}).items():
        p = analysis.paired[analysis.metric][variant]
        verdict = analysis.verdicts[variant]
        base = variant == analysis.baseline
        lines.append(
            f"| {variant} | {est.mean:.3f} [{est.ci_low:.3f}, {est.ci_high:.3f}] ({est.method}) | "
            + (
                "– | – | – | "
                if base
                else f"{p.mean_diff:+.4f} [{p.ci_low:+.4f}, {p.ci_high:+.4f}] | {p.lower_one_sided:+.4f} | "
                f"{_fmt(p.p_value, '.3g')} ({p.test}) | "
            )
            + f"{p.n_excluded} | {'–' if base else _fmt(p.mdd, '.4f')} | {'yes' if variant in analysis.pareto else ''}"
            f" | **{verdict.status}**: {verdict.reason} |"
        )
    if analysis.sequential is not None:
        lines += ["", "## Sequential gate", "", *(f"- {line}" for line in sequential_lines(analysis))]
    if analysis.agreement:
        lines += [
            "",
            "## Scorer agreement",
            "",
            "Spearman rank correlation over the outputs both scored "
            "(`output_words`: the output's length, a check for verbosity bias).",
            "",
            "| scorer | compared with | rho | outputs |",
            "|---|---|---|---|",
        ]
        lines += [f"| {a.first} | {a.second} | {a.rho:+.3f} | {a.n} |" for a in analysis.agreement]
    if analysis.policies and analysis.routing is not None:
        r = analysis.routing
        lines += [
            "",
            "## Routing (simulated from the records)",
            "",
            f"Weak `{r.weak}`, strong `{r.strong}`, quality = {r.metric}. PGR: share of the weak-to-strong "
            "gap recovered; APGR: PGR averaged over the share of calls sent to the strong variant; CPT(x%): "
            "the share of calls to the strong variant needed to recover x% of the gap.",
            "",
            "| " + " | ".join(POLICY_HEADER) + " |",
            "|" + "---|" * len(POLICY_HEADER),
        ]
        lines += ["| " + " | ".join(row) + " |" for row in policy_rows(analysis)]
        lines += ["", *(f"- {note}" for note in policy_notes(analysis))] if policy_notes(analysis) else []
    if analysis.pairwise:
        lines += ["", "## Pairwise judge against the baseline", "", *(f"- {line}" for line in pairwise_lines(analysis))]
    if analysis.projection is not None:
        p = analysis.projection
        header = ["segment", "calls/day", "sampled", "tokens in/out", f"{p.baseline} $/month", "pick", "pick $/month"]
        lines += [
            "",
            "## The month on the log's traffic",
            "",
            f"{p.per_day:,.0f} calls/day over {p.days:.1f} days; 95% intervals from resampling each segment's calls.",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
        ]
        lines += [
            f"| {s.segment} | {s.per_day:,.1f} | {s.sampled} | "
            f"{s.mean_input_tokens:,.0f}/{s.mean_output_tokens:,.0f} | "
            f"{figures.usd_month_interval(*s.monthly[p.baseline])} | {s.recommended} | "
            f"{figures.usd_month_interval(*s.monthly[s.recommended])} |"
            for s in p.segments
        ]
        lines += ["", *(f"- {line.strip()}" for line in projection_lines(p))]
    lines += ["", "## Levers: the same outputs bought otherwise", ""]
    if analysis.levers:
        header = lever_header(analysis)
        lines += [
            "Repriced from the records, no new call: `-` saves, `+` costs more.",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
        ]
        lines += ["| " + " | ".join(row) + " |" for row in lever_rows(analysis)]
        lines += ["", *[f"- {note}" for note in lever_notes(analysis)]]
    else:
        lines.append(NO_PRICED_VARIANT)
    if analysis.warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in analysis.warnings]
    return "\n".join(lines) + "\n"


def _md_results(summaries: list[VariantSummary], baseline: str | None) -> str:
    header, rows = wide_rows(summaries, baseline)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def decision_size_lines(sizing: Sizing, gate: GateConfig, n_items: int) -> list[str]:
    """What the gate's decisions need, per candidate, from an earlier run (`estimate`)."""
    if not sizing.sizes:
        return [f"decision size: {sizing.note}"] if sizing.note else []
    lines = [
        f"decision size from run {sizing.run_id} (margin {gate.margin:g}, confidence {gate.confidence:.0%}, 80% power; "
        f"this config has {n_items:,} items):"
    ]
    if sizing.note:
        lines.append(f"  ({sizing.note})")
    for size in sizing.sizes:
        seen = f"{size.pilot_pairs} pairs there detect {size.pilot_mdd:.4f}"
        if size.items is None or size.usd is None:
            lines.append(f"  {size.candidate}: no estimate ({seen})")
            continue
        enough = "enough" if size.items <= n_items else f"add about {size.items - n_items:,}"
        cost = (
            f"about ${size.usd:,.2f} for it and the baseline at ${size.usd_per_item:.6f} per item"
            if size.usd_per_item
            else "at no cost (both are free)"
        )
        decided = (
            f"; that run's items already show {size.pilot_verdict}" if size.pilot_verdict in ("pass", "fail") else ""
        )
        lines.append(f"  {size.candidate}: about {size.items:,} items ({enough}), {cost} ({seen}{decided})")
    return lines


def estimate_table(estimates: list[VariantEstimate], wall_seconds: float | None) -> Table:
    """Expected and maximum cost per variant and in total, before anything is spent; it fits 80 columns
    with every figure whole (names wrap). The minimum (every output empty) is in the estimate's data."""
    wall = "unknown (no earlier run)" if wall_seconds is None else f"{wall_seconds:,.0f} s"
    table = Table(
        title="estimate (no calls made)",
        title_justify="left",
        header_style="bold",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        caption=f"wall time {wall}; out /call: the output tokens each call is priced at, and where that comes from",
        caption_justify="left",
    )
    for name, justify in (
        ("variant", "left"),
        ("calls", "right"),
        ("cached", "right"),
        ("in tok", "right"),
        ("out /call", "right"),
        ("from", "left"),
        ("expected", "right"),
        ("max", "right"),
    ):
        table.add_column(name, justify=justify, no_wrap=name == "variant")  # type: ignore[arg-type]
    runnable = [e for e in estimates if not e.needs]
    for e in estimates:
        out = "–" if e.expected_output_per_call is None else f"{e.expected_output_per_call:.0f}"
        table.add_row(
            escape(f"{e.variant} (needs {e.needs}; not in the total)" if e.needs else e.variant),
            str(e.calls),
            str(e.cached),
            f"{e.input_tokens:,}",
            out,
            e.output_source,
            _usd(e.expected_usd),
            _usd(e.max_usd),
        )
    table.add_row(
        "[bold]total[/]",
        str(sum(e.calls for e in runnable)),
        str(sum(e.cached for e in runnable)),
        f"{sum(e.input_tokens for e in runnable):,}",
        "",
        "",
        _usd(sum(e.expected_usd for e in runnable)),
        _usd(sum(e.max_usd for e in runnable)),
        style="bold",
    )
    return fit(table)


IMAGE_LINK = re.compile(r"!\[([^\]]*)\]\(([^)\s]+\.png)\)")


def html_report(markdown_text: str, folder: Path) -> str:
    """The report as one self-contained HTML page with its plots inside. Why: MLflow's artifact viewer
    shows no images in markdown but renders an HTML artifact, so this is the page that shows the
    frontier without opening another file."""
    import base64
    import html

    from markdown_it import MarkdownIt

    def inline(match: re.Match[str]) -> str:
        path = folder / match.group(2)
        if not path.is_file():
            return match.group(0)
        data = base64.b64encode(path.read_bytes()).decode()
        return f"![{match.group(1)}](data:image/png;base64,{data})"

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(IMAGE_LINK.sub(inline, markdown_text))
    title = html.escape(markdown_text.splitlines()[0].lstrip("# ") if markdown_text else "report")
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8"><title>'
        + title
        + "</title><style>body{font-family:system-ui,sans-serif;margin:1.5em;line-height:1.4}"
        "img{max-width:100%}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}"
        "</style></head><body>\n" + body + "</body></html>\n"
    )
