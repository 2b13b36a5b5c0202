"""Reliability: provider faults lose nothing and pay nothing twice; secrets never leak; concurrent runs."""

from __future__ import annotations

import io
import os
import sqlite3
from pathlib import Path

import pytest
from rich.console import Console

from harness.api import run as harness_run
from harness.config import load_config
from harness.workflow import RunOptions
from tests.conftest import base_config, fake_model, wait_for_requests, write_project
from tests.fake_server import FAULT_KINDS, FakeModelServer, Fault
from tests.test_cli import harness
from tests.test_shared_cache import finish
from tests.test_shared_cache import harness as spawn

PRICE = {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}


@pytest.mark.slow
def test_500_items_at_20_percent_faults_lose_nothing(
    tmp_path: Path, model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = [{"id": f"i{n}", "document": f"Item {n} says {n}.", "reference": f"item {n}"} for n in range(500)]
    # The timeout sits well below the slow fault and well above a normal answer, even on a loaded machine
    # (parallel test workers, the server's threads sharing this process with the run): an answer that
    # arrives after the client gave up is billed twice by any server. At 2.5 s a normal answer outlasted it
    # once in a loaded suite run; the slow fault's wait costs no CPU, so the margin is wide.
    monkeypatch.setitem(FAULT_KINDS, "slow", Fault(kind="slow", delay_s=12.0))
    model_server.inject_faults(0.2, list(FAULT_KINDS), seed=7)
    config = base_config([fake_model(model_server, price=PRICE)], concurrency=32, timeout_s=6, max_retries=5)
    path = write_project(tmp_path, config, items=items)
    console = Console(file=io.StringIO(), width=250)
    outcome = harness_run(load_config(path), RunOptions(wide=True), console)
    records = outcome.records
    injected = sum(model_server.faults_injected.values())
    assert set(model_server.faults_injected) == set(FAULT_KINDS)
    assert injected >= 0.15 * len(model_server.requests)
    # no item lost: one record per item, each a success with output or a recorded error with its type
    assert sorted(r.item_id for r in records) == sorted(i["id"] for i in items)
    for r in records:
        assert (r.error is None) == (r.output is not None)
        assert r.error is None or r.error.type
    # no successful call paid twice: every prompt got at most one billable completion
    assert max(model_server.billable.values()) == 1
    successes = [r for r in records if r.error is None]
    assert len(successes) >= model_server.faults_injected.get("no_usage", 0)
    # retries are bounded and reported
    assert all(r.attempts <= 6 for r in records)
    summary = outcome.summaries[0]
    assert summary.retries == sum(r.attempts - 1 for r in records) > 0
    assert f"{summary.retries} retries" in console.file.getvalue()  # type: ignore[attr-defined]
    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    child = mlflow.search_runs(
        experiment_names=["test-exp"], filter_string="tags.`harness.kind` = 'variant'", output_format="list"
    )[0]
    assert child.data.metrics["retries"] == summary.retries
    assert child.data.metrics["n_items"] == 500


@pytest.mark.slow
def test_fake_api_key_never_leaks(
    tmp_path: Path, model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "sk-test-LEAKCHECK-0123456789abcdef"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    from tests.fake_server import Fault

    # the provider echoes the key back in an error, as real 401s do with part of it
    model_server.fail_next(Fault(status=401, body={"error": {"message": f"Incorrect API key provided: {key}"}}))
    config = base_config(
        [fake_model(model_server, price=PRICE, api_key_env="OPENAI_API_KEY")], max_retries=1, concurrency=1
    )
    path = write_project(tmp_path, config)
    result = harness("run", str(path), cwd=tmp_path, process=True)  # every channel a process has
    assert result.returncode == 0, result.stderr
    report = harness("report", _parent_id(), "--out", str(tmp_path / "report"), cwd=tmp_path, process=True)
    assert report.returncode == 0
    for text in (result.stdout, result.stderr, report.stdout, report.stderr):
        assert key not in text
    store = Path(os.environ["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///")).parent
    for root in (store, tmp_path):
        for file in root.rglob("*"):
            if file.is_file():
                assert key.encode() not in file.read_bytes(), file
    records = (store / "artifacts").rglob("records.jsonl")
    assert any("Incorrect API key provided: ***" in p.read_text() for p in records)


def _parent_id() -> str:
    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    run = mlflow.search_runs(
        experiment_names=["test-exp"], filter_string="tags.`harness.kind` = 'experiment'", output_format="list"
    )[0]
    return run.info.run_id


@pytest.mark.slow
def test_two_runs_on_one_store_at_once(
    tmp_path: Path, model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two experiments tracked into one MLflow store and sharing one response cache, at the same time: one
    a process of its own, the other in this process once the first is calling."""
    model_server.delay_s = 0.05
    # Each run has at most 8 calls in flight: the server holds the first ones until both runs are calling.
    model_server.hold_until_in_flight = 9
    items = [{"id": f"i{n}", "document": f"Item {n}.", "reference": "x"} for n in range(40)]
    paths = []
    for name in ("first", "second"):
        root = tmp_path / name
        config = base_config([fake_model(model_server, price=PRICE)], name=f"exp-{name}", concurrency=8)
        paths.append(write_project(root, config, items=items))
    shared_cache = tmp_path / "shared-cache.sqlite"
    monkeypatch.setenv("HARNESS_CACHE", str(shared_cache))
    first = spawn("run", str(paths[0]), cwd=paths[0].parent.parent, env={})
    wait_for_requests(model_server, 1, first, timeout_s=120)
    second = harness("run", str(paths[1]), cwd=paths[1].parent.parent)
    finish(first)
    assert second.returncode == 0, second.stdout + second.stderr
    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    for name in ("exp-first", "exp-second"):
        children = mlflow.search_runs(
            experiment_names=[name], filter_string="tags.`harness.kind` = 'variant'", output_format="list"
        )
        assert len(children) == 1 and children[0].data.metrics["n_items"] == 40
    store = Path(os.environ["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///"))
    for db_path in (store, shared_cache):
        with sqlite3.connect(db_path) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with sqlite3.connect(shared_cache) as db:
        assert db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 40


CANARIES = {
    "api_key_env": "canary-LLMCREDS-4f2a9c",
    "header": "canary-HEADER-77d1e0",
    "url_password": "canary-URLPASS-b3c5aa",
    "url_query": "canary-URLQUERY-9e8d7c",
    "X-Api-Key": "canary-XAPIKEY-1a2b3c",
    "api-key": "canary-AZUREKEY-4d5e6f",
    "x-goog-api-key": "canary-GOOGKEY-7a8b9c",
    "x-auth-token": "canary-AUTHTOKEN-0d1e2f",
    "Ocp-Apim-Subscription-Key": "canary-APIMKEY-3a4b5c",
    "Cookie": "canary-COOKIE-6d7e8f",
    "X-Tenant-Secretless-Name": "canary-UNLISTED-9a0b1c",
}
HEADERS = ("X-Api-Key", "api-key", "x-goog-api-key", "x-auth-token", "Ocp-Apim-Subscription-Key", "Cookie")


@pytest.mark.slow
def test_secret_canaries_never_leak_through_any_channel(
    tmp_path: Path, model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys under an unusual variable name, in nested headers (hyphenated names, and a header no name test
    would call secret) and in a URL: echoed back by a provider's 401, they reach no record, cache, MLflow
    param, tag or artifact, report or terminal line."""
    from tests.fake_server import Fault

    monkeypatch.setenv("LLM_CREDS", CANARIES["api_key_env"])
    host = model_server.url.split("://", 1)[1]
    models = [
        fake_model(model_server, "creds", price=PRICE, api_key_env="LLM_CREDS"),
        fake_model(
            model_server,
            "headers",
            price=PRICE,
            params={
                "extra_headers": {
                    "Authorization": f"Bearer {CANARIES['header']}",
                    **{name: CANARIES[name] for name in HEADERS},
                    # not a name anyone would call secret: masked because it is not on the public list
                    "X-Tenant-Secretless-Name": CANARIES["X-Tenant-Secretless-Name"],
                    "anthropic-version": "2023-06-01",
                }
            },
        ),
        {**fake_model(model_server, "url", price=PRICE), "api_base": f"http://user:{CANARIES['url_password']}@{host}"},
        # never called (its key is unset, so it is skipped), but its params and the config are still logged
        {"model": "openai/gpt-4o-mini", "api_base": f"https://api.example.invalid/v1?key={CANARIES['url_query']}"},
    ]
    model_server.fail_next(*[Fault(kind="echo_headers")] * 9)  # every first call of every variant, echoed
    config = base_config(models, max_retries=0, concurrency=1)
    path = write_project(tmp_path / "project", config)
    result = harness("run", str(path), cwd=tmp_path, process=True)  # every channel a process has
    assert result.returncode in (0, 4), result.stdout + result.stderr
    report = harness("report", _parent_id(), "--out", str(tmp_path / "rebuilt"), cwd=tmp_path, process=True)
    assert report.returncode == 0, report.stderr
    echoed = [r for r in model_server.requests][:1]
    assert echoed  # the provider did receive the calls (and echoed their headers back)
    store = Path(os.environ["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///")).parent
    leaks = []
    for name, canary in CANARIES.items():
        for channel, text in (("stdout", result.stdout + report.stdout), ("stderr", result.stderr + report.stderr)):
            if canary in text:
                leaks.append((name, channel))
        for root in (store, tmp_path / "project" / "mlruns", tmp_path / "rebuilt", tmp_path / "project" / "reports"):
            for file in root.rglob("*") if root.exists() else []:
                if file.is_file() and canary.encode() in file.read_bytes():
                    leaks.append((name, str(file)))
    assert leaks == []
    records = "".join(p.read_text() for p in (store / "artifacts").rglob("records.jsonl"))
    assert "invalid credentials" in records and "***" in records


def quiet_run(path: Path, **options: object) -> object:
    return harness_run(load_config(path), RunOptions(tracking=False), Console(file=io.StringIO(), width=250))


def test_a_retry_after_of_a_day_waits_only_the_configured_clamp(tmp_path: Path, model_server: FakeModelServer) -> None:
    import time

    model_server.fail_next(Fault(status=429, headers={"Retry-After": "86400"}))
    config = base_config([fake_model(model_server, price=PRICE)], concurrency=1, max_retry_after_s=0.5)
    started = time.perf_counter()
    outcome = quiet_run(write_project(tmp_path, config))
    assert all(r.error is None for r in outcome.records)  # type: ignore[attr-defined]
    assert 0.5 <= time.perf_counter() - started < 60  # waited the clamp, not a day (nor the default 120 s)


def test_retry_after_that_is_not_a_number_falls_back_to_backoff(tmp_path: Path, model_server: FakeModelServer) -> None:
    from tests.fake_server import Fault

    for value in ("soon", "nan", "Wed, 99 Foo 2026", "-5"):
        model_server.fail_next(Fault(status=429, headers={"Retry-After": value}))
    config = base_config([fake_model(model_server, price=PRICE)], concurrency=1, max_retries=5)
    outcome = quiet_run(write_project(tmp_path, config))
    assert all(r.error is None for r in outcome.records)  # type: ignore[attr-defined]
    assert sum(r.attempts for r in outcome.records) == 3 + 4  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("prompt_tokens", "completion_tokens"), [(-40, 5), (10, -3), (10**12, 5), (10, 10**9)], ids=str
)
def test_implausible_usage_is_an_error_never_trusted_by_the_budget(
    tmp_path: Path, model_server: FakeModelServer, prompt_tokens: int, completion_tokens: int
) -> None:
    from tests.fake_server import Usage

    model_server.usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
    items = [{"id": f"i{n}", "document": f"Item {n}.", "reference": "x"} for n in range(10)]
    config = base_config([fake_model(model_server, price=PRICE)], budget={"max_usd": 0.0003}, concurrency=2)
    outcome = quiet_run(write_project(tmp_path, config, items=items))
    records = outcome.records  # type: ignore[attr-defined]
    assert records and all(r.error is not None and r.error.type == "ImplausibleUsage" for r in records)
    called = [r for r in records if r.attempts > 0]
    assert called and all(r.cost_usd > 0 for r in called)  # counted at the worst case, never negative
    assert 0 < outcome.status.spent_usd <= 0.0003  # type: ignore[attr-defined]
    # The model is called no more once it has reported what cannot be true (2 calls were in flight).
    assert len(model_server.requests) == len(called) <= 2
    assert all("not called" in r.error.message for r in records if r.attempts == 0)


def test_output_beyond_the_limit_is_billed_and_stops_that_model(tmp_path: Path, model_server: FakeModelServer) -> None:
    """A server billing 400 output tokens for max_tokens 16: the money is spent (billed as reported), the
    answer is an ImplausibleUsage error, the model is called no more, and the overshoot is one line."""
    from tests.fake_server import Usage

    model_server.usage = Usage(prompt_tokens=10, completion_tokens=400)
    items = [{"id": f"i{n}", "document": f"Item {n}.", "reference": "x"} for n in range(10)]
    cap = 0.0005  # room for a call's worst case (16 output tokens), not for 400
    config = base_config([fake_model(model_server, price=PRICE)], budget={"max_usd": cap}, concurrency=1)
    out = io.StringIO()
    outcome = harness_run(
        load_config(write_project(tmp_path, config, items=items)),
        RunOptions(tracking=False),
        Console(file=out, width=250),
    )
    records = outcome.records
    assert len(model_server.requests) == 1
    first = next(r for r in records if r.attempts > 0)
    assert first.error is not None and first.error.type == "ImplausibleUsage"
    assert "400 output tokens for a limit of 16" in first.error.message
    assert first.cost_usd == pytest.approx(10 * 1e-6 + 400 * 2e-6)  # billed as reported
    text = out.getvalue()
    assert "stopped calling openai/fake-model" in text, text
    over = outcome.status.spent_usd - cap
    assert over > 0 and f"${over:.4f} over the cap of ${cap:g}" in text


def test_an_answer_over_the_size_cap_is_an_error(tmp_path: Path, model_server: FakeModelServer) -> None:
    model_server.answer = lambda request: "x" * 2_000_000
    config = base_config([fake_model(model_server, price=PRICE)], max_response_chars=10_000)
    outcome = quiet_run(write_project(tmp_path, config))
    records = outcome.records  # type: ignore[attr-defined]
    assert all(r.error is not None and r.error.type == "ResponseTooLarge" and r.output is None for r in records)
    assert "2,000,000 characters" in records[0].error.message


def test_connection_refused_is_named_for_what_it_is(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    model = {"model": "openai/nobody", "api_base": f"http://127.0.0.1:{port}/v1", "price": PRICE}
    outcome = quiet_run(write_project(tmp_path, base_config([model], max_retries=1)))
    assert {r.error.type for r in outcome.records} == {"ConnectionRefused"}  # type: ignore[attr-defined]


@pytest.mark.slow
def test_capped_run_at_concurrency_32_with_faults_uses_the_cap_and_never_passes_it(
    tmp_path: Path, model_server: FakeModelServer
) -> None:
    """Counted on the test server: what it answered with 200 is what a provider would bill."""
    from tests.fake_server import Usage

    model_server.usage = Usage(prompt_tokens=40, completion_tokens=16)
    model_server.inject_faults(0.2, ["429_retry_after", "500", "503", "reset", "429_retry_after_soon"], seed=3)
    cap = 0.01
    items = [{"id": f"i{n}", "document": f"Document {n}. It says {n}.", "reference": "x"} for n in range(300)]
    config = base_config(
        [fake_model(model_server, price=PRICE)], concurrency=32, max_retries=4, budget={"max_usd": cap}
    )
    outcome = quiet_run(write_project(tmp_path, config, items=items))
    per_call = 40 * PRICE["input_cost_per_token"] + 16 * PRICE["output_cost_per_token"]
    billed = sum(model_server.billable.values()) * per_call
    assert 0.85 * cap <= billed <= cap, billed / cap
    assert outcome.status.spent_usd == pytest.approx(billed)  # type: ignore[attr-defined]
