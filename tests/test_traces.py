"""Records as MLflow traces with assessments, in a real temporary sqlite store and through a real server."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import mlflow
import pytest
from rich.console import Console

import harness
from harness.config import load_config
from harness.planner import prepare
from harness.runner import run_plan
from harness.scorers import score_records
from harness.summary import summarize
from harness.tracking import load_records, log_run, tracking_uri
from tests.conftest import ITEMS, base_config, fake_model, write_project
from tests.fake_server import FakeModelServer, Usage

PRICE = {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}
SECRET = "sk-test-SECRET-0123456789"


def run_and_log(
    tmp_path: Path, server: FakeModelServer, items: list[dict[str, str]] | None = None, **overrides: object
) -> tuple[object, str]:
    server.usage = Usage(prompt_tokens=50, completion_tokens=10)
    server.answer = lambda request: "cats purr " + SECRET if "Dogs" in str(request) else "cats purr"
    models = [
        fake_model(server, name="fake-a", price=PRICE, params={"api_key": SECRET}),
        fake_model(server, name="fake-b", price=PRICE),
    ]
    config = base_config(models, scorers=["rouge", "exact_match"], **overrides)
    experiment = load_config(write_project(tmp_path, config, items=items))
    plan = prepare(experiment)
    records = run_plan(plan, console=Console(file=io.StringIO())).records
    score_records(records, {i.id: i for i in plan.eval_set.items}, plan.scorers)
    run_id = log_run(plan, records, summarize(plan, records))
    mlflow.set_tracking_uri(tracking_uri(experiment))
    return plan, run_id


def child_runs(parent_id: str) -> dict[str, object]:
    client = mlflow.MlflowClient()
    parent = client.get_run(parent_id)
    runs = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    return {r.info.run_name: r for r in runs}


def test_each_record_is_a_trace_of_its_variant_run(tmp_path: Path, model_server: FakeModelServer) -> None:
    plan, parent_id = run_and_log(tmp_path, model_server)
    children = child_runs(parent_id)
    assert set(children) == {v.name for v in plan.variants}
    for run in children.values():
        assert run.data.tags["mlflow.runType"] == "genai_evaluate"
        assert "rouge/mean" in run.data.metrics
        traces = mlflow.search_traces(locations=[run.info.experiment_id], run_id=run.info.run_id, return_type="list")
        assert len(traces) == len(ITEMS)
        by_item = {t.info.trace_metadata["harness.item_id"]: t for t in traces}
        assert set(by_item) == {row["id"] for row in ITEMS}
        trace = by_item[ITEMS[0]["id"]]
        assert trace.info.token_usage == {"input_tokens": 50, "output_tokens": 10, "total_tokens": 60}
        assert trace.info.trace_metadata["mlflow.trace.cost"]
        cost = json.loads(trace.info.trace_metadata["mlflow.trace.cost"])["total_cost"]
        assert cost == pytest.approx(50 * 1e-6 + 10 * 2e-6)
        span = trace.data.spans[0]
        assert span.span_type == "LLM"
        assert span.inputs["messages"][-1]["role"] == "user"
        assert span.outputs == "cats purr"
        assert span.attributes["harness.attempts"] == 1
        names = {a.name: a for a in trace.info.assessments}
        assert set(names) == {"rouge", "exact_match", "expected_response"}
        assert names["expected_response"].expectation.value == ITEMS[0]["reference"]
        record = next(
            r for r in load_records(run.info.run_id, mlflow.get_tracking_uri()) if r.item_id == ITEMS[0]["id"]
        )
        assert names["rouge"].feedback.value == pytest.approx(record.scores["rouge"])


def test_secrets_never_reach_traces(tmp_path: Path, model_server: FakeModelServer) -> None:
    _, parent_id = run_and_log(tmp_path, model_server)
    db = Path(os.environ.get("MLFLOW_TRACKING_URI", "").removeprefix("sqlite:///") or tmp_path / "mlruns/mlflow.db")
    assert db.is_file()
    assert SECRET.encode() not in db.read_bytes()
    traces = mlflow.search_traces(
        locations=[next(iter(child_runs(parent_id).values())).info.experiment_id], return_type="list"
    )
    assert any("***" in str(t.data.spans[0].outputs) for t in traces)


@pytest.mark.parametrize(("setting", "expected"), [(False, 0), (1, 1), (0, 0)])
def test_traces_switch_caps_or_turns_them_off(
    tmp_path: Path, model_server: FakeModelServer, setting: bool | int, expected: int
) -> None:
    _, parent_id = run_and_log(tmp_path, model_server, traces=setting)
    for run in child_runs(parent_id).values():
        traces = mlflow.search_traces(locations=[run.info.experiment_id], run_id=run.info.run_id, return_type="list")
        assert len(traces) == expected
        records = load_records(run.info.run_id, mlflow.get_tracking_uri())
        assert len(records) == len(ITEMS)  # the records artifact stays whole
    stored = harness.load_run(parent_id)  # report, route and reprice read records, not traces
    rebuilt = harness.analyze(stored)
    assert {s.variant: s.n_items for s in rebuilt.summaries} == {v.name: len(ITEMS) for v in stored.manifest.variants}
    assert harness.reprice(stored).rebuilt.summaries[0].cost_total_usd > 0


@pytest.mark.slow
def test_traces_reach_a_tracking_server(
    tmp_path: Path, model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through MLflow's client (not the SQL fast path): the same traces and assessments on a real server."""
    from tests.servers import start_mlflow_server

    server = start_mlflow_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path)
    url = next(server)
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        _, parent_id = run_and_log(tmp_path / "project", model_server)
        assert mlflow.get_tracking_uri() == url
        for run in child_runs(parent_id).values():
            traces = mlflow.search_traces(
                locations=[run.info.experiment_id], run_id=run.info.run_id, return_type="list"
            )
            assert len(traces) == len(ITEMS)
            trace = traces[0]
            assert trace.info.token_usage["total_tokens"] == 60
            assert {a.name for a in trace.info.assessments} == {"rouge", "exact_match", "expected_response"}
            assert trace.data.spans[0].span_type == "LLM"
    finally:
        server.close()


@pytest.mark.slow
def test_a_judges_reply_is_the_rationale_and_an_unparseable_verdict_an_error(
    tmp_path: Path, model_server: FakeModelServer
) -> None:
    from harness.api import run as harness_run
    from harness.workflow import RunOptions
    from tests.test_judge import answers, judge_config, project

    model_server.answer = answers({"cats": "Faithful.\nScore: 5", "dogs": "Close.\nScore: 4", "birds": "Hmm."})
    experiment = load_config(project(tmp_path, judge_config(model_server, tmp_path)))
    outcome = harness_run(experiment, RunOptions(assume_yes=True), Console(file=io.StringIO(), width=200))
    mlflow.set_tracking_uri(tracking_uri(experiment))
    run = next(iter(child_runs(outcome.run_id).values()))
    traces = mlflow.search_traces(locations=[run.info.experiment_id], run_id=run.info.run_id, return_type="list")
    judged = {
        t.info.trace_metadata["harness.item_id"]: next(a for a in t.info.assessments if a.name == "llm_judge")
        for t in traces
    }
    assert judged["b"].feedback.value == 0.75
    assert judged["b"].rationale == "Close.\nScore: 4"
    assert judged["b"].source.source_type == "LLM_JUDGE"
    assert judged["c"].feedback.value is None
    assert "unparseable verdict" in judged["c"].feedback.error.error_message


def test_hostile_items_and_outputs_still_trace(tmp_path: Path, model_server: FakeModelServer) -> None:
    long_id = "ü" * 3000 + "/../\x00?"
    items = [
        {"id": long_id, "document": "<script>alert(1)</script> 🐈 \u202e", "reference": "cats purr"},
        {"id": "plain", "document": "Cats purr.", "reference": ""},
    ]
    _, parent_id = run_and_log(
        tmp_path, model_server, items=items, epochs=2, params={"temperature": 0.7, "max_tokens": 16}
    )
    for run in child_runs(parent_id).values():
        traces = mlflow.search_traces(locations=[run.info.experiment_id], run_id=run.info.run_id, return_type="list")
        assert len(traces) == 2 * len(items)  # every sample of every item
        names = {t.info.tags["mlflow.traceName"] for t in traces}
        assert "plain#0" in names and "plain#1" in names
        long_one = next(t for t in traces if t.info.trace_metadata["harness.item_id"].startswith("ü"))
        assert long_one.info.trace_metadata["harness.item_id"] == long_id[:1000]
        assert "<script>" in long_one.data.spans[0].inputs["messages"][-1]["content"]


@pytest.mark.slow
def test_a_cached_rerun_traces_no_spending(tmp_path: Path, model_server: FakeModelServer) -> None:
    from harness.api import run as harness_run
    from harness.workflow import RunOptions

    model_server.usage = Usage(prompt_tokens=50, completion_tokens=10)
    config = base_config([fake_model(model_server, name="fake-a", price=PRICE)])
    experiment = load_config(write_project(tmp_path, config))
    quiet = Console(file=io.StringIO(), width=200)
    first = harness_run(experiment, RunOptions(assume_yes=True), quiet)
    second = harness_run(experiment, RunOptions(assume_yes=True), quiet)
    assert second.result.calls_made == 0
    mlflow.set_tracking_uri(tracking_uri(experiment))
    for outcome, spent, tokens in ((first, 50 * 1e-6 + 10 * 2e-6, 60), (second, 0.0, 0)):
        run = next(iter(child_runs(outcome.run_id).values()))
        traces = mlflow.search_traces(locations=[run.info.experiment_id], run_id=run.info.run_id, return_type="list")
        assert len(traces) == len(ITEMS)
        for trace in traces:
            assert json.loads(trace.info.trace_metadata["mlflow.trace.cost"])["total_cost"] == pytest.approx(spent)
            assert trace.data.spans[0].attributes["harness.cost_usd"] == pytest.approx(50 * 1e-6 + 10 * 2e-6)
            # the Overview sums tokens over every run: a cached re-run consumed none; the call's stay beside
            assert json.loads(trace.info.trace_metadata["mlflow.trace.tokenUsage"])["total_tokens"] == tokens
            assert trace.data.spans[0].attributes["harness.usage"]["total_tokens"] == 60


def test_ablation_variants_trace_their_own_rendered_prompt(tmp_path: Path, model_server: FakeModelServer) -> None:
    templates = {"terse": "{% block user %}Summarise in {{ words }} words: {{ document }}{% endblock %}"}
    model_server.usage = Usage(prompt_tokens=50, completion_tokens=10)
    config = base_config([fake_model(model_server, name="fake-a", price=PRICE)], vars={"words": [5, 50]})
    experiment = load_config(write_project(tmp_path, config, templates=templates))
    plan = prepare(experiment)
    records = run_plan(plan, console=Console(file=io.StringIO())).records
    score_records(records, {i.id: i for i in plan.eval_set.items}, plan.scorers)
    parent_id = log_run(plan, records, summarize(plan, records))
    mlflow.set_tracking_uri(tracking_uri(experiment))
    runs = child_runs(parent_id)
    assert len(runs) == 2
    for name, run in runs.items():
        words = "50" if "words=50" in name else "5"
        traces = mlflow.search_traces(locations=[run.info.experiment_id], run_id=run.info.run_id, return_type="list")
        assert len(traces) == len(ITEMS)
        for trace in traces:
            assert trace.data.spans[0].inputs["messages"][-1]["content"].startswith(f"Summarise in {words} words:")


def _trace_view(parent_id: str) -> dict[str, list[tuple[object, ...]]]:
    """What a person reads of each variant's traces, ids and clock times aside (durations too: the two
    runs make their own calls, whose latencies differ)."""
    view = {}
    for name, run in child_runs(parent_id).items():
        rows = []
        traces = mlflow.search_traces(locations=[run.info.experiment_id], run_id=run.info.run_id, return_type="list")
        for trace in traces:
            info, span = trace.info, trace.data.spans[0]
            metadata = {k: v for k, v in info.trace_metadata.items() if k.startswith(("harness.", "mlflow.trace."))}
            assessments = sorted(
                (
                    a.name,
                    json.dumps(a.feedback.value if a.feedback else a.expectation.value),
                    a.source.source_type,
                    a.rationale,
                    a.run_id == run.info.run_id,
                )
                for a in info.assessments
            )
            attributes = {k: v for k, v in span.attributes.items() if k != "mlflow.traceRequestId"}
            rows.append(
                (
                    info.trace_metadata["harness.item_id"],
                    str(info.state),
                    info.request_preview,
                    info.response_preview,
                    json.dumps(info.token_usage, sort_keys=True),
                    json.dumps(metadata, sort_keys=True),
                    info.tags.get("mlflow.traceName"),
                    span.span_type,
                    span.name,
                    json.dumps(span.inputs, sort_keys=True),
                    json.dumps(span.outputs),
                    json.dumps(attributes, sort_keys=True, default=str),
                    str(span.status.status_code),
                    tuple(assessments),
                )
            )
        view[name] = sorted(rows)
    return view


def test_the_bulk_path_and_mlflows_public_client_write_the_same_traces(
    tmp_path: Path, model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SQL fast path is taken on the MLflow the package is tested with, and what it writes reads back
    exactly as what MLflow's own client writes when the path is switched off."""
    from harness.tracking import sql_traces
    from harness.tracking.store import open_store

    _, bulk_id = run_and_log(tmp_path / "bulk", model_server)
    store = sql_traces.current_store(open_store(mlflow.get_tracking_uri()))
    assert sql_traces.writer(store) is not None, "the fast path declined the store it was written for"
    bulk = _trace_view(bulk_id)
    monkeypatch.setenv(sql_traces.OFF_SWITCH, "off")
    assert sql_traces.writer(store) is None
    _, client_id = run_and_log(tmp_path / "client", model_server)
    client = _trace_view(client_id)
    assert set(bulk) == set(client) and all(len(rows) == len(ITEMS) for rows in bulk.values())
    for name in bulk:
        assert bulk[name] == client[name]


def test_a_store_whose_tables_differ_is_left_to_mlflows_client(tmp_path: Path) -> None:
    """A database whose tables are not what the rows expect (another MLflow's schema, here a column
    dropped from a real store) gets no rows from harness: the check names the column."""
    import sqlite3

    from harness.tracking import sql_traces
    from harness.tracking.store import open_store

    uri = f"sqlite:///{tmp_path / 'drifted.db'}"
    store = sql_traces.current_store(open_store(uri))
    problem, _ = sql_traces.schema_problem(store.engine, sql_traces._tables())
    assert problem is None
    with sqlite3.connect(tmp_path / "drifted.db") as db:
        db.execute("ALTER TABLE spans DROP COLUMN model_provider")
    problem, _ = sql_traces.schema_problem(store.engine, sql_traces._tables())
    assert problem == "spans has no column model_provider"
    assert sql_traces.writer(store) is None


def test_the_suite_runs_on_the_oldest_mlflow_the_package_declares() -> None:
    """The fast path and the stored-run readers are tested on MLflow's declared floor: raising the
    tested version means raising the floor (or testing both)."""
    import re
    import tomllib
    from importlib.metadata import version

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    declared = next(d for d in project["project"]["dependencies"] if re.match(r"mlflow\b", d))
    floor = re.search(r">=\s*([\d.]+)", declared)
    assert floor is not None, f"mlflow is declared without a floor: {declared}"
    assert version("mlflow") == floor[1]
