"""The one decision engine: may each candidate replace the baseline? Paired per-item scores in, verdicts out.

Every verdict harness gives comes from here: `run`'s analysis, the gate, the sequential gate's looks and
anything that judges scores from another tool. Per candidate it tests three one-sided claims on the paired
differences (candidate - baseline) with one test (`harness.paired_tests`):

- **non-inferior**: the mean difference is above -margin (the verdict "pass");
- **worse**: it is below 0 (with non-inferiority not shown, the verdict "fail");
- **better**: it is above 0 (superiority; only claimed alongside non-inferiority).

Each claim is a p-value, the one-sided level it is held to, and the bound at that level; the claim is
shown exactly when the p-value is below its level, which is exactly when the bound clears its threshold.

Several candidates keep the family-wise error at 1 - confidence per claim (Holm's step-down, Holm, Scand.
J. Statist. 1979, by default). A candidate's level is the one Holm tests it at: alpha / (k - i + 1) for the
i-th smallest p-value, and for every candidate from the first one Holm does not reject onwards, the level at
which it stopped; so a candidate passes exactly when its Holm-adjusted p-value is below alpha, and exactly
when its bound at its level clears -margin.

A sequential design (Jennison & Turnbull, "Group Sequential Methods with Applications to Clinical Trials",
2000) looks after each stage of items, in the order given. Each candidate's one-sided alpha is the family's
split evenly (Bonferroni over the candidates), spent across the looks by `harness.sequential`; at look k
every claim is tested at that look's nominal level, with the same test (Student's quantiles for t), so the
repeated bounds and their p-values agree as in the fixed design.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from harness.paired_tests import PairedTest, norm_sf, paired_test
from harness.sequential import Spending, boundaries, schedule

Kind = Literal["binary", "continuous", "ordinal", "bounded"]
Multiplicity = Literal["holm", "bonferroni", "none"]
Status = Literal["pass", "fail", "undecided", "continue", "futile"]
KINDS = ("binary", "continuous", "ordinal", "bounded")


@dataclass(frozen=True)
class SequentialDesign:
    """Looks after equal stages of the items (the first at least `sequential.MIN_FIRST_LOOK` items), the
    one-sided alpha spent across them, and the futility threshold (0: never stop for futility)."""

    looks: int = 5
    spending: Spending = "pocock"
    futility: float = 0.1


@dataclass(frozen=True)
class PairedScores:
    """What every design decides on: the baseline's item scores and each candidate's (the same items in
    the same order, NaN where an item has no score), and how to read them."""

    base: np.ndarray
    columns: Mapping[str, np.ndarray]
    binary: bool
    """Pass/fail outcomes, one per item: the score test where both sides are 0 or 1."""
    spread: float
    """The score range the 0-event guard scales by (`score_range_of`)."""
    margin: float
    confidence: float


@dataclass(frozen=True)
class Claim:
    """One one-sided claim about a candidate, tested at `level`."""

    p_value: float
    """The claim's own (unadjusted, nominal) one-sided p-value."""
    level: float
    """The one-sided alpha it is held to: after the multiplicity adjustment, or at a look its nominal level."""
    bound: float
    """The one-sided confidence bound at `level` (lower for non-inferior and better, upper for worse)."""
    threshold: float
    """What the bound must clear: -margin for non-inferior, 0 for worse and better."""
    shown: bool
    """p_value < level, which is the same as the bound clearing the threshold."""
    p_adjusted: float = math.nan
    """The multiplicity-adjusted p-value, shown exactly when below alpha (fixed designs; NaN at a look)."""


@dataclass(frozen=True)
class CandidateDecision:
    """One candidate against the baseline: the verdict and the evidence behind it."""

    status: Status
    """pass, fail or undecided; at an interim look also continue or futile."""
    better: bool
    """Shown better than the baseline (and non-inferior) at the family-wise level."""
    n_pairs: int
    n_excluded: int
    """Items without a score on either side (an errored call): left out of the pairs."""
    mean_diff: float
    """Candidate minus baseline over the pairs; positive means the candidate scored higher."""
    ci_low: float
    ci_high: float
    """Two-sided interval at the confidence, unadjusted, from the same test as the claims."""
    p_value: float
    """Two-sided p-value for no difference from the same test: below 1 - confidence exactly when the
    interval excludes 0."""
    noninferior: Claim
    worse: Claim
    superior: Claim
    test: str
    reason: str
    look: int | None = None
    """The look (1-based) this decision was made at; None in a fixed design."""
    items_used: int = 0
    """Items the decision read (pairs plus excluded); in a sequential design, up to its look."""


@dataclass
class SequentialOutcome:
    """How a sequential gate ended: each candidate's deciding look, and what stopping early saved."""

    looks: int
    spending: Spending
    alpha: float
    """The one-sided alpha each candidate's boundaries spend (the gate's, split over the candidates)."""
    items_planned: int
    items_used: int = 0
    stopped_at: int = 0
    """The look (1-based) after which no candidate was left undecided, or the last one run."""
    usd_spent: float = 0.0
    usd_not_spent: float = 0.0
    """The calls never made (the stages not run, per variant) at the dollars per item measured so far."""
    decisions: dict[str, CandidateDecision] = field(default_factory=dict)
    decided_at: dict[str, int] = field(default_factory=dict)
    stopped_by: str = ""
    """Why the stages ended early other than by decisions (the budget ran out), else empty."""

    @property
    def early(self) -> bool:
        return self.items_used < self.items_planned

    def summary(self) -> str:
        """One line for the terminal, the gate's step summary and the report."""
        how = "stopped early" if self.early else "ran every stage"
        line = (
            f"sequential gate ({self.looks} looks, {self.spending} alpha spending, alpha {self.alpha:.4g} per "
            f"candidate): {how} at look {self.stopped_at} of {self.looks}, {self.items_used} of "
            f"{self.items_planned} items used, ${self.usd_spent:.4f} spent, about ${self.usd_not_spent:.4f} not spent"
        )
        return f"{line} ({self.stopped_by})" if self.stopped_by else line

    def counters(self) -> dict[str, float | int]:
        """For MLflow, as tags of the parent run."""
        return {
            "sequential.looks": self.looks,
            "sequential.stopped_at_look": self.stopped_at,
            "sequential.items_used": self.items_used,
            "sequential.items_planned": self.items_planned,
            "sequential.usd_not_spent": self.usd_not_spent,
        }


@dataclass(frozen=True)
class Decision:
    """Every candidate's decision, and how they were made."""

    candidates: dict[str, CandidateDecision]
    margin: float
    confidence: float
    multiplicity: Multiplicity
    sequential: SequentialDesign | None = None
    looks: tuple[int, ...] = field(default_factory=tuple)
    """Items analysed at each look (sequential designs)."""

    @property
    def alpha(self) -> float:
        return 1.0 - self.confidence


def item_means(scores: object) -> np.ndarray:
    """A variant's per-item scores as floats: a 1-D array as given, a 2-D one (items x epochs) averaged
    over each item's samples (NaN where an item has none)."""
    values = np.asarray(scores, dtype=float)
    if values.ndim == 1:
        return values
    if values.ndim != 2:
        raise ValueError("scores must be one value per item, or items x samples")
    counts = np.sum(~np.isnan(values), axis=1)
    sums = np.nansum(values, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def score_range_of(kind: str, columns: list[np.ndarray]) -> float:
    """The most one item's difference can move the mean: 1 for pass/fail and [0, 1] scores, else the
    range the scores were seen to span (at least 1)."""
    if kind in ("binary", "bounded"):
        return 1.0
    seen = np.concatenate([c[~np.isnan(c)] for c in columns]) if columns else np.array([])
    return max(1.0, float(seen.max() - seen.min())) if seen.size else 1.0


def decide(
    baseline_scores: object,
    candidate_scores: Mapping[str, object],
    kind: Kind = "continuous",
    margin: float = 0.0,
    confidence: float = 0.95,
    sequential: SequentialDesign | Mapping[str, object] | None = None,
    multiplicity: Multiplicity = "holm",
    score_range: float | None = None,
) -> Decision:
    """Decide every candidate against the baseline on paired per-item scores.

    `baseline_scores` and each candidate's are one score per item, the same items in the same order (NaN
    where an item has no score), or items x samples (epochs), judged on item means. `kind` "binary" uses the
    score test for pass/fail outcomes; any other kind the t test. `margin` is the largest loss still counted
    as "as good", in the scores' units. With `sequential` the items are taken in the order given, in stages,
    and each candidate stops at the look that decides it.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if not 0.5 < confidence < 1:
        raise ValueError("confidence must be between 0.5 and 1")
    if not math.isfinite(margin) or margin < 0:
        raise ValueError("margin must be a finite number, 0 or more")
    if multiplicity not in ("holm", "bonferroni", "none"):
        raise ValueError(f"multiplicity must be holm, bonferroni or none, not {multiplicity!r}")
    if score_range is not None and not (math.isfinite(score_range) and score_range > 0):
        raise ValueError("score_range must be a finite number above 0")
    base = item_means(baseline_scores)
    columns = {name: item_means(values) for name, values in candidate_scores.items()}
    if base.size == 0:
        raise ValueError("no items: the baseline has no scores")
    for name, column in {"baseline": base, **columns}.items():
        if column.shape != base.shape:
            raise ValueError(f"{name}: {column.size} items, but the baseline has {base.size}; scores must be paired")
        if np.isinf(column).any():
            raise ValueError(f"{name}: scores must be finite numbers (NaN where an item has no score)")
    spread = score_range if score_range is not None else score_range_of(kind, [base, *columns.values()])
    binary = kind == "binary" and np.asarray(baseline_scores).ndim == 1
    scores = PairedScores(base, columns, binary, spread, margin, confidence)
    if sequential is None:
        return Decision(fixed(scores, multiplicity), margin, confidence, multiplicity)
    return run_looks(scores, multiplicity, _design(sequential))


def fixed(scores: PairedScores, multiplicity: Multiplicity) -> dict[str, CandidateDecision]:
    """The fixed design: each candidate's test on all its pairs, the family's levels by `multiplicity`."""
    alpha, margin = 1.0 - scores.confidence, scores.margin
    tests = {name: _test(scores, column) for name, column in scores.columns.items()}
    p_ni = {name: t.p_above(-margin) for name, t in tests.items()}
    p_worse = {name: t.p_below(0.0) for name, t in tests.items()}
    p_better = {name: t.p_above(0.0) for name, t in tests.items()}
    levels_ni, adjusted_ni = family_levels(p_ni, alpha, multiplicity)
    levels_worse, adjusted_worse = family_levels(p_worse, alpha, multiplicity)
    levels_better, adjusted_better = family_levels(p_better, alpha, multiplicity)
    out = {}
    for name, test in tests.items():
        ni = _lower_claim(test, p_ni[name], levels_ni[name], -margin, adjusted_ni[name])
        worse = _upper_claim(test, p_worse[name], levels_worse[name], 0.0, adjusted_worse[name])
        superior = _lower_claim(test, p_better[name], levels_better[name], 0.0, adjusted_better[name])
        status: Status = "pass" if ni.shown else "fail" if worse.shown else "undecided"
        better = ni.shown and superior.shown
        reason = _fixed_reason(status, better, (ni, worse, superior), test, margin, len(tests), multiplicity)
        out[name] = _decision(test, scores, scores.columns[name], status, better, (ni, worse, superior), reason)
    return out


def family_levels(
    p_values: Mapping[str, float], alpha: float, multiplicity: Multiplicity
) -> tuple[dict[str, float], dict[str, float]]:
    """Each hypothesis's one-sided level and adjusted p-value over the family: p < level exactly when
    adjusted p < alpha. Holm: the i-th smallest is tested at alpha / (k - i + 1), and from the first not
    rejected onwards every one at the level where the procedure stopped."""
    k = len(p_values)
    if k <= 1 or multiplicity == "none":
        return {n: alpha for n in p_values}, dict(p_values)
    if multiplicity == "bonferroni":
        return {n: alpha / k for n in p_values}, {n: min(1.0, k * p) for n, p in p_values.items()}
    ranked = sorted(p_values, key=lambda n: (p_values[n], n))
    levels: dict[str, float] = {}
    adjusted: dict[str, float] = {}
    stopped: float | None = None
    running = 0.0
    for i, name in enumerate(ranked):
        level = alpha / (k - i)
        if stopped is None and not p_values[name] < level:
            stopped = level
        levels[name] = level if stopped is None else stopped
        running = max(running, min(1.0, (k - i) * p_values[name]))
        adjusted[name] = running
    return levels, adjusted


def _design(sequential: SequentialDesign | Mapping[str, object]) -> SequentialDesign:
    if isinstance(sequential, SequentialDesign):
        return sequential
    unknown = set(sequential) - {"looks", "spending", "futility"}
    if unknown:
        raise ValueError(f"sequential takes looks, spending and futility, not {', '.join(sorted(unknown))}")
    design = SequentialDesign(**sequential)  # type: ignore[arg-type]
    if not isinstance(design.looks, int) or design.looks < 1 or design.spending not in ("pocock", "obrien-fleming"):
        raise ValueError("sequential needs looks >= 1 and spending 'pocock' or 'obrien-fleming'")
    return design


def run_looks(scores: PairedScores, multiplicity: Multiplicity, design: SequentialDesign) -> Decision:
    """A sequential design over the items in the order given: each candidate stops at its deciding look."""
    n = scores.base.size
    stops = tuple(schedule(n, design.looks))
    alpha = candidate_alpha(1.0 - scores.confidence, len(scores.columns), multiplicity)
    bounds = boundaries(tuple(s / n for s in stops), alpha, design.spending)
    active = dict(scores.columns)
    out: dict[str, CandidateDecision] = {}
    for index, stop in enumerate(stops):
        subset = {name: column[:stop] for name, column in active.items()}
        looked = look(replace(scores, base=scores.base[:stop], columns=subset), index, bounds, design.futility)
        for name, decision in looked.items():
            out[name] = decision
            if decision.status != "continue":
                del active[name]
        if not active:
            break
    return Decision(out, scores.margin, scores.confidence, multiplicity, design, stops)


def candidate_alpha(alpha: float, candidates: int, multiplicity: Multiplicity) -> float:
    """Each candidate's one-sided alpha in a sequential design: the family's, split evenly (Bonferroni)."""
    return alpha if multiplicity == "none" else alpha / max(candidates, 1)


def look(scores: PairedScores, index: int, bounds: tuple[float, ...], futility: float) -> dict[str, CandidateDecision]:
    """Every candidate at look `index` (0-based) of a design with these z boundaries, on the items so far.

    Non-inferiority when the repeated lower bound clears -margin; a regression when the upper bound is
    below -margin, or below 0 with non-inferiority out of reach (at the last look: below 0, as in the fixed
    design). Futility (stochastic curtailment, Lan, Simon & Halperin 1982) stops a candidate when, under
    the trend so far, neither decision is likely by the last look; it is non-binding and only ever removes
    decisions, so it cannot raise an error rate.
    """
    c = bounds[index]
    level = norm_sf(c) if math.isfinite(c) else 0.0
    last = index == len(bounds) - 1
    margin = scores.margin
    out = {}
    for name, column in scores.columns.items():
        test = _test(scores, column)
        ni = _lower_claim(test, test.p_above(-margin), level, -margin)
        worse = _upper_claim(test, test.p_below(0.0), level, 0.0)
        superior = _lower_claim(test, test.p_above(0.0), level, 0.0)
        where = (
            f"repeated bounds [{ni.bound:+.4f}, {worse.bound:+.4f}] at look {index + 1}/{len(bounds)} "
            f"({test.n} pairs, level {level:.4g})"
        )
        status, reason = _look_status(test, ni, worse, margin, index, bounds, futility, last, where)
        better = status == "pass" and superior.shown
        if better:
            reason = f"better: lower bound {superior.bound:+.4f} > 0; {reason}"
        decision = _decision(test, scores, column, status, better, (ni, worse, superior), reason)
        out[name] = replace(decision, look=index + 1, items_used=int(column.size))
    return out


def _look_status(
    test: PairedTest,
    ni: Claim,
    worse: Claim,
    margin: float,
    index: int,
    bounds: tuple[float, ...],
    futility: float,
    last: bool,
    where: str,
) -> tuple[Status, str]:
    if test.n < 2:
        return ("undecided" if last else "continue"), "fewer than 2 pairs"
    if ni.shown:
        return "pass", f"non-inferior: {where} > -margin {-margin:.4f}"
    if last:
        if worse.shown:
            return "fail", f"regression: {where}, upper < 0"
        return "undecided", f"inconclusive at the last look: {where}"
    if worse.bound < -margin:
        return "fail", f"regression: {where}, worse by more than the margin"
    fraction = (index + 1) / len(bounds)
    c = bounds[index]
    se = (worse.bound - ni.bound) / (2 * c) if math.isfinite(c) and c > 0 else math.inf
    reach_pass = _conditional_power(test.mean + margin, se, fraction, bounds[-1])
    reach_fail = _conditional_power(-test.mean, se, fraction, bounds[-1])
    if worse.shown and reach_pass < futility:
        return "fail", f"regression: {where}, upper < 0, non-inferiority out of reach"
    if reach_pass < futility and reach_fail < futility:
        return "futile", (
            f"out of reach: {where}; under the trend so far neither non-inferiority nor a regression "
            f"would be shown by the last look (conditional power {reach_pass:.2f} and {reach_fail:.2f})"
        )
    return "continue", where


def _conditional_power(effect: float, se: float, fraction: float, final_bound: float) -> float:
    """The chance the last look's z exceeds its boundary if the trend so far continues:
    1 - Phi((c_K - z_k / sqrt(t)) / sqrt(1 - t)) (Jennison & Turnbull 2000, section 10.2)."""
    if se == 0:
        return 1.0 if effect > 0 else 0.0
    if not math.isfinite(se):
        return 1.0
    z = effect / se
    return norm_sf((final_bound - z / math.sqrt(fraction)) / math.sqrt(1 - fraction))


def _test(scores: PairedScores, column: np.ndarray) -> PairedTest:
    both = ~np.isnan(column) & ~np.isnan(scores.base)
    return paired_test(column[both], scores.base[both], scores.binary, scores.spread)


def _lower_claim(test: PairedTest, p: float, level: float, threshold: float, adjusted: float = math.nan) -> Claim:
    bound = test.lower(level) if level > 0 else -math.inf
    return Claim(p, level, bound, threshold, bool(p < level), adjusted)


def _upper_claim(test: PairedTest, p: float, level: float, threshold: float, adjusted: float = math.nan) -> Claim:
    bound = test.upper(level) if level > 0 else math.inf
    return Claim(p, level, bound, threshold, bool(p < level), adjusted)


def _decision(
    test: PairedTest,
    scores: PairedScores,
    column: np.ndarray,
    status: Status,
    better: bool,
    claims: tuple[Claim, Claim, Claim],
    reason: str,
) -> CandidateDecision:
    ni, worse, superior = claims
    half = (1.0 - scores.confidence) / 2
    two_sided = min(1.0, 2 * min(test.p_above(0.0), test.p_below(0.0))) if test.n >= 2 else math.nan
    return CandidateDecision(
        status=status,
        better=better,
        n_pairs=test.n,
        n_excluded=int(column.size) - test.n,
        mean_diff=test.mean,
        ci_low=test.lower(half),
        ci_high=test.upper(half),
        p_value=two_sided,
        noninferior=ni,
        worse=worse,
        superior=superior,
        test=test.name,
        reason=reason,
        items_used=int(scores.base.size),
    )


def _fixed_reason(
    status: Status,
    better: bool,
    claims: tuple[Claim, Claim, Claim],
    test: PairedTest,
    margin: float,
    family: int,
    multiplicity: Multiplicity,
) -> str:
    ni, worse, superior = claims
    adjusted = f", {multiplicity} over {family} candidates" if family > 1 and multiplicity != "none" else ""
    at = f"(one-sided level {ni.level:.4g}{adjusted})"
    if test.n < 2:
        return f"only {test.n} items were answered by both variants"
    if status == "pass":
        why = f"non-inferior: lower bound {ni.bound:+.4f} > -margin {-margin:.4f} {at}"
        return f"better: lower bound {superior.bound:+.4f} > 0; {why}" if better else why
    if status == "fail":
        return (
            f"regression: worse than the baseline (upper bound {worse.bound:+.4f} < 0) and non-inferiority not "
            f"shown (lower bound {ni.bound:+.4f} < -margin {-margin:.4f}) {at}"
        )
    return (
        f"inconclusive: one-sided bounds [{ni.bound:+.4f}, {worse.bound:+.4f}] span both 0 and -margin {at}; "
        f"p = {ni.p_value:.3g} for non-inferiority"
    )
