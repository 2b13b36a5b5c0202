"""The results as data: the rows every output shows, and the files machines read.

One row per variant that ran (`result_rows`), built once from the summaries and the analysis: the
terminal's table, report.md, MLflow's run description and the `--output` files all show these rows, with
every figure formatted by `harness.figures`, so no two of them can disagree. The files:

- `.json`: the versioned document described in docs/outputs.md (`SCHEMA`), raw numbers, not strings;
- `.csv`: one line per variant, the same fields flattened;
- `.md`: the report;
- JUnit XML for the gate (`junit_xml`): one test case per candidate, a failure for a regression, skipped
  with the reason when undecided, so a CI system that reads JUnit shows the decision.
"""

from __future__ import annotations

import csv
import io
import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from harness import figures
from harness.analysis import Analysis
from harness.manifest import RunStatus
from harness.summary import VariantSummary

SCHEMA = "harness.results/1"
"""The JSON document's schema name and version: a field is only ever added under the same version."""


@dataclass(frozen=True)
class ResultRow:
    """What the results say of one variant that ran, on the gate metric."""

    variant: str
    mean: float | None
    ci_low: float | None
    ci_high: float | None
    cost_per_item_usd: float
    monthly_usd: float | None
    diff: float | None
    """Candidate minus baseline on the metric (None for the baseline itself)."""
    diff_low: float | None
    diff_high: float | None
    verdict: str
    """`baseline`, `pass`, `pass (better)`, `fail`, `undecided`, or empty without a baseline."""
    baseline: bool
    recommended: bool
    pareto: bool

    def cells(self) -> list[str]:
        """The row as `COMPACT_HEADER` shows it."""
        name = self.variant + (" (baseline)" if self.baseline else "") + (" *" if self.recommended else "")
        return [
            name,
            figures.interval(self.mean, self.ci_low, self.ci_high),
            figures.usd(self.cost_per_item_usd),
            figures.usd_month(self.monthly_usd),
            figures.delta(self.diff),
            self.verdict or figures.MISSING,
        ]


def compact_header(metric: str) -> list[str]:
    return ["variant", f"{metric} [CI]", "$/item", "$/month", "Δ vs baseline", "verdict"]


RECOMMENDED_MARK = "* recommended"
"""The legend for the mark beside the recommended variant."""


def _nan_none(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def recommendation_line(analysis: Analysis) -> str:
    """What to switch to and what it saves, or why there is no recommendation; then the dearer variants
    shown better ("switch up"), and the variants that answered fewer items than the others."""
    rec = analysis.recommendation
    if rec is None:
        if analysis.baseline is None:
            return "No recommendation: no variant ran."
        return f"No recommendation: the baseline {analysis.baseline} has no scored answer to compare with."
    verdict = analysis.verdicts.get(rec.variant)
    if rec.variant == rec.baseline:
        line = f"Recommendation: keep {rec.baseline}; no cheaper variant was shown non-inferior on {analysis.metric}."
    elif verdict is not None and verdict.better:
        paired = analysis.paired[analysis.metric][rec.variant]
        line = (
            f"Recommendation: {rec.variant} is better than {rec.baseline} on {analysis.metric} "
            f"({figures.delta_interval(paired.mean_diff, paired.ci_low, paired.ci_high)}) "
            + (
                f"and saves {rec.savings_pct:.1f}% (${rec.savings_per_1000_usd:.4f} per 1,000 items)."
                if rec.savings_per_1000_usd > 0
                else f"for {_per_1000(-rec.savings_per_1000_usd)} more per 1,000 items."
            )
        )
    else:
        line = (
            f"Recommendation: {rec.variant} is non-inferior to {rec.baseline} on {analysis.metric} "
            f"(margin {analysis.margin:g}) and saves {rec.savings_pct:.1f}% "
            f"(${rec.savings_per_1000_usd:.4f} per 1,000 items)."
        )
    if rec.value_note:
        line += f" Chosen for its value: {rec.value_note}."
    for up in rec.upgrades:
        extra = (
            f"+${up.extra_monthly_usd:,.2f}/month"
            if up.extra_monthly_usd is not None
            else f"+{_per_1000(up.extra_cost_per_item * 1000)} per 1,000 items"
        )
        line += (
            f" Switch up: {up.variant} is better, {figures.delta(up.gain)} {analysis.metric} "
            f"[{figures.delta(up.gain_low)}, {figures.delta(up.gain_high)}] for {extra}."
        )
    if analysis.unequal:
        fewer = ", ".join(f"{name} ({n} items)" for name, n in analysis.unequal.items())
        line += f" Fewer items than the others: {fewer}; each comparison uses only the items both sides answered."
    return line


def _per_1000(usd: float) -> str:
    return f"${usd:,.4f}"


def result_rows(summaries: list[VariantSummary], analysis: Analysis) -> list[ResultRow]:
    """One row per variant that ran, in the summaries' order, against the analysis's baseline (the
    configured one, or the one the analysis fell back to when it did not run)."""
    estimates = analysis.estimates.get(analysis.metric, {})
    paired = analysis.paired.get(analysis.metric, {})
    recommended = analysis.recommendation.variant if analysis.recommendation else None
    rows = []
    for s in summaries:
        if s.skipped:
            continue
        est = estimates.get(s.variant)
        pair = paired.get(s.variant) if s.variant != analysis.baseline else None
        verdict = analysis.verdicts.get(s.variant)
        if s.variant == analysis.baseline:
            status = "baseline"
        elif verdict is not None:
            status = f"{verdict.status} (better)" if verdict.better else verdict.status
        else:
            status = ""
        rows.append(
            ResultRow(
                variant=s.variant,
                mean=_nan_none(est.mean) if est else _nan_none(s.quality.get(analysis.metric)),
                ci_low=_nan_none(est.ci_low) if est else None,
                ci_high=_nan_none(est.ci_high) if est else None,
                cost_per_item_usd=s.cost_per_item_usd,
                monthly_usd=_nan_none(s.monthly_cost_usd),
                diff=_nan_none(pair.mean_diff) if pair else None,
                diff_low=_nan_none(pair.ci_low) if pair else None,
                diff_high=_nan_none(pair.ci_high) if pair else None,
                verdict=status,
                baseline=s.variant == analysis.baseline,
                recommended=s.variant == recommended,
                pareto=s.variant in analysis.pareto,
            )
        )
    return rows


def skipped_line(summaries: list[VariantSummary]) -> str | None:
    """The variants that did not run, grouped by why, in one line (None when all ran)."""
    by_reason: dict[str, list[str]] = {}
    for s in summaries:
        if s.skipped:
            by_reason.setdefault(s.skipped.removeprefix("skipped: "), []).append(s.variant)
    if not by_reason:
        return None
    parts = [f"{', '.join(_grouped(names))} ({reason})" for reason, names in by_reason.items()]
    count = sum(len(names) for names in by_reason.values())
    return f"not run ({count}): " + "; ".join(parts)


def _grouped(names: Iterable[str]) -> list[str]:
    """`model:a`, `model:b` as `model:{a,b}`: one model's prompts together."""
    models: dict[str, list[str]] = {}
    for name in names:
        model, _, prompt = name.rpartition(":")
        models.setdefault(model or name, []).append(prompt if model else "")
    return [f"{m}:{{{','.join(p)}}}" if len(p) > 1 else (f"{m}:{p[0]}" if p[0] else m) for m, p in models.items()]


def markdown_table(summaries: list[VariantSummary], analysis: Analysis) -> str:
    """The results table in markdown, cell for cell what the terminal shows."""
    header = compact_header(analysis.metric)
    rows = result_rows(summaries, analysis)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row.cells()) + " |" for row in rows]
    notes = [line for line in (skipped_line(summaries),) if line]
    if any(r.recommended for r in rows):
        notes.insert(0, RECOMMENDED_MARK)
    return "\n".join(lines + (["", *notes] if notes else []))


def document(
    experiment: str,
    summaries: list[VariantSummary],
    analysis: Analysis,
    run_id: str | None,
    status: RunStatus | None,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """The `--output FILE.json` document (docs/outputs.md): every variant, its figures and verdict."""
    rows = {r.variant: r for r in result_rows(summaries, analysis)}
    estimates = analysis.estimates
    paired = analysis.paired.get(analysis.metric, {})
    variants = []
    for s in summaries:
        row = rows.get(s.variant)
        verdict = analysis.verdicts.get(s.variant)
        pair = paired.get(s.variant) if row is not None and not row.baseline else None
        levers = analysis.levers.get(s.variant)
        variants.append(
            {
                "variant": s.variant,
                "model": s.model,
                "prompt": s.prompt,
                "skipped": s.skipped,
                "baseline": s.variant == analysis.baseline,
                "recommended": bool(row and row.recommended),
                "pareto": s.variant in analysis.pareto,
                "items": s.n_items,
                "errors": s.n_errors,
                "quality": {k: _nan_none(v) for k, v in s.quality.items()},
                "intervals": {
                    metric: {"mean": e.mean, "low": e.ci_low, "high": e.ci_high, "method": e.method, "n": e.n}
                    for metric, by_variant in estimates.items()
                    if (e := by_variant.get(s.variant)) is not None
                },
                "cost": {
                    "per_item_usd": s.cost_per_item_usd,
                    "total_usd": s.cost_total_usd,
                    "monthly_usd": _nan_none(s.monthly_cost_usd),
                    "spent_usd": s.spent_usd,
                    "eval_usd": s.eval_cost_usd,
                },
                "tokens": {"input_mean": s.mean_input_tokens, "output_mean": s.mean_output_tokens},
                "latency_s": {"p50": _nan_none(s.latency_p50_s), "p95": _nan_none(s.latency_p95_s)},
                "vs_baseline": None
                if pair is None
                else {
                    "metric": analysis.metric,
                    "diff": _nan_none(pair.mean_diff),
                    "low": _nan_none(pair.ci_low),
                    "high": _nan_none(pair.ci_high),
                    "lower_one_sided": _nan_none(pair.lower_one_sided),
                    "p_value": _nan_none(pair.p_value),
                    "test": pair.test,
                    "pairs": pair.n_pairs,
                    "mdd": _nan_none(pair.mdd),
                },
                "verdict": None
                if verdict is None
                else {"status": verdict.status, "better": verdict.better, "reason": verdict.reason},
                "levers": {}
                if levers is None
                else {
                    lever.name: {"saving_usd": lever.saving_usd, "monthly_saving_usd": lever.monthly_saving_usd}
                    for lever in levers.levers
                    if lever.saving_usd is not None
                },
            }
        )
    rec = analysis.recommendation
    return {
        "schema": SCHEMA,
        "experiment": experiment,
        "run_id": run_id,
        **meta,
        "metric": analysis.metric,
        "margin": analysis.margin,
        "confidence": analysis.confidence,
        "baseline": analysis.baseline,
        "variants": variants,
        "recommendation": None
        if rec is None
        else {
            "variant": rec.variant,
            "baseline": rec.baseline,
            "savings_pct": rec.savings_pct,
            "savings_per_1000_usd": rec.savings_per_1000_usd,
            "line": recommendation_line(analysis),
        },
        "pareto": list(analysis.pareto),
        "pairwise": analysis.pairwise,
        "projection": projection_document(analysis),
        "warnings": list(analysis.warnings),
        "status": None if status is None else status.model_dump(),
    }


def projection_document(analysis: Analysis) -> dict[str, Any] | None:
    """The month on a production log's mix, per segment (None for an eval file)."""
    p = analysis.projection
    if p is None:
        return None

    def interval(value: tuple[float, float, float]) -> dict[str, float]:
        return {"usd_month": value[0], "low": value[1], "high": value[2]}

    return {
        "baseline": p.baseline,
        "days": p.days,
        "calls_per_day": p.per_day,
        "now": interval(p.now),
        "with_picks": interval(p.recommended),
        "saving": interval(p.saving),
        "segments": [
            {
                "segment": s.segment,
                "calls": s.calls,
                "calls_per_day": s.per_day,
                "sampled": s.sampled,
                "mean_input_tokens": s.mean_input_tokens,
                "mean_output_tokens": s.mean_output_tokens,
                "monthly": {v: interval(m) for v, m in s.monthly.items()},
                "pick": s.recommended,
                "why": s.why,
            }
            for s in p.segments
        ],
    }


CSV_FIELDS = [
    "variant",
    "model",
    "prompt",
    "skipped",
    "baseline",
    "recommended",
    "pareto",
    "items",
    "errors",
    "metric",
    "mean",
    "ci_low",
    "ci_high",
    "diff",
    "diff_low",
    "diff_high",
    "p_value",
    "verdict",
    "cost_per_item_usd",
    "cost_total_usd",
    "monthly_usd",
    "latency_p50_s",
    "latency_p95_s",
]


def csv_text(doc: dict[str, Any]) -> str:
    """The document's variants, one line each (the gate metric's interval and comparison)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    metric = doc["metric"]
    for v in doc["variants"]:
        interval = v["intervals"].get(metric, {})
        pair = v["vs_baseline"] or {}
        writer.writerow(
            {
                "variant": v["variant"],
                "model": v["model"],
                "prompt": v["prompt"],
                "skipped": v["skipped"] or "",
                "baseline": v["baseline"],
                "recommended": v["recommended"],
                "pareto": v["pareto"],
                "items": v["items"],
                "errors": v["errors"],
                "metric": metric,
                "mean": interval.get("mean", v["quality"].get(metric)),
                "ci_low": interval.get("low"),
                "ci_high": interval.get("high"),
                "diff": pair.get("diff"),
                "diff_low": pair.get("low"),
                "diff_high": pair.get("high"),
                "p_value": pair.get("p_value"),
                "verdict": (v["verdict"] or {}).get("status", "baseline" if v["baseline"] else ""),
                "cost_per_item_usd": v["cost"]["per_item_usd"],
                "cost_total_usd": v["cost"]["total_usd"],
                "monthly_usd": v["cost"]["monthly_usd"],
                "latency_p50_s": v["latency_s"]["p50"],
                "latency_p95_s": v["latency_s"]["p95"],
            }
        )
    return out.getvalue()


def json_text(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=1, allow_nan=False) + "\n"


def junit_xml(experiment: str, analysis: Analysis, candidates: Iterable[str], summary: str) -> str:
    """The gate as JUnit XML: one test case per candidate, a failure for a regression, skipped (with
    the reason) when undecided or not run, passed otherwise."""
    cases = sorted(candidates)
    suite = ET.Element("testsuite", name=f"harness gate: {experiment}", tests=str(len(cases)))
    failures = skipped = 0
    for name in cases:
        case = ET.SubElement(suite, "testcase", classname=f"harness.gate.{experiment}", name=name)
        verdict = analysis.verdicts.get(name)
        if verdict is None:
            ET.SubElement(case, "skipped", message="not run")
            skipped += 1
        elif verdict.status == "fail":
            ET.SubElement(case, "failure", message=verdict.reason, type="regression").text = summary
            failures += 1
        elif verdict.status == "undecided":
            ET.SubElement(
                case, "skipped", message=verdict.reason + (f"; {verdict.more_items}" if verdict.more_items else "")
            )
            skipped += 1
        else:
            ET.SubElement(case, "system-out").text = verdict.reason
    suite.set("failures", str(failures))
    suite.set("skipped", str(skipped))
    suite.set("errors", "0")
    ET.indent(suite)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"
