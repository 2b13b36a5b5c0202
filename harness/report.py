"""The terminal results table: one row per variant, quality next to cost."""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table

from harness.summary import VariantSummary


def _fmt(value: float, spec: str) -> str:
    return "–" if math.isnan(value) else format(value, spec)


def _usd(value: float) -> str:
    return f"${value:.6f}" if value < 0.01 else f"${value:.4f}"


def results_table(summaries: list[VariantSummary], baseline: str | None, title: str) -> Table:
    """A rich table of every variant; skipped ones stay visible with the reason."""
    quality_keys: list[str] = []
    for s in summaries:
        quality_keys += [k for k in s.quality if k not in quality_keys]
    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column("variant", no_wrap=True)
    for key in quality_keys:
        table.add_column(key, justify="right")
    for name in ("cost/item", "cost total", "in tok", "out tok", "p50 s", "p95 s", "errors"):
        table.add_column(name, justify="right")
    table.add_column("notes", min_width=30)
    for s in summaries:
        label = s.variant + (" [dim](baseline)[/]" if s.variant == baseline else "")
        if s.skipped:
            table.add_row(f"[yellow]{label}[/]", *[""] * (len(quality_keys) + 7), f"[bold yellow]{s.skipped}[/]")
            continue
        table.add_row(
            label,
            *[_fmt(s.quality.get(k, math.nan), ".3f") for k in quality_keys],
            _usd(s.cost_per_item_usd),
            _usd(s.cost_total_usd),
            _fmt(s.mean_input_tokens, ".0f"),
            _fmt(s.mean_output_tokens, ".0f"),
            _fmt(s.latency_p50_s, ".2f"),
            _fmt(s.latency_p95_s, ".2f"),
            f"[red]{s.n_errors}[/]" if s.n_errors else "0",
            f"{s.retries} retries" if s.retries else "",
        )
    return table


def print_results(console: Console, summaries: list[VariantSummary], baseline: str | None, title: str) -> None:
    """Print the table, then a loud line for each skipped variant."""
    console.print(results_table(summaries, baseline, title))
    for s in summaries:
        if s.skipped:
            console.print(f"[bold yellow]WARNING[/] {s.variant} was not run: {s.skipped}")
