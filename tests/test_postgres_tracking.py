"""MLflow over PostgreSQL, as a team runs it: an `mlflow server` on a Postgres store, and the store used
directly; runs, traces, `report` and `gate --against` from it. The plain `postgresql://` scheme (which
needs psycopg 3) is refused before any call with the working spelling."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_server import FakeModelServer
from tests.servers import start_mlflow_server, start_postgres
from tests.test_cli import harness
from tests.test_gate import gate_project


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from start_postgres(tmp_path_factory.mktemp("postgres"))


def database(postgres: str, name: str) -> str:
    """A new, empty database on the cluster; its URI."""
    import psycopg2

    admin = psycopg2.connect(postgres.replace("postgresql+psycopg2://", "postgresql://"))
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    return postgres.rsplit("/", 1)[0] + f"/{name}"


def parent_run(uri: str) -> str:
    import mlflow

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(
        experiment_names=["test-exp"], filter_string="tags.`harness.kind` = 'experiment'", output_format="list"
    )
    assert len(runs) == 1
    return runs[0].info.run_id


@pytest.mark.slow
def test_an_mlflow_server_on_postgres_tracks_reports_and_gates(
    tmp_path: Path, postgres: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = database(postgres, "served")
    server = start_mlflow_server(store, tmp_path)
    url = next(server)
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        path = gate_project(tmp_path / "project", limit=12)  # a planted regression fails from 8 items
        # The gate tracks two variants (a full run tracks the same way, six of them: slower, nothing more).
        ran = harness("gate", str(path), "--candidate", "local/lead:untagged", cwd=path.parent.parent)
        assert ran.returncode == 1, ran.stdout + ran.stderr
        run_id = parent_run(url)
        report = harness("report", run_id, "--out", str(tmp_path / "report"), cwd=tmp_path)
        assert report.returncode == 0, report.stdout + report.stderr
        assert "local/lead:untagged" in (tmp_path / "report" / "report.md").read_text()
        gate = harness(
            "gate", str(path), "--candidate", "local/lead-2:untagged", "--against", run_id, cwd=path.parent.parent
        )
        assert gate.returncode == 1, gate.stdout + gate.stderr
        assert "using stored records for local/lead:tagged" in gate.stdout and "GATE FAIL" in gate.stdout
    finally:
        server.close()


@pytest.mark.slow
def test_a_run_tracked_straight_into_postgres_keeps_its_records_and_traces(
    tmp_path: Path, postgres: str, model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedded writer's SQL fast path for traces, on PostgreSQL instead of sqlite."""
    import mlflow

    from tests.test_traces import ITEMS, child_runs, run_and_log

    uri = database(postgres, "direct")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    _, parent_id = run_and_log(tmp_path / "project", model_server)
    from harness.tracking.read import read_run

    stored = read_run(parent_id, uri)
    assert len(stored.records) == 2 * len(ITEMS)
    mlflow.set_tracking_uri(uri)
    for run in child_runs(parent_id).values():
        traces = mlflow.search_traces(locations=[run.info.experiment_id], run_id=run.info.run_id, return_type="list")
        assert len(traces) == len(ITEMS)
        assert {a.name for a in traces[0].info.assessments} >= {"rouge", "expected_response"}


@pytest.mark.slow
def test_plain_postgresql_scheme_is_refused_before_any_call_with_the_driver_spelling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = gate_project(tmp_path, limit=3)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://u:pw-canary-77@db:5432/x")
    done = harness("run", str(path), cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "postgresql+psycopg2://" in done.stderr and "MLFLOW_TRACKING_URI" in done.stderr
    assert "pw-canary-77" not in done.stdout + done.stderr
