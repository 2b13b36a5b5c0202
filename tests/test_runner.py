"""The runner against a real HTTP server through litellm: cost, retries, timeouts, errors."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from rich.console import Console

from harness.config import load_config
from harness.planner import prepare
from harness.records import Record
from harness.runner import run_plan
from tests.conftest import base_config, fake_model, write_project
from tests.fake_server import FakeModelServer, Fault, Usage

PRICE = {"input_cost_per_token": 1e-6, "output_cost_per_token": 3e-6, "cache_read_input_token_cost": 2.5e-7}


def run(path: Path) -> list[Record]:
    plan = prepare(load_config(path))
    return run_plan(plan, console=Console(file=io.StringIO())).records


def test_cost_is_usage_times_price_with_cached_tokens(tmp_path: Path, model_server: FakeModelServer) -> None:
    model_server.usage = Usage(prompt_tokens=1000, completion_tokens=200, cached_tokens=400)
    config = base_config([fake_model(model_server, price=PRICE)], params={"temperature": 0, "max_tokens": 256})
    path = write_project(tmp_path, config)
    records = run(path)
    assert len(records) == 3
    expected = 600 * 1e-6 + 400 * 2.5e-7 + 200 * 3e-6
    for r in records:
        assert r.error is None
        assert r.usage.input_tokens == 1000 and r.usage.cached_input_tokens == 400
        assert r.cost_usd == pytest.approx(expected, rel=1e-12)
        assert "config override" in r.price_source


def test_reasoning_tokens_billed_at_reasoning_price(tmp_path: Path, model_server: FakeModelServer) -> None:
    model_server.usage = Usage(prompt_tokens=100, completion_tokens=50, reasoning_tokens=30)
    price = {**PRICE, "output_cost_per_reasoning_token": 5e-6}
    config = base_config([fake_model(model_server, price=price)], params={"temperature": 0, "max_tokens": 64})
    path = write_project(tmp_path, config)
    record = run(path)[0]
    assert record.usage.reasoning_tokens == 30
    assert record.cost_usd == pytest.approx(100 * 1e-6 + 20 * 3e-6 + 30 * 5e-6, rel=1e-12)


def test_per_hour_price_turns_latency_into_cost(tmp_path: Path, model_server: FakeModelServer) -> None:
    model_server.delay_s = 0.2
    path = write_project(tmp_path, base_config([fake_model(model_server, price={"usd_per_hour": 3.6})]))
    for r in run(path):
        assert r.latency_s >= 0.2
        assert r.cost_usd == pytest.approx(r.latency_s / 3600 * 3.6, rel=1e-9)


def test_rate_limit_retried_after_retry_after(tmp_path: Path, model_server: FakeModelServer) -> None:
    model_server.fail_next(Fault(status=429, headers={"Retry-After": "1"}))
    config = base_config([fake_model(model_server, price=PRICE)], concurrency=1)
    path = write_project(tmp_path, config, items=[{"id": "x", "document": "One. Two.", "reference": "one"}])
    start = time.perf_counter()
    record = run(path)[0]
    assert record.error is None
    assert record.attempts == 2
    assert time.perf_counter() - start >= 1.0
    assert len(model_server.requests) == 2


def test_server_errors_retried_then_recorded(tmp_path: Path, model_server: FakeModelServer) -> None:
    model_server.fail_next(*[Fault(status=500)] * 3)
    config = base_config([fake_model(model_server, price=PRICE)], concurrency=1, max_retries=2)
    path = write_project(tmp_path, config, items=[{"id": "x", "document": "One.", "reference": "one"}])
    record = run(path)[0]
    assert record.output is None
    assert record.error is not None and record.error.type == "InternalServerError"
    assert record.attempts == 3
    assert record.cost_usd == 0.0


def test_timeout_recorded_as_error_not_dropped(tmp_path: Path, model_server: FakeModelServer) -> None:
    model_server.fail_next(Fault(status=200, delay_s=5))  # far past the timeout, which a loaded machine meets
    config = base_config([fake_model(model_server, price=PRICE)], concurrency=1, timeout_s=2.0, max_retries=0)
    path = write_project(tmp_path, config)
    records = run(path)
    assert [r.item_id for r in records] == ["a", "b", "c"], "records in the eval's order, whatever the call order"
    timed_out = [r for r in records if r.error is not None]
    assert len(timed_out) == 1 and timed_out[0].error.type == "Timeout" and timed_out[0].output is None
    assert len(model_server.requests) == 3


def test_client_error_is_not_retried(tmp_path: Path, model_server: FakeModelServer) -> None:
    model_server.fail_next(Fault(status=400, body={"error": {"message": "bad request", "type": "invalid"}}))
    config = base_config([fake_model(model_server, price=PRICE)], concurrency=1)
    path = write_project(tmp_path, config, items=[{"id": "x", "document": "One.", "reference": "one"}])
    record = run(path)[0]
    assert record.attempts == 1
    assert record.error is not None and record.error.type == "BadRequestError"


def test_records_carry_prompt_identity(tmp_path: Path, model_server: FakeModelServer) -> None:
    path = write_project(tmp_path, base_config([fake_model(model_server, price=PRICE)]))
    records = run(path)
    assert len({r.prompt_hash for r in records}) == 3
    assert all(r.prompt_tokens_estimate > 0 for r in records)
    sent = model_server.requests[0]["messages"]
    assert sent[0] == {"role": "system", "content": "Be brief."}
    assert model_server.requests[0]["max_tokens"] == 16


def test_concurrency_limits_are_respected(tmp_path: Path, model_server: FakeModelServer) -> None:
    model_server.delay_s = 0.1
    items = [{"id": str(i), "document": f"Doc {i}.", "reference": "x"} for i in range(12)]
    config = base_config([fake_model(model_server, price=PRICE)], concurrency=4)
    records = run(write_project(tmp_path, config, items=items))
    assert len(records) == 12 and model_server.max_in_flight == 4
    model_server.max_in_flight = 0
    config = base_config([fake_model(model_server, price=PRICE, concurrency=1)], concurrency=4)
    records = run(write_project(tmp_path, config, items=items))
    assert len(records) == 12 and model_server.max_in_flight == 1
    assert max(r.latency_s for r in records) < 1.0


@pytest.mark.parametrize("seed", range(10))
def test_what_the_provider_returned_reaches_the_record_unchanged(seed: int) -> None:
    """A call's result, the pool's completion and the record name their fields alike: every field the
    provider returned reaches the completion unless the pool settled it, and every completion field but
    `not_run` reaches the record."""
    import dataclasses
    import random

    from harness.pool import Completion
    from harness.providers.call import CallResult
    from harness.records import RecordError
    from harness.records import Usage as RecordUsage

    rng = random.Random(seed)
    result = CallResult(
        output=f"answer {rng.random()}",
        usage=RecordUsage(input_tokens=rng.randint(1, 999), output_tokens=rng.randint(1, 99)),
        latency_s=rng.random(),
        attempts=rng.randint(1, 5),
        error=RecordError(type="Timeout", message=str(rng.random())) if rng.random() < 0.5 else None,
        reported_cost_usd=rng.random(),
        reported_cost_source=f"source {seed}",
    )
    settled = RecordUsage(input_tokens=rng.randint(1, 999))
    done = Completion.of(result, usage=settled, cost_usd=rng.random(), price_source="p", price_notes=["n"])
    for f in dataclasses.fields(CallResult):
        if hasattr(done, f.name) and f.name != "usage":
            assert getattr(done, f.name) == getattr(result, f.name), f.name
    assert done.usage == settled
    record = Record(variant="v", item_id="i", model="m", prompt="p", prompt_hash="h", **done.record_fields())
    for f in dataclasses.fields(Completion):
        if f.name != "not_run":
            assert getattr(record, f.name) == getattr(done, f.name), f.name
