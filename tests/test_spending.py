"""Never pay twice, never overspend: cache, resume, budget, estimate, confirmation, projection, repricing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, base_config, fake_model, wait_for_requests, write_project
from tests.fake_server import FakeModelServer, Usage
from tests.test_cli import harness

PRICE = {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}
ITEMS = [{"id": f"i{n}", "document": f"Document number {n}. It says {n}.", "reference": f"doc {n}"} for n in range(20)]


def project(tmp_path: Path, server: FakeModelServer, **overrides: object) -> Path:
    config = base_config([fake_model(server, price=PRICE)], **overrides)
    return write_project(tmp_path, config, items=ITEMS)


def parent_run(name: str = "test-exp"):
    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(
        experiment_names=[name],
        filter_string="tags.`harness.kind` = 'experiment'",
        order_by=["attributes.start_time DESC"],
        output_format="list",
    )
    return runs[0]


@pytest.mark.slow
def test_rerun_is_served_from_cache_at_no_cost(tmp_path: Path, model_server: FakeModelServer) -> None:
    model_server.usage = Usage(prompt_tokens=100, completion_tokens=10)
    path = project(tmp_path, model_server)
    first = harness("run", str(path), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert len(model_server.requests) == 20
    second = harness("run", str(path), cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert len(model_server.requests) == 20
    assert "0 calls made, 20 served from the response cache, $0.0000 spent" in second.stdout
    run = parent_run()
    assert float(run.data.tags["harness.spent_usd"]) == 0.0
    assert float(run.data.tags["harness.cost_total_usd"]) == pytest.approx(20 * (100 * 1e-6 + 10 * 2e-6))
    assert "20 cached" in second.stdout


@pytest.mark.slow
def test_no_cache_and_refresh_call_again(tmp_path: Path, model_server: FakeModelServer) -> None:
    path = project(tmp_path, model_server)
    assert harness("run", str(path), "--no-tracking", cwd=tmp_path).returncode == 0
    assert harness("run", str(path), "--no-tracking", "--no-cache", cwd=tmp_path).returncode == 0
    assert len(model_server.requests) == 40
    model_server.answer = lambda request: "a refreshed answer."
    assert harness("run", str(path), "--no-tracking", "--refresh", cwd=tmp_path).returncode == 0
    assert len(model_server.requests) == 60
    again = harness("run", str(path), "--no-tracking", cwd=tmp_path)
    assert len(model_server.requests) == 60 and "20 served from the response cache" in again.stdout


def _spawn(path: Path, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "harness", "run", str(path)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell starts background jobs with SIGINT ignored and children inherit that; Ctrl-C must reach
        # harness here however pytest itself was started.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


@pytest.mark.slow
def test_kill_9_then_rerun_pays_only_for_the_missing_items(tmp_path: Path, model_server: FakeModelServer) -> None:
    import sqlite3

    model_server.delay_s = 0.3
    path = project(tmp_path, model_server, concurrency=2)
    process = _spawn(path, tmp_path)
    wait_for_requests(model_server, 8, process)
    process.kill()
    process.wait()
    first_requests = len(model_server.requests)
    with sqlite3.connect(tmp_path / "mlruns" / "responses.sqlite") as db:
        cached = db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    assert 0 < cached < 20 and first_requests - cached <= 2  # at most the calls in flight were lost
    resumed = harness("run", str(path), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert len(model_server.requests) - first_requests == 20 - cached
    assert f"{20 - cached} calls made, {cached} served from the response cache" in resumed.stdout


@pytest.mark.parametrize(
    ("sent", "code", "said"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated (SIGTERM)")],
    ids=["ctrl-c", "sigterm"],
)
@pytest.mark.slow
def test_interrupt_exits_cleanly_and_keeps_what_finished(
    tmp_path: Path, model_server: FakeModelServer, sent: int, code: int, said: str
) -> None:
    """Ctrl-C, and SIGTERM as `timeout`, CI runners and Kubernetes send it: say how to resume, keep it all."""
    model_server.delay_s = 0.3
    path = project(tmp_path, model_server, concurrency=2)
    process = _spawn(path, tmp_path)
    wait_for_requests(model_server, 6, process)
    process.send_signal(sent)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr
    assert said in stderr and "run the same command again to resume" in stderr and "Traceback" not in stderr
    resumed = harness("run", str(path), cwd=tmp_path)
    assert resumed.returncode == 0
    assert "served from the response cache" in resumed.stdout


@pytest.mark.slow
def test_budget_cap_is_never_exceeded(tmp_path: Path, model_server: FakeModelServer) -> None:
    model_server.usage = Usage(prompt_tokens=40, completion_tokens=16)
    model_server.delay_s = 0.2
    path = project(tmp_path, model_server, concurrency=4, budget={"max_usd": 0.0004})
    result = harness("run", str(path), cwd=tmp_path)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "BUDGET EXHAUSTED" in result.stdout
    run = parent_run()
    assert run.data.tags["harness.status"] == "budget_exhausted"
    assert 0 < float(run.data.tags["harness.spent_usd"]) <= 0.0004
    assert int(run.data.tags["harness.calls_made"]) == len(model_server.requests) < 20
    assert int(run.data.tags["harness.calls_not_run"]) == 20 - len(model_server.requests)
    assert not run.data.metrics  # counters of the invocation are not columns beside the variants' metrics
    raised = harness("run", str(path), "--max-usd", "1", cwd=tmp_path)
    assert raised.returncode == 0 and len(model_server.requests) == 20


@pytest.mark.slow
def test_budget_needs_an_output_limit(tmp_path: Path, model_server: FakeModelServer) -> None:
    config = base_config([fake_model(model_server, price=PRICE)], params={}, budget={"max_usd": 1})
    result = harness("run", str(write_project(tmp_path, config, items=ITEMS)), cwd=tmp_path)
    assert result.returncode == 2 and "params.max_tokens" in result.stderr
    assert model_server.requests == []


def test_negative_budget_is_a_config_error(tmp_path: Path, model_server: FakeModelServer) -> None:
    result = harness("run", str(project(tmp_path, model_server, budget={"max_usd": -5})), cwd=tmp_path)
    assert result.returncode == 2 and "budget.max_usd" in result.stderr
    result = harness("run", str(project(tmp_path, model_server)), "--max-usd", "-1", cwd=tmp_path)
    assert result.returncode == 2 and "--max-usd" in result.stderr


@pytest.mark.slow
def test_estimate_makes_no_calls_and_learns_from_history(tmp_path: Path, model_server: FakeModelServer) -> None:
    model_server.usage = Usage(prompt_tokens=30, completion_tokens=4)
    path = project(tmp_path, model_server)
    before = harness("estimate", str(path), cwd=tmp_path)
    assert before.returncode == 0, before.stderr
    assert model_server.requests == []
    assert "max_tokens" in before.stdout and "unknown (no earlier run)" in before.stdout
    assert harness("run", str(path), "--no-cache", cwd=tmp_path).returncode == 0
    after = harness("estimate", str(path), "--no-cache", cwd=tmp_path)
    assert "earlier run" in after.stdout and "wall" in after.stdout
    assert len(model_server.requests) == 20


@pytest.mark.slow
def test_non_interactive_run_above_threshold_refuses_without_yes(tmp_path: Path, model_server: FakeModelServer) -> None:
    path = project(tmp_path, model_server, budget={"confirm_above_usd": 0.0})
    refused = harness("run", str(path), cwd=tmp_path)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert model_server.requests == []
    accepted = harness("run", str(path), "--yes", cwd=tmp_path)
    assert accepted.returncode == 0 and len(model_server.requests) == 20


@pytest.mark.slow
def test_traffic_projection(tmp_path: Path, model_server: FakeModelServer) -> None:
    model_server.usage = Usage(prompt_tokens=100, completion_tokens=10)
    path = project(tmp_path, model_server, traffic={"requests_per_day": 10000})
    result = harness("run", str(path), "--wide", cwd=tmp_path)
    assert result.returncode == 0 and "monthly" in result.stdout
    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    child = mlflow.search_runs(
        experiment_names=["test-exp"], filter_string="tags.`harness.kind` = 'variant'", output_format="list"
    )[0]
    per_item = 100 * 1e-6 + 10 * 2e-6
    assert child.data.metrics["monthly_cost_usd"] == pytest.approx(per_item * 10000 * 30.44)
    assert child.data.metrics["monthly_savings_vs_baseline_usd"] == 0.0  # the only variant is its own baseline


@pytest.mark.slow
def test_reprice_changes_costs_without_calls(tmp_path: Path, model_server: FakeModelServer) -> None:
    model_server.usage = Usage(prompt_tokens=100, completion_tokens=10)
    path = project(tmp_path, model_server)
    assert harness("run", str(path), cwd=tmp_path).returncode == 0
    prices = tmp_path / "prices.yaml"
    prices.write_text(
        yaml.safe_dump({"openai/fake-model": {"input_cost_per_token": 2e-6, "output_cost_per_token": 4e-6}})
    )
    result = harness("reprice", parent_run().info.run_id, "--prices", str(prices), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    before, after = 20 * (100e-6 + 20e-6), 20 * (200e-6 + 40e-6)
    assert f"${before:.6f} as recorded -> ${after:.6f} repriced" in result.stdout
    assert len(model_server.requests) == 20


def test_scorer_calls_are_costed_apart_from_the_variants(tmp_path: Path, model_server: FakeModelServer) -> None:
    import io

    from rich.console import Console

    from harness.api import run as harness_run
    from harness.config import load_config
    from harness.workflow import RunOptions

    model_server.usage = Usage(prompt_tokens=100, completion_tokens=10)
    model_server.answer = lambda request: "1" if "Is this brief" in str(request["messages"]) else "short."
    judge = {
        "tests.custom_scorers:judged_brevity": {
            "api_base": model_server.url,
            "input_cost_per_token": 5e-6,
            "output_cost_per_token": 5e-6,
        }
    }
    path = project(tmp_path, model_server, scorers=["rouge", judge])
    outcome = harness_run(load_config(path), RunOptions(tracking=False), Console(file=io.StringIO()))
    summary = outcome.summaries[0]
    assert summary.cost_total_usd == pytest.approx(20 * (100e-6 + 20e-6))
    assert summary.eval_cost_usd == pytest.approx(20 * 110 * 5e-6)
    assert summary.quality["tests.custom_scorers:judged_brevity"] == 1.0
    assert len(model_server.requests) == 40


def test_a_fully_cached_rerun_does_not_wait_for_history(
    tmp_path: Path, model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """History only sharpens the estimate of calls still to make; with none left, MLflow is not asked."""
    import io

    from rich.console import Console

    import harness.tracking
    from harness.api import run as harness_run
    from harness.cache import SqliteCache
    from harness.config import load_config
    from harness.planner import prepare
    from harness.spending import estimates_for
    from harness.workflow import RunOptions

    experiment = load_config(project(tmp_path, model_server))
    harness_run(experiment, RunOptions(assume_yes=True, tracking=False), Console(file=io.StringIO()))
    asked: list[str] = []
    monkeypatch.setattr(harness.tracking, "variant_history", lambda plan: asked.append("history") or {})
    plan = prepare(experiment)
    cache = SqliteCache(experiment.root / experiment.cache.path)
    estimates, _ = estimates_for(plan, cache, True)
    names = {v.name for v in plan.runnable}
    assert asked == [] and all(e.calls == 0 and e.cached > 0 for e in estimates if e.variant in names)
    estimates_for(plan, None, True)  # no cache: every call is still to make
    assert asked == ["history"]


@pytest.mark.slow
@pytest.mark.parametrize("after_s", [0.3, 1.0, 2.0, 3.5, 5.0, 7.0])
def test_sigterm_is_quiet_in_every_phase(tmp_path: Path, model_server: FakeModelServer, after_s: float) -> None:
    """SIGTERM at any moment (imports, checks, calls, scoring, logging to MLflow, the report) ends with the
    one resume line or a finished run: never a traceback, an asyncio callback error or an unawaited coroutine."""
    model_server.delay_s = 0.15
    path = project(tmp_path, model_server, concurrency=2)
    process = _spawn(path, tmp_path)
    time.sleep(after_s)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    # -15: the signal came before harness had started, and ended the process as the default action does
    assert process.returncode in (0, 143, -signal.SIGTERM), stderr
    for noise in ("Traceback", "never awaited", "Exception in callback", "Task was destroyed", "Error in atexit"):
        assert noise not in stderr, stderr
    if process.returncode == 143:
        assert "run the same command again to resume" in stderr
