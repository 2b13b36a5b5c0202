"""Routing policies on constructed records whose outcomes are worked out by hand below.

Four items, a weak variant `w` ($1 a call), a strong one `s` ($10) and a second cheap one `w2` ($2):

| item | w quality | s quality | w output      | judge score of w | w2 output    |
|------|-----------|-----------|---------------|------------------|--------------|
| i1   | 1.0       | 1.0       | "yes fine"    | 0.9              | "Yes, fine!" |
| i2   | 0.0       | 1.0       | "no"          | 0.2              | "maybe"      |
| i3   | 0.5       | 1.0       | "a b c d e"   | 0.6              | "a b c"      |
| i4   | 0.0       | 1.0       | "x"           | 0.8              | "y"          |

Means: weak 0.375, strong 1.0, so the gap is 0.625. Each judge call on a w answer costs $0.5.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from harness.config import CheckConfig, PolicyConfig
from harness.records import Record
from harness.routing import apgr_and_cpt, simulate
from tests.conftest import base_config, fake_model, write_project
from tests.fake_server import FakeModelServer
from tests.test_cli import harness

ROWS = {
    "i1": (1.0, 1.0, "yes fine", 0.9, "Yes, fine!"),
    "i2": (0.0, 1.0, "no", 0.2, "maybe"),
    "i3": (0.5, 1.0, "a b c d e", 0.6, "a b c"),
    "i4": (0.0, 1.0, "x", 0.8, "y"),
}


def record(variant: str, item: str, quality: float, cost: float, output: str, **extra: float) -> Record:
    return Record(
        variant=variant,
        item_id=item,
        model=variant,
        prompt="p",
        prompt_hash="h",
        output=output,
        cost_usd=cost,
        scores={"q": quality, **extra},
        eval_cost_usd=0.5 if "judge" in extra else 0.0,
    )


RECORDS = [
    r
    for item, (qw, qs, out_w, judge, out_w2) in ROWS.items()
    for r in (
        record("w", item, qw, 1.0, out_w, judge=judge),
        record("s", item, qs, 10.0, "strong answer"),
        record("w2", item, 0.0, 2.0, out_w2),
    )
]


def run(*policies: PolicyConfig):
    return simulate(RECORDS, "q", "w", "s", list(policies), resamples=200)


def test_cascade_on_output_length() -> None:
    # i1 and i3 have >= 2 words and stay with w ($1 each); i2 and i4 escalate and pay both ($11 each).
    (result,) = run(PolicyConfig(kind="cascade", check=CheckConfig(min_words=2)))
    assert result.cost_per_item == pytest.approx((1 + 11 + 1 + 11) / 4)
    assert result.quality == pytest.approx((1 + 1 + 0.5 + 1) / 4)
    assert result.strong_share == 0.5
    assert result.pgr == pytest.approx((0.875 - 0.375) / 0.625)
    assert result.answered_by == {"w": 2, "s": 2}
    assert math.isnan(result.apgr), "a fixed check is one point, not a curve"
    assert result.cost_ci[0] <= result.cost_per_item <= result.cost_ci[1]


def test_cascade_on_a_judge_score_counts_the_judge_and_sweeps_its_threshold() -> None:
    # min_score 0.7: i1 (0.9) and i4 (0.8) accepted; i2, i3 escalate. Every w answer is judged ($0.5).
    (result,) = run(PolicyConfig(kind="cascade", check=CheckConfig(score="judge", min_score=0.7)))
    assert result.cost_per_item == pytest.approx((1.5 + 11.5 + 11.5 + 1.5) / 4)
    assert result.quality == pytest.approx((1 + 1 + 1 + 0) / 4)
    assert result.pgr == pytest.approx((0.75 - 0.375) / 0.625)
    # Least confident first: i2 (gain 1), i3 (0.5), i4 (1), i1 (0) of a total gain of 2.5:
    # PGR 0, .4, .6, 1, 1 at shares 0, .25, .5, .75, 1. Area = .25 * (.2 + .5 + .8 + 1) = .625.
    assert result.apgr == pytest.approx(0.625)
    # CPT interpolates: 50% between (.25, .4) and (.5, .6) is .375; 80% between (.5, .6) and (.75, 1) is .625.
    assert result.cpt50 == pytest.approx(0.375) and result.cpt80 == pytest.approx(0.625)


def test_cascade_on_agreement_pays_for_the_second_opinion() -> None:
    # Only i1's answers agree once normalised; each item pays w2 ($2), the escalated ones s as well.
    (result,) = run(PolicyConfig(kind="cascade", check=CheckConfig(agree_with="w2")))
    assert result.cost_per_item == pytest.approx((3 + 13 + 13 + 13) / 4)
    assert result.quality == pytest.approx(1.0)
    assert result.strong_share == 0.75


def test_oracle_is_the_bound_and_random_the_line() -> None:
    oracle, targeted, random = run(
        PolicyConfig(kind="oracle"), PolicyConfig(kind="oracle", target=0.5), PolicyConfig(kind="random", p=0.5)
    )
    # Oracle: w only where it matches s (i1); s elsewhere.
    assert oracle.cost_per_item == pytest.approx((1 + 10 + 10 + 10) / 4)
    assert oracle.quality == pytest.approx(1.0) and oracle.pgr == pytest.approx(1.0)
    # Best order: gains 1, 1, .5, 0: PGR 0, .4, .8, 1, 1; area .25 * (.2 + .6 + .9 + 1) = .675.
    assert oracle.apgr == pytest.approx(0.675)
    assert oracle.cpt50 == pytest.approx(0.3125) and oracle.cpt80 == pytest.approx(0.5)
    # Target 0.5: w answers i1 and i3.
    assert targeted.cost_per_item == pytest.approx((1 + 10 + 1 + 10) / 4)
    assert targeted.quality == pytest.approx(3.5 / 4)
    assert random.cost_per_item == pytest.approx(5.5)
    assert random.quality == pytest.approx(0.5 * 0.375 + 0.5 * 1.0)
    assert random.pgr == pytest.approx(0.5) and random.apgr == pytest.approx(0.5)
    assert (random.cpt50, random.cpt80) == pytest.approx((0.5, 0.8))


def test_an_errored_answer_fails_the_check_and_scores_zero() -> None:
    broken = [
        r.model_copy(update={"output": None, "error": {"type": "Timeout", "message": "t"}})
        if (r.variant, r.item_id) == ("w", "i1")
        else r
        for r in RECORDS
    ]
    (result,) = simulate(broken, "q", "w", "s", [PolicyConfig(kind="cascade", check=CheckConfig(min_words=2))], 200)
    assert result.answered_by == {"s": 3, "w": 1}
    assert result.cost_per_item == pytest.approx((11 + 11 + 1 + 11) / 4)


def test_apgr_of_a_curve_with_no_gap_is_undefined() -> None:
    import numpy as np

    assert all(math.isnan(v) for v in apgr_and_cpt(np.array([0.0, 1.0]), np.array([math.nan, math.nan])))


@pytest.mark.slow
def test_run_reports_configured_policies_and_route_adds_more_without_calls(
    tmp_path: Path, model_server: FakeModelServer
) -> None:
    import mlflow

    # The weak model answers items a and b right and c wrong; the strong one answers every item right.
    def answer(request: dict) -> str:
        text = request["messages"][-1]["content"]
        right = "cats purr" if "Cats" in text else "dogs bark" if "Dogs" in text else "birds sing"
        return right if request["model"] == "strong" or "Birds" not in text else "no idea at all"

    model_server.answer = answer
    cheap = fake_model(model_server, "weak", price={"input_cost_per_token": 1e-7, "output_cost_per_token": 1e-7})
    strong = fake_model(model_server, "strong", price={"input_cost_per_token": 1e-5, "output_cost_per_token": 1e-5})
    config = base_config(
        [cheap, strong],
        scorers=["exact_match"],
        baseline={"model": "openai/strong", "prompt": "terse"},
        routing={"policies": [{"kind": "cascade", "check": {"max_words": 2}}, {"kind": "oracle"}]},
    )
    path = write_project(tmp_path, config)
    run = harness("run", str(path), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "weak openai/weak:terse, strong openai/strong:terse" in run.stdout
    assert "cascade(max_words=2)" in run.stdout and "oracle" in run.stdout
    calls = len(model_server.requests)
    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    (exp,) = [e for e in client.search_experiments() if e.name == "test-exp"]
    policies = client.search_runs([exp.experiment_id], "tags.`harness.kind` = 'policy'")
    assert sorted(r.info.run_name for r in policies) == ["policy: cascade(max_words=2)", "policy: oracle"]
    cascade_run = next(r for r in policies if "cascade" in r.info.run_name)
    # Items a and b stay with the weak model (2 words); c ("no idea at all") escalates: quality 1.0, 1 of 3 strong.
    assert cascade_run.data.metrics["exact_match/mean"] == pytest.approx(1.0)
    assert cascade_run.data.metrics["strong_share"] == pytest.approx(1 / 3)
    parent = client.search_runs([exp.experiment_id], "tags.`harness.kind` = 'experiment'")[0]
    routed = harness("route", parent.info.run_id, "--policy", "{kind: random, p: 0.25}", cwd=tmp_path)
    assert routed.returncode == 0, routed.stderr
    assert "random(p=0.25)" in routed.stdout
    assert len(model_server.requests) == calls, "routing makes no model call"
    assert (tmp_path / "reports" / parent.info.run_id / "frontier.png").is_file()
    bad = harness(
        "route", parent.info.run_id, "--policy", "{kind: cascade, chain: [nope, openai/strong:terse]}", cwd=tmp_path
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "routing.policies[0].chain: 'nope' is not a variant that ran" in bad.stderr


def test_an_auto_threshold_is_the_cheapest_reaching_the_target() -> None:
    """Escalating w answers judged below t: t=0.6 sends i2 (PGR 0.4), t=0.8 also i3 (0.6), t=0.9 also i4
    (1.0, $9 a item), t=inf everything ($11.5). Target 0.8: 0.9; target 0.5: 0.8, cheaper than 0.9."""
    from harness.routing import build_table, choose_threshold, ladder

    table = build_table(RECORDS, "q", ["w", "s", "w2"])
    check = CheckConfig(score="judge", min_score="auto", target_pgr=0.8)
    steps = ladder(table, ["w", "s"], check)
    assert choose_threshold(steps, table.quality["w"], table.quality["s"], check) == 0.9
    lower = check.model_copy(update={"target_pgr": 0.5})
    assert choose_threshold(steps, table.quality["w"], table.quality["s"], lower) == 0.8


def _cascade_item_by_item(table, chain, check, threshold):  # type: ignore[no-untyped-def]
    """The cascade as the docs define it, one item at a time: pay each variant tried, and below the last
    one the check (the other variant's call once, the judge's call); take the first answer that passes."""
    import re

    from harness.routing import _is_json, _normalise

    def passes(variant: str, i: int) -> bool:
        output = table.outputs[variant][i]
        if output is None:
            return False
        words = len(output.split())
        if (check.min_words is not None and words < check.min_words) or (
            check.max_words is not None and words > check.max_words
        ):
            return False
        if (check.regex is not None and re.search(check.regex, output) is None) or (
            check.json_valid and not _is_json(output)
        ):
            return False
        if check.agree_with is not None:
            other = table.outputs[check.agree_with][i]
            if other is None or _normalise(other) != _normalise(output):
                return False
        if check.score is not None:
            values = table.scores.get(check.score, {}).get(variant)
            return values is not None and bool(values[i] >= threshold)
        return True

    quality, cost, answered = [], [], []
    for i in range(len(table.items)):
        paid: set[str] = set()
        spent = 0.0
        for position, variant in enumerate(chain):
            spent += table.cost[variant][i]
            paid.add(variant)
            last = position == len(chain) - 1
            if not last:
                if check.agree_with is not None and check.agree_with not in paid:
                    spent += table.cost[check.agree_with][i]
                    paid.add(check.agree_with)
                if check.score is not None:
                    spent += table.eval_cost[variant][i]
            if last or passes(variant, i):
                quality.append(table.quality[variant][i])
                cost.append(spent)
                answered.append(variant)
                break
    return quality, cost, answered


@pytest.mark.parametrize("seed", range(6))
def test_a_laid_out_cascade_equals_the_cascade_item_by_item(seed: int) -> None:
    """The ladder (every rung's cost and quality laid out once, a threshold applied as array operations)
    against the definition, item by item: random outputs, errors, scores with gaps, every kind of check,
    chains of two and three variants, thresholds at and between the scores."""
    import numpy as np

    from harness.routing import build_table, ladder

    rng = np.random.default_rng(seed)
    words = ["yes", "no", "Yes,", "fine!", "{}", "[1]", "maybe", "a", "b", "```json\n{}\n```"]
    variants = ["w", "m", "s", "x"]
    records = []
    for i in range(60):
        for v in variants:
            output = " ".join(rng.choice(words, size=int(rng.integers(0, 6))))
            judge = {} if rng.random() < 0.2 else {"judge": float(rng.choice([0.1, 0.5, 0.5, 0.9, 1.0]))}
            rec = record(v, f"i{i}", float(rng.random()), float(rng.integers(1, 5)), output, **judge)
            if rng.random() < 0.1:
                rec = rec.model_copy(update={"error": "boom", "output": ""})
            records.append(rec)
    table = build_table(records, "q", variants)
    checks = [
        CheckConfig(min_words=2),
        CheckConfig(max_words=3, regex="^(yes|Yes)"),
        CheckConfig(json_valid=True),
        CheckConfig(agree_with="x"),
        CheckConfig(agree_with="s", min_words=1),
        CheckConfig(score="judge"),
        CheckConfig(score="judge", min_words=1, agree_with="x"),
    ]
    for chain in (["w", "s"], ["w", "m", "s"], ["m", "w", "x"]):
        for check in checks:
            steps = ladder(table, chain, check)
            for threshold in (-math.inf, 0.1, 0.5, 0.7, 1.0, math.inf):
                quality, cost, rungs = steps.outcome(threshold)
                expected = _cascade_item_by_item(table, chain, check, threshold)
                assert (quality.tolist(), cost.tolist(), [chain[r] for r in rungs]) == expected, (chain, check)


@pytest.mark.slow
def test_a_noise_judge_looks_useful_in_sample_and_no_better_than_random_cross_fitted() -> None:
    """A judge whose score is noise cannot route. Chosen and scored on the same items, the threshold always
    appears to recover the targeted half of the gap; cross-fitted, the cascade recovers it in proportion
    to the items it escalates (a coin), and misses the target in a good share of runs."""
    import numpy as np

    cross_pgr, vs_coin = [], []
    for seed in range(30):
        rng = np.random.default_rng(seed)
        weak_quality = (rng.random(200) < 0.5).astype(float)
        records = []
        for i, (quality, judge) in enumerate(zip(weak_quality, rng.random(200), strict=True)):
            records.append(record("w", f"i{i}", float(quality), 1.0, "weak answer", judge=float(judge)))
            records.append(record("s", f"i{i}", 1.0, 10.0, "strong answer"))
        check = CheckConfig(score="judge", min_score="auto", target_pgr=0.5)
        (result,) = simulate(records, "q", "w", "s", [PolicyConfig(kind="cascade", check=check)], 200, seed)
        assert result.in_sample is not None and "cross-fitting" in result.note
        weak = weak_quality.mean()
        assert (result.in_sample[0] - weak) / (1.0 - weak) >= 0.5, "in sample the target always seems met"
        cross_pgr.append(result.pgr)
        vs_coin.append(result.pgr - result.strong_share)
    assert abs(np.mean(vs_coin)) < 0.03, "out of sample, a noise judge routes like a coin"
    assert np.mean(np.array(cross_pgr) < 0.5) >= 0.25, cross_pgr


def test_a_policy_is_judged_against_the_strong_variant_by_the_engine() -> None:
    # 60 items the weak variant fails and the strong one passes: always sending to the strong variant
    # (random p=1) or to the cheapest variant that reaches the strong one's quality (oracle) may replace it;
    # never sending (p=0) is a regression. Holm over the three policies, margin 0.1.
    records = [
        r for i in range(60) for r in (record("w", f"i{i}", 0.0, 1.0, "no"), record("s", f"i{i}", 1.0, 10.0, "yes"))
    ]
    policies = [PolicyConfig(kind="random", p=1.0), PolicyConfig(kind="random", p=0.0), PolicyConfig(kind="oracle")]
    always, never, oracle = simulate(records, "q", "w", "s", policies, 200, margin=0.1, binary=True)
    assert always.verdict is not None and never.verdict is not None and oracle.verdict is not None
    assert (always.verdict.status, never.verdict.status, oracle.verdict.status) == ("pass", "fail", "pass")
    assert never.verdict.mean_diff == pytest.approx(-1.0)
    assert never.verdict.worse.p_adjusted < 0.05 < always.verdict.worse.p_value
