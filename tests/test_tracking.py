"""MLflow run structure in a real temporary sqlite store."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from rich.console import Console

from harness.config import load_config
from harness.planner import prepare
from harness.runner import run_plan
from harness.scorers import score_records
from harness.summary import summarize
from harness.tracking import load_records, log_run, tracking_uri
from tests.conftest import base_config, fake_model, write_project
from tests.fake_server import FakeModelServer, Usage

PRICE = {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}


@pytest.fixture
def logged(tmp_path: Path, model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HARNESS_TEST_SECRET_KEY", "sk-test-SECRET-0123456789")
    model_server.usage = Usage(prompt_tokens=50, completion_tokens=10)
    model_server.answer = lambda request: "cats purr"
    models = [
        fake_model(model_server, name="fake-a", price=PRICE, params={"api_key": "sk-test-SECRET-0123456789"}),
        "local/lead",
        "openai/gpt-4o-mini",
    ]
    config = base_config(models, baseline={"model": "local/lead", "prompt": "terse"}, description="tracking test")
    experiment = load_config(write_project(tmp_path, config))
    plan = prepare(experiment)
    records = run_plan(plan, console=Console(file=io.StringIO())).records
    score_records(records, {i.id: i for i in plan.eval_set.items}, plan.scorers)
    summaries = summarize(plan, records)
    run_id = log_run(plan, records, summaries)
    return experiment, plan, records, run_id


def test_parent_and_child_runs(logged) -> None:
    import mlflow

    experiment, plan, _records, run_id = logged
    uri = tracking_uri(experiment)
    assert uri == os.environ["MLFLOW_TRACKING_URI"]
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name("test-exp")
    assert exp is not None
    parent = mlflow.get_run(run_id)
    assert parent.data.params["dataset_fingerprint"] == plan.eval_set.fingerprint
    assert parent.data.params["litellm_version"]
    assert "litellm" in parent.data.params["price_sources"] or "override" in parent.data.params["price_sources"]
    children = mlflow.search_runs(
        [exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'", output_format="list"
    )
    by_name = {c.info.run_name: c for c in children}
    assert set(by_name) == {"openai/fake-a:terse", "local/lead:terse", "openai/gpt-4o-mini:terse"}
    fake = by_name["openai/fake-a:terse"]
    assert fake.data.params["model"] == "openai/fake-a"
    assert fake.data.params["template_hash"] == plan.variants[0].prompt.template_hash
    assert fake.data.params["param.max_tokens"] == "16"
    assert fake.data.metrics["cost_total_usd"] == pytest.approx(3 * (50 * 1e-6 + 10 * 2e-6))
    assert fake.data.metrics["rouge/mean"] > 0
    for key in (
        "cost_per_item_usd",
        "mean_input_tokens",
        "mean_output_tokens",
        "latency_p50_s",
        "latency_p95_s",
        "error_rate",
    ):
        assert key in fake.data.metrics
    assert by_name["local/lead:terse"].data.tags["harness.baseline"] == "true"
    skipped = by_name["openai/gpt-4o-mini:terse"]
    assert skipped.data.tags["harness.status"] == "skipped"
    assert "OPENAI_API_KEY" in skipped.data.tags["harness.skip_reason"]


def test_records_round_trip_from_artifact(logged) -> None:
    import mlflow

    experiment, _plan, records, _run_id = logged
    mlflow.set_tracking_uri(tracking_uri(experiment))
    exp = mlflow.get_experiment_by_name("test-exp")
    child = mlflow.search_runs(
        [exp.experiment_id], filter_string="attributes.run_name = 'local/lead:terse'", output_format="list"
    )[0]
    stored = load_records(child.info.run_id, tracking_uri(experiment))
    assert stored == [r for r in records if r.variant == "local/lead:terse"]
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(child.info.run_id)}
    assert {"records.jsonl", "records_table.json"} <= artifacts


def test_secrets_never_reach_the_store(logged, tmp_path: Path) -> None:
    experiment, *_ = logged
    store = Path(tracking_uri(experiment).removeprefix("sqlite:///")).parent
    for path in store.rglob("*"):
        if path.is_file():
            assert b"sk-test-SECRET" not in path.read_bytes(), path


SCRIPT = """
import io, json, sys
from rich.console import Console
from harness.config import load_config
from harness.api import run as harness_run
from harness.workflow import RunOptions

outcome = harness_run(load_config(sys.argv[1]), RunOptions(use_cache=False), Console(file=io.StringIO()))
print(json.dumps({"run_id": outcome.run_id, "mlflow": "mlflow" in sys.modules,
                  "matplotlib": "matplotlib" in sys.modules}))
"""


@pytest.mark.slow
def test_mlflow_runs_in_the_tracking_process_even_from_an_unguarded_script(
    tmp_path: Path, model_server: FakeModelServer
) -> None:
    import json
    import subprocess
    import sys

    from tests.conftest import REPO

    path = write_project(tmp_path, base_config([fake_model(model_server)]))
    script = tmp_path / "my_experiment.py"  # no `if __name__ == "__main__"` guard, as users write them
    script.write_text(SCRIPT)
    out = subprocess.run(
        [sys.executable, str(script), str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["mlflow"] is False and result["matplotlib"] is False
    import mlflow

    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    parent = client.get_run(result["run_id"])
    assert parent.data.tags["harness.kind"] == "experiment"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"frontier.png", "report.md"} <= artifacts


def test_the_parent_run_leads_with_the_recommendation_and_a_skipped_variant_is_not_finished(
    tmp_path: Path, model_server: FakeModelServer
) -> None:
    import mlflow

    from harness.api import run as harness_run
    from harness.results import compact_header, markdown_table
    from harness.workflow import RunOptions

    model_server.usage = Usage(prompt_tokens=50, completion_tokens=10)
    models = [fake_model(model_server, name="fake-a", price=PRICE), "local/lead", "openai/gpt-4o-mini"]
    config = base_config(models, baseline={"model": "local/lead", "prompt": "terse"}, description="tracking test")
    experiment = load_config(write_project(tmp_path, config))
    outcome = harness_run(experiment, RunOptions(assume_yes=True), Console(file=io.StringIO()))
    mlflow.set_tracking_uri(tracking_uri(experiment))
    parent = mlflow.get_run(outcome.run_id)
    note = parent.data.tags["mlflow.note.content"]
    assert note.startswith("**Recommendation:")
    assert markdown_table(outcome.summaries, outcome.analysis) in note
    assert " | ".join(compact_header(outcome.analysis.metric)) in note and note.endswith("tracking test")
    children = mlflow.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{outcome.run_id}'", output_format="list"
    )
    status = {c.info.run_name: c.info.status for c in children}
    assert status == {
        "openai/fake-a:terse": "FINISHED",
        "local/lead:terse": "FINISHED",
        "openai/gpt-4o-mini:terse": "KILLED",
    }
