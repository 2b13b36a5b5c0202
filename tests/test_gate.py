"""The gate's exit codes end to end, reuse of earlier runs, --against, and the report command."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import REPO, base_config, write_project
from tests.test_cli import harness

UNTAGGED = "{% block user %}Summarize in one sentence. Keep it short.\n{{ document }}{% endblock %}"
TAGGED = "{% block user %}Summarize in one sentence:\n<document>{{ document }}</document>{% endblock %}"
LONGER = "{% block system %}Be brief.{% endblock %}{% block user %}<document>{{ document }}</document>{% endblock %}"


def gate_project(root: Path, limit: int = 160, margin: float = 0.02) -> Path:
    """An equivalent swap gives identical outputs: 160 items resolve a 0.02 margin ((1 - 0.02)^160 < 0.05)."""
    import json

    rows = [json.loads(line) for line in (REPO / "evals/scitldr/test.jsonl").read_text().splitlines()[:limit]]
    items = [{"id": r["id"], "document": r["document"], "reference": r["reference"]} for r in rows]
    config = base_config(
        ["local/lead", "local/lead-2"],
        prompts=["prompts/tagged.j2", "prompts/longer.j2", "prompts/untagged.j2"],
        baseline={"model": "local/lead", "prompt": "tagged"},
        gate={"metric": "rouge", "margin": margin},
        concurrency=8,
    )
    return write_project(
        root, config, items=items, templates={"tagged": TAGGED, "longer": LONGER, "untagged": UNTAGGED}
    )


@pytest.mark.slow
def test_gate_passes_an_equivalent_swap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = gate_project(tmp_path)
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = harness("gate", str(path), "--candidate", "local/lead:longer", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "GATE PASS" in result.stdout
    text = summary.read_text()
    assert "GATE PASS" in text and "| local/lead:longer |" in text


@pytest.mark.slow
def test_gate_fails_a_planted_regression_and_the_baseline_comes_from_cache(tmp_path: Path) -> None:
    path = gate_project(tmp_path)
    first = harness("gate", str(path), "--candidate", "local/lead:longer", cwd=tmp_path)
    assert first.returncode == 0
    result = harness("gate", str(path), "--candidate", "local/lead:untagged", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "GATE FAIL" in result.stdout and "regression" in result.stdout
    assert "160 calls made, 160 served from the response cache" in result.stdout


@pytest.mark.slow
def test_gate_undecided_when_the_eval_is_too_small(tmp_path: Path) -> None:
    path = gate_project(tmp_path, limit=6)
    result = harness("gate", str(path), "--candidate", "local/lead-2:tagged", cwd=tmp_path)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "GATE UNDECIDED" in result.stdout


@pytest.mark.slow
def test_gate_usage_errors_exit_2(tmp_path: Path) -> None:
    path = gate_project(tmp_path, limit=3)
    result = harness("gate", str(path), "--candidate", "gpt-9", cwd=tmp_path)
    assert result.returncode == 2 and "--candidate" in result.stderr and "local/lead" in result.stderr
    result = harness("gate", str(path), "--candidate", "local/lead:tagged", cwd=tmp_path)
    assert result.returncode == 2 and "is the baseline" in result.stderr


@pytest.mark.slow
def test_gate_against_a_stored_run(tmp_path: Path) -> None:
    import mlflow

    path = gate_project(tmp_path, limit=12)  # a planted regression fails from 8 items; passing needs 160
    assert harness("run", str(path), cwd=tmp_path).returncode == 0
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    parent = mlflow.search_runs(
        experiment_names=["test-exp"], filter_string="tags.`harness.kind` = 'experiment'", output_format="list"
    )[0]
    result = harness(
        "gate", str(path), "--candidate", "local/lead:untagged", "--against", parent.info.run_id, cwd=tmp_path
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "using stored records for local/lead:tagged" in result.stdout


@pytest.mark.slow
def test_report_rebuilds_analysis_from_stored_records(tmp_path: Path) -> None:
    import mlflow

    path = gate_project(tmp_path, limit=30)
    run = harness("run", str(path), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    parent = mlflow.search_runs(
        experiment_names=["test-exp"], filter_string="tags.`harness.kind` = 'experiment'", output_format="list"
    )[0]
    children = mlflow.search_runs(
        experiment_names=["test-exp"],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
        output_format="list",
    )
    tags = {c.info.run_name: c.data.tags for c in children}
    assert tags["local/lead:tagged"]["harness.verdict"] == "baseline"
    assert tags["local/lead:untagged"]["harness.verdict"] == "fail"
    assert tags["local/lead:tagged"]["harness.pareto"] == "true"
    assert sum(t["harness.recommended"] == "true" for t in tags.values()) == 1
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(parent.info.run_id)}
    assert {"frontier.png", "report.md", "harness_run.json"} <= artifacts
    result = harness("report", parent.info.run_id, "--out", str(tmp_path / "rebuilt"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = (tmp_path / "rebuilt" / "report.md").read_text()
    assert "local/lead:untagged" in report and "**fail**" in report
    assert (tmp_path / "rebuilt" / "frontier.png").stat().st_size > 10_000


@pytest.fixture(autouse=True)
def _clean_summary_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
