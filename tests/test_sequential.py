"""The sequential gate: boundaries against published values, looks on constructed data, and the staged
gate end to end (calls of later stages never made, dollars not spent, MLflow, step summary, resume)."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import base_config, fake_model, write_project
from tests.fake_server import FakeModelServer
from tests.test_cli import harness

PRICE = {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}
ITEMS = [{"id": f"i{n}", "document": f"Document {n} is about topic {n}.", "reference": f"topic {n}"} for n in range(60)]


def test_boundaries_match_published_lan_demets_values() -> None:
    """Jennison & Turnbull (2000), table 7.6 / Lan & DeMets (1983): five equally spaced looks at one-sided
    alpha 0.025. O'Brien-Fleming-type: 4.877, 3.357, 2.680, 2.290, 2.031; Pocock-type about 2.44 to 2.39."""
    from harness.sequential import boundaries

    five = (0.2, 0.4, 0.6, 0.8, 1.0)
    obf = boundaries(five, 0.025, "obrien-fleming")
    assert np.allclose(obf, [4.877, 3.357, 2.680, 2.290, 2.031], atol=0.006), obf
    pocock = boundaries(five, 0.025, "pocock")
    assert np.allclose(pocock, [2.438, 2.427, 2.410, 2.397, 2.386], atol=0.006), pocock


def test_boundaries_spend_exactly_alpha_under_no_difference() -> None:
    """Brownian paths (seeded) cross the boundaries with total probability alpha, and at look 1 with
    alpha(1/K); a fixed z of 1.645 at every look would cross far more often."""
    from harness.sequential import boundaries, spent

    rng = np.random.default_rng(7)
    paths = np.cumsum(rng.normal(size=(200_000, 5)), axis=1) / np.sqrt(np.arange(1, 6))
    for spending in ("pocock", "obrien-fleming"):
        bounds = np.array(boundaries((0.2, 0.4, 0.6, 0.8, 1.0), 0.05, spending))
        crossed = (paths >= bounds).any(axis=1).mean()
        assert abs(crossed - 0.05) < 0.002, (spending, crossed)
        assert abs((paths[:, 0] >= bounds[0]).mean() - spent(0.2, 0.05, spending)) < 0.002
    assert (paths >= 1.645).any(axis=1).mean() > 0.1


def test_identical_outputs_at_a_look_bound_the_loss_by_n_alone() -> None:
    """40 pairs, none differing, at look 1 of 5 (Pocock, alpha 0.05): c1 = 2.176, the look's level is
    Phi(2.176) = 0.9852, so the lower bound is -(1 - 0.0148^(1/40)) = -0.100; a margin of 0.05 is not shown,
    0.11 is. (Gaffke's bound, which small samples must also clear, is the same figure here up to its Monte
    Carlo error: its weight on the worst value -1 is Beta(1, 40), so its quantile is that bound.)"""
    from harness.sequential import boundaries

    bounds = boundaries((0.2, 0.4, 0.6, 0.8, 1.0), 0.05, "pocock")
    level = 1 - (1 - 0.9852) ** (1 / 40)
    decision = _look(np.zeros(40), 0, bounds, 0.05, 0.1)
    assert decision.status == "continue"
    assert decision.noninferior.bound == pytest.approx(-level, abs=0.003)
    assert decision.noninferior.level == pytest.approx(1 - 0.9852, abs=0.0002)
    assert _look(np.zeros(40), 0, bounds, 0.11, 0.1).status == "pass"


def _look(diffs: np.ndarray, index: int, bounds: tuple[float, ...], margin: float, futility: float):
    """One candidate whose paired differences from a baseline of zeros are `diffs`, at look `index`."""
    from harness.decision import PairedScores, look

    scores = PairedScores(np.zeros(diffs.size), {"c": diffs}, False, 1.0, margin, 0.95)
    return look(scores, index, bounds, futility)["c"]


def test_a_clear_regression_stops_with_fail_and_a_hopeless_one_is_futile() -> None:
    from harness.sequential import boundaries

    bounds = boundaries((0.25, 0.5, 0.75, 1.0), 0.05, "pocock")
    rng = np.random.default_rng(3)
    worse = rng.normal(-0.3, 0.2, 50)
    assert _look(worse, 0, bounds, 0.05, 0.1).status == "fail"
    assert _look(worse, 0, bounds, 0.05, 0.0).status == "fail"  # the fail needs no futility rule
    flat = rng.normal(-0.05, 2.0, 50)  # noisy around -margin: neither side is reachable under this trend
    decision = _look(flat, 2, bounds, 0.05, 0.5)
    assert decision.status == "futile" and "out of reach" in decision.reason
    assert _look(flat, 2, bounds, 0.05, 0.0).status == "continue"  # futility 0 never stops
    assert _look(flat, 3, bounds, 0.05, 0.5).status == "undecided"  # the last look decides or not


def test_schedule_and_order_are_fixed_by_the_seed() -> None:
    from harness.plan import item_order
    from harness.sequential import schedule

    assert schedule(200, 5) == [40, 80, 120, 160, 200]
    assert schedule(20, 5) == [10, 13, 15, 18, 20], "the first look reads at least 10 items"
    assert schedule(7, 3) == [7] and schedule(2, 5) == [2], "too few items for a look before the last"
    ids = [str(i) for i in range(50)]
    assert item_order(ids, 1) == item_order(ids, 1) != ids
    assert sorted(item_order(ids, 1)) == sorted(ids)


def _project(tmp_path: Path, server: FakeModelServer, candidate_answer: str | None, **overrides: Any) -> Path:
    """A baseline that answers with the reference (but on items ending in 7) and a candidate that answers
    `candidate_answer` (as the baseline when None), both priced, on 60 items."""
    references = {item["document"]: item["reference"] for item in ITEMS}

    def answer(request: dict[str, Any]) -> str:
        text = request["messages"][-1]["content"]
        reference = next(r for d, r in references.items() if d in text)
        if request["model"] == "cand" and candidate_answer is not None:
            return candidate_answer
        return "zebra" if reference.endswith("7") else reference  # both miss some items: no ceiling

    server.answer = answer
    config = base_config(
        [fake_model(server, "base", price=PRICE), fake_model(server, "cand", price=PRICE)],
        baseline={"model": "openai/base", "prompt": "terse"},
        scorers=["exact_match"],
        gate={"metric": "exact_match", "margin": 0.2, "sequential": {"looks": 5}},
        **overrides,
    )
    return write_project(tmp_path, config, items=ITEMS)


@pytest.mark.slow
def test_a_regression_stops_at_the_first_look_and_never_calls_later_stages(
    tmp_path: Path, model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    path = _project(tmp_path, model_server, "zebra", epochs=2, params={"temperature": 0.7, "max_tokens": 16})
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = harness("gate", str(path), "--yes", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    # 12 items x 2 variants x 2 epochs at look 1; the other 48 items are never sent
    assert len(model_server.requests) == 12 * 2 * 2
    assert "stopped early at look 1 of 5, 12 of 60 items used" in result.stdout
    not_spent = float(re.search(r"about \$([0-9.]+) not spent", result.stdout).group(1))
    spent = float(re.search(r"items used, \$([0-9.]+) spent", result.stdout).group(1))
    assert spent > 0 and not_spent == pytest.approx(4 * spent, rel=0.3)  # 48 items left of 60, same calls
    assert "stopped early at look 1 of 5" in summary.read_text()
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    parent = mlflow.search_runs(
        experiment_names=["test-exp"], filter_string="tags.`harness.kind` = 'experiment'", output_format="list"
    )[0]
    assert int(parent.data.tags["harness.sequential.items_used"]) == 12
    assert int(parent.data.tags["harness.sequential.stopped_at_look"]) == 1
    assert float(parent.data.tags["harness.sequential.usd_not_spent"]) == pytest.approx(not_spent, abs=1e-4)
    assert "stopped early" in parent.data.tags["harness.sequential"]
    fixed = harness("gate", str(path), "--fixed", "--yes", "--no-tracking", cwd=tmp_path)
    assert fixed.returncode == 1, fixed.stdout  # the fixed design agrees


@pytest.mark.slow
def test_an_equivalent_candidate_passes_before_the_last_look_and_a_rerun_is_free(
    tmp_path: Path, model_server: FakeModelServer
) -> None:
    """Identical answers: 24 pairs bound the loss by 1 - (1 - Phi(2.142))^(1/24) = 0.158 < 0.2 at look 2."""
    path = _project(tmp_path, model_server, None)
    first = harness("gate", str(path), "--no-tracking", cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "stopped early at look 2 of 5, 24 of 60 items used" in first.stdout
    assert len(model_server.requests) == 24 * 2
    again = harness("gate", str(path), "--no-tracking", cwd=tmp_path)
    assert again.returncode == 0 and "0 calls made, 48 served from the response cache" in again.stdout
    assert len(model_server.requests) == 24 * 2


@pytest.mark.slow
def test_sequential_with_several_candidates_splits_alpha_and_drops_decided_ones(
    tmp_path: Path, model_server: FakeModelServer
) -> None:
    """A third model that fails is dropped after look 1; the equivalent one goes on until it passes."""
    references = {item["document"]: item["reference"] for item in ITEMS}

    def answer(request: dict[str, Any]) -> str:
        text = request["messages"][-1]["content"]
        reference = next(r for d, r in references.items() if d in text)
        return "zebra" if request["model"] == "bad" or reference.endswith("7") else reference

    model_server.answer = answer
    config = base_config(
        [fake_model(model_server, n, price=PRICE) for n in ("base", "cand", "bad")],
        baseline={"model": "openai/base", "prompt": "terse"},
        scorers=["exact_match"],
        gate={"metric": "exact_match", "margin": 0.2, "sequential": {"looks": 5}},
    )
    path = write_project(tmp_path, config, items=ITEMS)
    result = harness("gate", str(path), "--no-tracking", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "alpha 0.025 per candidate" in result.stdout
    bad = [r for r in model_server.requests if r["model"] == "bad"]
    assert len(bad) == 12
    assert re.search(r"openai/cand:terse: decided at look \d, \d+ pairs, pass", result.stdout), result.stdout


@pytest.mark.slow
def test_the_budget_running_out_mid_stage_is_undecided_not_a_pass(
    tmp_path: Path, model_server: FakeModelServer
) -> None:
    """A cap that covers the first stage only: the candidate is not decided and no call passes the cap."""
    path = _project(tmp_path, model_server, None, budget={"max_usd": 0.0007})
    result = harness("gate", str(path), "--no-tracking", "--yes", cwd=tmp_path)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "GATE UNDECIDED" in result.stdout
    spent = float(re.search(r"\$([0-9.]+) spent", result.stdout).group(1))
    assert spent <= 0.0007 and math.isfinite(spent)


@pytest.mark.slow
def test_estimate_sizes_the_decision_from_a_pilot_run(tmp_path: Path, model_server: FakeModelServer) -> None:
    """A pilot of 20 items where the candidate misses 4 the baseline gets: paired differences four -1 and
    sixteen 0 (sd 0.4104); at margin 0.2, 95% and 80% power the decision needs
    ceil(((z.95 + z.80) x sd / margin)^2) = 27 items, at 2 calls x (10 x $1e-6 + 5 x $2e-6) per item."""
    from scipy.stats import norm

    references = {item["document"]: item["reference"] for item in ITEMS}

    def answer(request: dict[str, Any]) -> str:
        reference = next(r for d, r in references.items() if d in request["messages"][-1]["content"])
        missed = request["model"] == "cand" and reference in ("topic 0", "topic 1", "topic 2", "topic 3")
        return "zebra" if missed or reference == "topic 19" else reference

    model_server.answer = answer
    config = base_config(
        [fake_model(model_server, "base", price=PRICE), fake_model(model_server, "cand", price=PRICE)],
        baseline={"model": "openai/base", "prompt": "terse"},
        scorers=["exact_match"],
        gate={"metric": "exact_match", "margin": 0.2},
    )
    path = write_project(tmp_path, config, items=ITEMS)
    before = harness("estimate", str(path), cwd=tmp_path)
    assert before.returncode == 0 and "run a pilot" in before.stdout, before.stdout + before.stderr
    pilot = harness("run", str(path), "--limit", "20", cwd=tmp_path)
    assert pilot.returncode == 0, pilot.stdout + pilot.stderr
    result = harness("estimate", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    diffs = np.array([-1.0] * 4 + [0.0] * 16)
    needed = math.ceil(((norm.ppf(0.95) + norm.ppf(0.8)) * diffs.std(ddof=1) / 0.2) ** 2)
    per_item = 2 * (10 * 1e-6 + 5 * 2e-6)
    line = next(x for x in result.stdout.splitlines() if "openai/cand:terse: about" in x)
    assert f"about {needed} items (enough)" in line, line
    assert f"about ${needed * per_item:,.2f}" in line and f"${per_item:.6f} per item" in line, line
    assert "20 pairs there" in line
    assert "decision size from run" in result.stdout


@pytest.mark.slow
def test_sequential_gate_on_a_judge_against_a_stored_baseline(tmp_path: Path, model_server: FakeModelServer) -> None:
    """The seams: the gate metric is a paid judge, the baseline comes from a stored run (--against), and
    the stages still stop early: the stored baseline costs nothing and the judge grades only what ran."""
    import mlflow

    references = {item["document"]: item["reference"] for item in ITEMS}

    def answer(request: dict[str, Any]) -> str:
        text = request["messages"][-1]["content"]
        if request["model"] == "judge":
            return "Score: 1" if "Candidate: zebra" in text else "Score: 5"
        reference = next(r for d, r in references.items() if d in text)
        return "zebra" if request["model"] == "cand" or reference.endswith("7") else reference

    model_server.answer = answer
    judge = {"model": fake_model(model_server, "judge", price=PRICE), "rubric": "prompts/judges/r.j2", "scale": [1, 5]}
    config = base_config(
        [fake_model(model_server, "base", price=PRICE), fake_model(model_server, "cand", price=PRICE)],
        baseline={"model": "openai/base", "prompt": "terse"},
        scorers=[{"llm_judge": judge}],
        gate={"metric": "llm_judge", "margin": 0.1},
    )
    path = write_project(tmp_path, config, items=ITEMS)
    (tmp_path / "prompts" / "judges").mkdir()
    (tmp_path / "prompts" / "judges" / "r.j2").write_text(
        "{% block user %}Reference: {{ reference }}\nCandidate: {{ output }}\nScore: N (1-5).{% endblock %}"
    )
    stored = harness("run", str(path), "--yes", cwd=tmp_path)
    assert stored.returncode == 0, stored.stdout + stored.stderr
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    run_id = mlflow.search_runs(
        experiment_names=["test-exp"], filter_string="tags.`harness.kind` = 'experiment'", output_format="list"
    )[0].info.run_id
    before = len(model_server.requests)
    result = harness(
        "gate",
        str(path),
        "--candidate",
        "openai/cand",
        "--against",
        run_id,
        "--sequential",
        "--refresh",
        "--yes",
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    new = model_server.requests[before:]
    assert {r["model"] for r in new} == {"cand", "judge"}, "the stored baseline is not called again"
    called = [r["messages"][-1]["content"] for r in new if r["model"] == "cand"]
    assert len(called) == 12, "look 1 only"
    stage = {item["reference"] for item in ITEMS if any(item["document"] in text for text in called)}
    judged = {
        r["messages"][-1]["content"].split("\n")[0].removeprefix("Reference: ") for r in new if r["model"] == "judge"
    }
    assert judged == stage, "the judge grades the stage's items (both sides), nothing beyond"
    assert "stopped early at look 1 of 5, 12 of 60 items used" in result.stdout


@pytest.mark.slow
def test_report_of_a_sequential_gate_says_its_verdicts_are_not_the_gates(
    tmp_path: Path, model_server: FakeModelServer
) -> None:
    import mlflow

    path = _project(tmp_path, model_server, "zebra")
    assert harness("gate", str(path), "--yes", cwd=tmp_path).returncode == 1
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    run_id = mlflow.search_runs(
        experiment_names=["test-exp"], filter_string="tags.`harness.kind` = 'experiment'", output_format="list"
    )[0].info.run_id
    report = harness("report", run_id, "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert report.returncode == 0, report.stdout + report.stderr
    text = " ".join(report.stdout.split())
    assert "as run: sequential gate" in text and "stopped early at look 1 of 5" in text
    assert "not the gate's decision" in text


@pytest.mark.slow
def test_estimate_sizes_against_the_runs_reference_when_the_baseline_never_ran(
    tmp_path: Path, model_server: FakeModelServer
) -> None:
    """A configured cloud baseline without its key is skipped; the pilot's analysis compared against the
    best variant that ran, and so does the sizing, saying so."""
    model_server.answer = lambda request: "topic 1" if request["model"] == "base" else "zebra"
    config = base_config(
        [fake_model(model_server, "base", price=PRICE), fake_model(model_server, "cand", price=PRICE), "gpt-4o-mini"],
        baseline={"model": "gpt-4o-mini", "prompt": "terse"},
        scorers=["rouge"],
        gate={"margin": 0.05},
    )
    path = write_project(tmp_path, config, items=ITEMS[:20])
    assert harness("run", str(path), "--yes", cwd=tmp_path).returncode == 0
    result = harness("estimate", str(path), cwd=tmp_path)
    text = " ".join(result.stdout.split())
    assert "gpt-4o-mini:terse did not run there; sized against that run's reference openai/base:terse" in text, text
    assert "openai/cand:terse: about" in text
