"""Routers and cascades simulated from stored records: what would they cost, and what would they score?

Every variant already answered every item, so a policy's outcome on an item is a lookup, not a call:
- cascade: try variants in order, paying for each call, and accept the first answer that passes a check
  computed from what a deployed router could see (the output, another variant's output, a judge score);
  the check's own cost (the other variant's call, the judge call) is paid too (FrugalGPT, Chen et al.,
  arXiv:2305.05176);
- oracle: per item, the cheapest variant that reaches the target quality; no real router can know this,
  so it bounds what any router could save;
- random: send a share p of items to the strong variant; the straight line every router must beat.
RouteLLM's metrics (Ong et al., arXiv:2406.18665, section 5.1) put them on one scale: PGR, the part of the
weak-to-strong quality gap a policy recovers; APGR, PGR averaged over the share of calls sent to the strong
variant; CPT(x%), the smallest share of calls to the strong variant that recovers x% of the gap.
Whether a policy may replace the strong variant is a verdict like any other: the decision engine judges
its per-item quality against the strong variant's, at the gate's margin, Holm over the policies.
Pure: records in, numbers out.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace

import numpy as np

from harness.config import CheckConfig, ConfigError, PolicyConfig, RoutingConfig
from harness.decision import CandidateDecision, decide
from harness.records import Record
from harness.stats import Resampler, bootstrap_means, percentile_interval


@dataclass(frozen=True)
class Table:
    """Per-item quality and cost of every variant, over the items all of them answered."""

    items: list[str]
    quality: dict[str, np.ndarray]
    """Errored or unscored answers count 0: a router must answer every item."""
    cost: dict[str, np.ndarray]
    eval_cost: dict[str, np.ndarray]
    outputs: dict[str, list[str | None]]
    scores: dict[str, dict[str, np.ndarray]]
    """Scorer -> variant -> per-item value (NaN where missing): what a cascade's score check reads."""


@dataclass(frozen=True)
class PolicyResult:
    """One policy's simulated outcome."""

    name: str
    kind: str
    cost_per_item: float
    cost_ci: tuple[float, float]
    quality: float
    quality_ci: tuple[float, float]
    strong_share: float
    """Share of items for which the strong variant was called."""
    pgr: float
    """Performance gap recovered: (quality - weak) / (strong - weak)."""
    apgr: float = math.nan
    cpt50: float = math.nan
    cpt80: float = math.nan
    answered_by: dict[str, int] | None = None
    """How many items each variant's answer was used for."""
    note: str = ""
    """How a chosen threshold was fitted (cross-fitting), and what choosing it in-sample would claim."""
    in_sample: tuple[float, float] | None = None
    """A cross-fitted policy's (quality, strong share) had its threshold been chosen and scored on the same
    items: what the optimistic report would have said."""
    verdict: CandidateDecision | None = None
    """May it replace the strong variant: the engine's verdict on its per-item quality against the strong
    variant's (non-inferior within the margin, Holm over the policies)."""


def build_table(records: list[Record], metric: str, variants: list[str]) -> Table:
    """Per-item arrays (first sample of each item) for the variants, over the items all of them have."""
    by_variant: dict[str, dict[str, Record]] = {v: {} for v in variants}
    for r in records:
        if r.variant in by_variant and r.sample == 0:
            by_variant[r.variant][r.item_id] = r
    items = [i for i in by_variant[variants[0]] if all(i in by_variant[v] for v in variants)]

    def value(r: Record) -> float:
        score = r.scores.get(metric)
        return 0.0 if r.error is not None or score is None or math.isnan(score) else float(score)

    rows = {v: [by_variant[v][i] for i in items] for v in variants}
    names = list(dict.fromkeys(k for r in records for k in r.scores))

    def raw(r: Record, name: str) -> float:
        value = r.scores.get(name)
        return math.nan if r.error is not None or value is None else float(value)

    return Table(
        items=items,
        quality={v: np.array([value(r) for r in rows[v]]) for v in variants},
        cost={v: np.array([r.cost_usd for r in rows[v]]) for v in variants},
        eval_cost={v: np.array([r.eval_cost_usd for r in rows[v]]) for v in variants},
        outputs={v: [None if r.error else r.output for r in rows[v]] for v in variants},
        scores={n: {v: np.array([raw(r, n) for r in rows[v]]) for v in variants} for n in names},
    )


def _passes_unscored(check: CheckConfig, table: Table, variant: str, i: int) -> bool:
    """Every condition of the check but the score's: none of them moves with a threshold."""
    output = table.outputs[variant][i]
    if output is None:
        return False
    words = len(output.split())
    if check.min_words is not None and words < check.min_words:
        return False
    if check.max_words is not None and words > check.max_words:
        return False
    if check.regex is not None and re.search(check.regex, output) is None:
        return False
    if check.json_valid and not _is_json(output):
        return False
    if check.agree_with is not None:
        other = table.outputs[check.agree_with][i]
        if other is None or _normalise(other) != _normalise(output):
            return False
    return True


@dataclass(frozen=True)
class Ladder:
    """A cascade's outcome on every item at every rung, with the score threshold left open.

    Which rung answers an item is the only thing a threshold changes: what stopping at each rung costs,
    and what its answer scores, are fixed. Laid out once, a threshold is a few array operations, and
    `choose_threshold` can try every distinct score (one per item) without walking the items again for
    each: that walk grew with the square of the items, in Python (`benchmarks/bench_routing.py` measures both).
    """

    chain: list[str]
    quality: np.ndarray
    """rungs x items: the quality of the rung's answer."""
    cost: np.ndarray
    """rungs x items: everything paid when the cascade stops at the rung (the calls tried, the checks)."""
    unscored: np.ndarray
    """(rungs - 1) x items: the check's conditions other than the score hold (the last rung always answers)."""
    scores: np.ndarray | None
    """(rungs - 1) x items: the check's score of each answer (NaN where none), or None without a score."""

    def answering(self, threshold: float) -> np.ndarray:
        """Per item, the rung whose answer is taken at this score threshold."""
        ok = self.unscored
        if self.scores is not None:
            with np.errstate(invalid="ignore"):
                ok = ok & (self.scores >= threshold)
        last = len(self.chain) - 1
        return np.where(ok.any(axis=0), ok.argmax(axis=0), last) if last else np.zeros(ok.shape[1], dtype=int)

    def outcome(self, threshold: float, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-item quality, cost and answering rung at the threshold (on `rows` only, when given)."""
        ladder = self if rows is None else self.take(rows)
        rung = ladder.answering(threshold)
        items = np.arange(rung.size)
        return ladder.quality[rung, items], ladder.cost[rung, items], rung

    def take(self, rows: np.ndarray) -> Ladder:
        """The ladder on some of its items (a fold)."""
        return Ladder(
            self.chain,
            self.quality[:, rows],
            self.cost[:, rows],
            self.unscored[:, rows],
            None if self.scores is None else self.scores[:, rows],
        )


def ladder(table: Table, chain: list[str], check: CheckConfig) -> Ladder:
    """Lay the cascade out: at each rung its call is paid, and below the last rung the check's too (the
    other variant's call once, the judge's call for each answer judged)."""
    n, last = len(table.items), len(chain) - 1
    paid: set[str] = set()
    spent = np.zeros(n)
    costs = []
    for position, variant in enumerate(chain):
        spent = spent + table.cost[variant]
        paid.add(variant)
        if position < last:
            if check.agree_with is not None and check.agree_with not in paid:
                spent = spent + table.cost[check.agree_with]
                paid.add(check.agree_with)
            if check.score is not None:
                spent = spent + table.eval_cost[variant]
        costs.append(spent)
    unscored = np.array(
        [[_passes_unscored(check, table, v, i) for i in range(n)] for v in chain[:-1]], dtype=bool
    ).reshape(last, n)
    scores = None
    if check.score is not None:
        missing = np.full(n, np.nan)
        scores = np.array([table.scores.get(check.score, {}).get(v, missing) for v in chain[:-1]]).reshape(last, n)
    return Ladder(list(chain), np.array([table.quality[v] for v in chain]), np.array(costs), unscored, scores)


def cascade(table: Table, chain: list[str], check: CheckConfig) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per-item quality and cost of trying `chain` in order, and which variant answered each item."""
    threshold = math.inf if check.min_score == "auto" else check.min_score  # `auto` is resolved before use
    quality, cost, rung = ladder(table, chain, check).outcome(threshold)
    return quality, cost, [chain[r] for r in rung]


FOLDS = 2


def cross_fitted(
    table: Table, chain: list[str], check: CheckConfig, weak: str, strong: str, seed: int
) -> tuple[np.ndarray, np.ndarray, list[str], str, tuple[float, float]]:
    """A cascade whose `min_score` is chosen, reported without optimism: the items are split in two
    (seeded), each half is answered with the threshold chosen on the other half, and the halves are pooled
    (cross-fitting: Chernozhukov et al., Econometrics Journal 2018). Choosing and scoring on the same
    items picks the threshold that happens to fit them, and claims a quality new items will not see; the
    note gives both figures, so the optimism is visible."""
    n = len(table.items)
    folds = np.random.default_rng(seed).permutation(n) % FOLDS
    steps = ladder(table, chain, check)
    quality, cost = np.zeros(n), np.zeros(n)
    rungs = np.zeros(n, dtype=int)
    chosen = []
    for fold in range(FOLDS):
        fit, held = np.nonzero(folds != fold)[0], np.nonzero(folds == fold)[0]
        threshold = choose_threshold(steps.take(fit), table.quality[weak][fit], table.quality[strong][fit], check)
        chosen.append(threshold)
        quality[held], cost[held], rungs[held] = steps.outcome(threshold, held)
    answered = [chain[r] for r in rungs]
    everywhere = choose_threshold(steps, table.quality[weak], table.quality[strong], check)
    in_sample, _, routed = steps.outcome(everywhere)
    in_share = [chain[r] for r in routed].count(chain[-1]) / max(n, 1)
    note = (
        f"min_score chosen to recover {check.target_pgr:.0%} of the gap at the least cost on one half of the items "
        f"and reported on the other ({FOLDS}-fold cross-fitting, seed {seed}; thresholds "
        f"{', '.join(f'{t:.4g}' for t in chosen)}): quality {quality.mean():.4f} escalating "
        f"{answered.count(chain[-1]) / max(n, 1):.0%}; chosen and scored on the same items it would claim "
        f"{in_sample.mean():.4f} escalating {in_share:.0%}"
    )
    return quality, cost, answered, note, (float(in_sample.mean()), in_share)


def choose_threshold(steps: Ladder, weak: np.ndarray, strong: np.ndarray, check: CheckConfig) -> float:
    """The cheapest `min_score` whose cascade recovers `check.target_pgr` of the weak-to-strong gap on
    these items (every distinct score of the cheap variants is tried); the best-recovering one when none
    does, and the cheapest of all when the weak variant is already as good. `weak` and `strong` are the
    two variants' per-item quality on the same items."""
    seen = steps.scores.ravel() if steps.scores is not None else np.array([])
    candidates = [-math.inf, *np.unique(seen[np.isfinite(seen)]).tolist(), math.inf]
    gap = float(strong.mean() - weak.mean())
    best: tuple[float, float, float] | None = None  # (not reaching the target, cost, threshold) to minimise
    for threshold in candidates:
        q, c, _ = steps.outcome(threshold)
        pgr = (q.mean() - weak.mean()) / gap if gap > 0 else 1.0
        key = (max(check.target_pgr - pgr, 0.0), float(c.mean()), threshold)
        if best is None or key < best:
            best = key
    return best[2] if best is not None else math.inf


def oracle(table: Table, strong: str, target: float | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per item, the cheapest variant reaching the target (default: the strong variant's score there);
    when none does, the best-scoring one (cheapest among ties)."""
    variants = list(table.quality)
    n = len(table.items)
    quality, cost, answered = np.zeros(n), np.zeros(n), []
    for i in range(n):
        goal = table.quality[strong][i] if target is None else target
        ok = [v for v in variants if table.quality[v][i] >= goal]
        pool = ok or [v for v in variants if table.quality[v][i] == max(table.quality[u][i] for u in variants)]
        pick = min(pool, key=lambda v: (table.cost[v][i], -table.quality[v][i]))
        quality[i], cost[i] = table.quality[pick][i], table.cost[pick][i]
        answered.append(pick)
    return quality, cost, answered


def random_mix(table: Table, weak: str, strong: str, p: float) -> tuple[np.ndarray, np.ndarray]:
    """The expected per-item quality and cost of sending each item to the strong variant with probability p."""
    quality = (1 - p) * table.quality[weak] + p * table.quality[strong]
    cost = (1 - p) * table.cost[weak] + p * table.cost[strong]
    return quality, cost


def gap_curve(weak_q: np.ndarray, strong_q: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Share of items sent to the strong variant (0..1) and PGR, sending items to it in `order`."""
    gap = float(strong_q.sum() - weak_q.sum())
    gains = np.concatenate([[0.0], np.cumsum((strong_q - weak_q)[order])])
    shares = np.arange(len(order) + 1) / max(len(order), 1)
    return shares, (gains / gap if gap > 0 else np.full_like(gains, math.nan))


def apgr_and_cpt(shares: np.ndarray, pgr: np.ndarray) -> tuple[float, float, float]:
    """Area under PGR over the strong share (trapezoids), and the smallest shares recovering 50% and 80%
    (interpolated between the curve's points)."""
    if np.isnan(pgr).all():
        return math.nan, math.nan, math.nan
    area = float(np.sum((pgr[1:] + pgr[:-1]) / 2 * np.diff(shares)))

    def cpt(level: float) -> float:
        # Linear between points: mixing the two neighbouring routings at random reaches the levels between.
        reached = np.nonzero(pgr >= level - 1e-12)[0]
        if not reached.size:
            return math.nan
        j = int(reached[0])
        if j == 0:
            return float(shares[0])
        low, high = pgr[j - 1], pgr[j]
        return float(shares[j - 1] + (level - low) / (high - low) * (shares[j] - shares[j - 1]))

    return area, cpt(0.5), cpt(0.8)


def simulate(
    records: list[Record],
    metric: str,
    weak: str,
    strong: str,
    policies: list[PolicyConfig],
    resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    margin: float = 0.0,
    binary: bool = False,
) -> list[PolicyResult]:
    """Every policy's cost and quality with bootstrap CIs over items, PGR, APGR/CPT where defined, and its
    verdict against the strong variant at `margin` (`binary`: the metric is pass/fail)."""
    variants = list(dict.fromkeys([weak, strong, *_variants_named(policies)]))
    variants += [v for v in dict.fromkeys(r.variant for r in records) if v not in variants]
    table = build_table(records, metric, variants)
    n = len(table.items)
    if n == 0:
        return []
    weak_mean, strong_mean = table.quality[weak].mean(), table.quality[strong].mean()
    resampler = Resampler(n, resamples, seed)
    results = []
    per_item: dict[str, np.ndarray] = {}
    for policy in policies:
        curve: tuple[np.ndarray, np.ndarray] | None = None
        answered: list[str] = []
        note, in_sample = "", None
        if policy.kind == "random":
            p = 0.5 if policy.p is None else policy.p
            quality, cost = random_mix(table, weak, strong, p)
            share = p
            curve = (np.array([0.0, 1.0]), np.array([0.0, 1.0]))
        elif policy.kind == "oracle":
            quality, cost, answered = oracle(table, strong, policy.target)
            share = answered.count(strong) / n
            gains = table.quality[strong] - table.quality[weak]
            curve = gap_curve(table.quality[weak], table.quality[strong], np.argsort(-gains, kind="stable"))
        else:
            chain = policy.chain or [weak, strong]
            check = policy.check or CheckConfig()
            if check.min_score == "auto":
                quality, cost, answered, note, in_sample = cross_fitted(table, chain, check, weak, strong, seed)
            else:
                quality, cost, answered = cascade(table, chain, check)
            share = answered.count(chain[-1]) / n
            if policy.check is not None and policy.check.score is not None and len(chain) == 2:
                # Sweeping min_score: the least confident cheap answers escalate first.
                confidence_order = np.argsort(np.nan_to_num(table.scores[policy.check.score][chain[0]], nan=-np.inf))
                curve = gap_curve(table.quality[chain[0]], table.quality[chain[1]], confidence_order)
        apgr, cpt50, cpt80 = apgr_and_cpt(*curve) if curve is not None else (math.nan,) * 3
        per_item[policy.label] = quality
        draws = bootstrap_means(resampler, np.vstack([cost, quality]), np.ones((2, n)))
        low, high = percentile_interval(draws, confidence)
        gap = strong_mean - weak_mean
        results.append(
            PolicyResult(
                name=policy.label,
                kind=policy.kind,
                cost_per_item=float(cost.mean()),
                cost_ci=(float(low[0]), float(high[0])),
                quality=float(quality.mean()),
                quality_ci=(float(low[1]), float(high[1])),
                strong_share=share,
                pgr=float((quality.mean() - weak_mean) / gap) if gap > 0 else math.nan,
                apgr=apgr,
                cpt50=cpt50,
                cpt80=cpt80,
                answered_by={v: answered.count(v) for v in dict.fromkeys(answered)} if answered else None,
                note=note,
                in_sample=in_sample,
            )
        )
    kind = "binary" if binary else "continuous"
    verdicts = decide(table.quality[strong], per_item, kind=kind, margin=margin, confidence=confidence).candidates
    return [replace(r, verdict=verdicts.get(r.name)) for r in results]


def _variants_named(policies: list[PolicyConfig]) -> list[str]:
    names: list[str] = []
    for p in policies:
        names += p.chain or []
        if p.check is not None and p.check.agree_with:
            names.append(p.check.agree_with)
    return names


def _normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", "", text.lower()).split())


def _is_json(text: str) -> bool:
    body = text.strip()
    fenced = re.match(r"^```(?:json)?\s*(.*?)\s*```$", body, re.DOTALL)
    try:
        json.loads(fenced.group(1) if fenced else body)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Routing:
    """A resolved routing question: the metric, the weak and strong variants, and the policies."""

    metric: str
    weak: str
    strong: str
    policies: list[PolicyConfig]


DEFAULT_POLICIES = [PolicyConfig(kind="oracle"), PolicyConfig(kind="random", p=0.5)]


def settle_routing(
    config: RoutingConfig | None,
    ran: list[tuple[str, float, float]],
    baseline: str | None,
    metric: str,
    scorers: list[str],
    source: str,
) -> Routing:
    """Fill the defaults and check every name against the run; raises ConfigError naming the field.

    `ran` lists the variants that ran as (name, cost per item, quality on `metric`).
    """
    config = config or RoutingConfig()
    names = [name for name, _, _ in ran]
    metric = config.metric or metric
    if metric not in scorers:
        raise ConfigError(
            source, "routing.metric", f"'{metric}' is not a scorer of the run", f"use one of: {', '.join(scorers)}"
        )
    if len(ran) < 2:
        raise ConfigError(source, "routing", "routing needs at least two variants that ran", "run more variants")
    weak = config.weak or min(ran, key=lambda r: (r[1], r[2]))[0]
    strong = config.strong or (baseline if baseline in names else max(ran, key=lambda r: (r[2], -r[1]))[0])
    policies = list(config.policies or DEFAULT_POLICIES)
    resolved = RoutingConfig(metric=metric, weak=weak, strong=strong, policies=policies)
    check_routing(resolved, names, scorers, source, "a variant that ran")
    for i, policy in enumerate(policies):
        if policy.kind == "random" and policy.p is None:
            policies[i] = policy.model_copy(update={"p": 0.5})
    if weak == strong:
        raise ConfigError(source, "routing.strong", f"weak and strong are both {weak}", "name two different variants")
    return Routing(metric, weak, strong, list(policies))


def check_routing(
    config: RoutingConfig, names: list[str], scorers: list[str], source: str, what: str = "a variant"
) -> None:
    """The routing config's names against the variants and scorers: the planned ones before any call is
    paid for (preflight), the ones that ran when simulating."""
    if config.metric is not None and config.metric not in scorers:
        raise ConfigError(
            source, "routing.metric", f"'{config.metric}' is not a scorer", f"use one of: {', '.join(scorers)}"
        )
    named = [("routing.weak", config.weak), ("routing.strong", config.strong), *_named(list(config.policies))]
    for field, name in named:
        if name is not None and name not in names:
            raise ConfigError(source, field, f"'{name}' is not {what}", f"use one of: {', '.join(names)}")
    for i, policy in enumerate(config.policies):
        if policy.kind == "cascade" and policy.check is None:
            raise ConfigError(
                source, f"routing.policies[{i}].check", "a cascade needs a check", "e.g. check: {min_words: 5}"
            )
        score = policy.check.score if policy.check else None
        if policy.check is not None and policy.check.min_score == "auto" and score is None:
            raise ConfigError(
                source,
                f"routing.policies[{i}].check.min_score",
                "min_score: auto chooses a threshold on a score, but the check has none",
                "add check.score: <a reference-free scorer>",
            )
        if score is not None and score not in scorers:
            raise ConfigError(
                source,
                f"routing.policies[{i}].check.score",
                f"'{score}' is not a scorer",
                f"use one of: {', '.join(scorers)}",
            )


def _named(policies: list[PolicyConfig]) -> list[tuple[str, str]]:
    out = []
    for i, p in enumerate(policies):
        out += [(f"routing.policies[{i}].chain", name) for name in p.chain or []]
        if p.check is not None and p.check.agree_with:
            out.append((f"routing.policies[{i}].check.agree_with", p.check.agree_with))
    return out
