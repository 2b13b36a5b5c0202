"""From records to evidence: CIs per variant, paired tests against the baseline, verdicts, frontier.

Works on stored records alone (no model calls), so `harness report RUN_ID` can rebuild everything a
run printed. The gate metric decides the verdicts; every metric gets CIs and paired tests.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from harness.config import AnalysisConfig, DecisionConfig, GateConfig, RoutingConfig
from harness.decision import CandidateDecision, Decision, decide, score_range_of
from harness.frontier import Point, Recommendation, Upgrade, pareto_front, recommend
from harness.records import NOT_A_LABEL, PAIRWISE_RATIONALE, Record
from harness.routing import PolicyResult, Routing, settle_routing, simulate
from harness.stats import (
    PairedResult,
    Resampler,
    bootstrap_means,
    items_for_margin,
    minimum_detectable_difference,
    percentile_interval,
    spearman,
    wilson_interval,
)
from harness.summary import VariantSummary

if TYPE_CHECKING:
    from harness.decision import SequentialOutcome
    from harness.levers import VariantLevers
    from harness.projection import Projection

Status = Literal["pass", "fail", "undecided", "baseline"]


@dataclass(frozen=True)
class MetricInfo:
    """A scorer's label and kind, all the analysis needs to know about it."""

    name: str
    kind: str


@dataclass(frozen=True)
class Estimate:
    """A variant's mean on one metric with its confidence interval."""

    mean: float
    ci_low: float
    ci_high: float
    method: str
    n: int


@dataclass(frozen=True)
class Verdict:
    """The non-inferiority decision for one candidate on the gate metric."""

    status: Status
    reason: str
    more_items: str = ""
    """For an undecided verdict: the items (and dollars) the decision needs, when they can be estimated."""
    better: bool = False
    """Shown better than the baseline (superiority, at the family-wise level), not only as good."""


@dataclass(frozen=True)
class Agreement:
    """Spearman rank correlation between two scorers (or a scorer and output length) over the same outputs."""

    first: str
    second: str
    """A scorer's name, or `output_words` for the verbosity check."""
    rho: float
    n: int


OUTPUT_WORDS = "output_words"


@dataclass
class Analysis:
    """Everything the terminal summary, the plot, the report and the gate show."""

    metric: str
    margin: float
    confidence: float
    baseline: str | None
    baseline_note: str = ""
    estimates: dict[str, dict[str, Estimate]] = field(default_factory=dict)
    """metric -> variant -> estimate."""
    paired: dict[str, dict[str, PairedResult]] = field(default_factory=dict)
    """metric -> variant -> comparison with the baseline."""
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    pareto: list[str] = field(default_factory=list)
    recommendation: Recommendation | None = None
    warnings: list[str] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    agreement: list[Agreement] = field(default_factory=list)
    """Every pair of scorers, and each scorer with output length: does a judge track the references?"""
    routing: Routing | None = None
    policies: list[PolicyResult] = field(default_factory=list)
    """Simulated routers and cascades (harness.routing), when the config or `route` asks for them."""
    levers: dict[str, VariantLevers] = field(default_factory=dict)
    """What each priced variant's calls would cost bought otherwise (harness.levers), by variant."""
    sequential: SequentialOutcome | None = None
    """How a sequential gate ended; its looks decide the verdicts (harness.sequential)."""
    decision: Decision | None = None
    """The decision engine's verdicts on the gate metric, with the family-wise levels (harness.decision)."""
    pairwise: dict[str, dict[str, int]] = field(default_factory=dict)
    """The gate metric's pairwise judge, per variant: wins, ties, losses, pairs decided by position."""
    projection: Projection | None = None
    """The month on a production log's real mix, per segment (harness.projection), for a run over logs."""
    unequal: dict[str, int] = field(default_factory=dict)
    """Variants that answered fewer items than the most any variant answered (a budget cap, an
    interrupted run): variant -> items answered. Their comparisons use only the items both sides have."""


def analyze_records(
    summaries: list[VariantSummary],
    records: list[Record],
    metrics: list[MetricInfo],
    baseline: str | None,
    gate: GateConfig,
    settings: AnalysisConfig,
    sequential: SequentialOutcome | None = None,
    value: DecisionConfig | None = None,
    weights: Mapping[str, float] | None = None,
) -> Analysis:
    """CIs, paired tests, verdicts, frontier and recommendation for a finished run; a sequential gate's
    looks decide the candidates it decided (after the same checks of errors and floor or ceiling).
    `value` states what a point of quality is worth, for the recommendation to trade dollars for it.

    `weights` (item id to the calls it stands for, a stratified sample of production logs) weight every
    figure: each variant's mean and interval are the weighted mean (sum of w x over sum of w) and its
    bootstrap over items; the paired tests run on w x with w scaled to mean 1, whose mean is the
    Horvitz-Thompson estimate of the population's difference and whose spread its with-replacement
    variance (conservative for a stratified sample), through the same engine, on the t test's path."""
    ran = [s for s in summaries if s.skipped is None and s.n_items > 0]
    metric = gate.metric or (metrics[0].name if metrics else "")
    result = Analysis(
        metric=metric, margin=gate.margin, confidence=gate.confidence, baseline=None, sequential=sequential
    )
    if not ran or not metrics:
        result.warnings.append("nothing was run, so there is nothing to analyse")
        return result
    result.baseline, result.baseline_note = _effective_baseline(ran, baseline, metric)
    names = [s.variant for s in ran]
    item_ids = list(dict.fromkeys(r.item_id for r in records if r.variant in names))
    resampler = Resampler(len(item_ids), settings.resamples, settings.seed)
    base_index = names.index(result.baseline)
    w = normalized_weights(weights, item_ids)
    for info in metrics:
        sums, counts = score_arrays(records, names, item_ids, info.name, gate.errors)
        binary = info.kind == "binary" and w is None
        if w is None:
            result.estimates[info.name] = _estimates(names, sums, counts, resampler, gate.confidence, binary)
            means = item_means(sums, counts)
            spread = score_range_of(info.kind, list(means))
        else:
            result.estimates[info.name] = _estimates(names, sums * w, counts * w, resampler, gate.confidence, False)
            means = item_means(sums, counts) * w
            spread = score_range_of(info.kind, list(item_means(sums, counts))) * float(w.max())
        kind = "binary" if binary and bool(np.all(counts <= 1)) else "continuous"
        each = decide(
            means[base_index],
            {name: means[v] for v, name in enumerate(names)},
            kind=kind,
            margin=gate.margin,
            confidence=gate.confidence,
            multiplicity="none",
            score_range=spread,
        )
        result.paired[info.name] = {
            name: _paired(d, means[v] - means[base_index], gate, spread, name == result.baseline)
            for v, (name, d) in enumerate(each.candidates.items())
        }
        if info.name == metric:
            result.decision = decide(
                means[base_index],
                {name: means[v] for v, name in enumerate(names) if v != base_index},
                kind=kind,
                margin=gate.margin,
                confidence=gate.confidence,
                multiplicity=gate.multiplicity,
                score_range=spread,
            )
    by_name = {s.variant: s for s in ran}
    stuck = floor_or_ceiling(records, names, metric)
    result.pairwise = pairwise_tally(records, metric)
    same = same_answers(records, result.baseline, names)
    for name in names:
        # a candidate that gave the baseline's answer on every item is as good by construction, whatever
        # the metric can tell (a replayed production answer scored against itself, an easy eval)
        result.verdicts[name] = _verdict(name, result, by_name, gate, None if name in same else stuck)
    result.unequal = _unequal(ran)
    _add_cost_of_more_items(result, records, names, len(item_ids))
    if stuck is not None:
        result.warnings.append(stuck)
    result.points = [
        Point(s.variant, s.cost_per_item_usd, result.estimates[metric][s.variant].mean, s.latency_p95_s) for s in ran
    ]
    result.pareto = pareto_front(result.points, settings.frontier_latency)
    passing = {v for v, verdict in result.verdicts.items() if verdict.status == "pass"}
    monthly = {s.variant: s.monthly_cost_usd for s in ran if math.isfinite(s.monthly_cost_usd)}
    result.recommendation = recommend(
        result.points, result.baseline, passing, _upgrades(result, monthly), monthly, value
    )
    if sequential is None:  # a sequential design sized itself; its looks say what they resolved
        result.warnings += _power_warnings(result)
    result.agreement = scorer_agreement(records, [m.name for m in metrics])
    result.warnings += _label_warnings(ran)
    return result


def _label_warnings(summaries: list[VariantSummary]) -> list[str]:
    """A classifier whose answers are mostly not labels is a prompt or parsing problem, not a weak model:
    its accuracy says nothing about the model, so say so (`accuracy`'s not_a_label aggregate)."""
    out = []
    for s in summaries:
        for key, share in s.quality.items():
            if key.endswith(f".{NOT_A_LABEL}") and share >= 0.1:
                out.append(
                    f"{s.variant}: {share:.0%} of its answers are not one of the labels ({key}); they count as "
                    "wrong, so its accuracy measures the prompt or the answer format more than the model: ask for "
                    "the label alone, or give accuracy the labels"
                )
    return out


def scorer_agreement(records: list[Record], metrics: list[str]) -> list[Agreement]:
    """Spearman's rho for each pair of scorers over outputs both scored, and for each scorer with the
    output's word count (a judge that tracks length more than the references shows verbosity bias)."""
    scored = [r for r in records if r.output is not None and r.error is None]
    columns = {m: [r.scores.get(m) for r in scored] for m in metrics}
    columns[OUTPUT_WORDS] = [float(len((r.output or "").split())) for r in scored]
    names = [*metrics, OUTPUT_WORDS]
    out = []
    for i, first in enumerate(metrics):
        for second in names[i + 1 :]:
            pairs = [
                (a, b)
                for a, b in zip(columns[first], columns[second], strict=True)
                if a is not None and b is not None and math.isfinite(a) and math.isfinite(b)
            ]
            if len(pairs) < 3 or len({a for a, _ in pairs}) < 2 or len({b for _, b in pairs}) < 2:
                continue
            rho = spearman(np.array([a for a, _ in pairs]), np.array([b for _, b in pairs]))
            out.append(Agreement(first, second, rho, len(pairs)))
    return out


MAX_POSITION_SHARE = 0.5
"""A pairwise judge that picks by position in more than this share of pairs cannot pass a candidate: its
ties (both orders disagreeing) would otherwise read as "as good"."""


def same_answers(records: list[Record], baseline: str, names: list[str]) -> set[str]:
    """The candidates whose every answer is the baseline's answer to the same item and sample."""
    answers: dict[str, dict[tuple[str, int], str | None]] = {}
    for r in records:
        answers.setdefault(r.variant, {})[(r.item_id, r.sample)] = r.output if r.error is None else None
    base = answers.get(baseline, {})
    return {
        name
        for name in names
        if name != baseline
        and answers.get(name)
        and answers[name].keys() == base.keys()
        and all(
            v is not None and v.strip() == (base[k] or "").strip() and base[k] is not None
            for k, v in answers[name].items()
        )
    }


def pairwise_tally(records: list[Record], metric: str) -> dict[str, dict[str, int]]:
    """Per variant, the pairwise judge's wins, ties and losses on `metric`, and the pairs it decided by
    position alone (the same letter in both orders: position bias, counted as ties)."""
    out: dict[str, dict[str, int]] = {}
    for record in records:
        why = record.rationales.get(metric, "")
        if not why.startswith(PAIRWISE_RATIONALE):
            continue
        counts = out.setdefault(record.variant, {"win": 0, "tie": 0, "loss": 0, "by_position": 0})
        counts[why.rsplit("-> ", 1)[-1]] += 1
        first, second = re.findall(r": (A|B|TIE)", why)[:2]
        counts["by_position"] += first == second and first != "TIE"
    return out


def normalized_weights(weights: Mapping[str, float] | None, item_ids: list[str]) -> np.ndarray | None:
    """The items' weights in `item_ids` order, scaled to mean 1; None when there are none or all are equal
    (an unweighted sample, analysed as before)."""
    if not weights:
        return None
    w = np.array([float(weights.get(i, 1.0)) for i in item_ids])
    if w.size == 0 or np.allclose(w, w[0]):
        return None
    return w / w.mean()


def score_arrays(
    records: list[Record], variants: list[str], item_ids: list[str], metric: str, errors: str
) -> tuple[np.ndarray, np.ndarray]:
    """V x N score sums and sample counts; an errored call counts as 0 only with errors=as_failure."""
    v_index = {v: i for i, v in enumerate(variants)}
    i_index = {item: i for i, item in enumerate(item_ids)}
    sums = np.zeros((len(variants), len(item_ids)))
    counts = np.zeros((len(variants), len(item_ids)))
    for r in records:
        v = v_index.get(r.variant)
        if v is None:
            continue
        value = r.scores.get(metric)
        if value is None and r.error is not None and errors == "as_failure":
            value = 0.0
        if value is None or not math.isfinite(value):  # no score, or one no statistic can use
            continue
        i = i_index[r.item_id]
        sums[v, i] += value
        counts[v, i] += 1
    return sums, counts


def _effective_baseline(ran: list[VariantSummary], configured: str | None, metric: str) -> tuple[str, str]:
    names = [s.variant for s in ran]
    if configured in names:
        return configured, ""
    best = max(ran, key=lambda s: (s.quality.get(metric, -math.inf), -s.cost_per_item_usd))
    why = f"the configured baseline {configured} was not run" if configured else "no baseline is configured"
    return best.variant, f"{why}; comparing against the best variant that ran on {metric}: {best.variant}"


def _estimates(
    names: list[str], sums: np.ndarray, counts: np.ndarray, resampler: Resampler, confidence: float, binary: bool
) -> dict[str, Estimate]:
    draws = bootstrap_means(resampler, sums, counts)
    lo, hi = percentile_interval(draws, confidence)
    out = {}
    for v, name in enumerate(names):
        n = int((counts[v] > 0).sum())
        total = counts[v].sum()
        mean = float(sums[v].sum() / total) if total else math.nan
        if binary and counts[v].max(initial=0) <= 1:
            low, high = wilson_interval(float(sums[v].sum()), int(total), confidence)
            out[name] = Estimate(mean, low, high, "Wilson", n)
        else:
            out[name] = Estimate(mean, float(lo[v]), float(hi[v]), "bootstrap (items)", n)
    return out


def floor_or_ceiling(records: list[Record], names: list[str], metric: str) -> str | None:
    """A warning when every scored item of every variant has the same score: the metric cannot tell the
    variants apart (all at its floor or ceiling), so no verdict may rest on it."""
    values = {r.scores.get(metric) for r in records if r.variant in names and r.scores.get(metric) is not None}
    if len(values) != 1:
        return None
    value = next(iter(values))
    return (
        f"{metric} is {value:g} on every item for every variant: it cannot tell the variants apart (at its "
        "floor or ceiling), so no candidate passes on it; make the eval harder or easier, or change the metric"
    )


def _verdict(
    name: str, analysis: Analysis, summaries: dict[str, VariantSummary], gate: GateConfig, stuck: str | None
) -> Verdict:
    if name == analysis.baseline:
        return Verdict("baseline", "the reference every candidate is compared with")
    if stuck is not None:
        return Verdict("undecided", f"{analysis.metric} does not discriminate: every item scores the same")
    tally = analysis.pairwise.get(name)
    judged = sum(tally[k] for k in ("win", "tie", "loss")) if tally else 0
    if tally and judged and tally["by_position"] / judged > MAX_POSITION_SHARE:
        return Verdict(
            "undecided",
            f"the pairwise judge chose by position alone in {tally['by_position']} of {judged} pairs: its ties say "
            "it cannot tell the answers apart, not that they are as good; use a stronger judge",
        )
    worst_errors = max(summaries[name].error_rate, summaries[analysis.baseline or name].error_rate)
    if worst_errors > gate.max_error_rate:
        return Verdict("undecided", f"error rate {worst_errors:.0%} is above max_error_rate {gate.max_error_rate:.0%}")
    if analysis.sequential is not None:
        return _sequential_verdict(name, analysis.sequential)
    decided = analysis.decision.candidates.get(name) if analysis.decision is not None else None
    if decided is None:
        return Verdict("undecided", "not compared with the baseline")
    status = decided.status if decided.status in ("pass", "fail") else "undecided"
    reason = decided.reason
    if status == "undecided" and decided.n_pairs >= 2:
        paired = analysis.paired[analysis.metric][name]
        reason += f"; {paired.n_pairs} items detect {paired.mdd:.4f} at 80% power (margin {gate.margin:.4f}); add items"
    return Verdict(status, reason, better=decided.better)  # type: ignore[arg-type]


def _paired(
    d: CandidateDecision, diffs: np.ndarray, gate: GateConfig, spread: float, is_baseline: bool
) -> PairedResult:
    """A comparison for the tables, from the engine's unadjusted decision (the verdict's own test), with
    the minimum detectable difference and the items the margin needs."""
    diffs = diffs[~np.isnan(diffs)]
    n, confidence = d.n_pairs, gate.confidence
    sd = float(np.std(diffs, ddof=1)) if n > 1 else math.nan
    mdd = minimum_detectable_difference(sd, n, confidence)
    identical = n > 0 and not np.any(diffs != 0)
    if identical:  # no pair differed: the exact 0-event bound is what n resolves
        mdd = max(mdd if math.isfinite(mdd) else 0.0, spread * (1 - (1 - confidence) ** (1 / n)))
    for_margin = items_for_margin(n, mdd, gate.margin, confidence, spread, identical)
    needed = None if for_margin is None else max(n, for_margin)
    return PairedResult(
        n_pairs=d.n_pairs,
        n_excluded=d.n_excluded,
        mean_diff=d.mean_diff,
        ci_low=d.ci_low,
        ci_high=d.ci_high,
        lower_one_sided=d.noninferior.bound,
        upper_one_sided=d.worse.bound,
        p_value=d.p_value,
        test=d.test,
        mdd=mdd,
        p_noninferior=d.noninferior.p_value,
        p_worse=d.worse.p_value,
        items_needed=None if is_baseline else needed,
        items_for_margin=None if is_baseline else for_margin,
    )


def item_means(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """V x N item means (NaN where a variant has no score for an item)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _unequal(ran: list[VariantSummary]) -> dict[str, int]:
    """Variants with fewer items than the most answered: a capped or interrupted run."""
    most = max((s.n_items for s in ran), default=0)
    return {s.variant: s.n_items for s in ran if s.n_items < most}


def _upgrades(analysis: Analysis, monthly: dict[str, float]) -> list[Upgrade]:
    """Candidates shown better than the baseline, with the two-sided interval of the gain."""
    out = []
    paired = analysis.paired.get(analysis.metric, {})
    for name, verdict in analysis.verdicts.items():
        if verdict.better and name in paired:
            p = paired[name]
            out.append(Upgrade(name, p.mean_diff, p.ci_low, p.ci_high))
    return out


def _sequential_verdict(name: str, outcome: SequentialOutcome) -> Verdict:
    """The look that decided the candidate; a candidate still open when the stages stopped is undecided."""
    decision = outcome.decisions.get(name)
    why = outcome.stopped_by or "the stages ended"
    if decision is None:
        return Verdict("undecided", f"no look was reached ({why})")
    if decision.status == "pass":
        return Verdict("pass", decision.reason)
    if decision.status == "fail":
        return Verdict("fail", decision.reason)
    if decision.status == "continue":
        return Verdict("undecided", f"not decided when {why}: {decision.reason}")
    return Verdict("undecided", decision.reason)


def _add_cost_of_more_items(analysis: Analysis, records: list[Record], names: list[str], n_items: int) -> None:
    """An undecided verdict says how many items the decision needs and what they would cost, at the
    dollars per item (all samples) this run's records of the candidate and the baseline cost."""
    paired = analysis.paired.get(analysis.metric, {})
    spent = {name: 0.0 for name in names}
    for r in records:
        if r.variant in spent:
            spent[r.variant] += r.cost_usd
    for name, verdict in list(analysis.verdicts.items()):
        needed = paired[name].items_needed if name in paired else None
        if verdict.status != "undecided" or needed is None or n_items == 0 or needed <= paired[name].n_pairs:
            continue
        more = needed - paired[name].n_pairs
        per_item = (spent[name] + spent.get(analysis.baseline or "", 0.0)) / n_items
        reason = verdict.reason.removesuffix("; add items")
        cost = f"about ${more * per_item:,.2f} for both variants" if per_item else "at no cost (both are free)"
        more_items = f"add about {more:,} items (to {needed:,}), {cost}"
        analysis.verdicts[name] = Verdict("undecided", f"{reason}; {more_items}", more_items)


def _power_warnings(analysis: Analysis) -> list[str]:
    paired = analysis.paired.get(analysis.metric, {})
    worst = max((p.mdd for v, p in paired.items() if v != analysis.baseline), default=0.0)
    if worst > analysis.margin:
        n = max((p.n_pairs for p in paired.values()), default=0)
        return [
            f"eval too small to decide reliably: with {n} items the minimum detectable difference at 80% power "
            f"is {worst:.4f} on {analysis.metric}, larger than the margin {analysis.margin:.4f}; add items"
        ]
    return []


def attach_routing(
    analysis: Analysis,
    config: RoutingConfig | None,
    summaries: list[VariantSummary],
    records: list[Record],
    metrics: list[MetricInfo],
    settings: AnalysisConfig,
    source: str,
) -> None:
    """Simulate the routing policies from the records (no model call) and attach them to the analysis."""
    metric = (config.metric if config else None) or analysis.metric
    ran = [
        (s.variant, s.cost_per_item_usd, s.quality.get(metric, math.nan))
        for s in summaries
        if s.skipped is None and s.n_items
    ]
    routing = settle_routing(config, ran, analysis.baseline, metric, [m.name for m in metrics], source)
    analysis.routing = routing
    analysis.policies = simulate(
        records,
        routing.metric,
        routing.weak,
        routing.strong,
        routing.policies,
        settings.resamples,
        settings.seed,
        analysis.confidence,
        analysis.margin,
        next((m.kind == "binary" for m in metrics if m.name == routing.metric), False),
    )
