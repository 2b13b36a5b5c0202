"""Statistics against scipy and hand-computed values, and the gate's error rates by seeded simulation."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats as sps

from harness.analysis import MetricInfo, analyze_records
from harness.config import AnalysisConfig, GateConfig
from harness.decision import decide, family_levels
from harness.frontier import Point, pareto_front, recommend
from harness.records import Record
from harness.stats import (
    Resampler,
    bootstrap_means,
    minimum_detectable_difference,
    percentile_interval,
    wilson_interval,
)
from harness.summary import VariantSummary
from tests.conftest import REPO


def test_wilson_interval_matches_published_values() -> None:
    low, high = wilson_interval(8, 10, 0.95)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    low, high = wilson_interval(0, 20, 0.95)
    assert low == 0.0 and high == pytest.approx(0.1611, abs=1e-4)


class FixedWeights:
    """Explicit resample weights, for results computed by hand."""

    def __init__(self, weights: np.ndarray) -> None:
        self.weights = weights

    def totals(self, columns: np.ndarray) -> np.ndarray:
        return self.weights @ columns


def test_resample_weights_are_bootstrap_counts_drawn_in_blocks() -> None:
    resampler = Resampler(50, 300, seed=3, block_bytes=8 * 50 * 7)
    blocks = list(resampler.blocks())
    assert len(blocks) == 43 and blocks[0].shape == (7, 50)
    weights = np.vstack(blocks)
    assert weights.shape == (300, 50)
    assert np.all(weights.sum(axis=1) == 50)
    assert weights.mean() == pytest.approx(1.0)
    columns = np.arange(100, dtype=float).reshape(50, 2)
    assert resampler.totals(columns) == pytest.approx(weights @ columns)
    assert np.array_equal(np.vstack(list(resampler.blocks())), weights), "kept: the same resamples again"
    large = Resampler(10_000, 2_000, seed=3)
    assert large._kept is None, "80 MB of weights are drawn block by block, never held"
    fresh = Resampler(50, 300, seed=3, block_bytes=8 * 50 * 7)
    assert np.array_equal(np.vstack(list(fresh._draw())), weights), "kept weights are the seed's draws"


def test_bootstrap_ci_of_a_mean_agrees_with_the_t_interval() -> None:
    rng = np.random.default_rng(7)
    values = rng.normal(0.6, 0.2, size=400)
    draws = bootstrap_means(Resampler(400, 4000, seed=11), values[None, :], np.ones((1, 400)))
    low, high = percentile_interval(draws, 0.95)
    t_low, t_high = sps.t.interval(0.95, df=399, loc=values.mean(), scale=sps.sem(values))
    assert low[0] == pytest.approx(t_low, abs=0.004)
    assert high[0] == pytest.approx(t_high, abs=0.004)


def test_cluster_bootstrap_uses_item_means() -> None:
    sums = np.array([[2.0, 0.0, 3.0]])
    counts = np.array([[2.0, 1.0, 3.0]])
    weights = FixedWeights(np.array([[1, 1, 1], [3, 0, 0]], dtype=np.float32))
    draws = bootstrap_means(weights, sums, counts)
    assert draws[:, 0] == pytest.approx([5 / 6, 1.0])


def test_paired_comparison_excludes_errored_items() -> None:
    baseline = np.array([0.5, 0.6, 0.7, 0.8, 0.9])
    candidate = np.array([0.4, 0.6, 0.5, math.nan, 0.9])
    result = decide(baseline, {"cand": candidate}, kind="continuous").candidates["cand"]
    assert result.n_pairs == 4 and result.n_excluded == 1
    assert result.mean_diff == pytest.approx((-0.1 + 0 - 0.2 + 0) / 4)
    assert result.ci_low <= result.mean_diff <= result.ci_high


def test_minimum_detectable_difference_formula() -> None:
    expected = (sps.norm.ppf(0.95) + sps.norm.ppf(0.8)) * 0.2 / math.sqrt(100)
    assert minimum_detectable_difference(0.2, 100, 0.95) == pytest.approx(expected)
    assert minimum_detectable_difference(0.2, 1, 0.95) == math.inf


def test_pareto_front_and_recommendation() -> None:
    points = [Point("big", 1.0, 0.90), Point("mid", 0.2, 0.88), Point("bad", 0.5, 0.70), Point("free", 0.0, 0.5)]
    assert pareto_front(points) == ["free", "mid", "big"]
    rec = recommend(points, "big", acceptable={"mid"})
    assert rec is not None and rec.variant == "mid"
    assert rec.savings_pct == pytest.approx(80.0)
    assert rec.savings_per_1000_usd == pytest.approx(800.0)
    assert recommend(points, "big", acceptable=set()).variant == "big"  # type: ignore[union-attr]


def _records(name: str, values: np.ndarray) -> list[Record]:
    """Copies of one validated record: the simulations below build hundreds of thousands, and validating
    each was 40% of their time."""
    one = Record(
        variant=name, item_id="0", model="m", prompt="p", prompt_hash="h", output=f"an answer of {name}", scores={}
    )
    return [one.model_copy(update={"item_id": str(i), "scores": {"q": float(v)}}) for i, v in enumerate(values)]


def test_column_percentiles_equal_numpys_nanpercentile() -> None:
    from harness.stats import column_percentiles

    draws = np.random.default_rng(3).normal(size=(997, 5))
    draws[[4, 500], 1] = np.nan  # a resample with no scored item
    draws[:, 3] = np.nan  # a variant with none at all
    percents = [2.5, 97.5, 5.0, 95.0]
    with pytest.warns(RuntimeWarning):
        expected = np.nanpercentile(draws, percents, axis=0)
    assert np.array_equal(column_percentiles(draws, percents), expected, equal_nan=True)
    clean = draws[:, [0, 2, 4]]
    assert np.array_equal(column_percentiles(clean, percents), np.nanpercentile(clean, percents, axis=0))


def _summary(name: str, cost: float, n: int) -> VariantSummary:
    return VariantSummary(variant=name, model="m", prompt="p", n_items=n, cost_per_item_usd=cost, quality={"q": 0.0})


def _gate_status(base: np.ndarray, cand: np.ndarray, kind: str, margin: float) -> str:
    records = _records("base", base) + _records("cand", cand)
    summaries = [_summary("base", 1.0, len(base)), _summary("cand", 0.1, len(cand))]
    analysis = analyze_records(
        summaries,
        records,
        [MetricInfo("q", kind)],
        "base",
        GateConfig(metric="q", margin=margin),
        AnalysisConfig(resamples=1000, seed=0),
    )
    return analysis.verdicts["cand"].status


@pytest.mark.slow
def test_gate_false_fail_rate_and_power_by_simulation() -> None:
    """Identical variants fail at most alpha of the time; a regression of twice the margin is caught."""
    rng = np.random.default_rng(2024)
    n_items, margin, runs = 300, 0.05, 120
    same_fail = caught = 0
    for _ in range(runs):
        difficulty = rng.beta(2, 2, size=n_items)
        base = np.clip(difficulty + rng.normal(0, 0.15, n_items), 0, 1)
        same = np.clip(difficulty + rng.normal(0, 0.15, n_items), 0, 1)
        worse = np.clip(difficulty - 2 * margin + rng.normal(0, 0.15, n_items), 0, 1)
        same_fail += _gate_status(base, same, "continuous", margin) == "fail"
        caught += _gate_status(base, worse, "continuous", margin) == "fail"
    false_fail_rate, power = same_fail / runs, caught / runs
    assert false_fail_rate <= 0.05 + 0.02
    assert power >= 0.9


@pytest.mark.slow
def test_gate_on_pass_fail_scores_by_simulation() -> None:
    rng = np.random.default_rng(99)
    n_items, margin, runs = 1000, 0.05, 60
    same_fail = caught = 0
    for _ in range(runs):
        p_item = rng.beta(4, 2, size=n_items)
        base = (rng.random(n_items) < p_item).astype(float)
        same = (rng.random(n_items) < p_item).astype(float)
        worse = (rng.random(n_items) < np.clip(p_item - 2 * margin, 0, 1)).astype(float)
        same_fail += _gate_status(base, same, "binary", margin) == "fail"
        caught += _gate_status(base, worse, "binary", margin) == "fail"
    assert same_fail / runs <= 0.05 + 0.03
    assert caught / runs >= 0.8


def _analysis(
    variants: dict[str, np.ndarray], kind: str, margin: float, records: list[Record] | None = None, **gate: object
):
    if records is None:
        records = [r for name, values in variants.items() for r in _records(name, values)]
    summaries = [_summary(name, 1.0 if name == "base" else 0.1, len(v)) for name, v in variants.items()]
    return analyze_records(
        summaries,
        records,
        [MetricInfo("q", kind)],
        "base",
        GateConfig(metric="q", margin=margin, **gate),
        AnalysisConfig(resamples=1000, seed=0),
    )


def test_zero_of_forty_both_ways_proves_nothing() -> None:
    """0/40 against 0/40: no discordant pair, so the bound is the exact one for 0 events in 40, not [0, 0]."""
    analysis = _analysis({"base": np.zeros(40), "cand": np.zeros(40)}, "binary", 0.02, confidence=0.95)
    paired = analysis.paired["q"]["cand"]
    bound = 1 - 0.05 ** (1 / 40)  # one-sided Clopper-Pearson upper bound for 0 of 40 = 0.0722
    assert paired.lower_one_sided == pytest.approx(-bound, rel=1e-12)
    assert paired.upper_one_sided == pytest.approx(bound, rel=1e-12)
    assert paired.ci_low == pytest.approx(-(1 - 0.025 ** (1 / 40)), rel=1e-12)
    assert paired.mdd == pytest.approx(bound, rel=1e-12)
    assert analysis.verdicts["cand"].status == "undecided"
    assert any("eval too small" in w for w in analysis.warnings)
    assert any("cannot tell the variants apart" in w for w in analysis.warnings)


def test_no_item_worse_still_bounds_the_loss_by_n() -> None:
    """Two gains and no loss in 40: the bootstrap never goes below 0, but 40 items bound a loss only to 7.2%."""
    cand = np.zeros(40)
    cand[:2] = 1.0
    analysis = _analysis({"base": np.zeros(40), "cand": cand}, "binary", 0.02)
    paired = analysis.paired["q"]["cand"]
    assert paired.lower_one_sided == pytest.approx(2 / 40 - (1 - 0.05 ** (1 / 40)), rel=1e-12)
    assert analysis.verdicts["cand"].status == "undecided"
    # 150 items resolve a 2% margin: (1 - 0.02)^150 = 0.048 < 0.05
    many = np.zeros(150)
    many[:2] = 1.0
    assert _analysis({"base": np.zeros(150), "cand": many}, "binary", 0.02).verdicts["cand"].status == "pass"


def test_a_metric_at_its_ceiling_for_every_variant_never_passes() -> None:
    analysis = _analysis({"base": np.ones(500), "cand": np.ones(500)}, "continuous", 0.02)
    assert analysis.verdicts["cand"].status == "undecided"
    assert "does not discriminate" in analysis.verdicts["cand"].reason
    assert any("q is 1 on every item for every variant" in w for w in analysis.warnings)


def test_holm_by_hand() -> None:
    def rejected(p_values: dict[str, float]) -> set[str]:
        levels, adjusted = family_levels(p_values, 0.05, "holm")
        shown = {n for n, p in p_values.items() if p < levels[n]}
        assert shown == {n for n, p in adjusted.items() if p < 0.05}, "levels and adjusted p-values agree"
        return shown

    # alpha 0.05 over 4: 0.010 < 0.0125, 0.015 < 0.0167, 0.020 < 0.025, 0.030 < 0.05: all four
    assert rejected({"a": 0.015, "b": 0.010, "c": 0.030, "d": 0.020}) == {"a", "b", "c", "d"}
    # 0.010 < 0.0125, then 0.020 > 0.0167 stops: 0.001 more than the Bonferroni level is enough to stop
    assert rejected({"a": 0.010, "b": 0.020, "c": 0.030, "d": 0.040}) == {"a"}
    assert rejected({"a": 0.2}) == set()
    levels, _ = family_levels({"a": 0.010, "b": 0.020, "c": 0.030, "d": 0.040}, 0.05, "holm")
    assert levels == {"a": 0.0125, "b": 0.05 / 3, "c": 0.05 / 3, "d": 0.05 / 3}, "after the stop: its level"


@pytest.mark.slow
def test_five_identical_candidates_rarely_any_fails_under_holm() -> None:
    """The family-wise error: with five candidates identical to the baseline, the chance that any of them
    fails is at most alpha under Holm, and well above it without a correction."""
    rng = np.random.default_rng(5)
    runs, n_items = 200, 200
    any_fail = {"holm": 0, "none": 0}
    for _ in range(runs):
        difficulty = rng.beta(2, 2, size=n_items)
        variants = {
            name: np.clip(difficulty + rng.normal(0, 0.15, n_items), 0, 1)
            for name in ["base", "c1", "c2", "c3", "c4", "c5"]
        }
        records = [r for name, values in variants.items() for r in _records(name, values)]
        for method in any_fail:
            analysis = _analysis(variants, "continuous", 0.05, records=records, multiplicity=method)
            any_fail[method] += any(analysis.verdicts[f"c{k}"].status == "fail" for k in range(1, 6))
    assert any_fail["holm"] / runs <= 0.05 + 0.02
    assert any_fail["none"] / runs > any_fail["holm"] / runs


def test_an_undecided_verdict_says_how_many_items_and_dollars_the_decision_needs() -> None:
    """0/40 both ways at margin 0.02: (1 - 0.02)^n < 0.05 first at n = 149, so 109 more items; at $0.01 per
    item for the candidate and $0.03 for the baseline (this run's records), $4.36."""
    from harness.stats import items_for_margin

    assert items_for_margin(40, 0.0722, 0.02, 0.95, 1.0, identical=True) == 149
    assert items_for_margin(100, 0.04, 0.02, 0.95, 1.0, identical=False) == 400, "MDD shrinks as 1/sqrt(n)"
    assert items_for_margin(100, 0.01, 0.02, 0.95, 1.0, identical=False) == 25, "a pilot can show fewer suffice"
    records = []
    for name, cost in (("base", 0.03), ("cand", 0.01)):
        for r in _records(name, np.zeros(40)):
            records.append(r.model_copy(update={"cost_usd": cost}))
    summaries = [_summary("base", 0.03, 40), _summary("cand", 0.01, 40)]
    analysis = analyze_records(
        summaries,
        records,
        [MetricInfo("q", "binary")],
        "base",
        GateConfig(metric="q", margin=0.02),
        AnalysisConfig(resamples=200, seed=0),
    )
    reason = analysis.verdicts["cand"].reason
    assert "add about 109 items (to 149), about $4.36 for both variants" in reason, reason


def test_normal_quantiles_equal_scipys() -> None:
    from scipy.stats import norm

    from harness.stats import NORMAL

    for p in (0.5, 0.8, 0.9, 0.95, 0.975, 0.99, 0.995, 0.999, 1e-6, 1 - 1e-9):
        assert NORMAL.inv_cdf(p) == pytest.approx(float(norm.ppf(p)), rel=1e-12, abs=1e-12)


def test_a_run_imports_scipy_stats_only_for_the_tests_that_need_it() -> None:
    """scipy.stats costs about 2 s and 75 MB at import: the API (and so `run` and the tracking process)
    does not import it, nor does the scorer agreement every run computes; the Wilcoxon test imports it
    when it runs."""
    code = (
        "import sys, harness.api, harness.workflow\n"
        "from harness.analysis import scorer_agreement\n"
        "from harness.records import Record\n"
        "rows = [Record(variant='v', item_id=str(i), model='m', prompt='p', prompt_hash='h', output='a b' * i,\n"
        "               scores={'q': float(i % 3), 'r': float(i % 2)}) for i in range(20)]\n"
        "agreement = scorer_agreement(rows, ['q', 'r'])\n"
        "print(len(agreement), 'scipy.stats' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert done.stdout.split() == ["3", "False"]  # q~r, q~words, r~words


def test_spearman_equals_scipys_with_ties_and_constants() -> None:
    from scipy.stats import rankdata, spearmanr

    from harness.stats import average_ranks, spearman

    rng = np.random.default_rng(7)
    for n in (3, 4, 10, 57, 500):
        for levels in (2, 3, 5, 1000):  # few levels: ties everywhere (pass/fail, 1-5 judges)
            a = rng.integers(0, levels, n).astype(float)
            b = a * 0.5 + rng.integers(0, levels, n)
            assert average_ranks(a) == pytest.approx(rankdata(a))
            if len(set(a)) > 1 and len(set(b)) > 1:
                assert spearman(a, b) == pytest.approx(float(spearmanr(a, b).statistic), abs=1e-12)
    assert math.isnan(spearman(np.ones(5), np.arange(5.0)))
    assert spearman(np.arange(5.0), -np.arange(5.0)) == pytest.approx(-1.0)
