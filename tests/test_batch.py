"""Runs bought through a Batch API: litellm's real file and batch client against a local server speaking
OpenAI's `/v1/files` and `/v1/batches` (states, output and error files, expiry), never a direct call
unless a request failed inside its batch, billed at the map's batch prices, resumable after kill -9."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from harness.api import gate as harness_gate
from harness.api import run as harness_run
from harness.config import ConfigError, ExecutionConfig, ModelConfig
from harness.model_map import bundled_path
from harness.planner import prepare
from harness.pool import CallSpec, ModelPool
from harness.pricing import resolve_price
from harness.workflow import RunOptions
from tests.batch_server import BatchServer
from tests.conftest import REPO, base_config, fake_model, write_project
from tests.fake_server import Usage
from tests.test_cli import in_process

MODEL = "gpt-4o-mini"
OTHER = "gpt-4.1-nano"
ITEMS = [{"id": f"i{n}", "document": f"Document {n} is about topic {n}.", "reference": f"topic {n}"} for n in range(8)]
FAST = {"mode": "batch", "poll_s": 0.02}


@pytest.fixture
def server() -> Iterator[BatchServer]:
    batch_server = BatchServer().start()
    batch_server.usage = Usage(prompt_tokens=100, completion_tokens=20)
    batch_server.answer = lambda request: _topic(request)
    yield batch_server
    batch_server.hold.clear()
    batch_server.stop()


def _topic(request: dict[str, Any]) -> str:
    text = str(request["messages"][-1]["content"])
    return "topic " + text.split("Document ")[1].split(" ")[0]


def _project(root: Path, server: BatchServer, models: list[str] = [MODEL], **overrides: Any) -> Path:  # noqa: B006
    config = base_config(
        [fake_model(server, m) for m in models],
        **{"params": {"temperature": 0, "max_tokens": 32}, "scorers": ["exact_match"], **overrides},
    )
    return write_project(root, config, items=ITEMS)


def _run(path: Path, **options: Any) -> Any:
    options = {"tracking": False, "assume_yes": True, **options}
    return harness_run(path, RunOptions(**options), Console(file=io.StringIO(), width=200))


def _batch_price(model: str, usage: Usage, suffix: str = "_batches") -> float:
    path = bundled_path()
    assert path is not None
    entry = json.loads(path.read_text(encoding="utf-8"))[model]  # litellm's own file, not harness's reading of it
    return (
        usage.prompt_tokens * entry[f"input_cost_per_token{suffix}"]
        + usage.completion_tokens * entry[f"output_cost_per_token{suffix}"]
    )


def test_every_record_arrives_through_the_batch_at_the_maps_batch_prices(tmp_path: Path, server: BatchServer) -> None:
    path = _project(tmp_path, server, [MODEL, OTHER], execution=FAST)
    outcome = _run(path)
    assert server.requests == []  # no direct call
    assert len(outcome.records) == 16 and all(r.error is None for r in outcome.records)
    assert {len(server.files[b.input_file_id].splitlines()) for b in server.batches.values()} == {8}
    assert len(server.batches) == 2  # one per model
    assert all(b.looks >= 2 and b.status == "completed" for b in server.batches.values())  # validating, running, done
    for record in outcome.records:
        assert record.usage.service_tier == "batch"
        model = record.model.removeprefix("openai/")
        assert abs(record.cost_usd - _batch_price(model, server.usage)) < 1e-12
        assert record.output == f"topic {record.item_id.removeprefix('i')}"
    assert (
        abs(outcome.result.spent_usd - 8 * (_batch_price(MODEL, server.usage) + _batch_price(OTHER, server.usage)))
        < 1e-12
    )
    # the same records under the same keys: a direct run afterwards pays for nothing
    direct = _run(path, batch=False)
    assert direct.result.calls_made == 0 and direct.result.cache_hits == 16
    assert server.requests == [] and len(server.batches) == 2
    assert [r.output for r in direct.records] == [r.output for r in outcome.records]


def test_a_direct_run_first_leaves_nothing_for_the_batch_to_buy(tmp_path: Path, server: BatchServer) -> None:
    path = _project(tmp_path, server)
    first = _run(path)
    assert len(server.requests) == 8 and all(r.usage.service_tier is None for r in first.records)
    again = _run(path, batch=True)
    assert again.result.calls_made == 0 and server.batches == {}


def _process(path: Path, root: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    return subprocess.Popen(
        [sys.executable, "-m", "harness", "run", str(path), "--yes", "--no-tracking", "--batch", *extra],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_a_look(server: BatchServer, process: subprocess.Popen[str], timeout_s: float = 120) -> None:
    """Until the process has created its batch and looked at it while it runs."""
    deadline = time.monotonic() + timeout_s
    while not any(b.looks >= 2 for b in server.batches.values()):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no batch was looked at in time"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("lost", ["nothing", "the batch id"])
def test_kill_9_with_a_batch_pending_then_the_same_command_collects_it_once(
    tmp_path: Path, server: BatchServer, lost: str
) -> None:
    """The process dies while its batch runs; with `lost` the batch id too (as if it died between creating
    the batch and storing its id): the next run finds the batch by its tag, and creates none."""
    path = _project(tmp_path, server, execution={"poll_s": 0.05})
    server.hold.set()
    process = _process(path, tmp_path)
    _wait_for_a_look(server, process)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert len(server.batches) == 1 and server.batch_answered == {}
    if lost == "the batch id":
        with sqlite3.connect(tmp_path / "mlruns" / "batches.sqlite") as db:
            db.execute("UPDATE submissions SET batch_id = NULL")
    server.hold.clear()
    again = in_process(["run", str(path), "--yes", "--no-tracking", "--batch"], tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(server.batches) == 1  # one batch on the server, polled again, not resubmitted
    assert sum(1 for f in server.files.values() if b'"custom_id"' in f and b'"method"' in f) == 1  # one upload
    assert server.requests == [] and sorted(server.batch_answered.values()) == [1] * 8  # nothing paid twice
    assert "8 calls made" in again.stdout
    spent = float(again.stdout.split(" spent")[0].rsplit("$", 1)[1])
    assert spent == pytest.approx(8 * _batch_price(MODEL, server.usage), abs=1e-4)
    third = in_process(["run", str(path), "--yes", "--no-tracking", "--batch"], tmp_path)
    assert "0 calls made, 8 served from the response cache" in third.stdout and len(server.batches) == 1


def test_requests_that_fail_inside_a_batch_go_to_the_retry_path(tmp_path: Path, server: BatchServer) -> None:
    """A 500 inside the batch is retried directly (and answered); a 400 is an error on its record, not
    retried; the rest arrive through the batch."""
    server.line_status = lambda body: {"Document 1 ": 500, "Document 2 ": 400}.get(
        next((k for k in ("Document 1 ", "Document 2 ") if k in str(body["messages"])), ""), 200
    )
    outcome = _run(_project(tmp_path, server, execution=FAST))
    by_item = {r.item_id: r for r in outcome.records}
    assert by_item["i1"].error is None and by_item["i1"].output == "topic 1"
    assert by_item["i1"].usage.service_tier is None  # bought directly, at the standard price
    assert abs(by_item["i1"].cost_usd - _batch_price(MODEL, server.usage, suffix="")) < 1e-12
    assert by_item["i2"].error is not None and by_item["i2"].error.type == "HTTP400" and by_item["i2"].cost_usd == 0
    assert [str(r["messages"]) for r in server.requests] == [str(json.loads(_line(server, "i1"))["body"]["messages"])]
    assert all(by_item[f"i{n}"].usage.service_tier == "batch" for n in (0, 3, 4, 5, 6, 7))


def _line(server: BatchServer, item: str) -> bytes:
    number = item.removeprefix("i")
    inputs = next(f for f in server.files.values() if b'"method"' in f)
    return next(line for line in inputs.splitlines() if f"Document {number} ".encode() in line)


def test_an_expired_batch_is_reported_and_its_unrun_requests_go_to_a_new_batch(
    tmp_path: Path, server: BatchServer
) -> None:
    server.expire_after = 3
    server.expire_once = True
    console = io.StringIO()
    outcome = harness_run(
        _project(tmp_path, server, execution=FAST),
        RunOptions(tracking=False, assume_yes=True),
        Console(file=console, width=200),
    )
    assert len(server.batches) == 2
    first, second = server.batches.values()
    assert first.status == "expired" and second.status == "completed"
    assert len(server.files[second.input_file_id].splitlines()) == 5
    assert all(r.error is None and r.usage.service_tier == "batch" for r in outcome.records)
    assert server.requests == [] and sorted(server.batch_answered.values()) == [1] * 8
    text = " ".join(console.getvalue().split())
    assert f"batch {first.id} ({'openai/' + MODEL}) ended expired with 5 of 8 requests not run" in text


def test_batches_are_split_within_the_providers_limits(tmp_path: Path, server: BatchServer) -> None:
    """Random limits on requests and bytes per batch: every batch within both, every call in exactly one."""
    rng = random.Random(7)
    for draw in range(10):
        max_requests, max_bytes = rng.randint(1, 9), rng.randint(400, 3000)
        before = set(server.batches)
        execution = {**FAST, "max_requests": max_requests, "max_bytes": max_bytes}
        outcome = _run(_project(tmp_path / str(draw), server, execution=execution))
        sent = [server.files[b.input_file_id] for name, b in server.batches.items() if name not in before]
        assert all(len(f) <= max_bytes and len(f.splitlines()) <= max_requests for f in sent), (max_requests, max_bytes)
        ids = [json.loads(line)["custom_id"] for f in sent for line in f.splitlines()]
        assert len(ids) == len(set(ids)) == 8  # every call once, in one batch
        assert len(sent) >= max(-(-8 // max_requests), -(-sum(map(len, sent)) // max_bytes))
        assert all(r.error is None for r in outcome.records)


def test_the_cap_reserves_at_batch_prices(tmp_path: Path, server: BatchServer) -> None:
    """A cap that covers every call's worst case at batch prices, and not at standard ones: all run."""
    path = _project(tmp_path, server, execution=FAST)
    plan = prepare(prepare_experiment(path))
    pool = ModelPool.for_experiment(plan.experiment)
    specs = [plan.call(v, item) for v in plan.runnable for item in plan.eval_set.items]
    batch_worst = sum(pool.worst_case_usd(s) for s in specs)
    direct = ModelPool.for_experiment(plan.experiment.model_copy(update={"execution": ExecutionConfig()}))
    standard_worst = sum(direct.worst_case_usd(s) for s in specs)
    assert standard_worst == pytest.approx(2 * batch_worst, rel=1e-9)
    outcome = _run(path, max_usd=1.2 * batch_worst)
    assert outcome.result.not_run == 0 and len(outcome.records) == 8
    assert _run(_project(tmp_path / "d", server), max_usd=1.2 * batch_worst).result.not_run > 0  # direct: not all


def prepare_experiment(path: Path) -> Any:
    from harness.config import load_config

    return load_config(path)


@pytest.mark.slow
def test_the_estimate_shows_batch_against_standard_cost_and_the_wait(tmp_path: Path, server: BatchServer) -> None:
    path = _project(tmp_path, server)
    done = in_process(["estimate", str(path), "--batch"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    text = " ".join(done.stdout.split())
    assert "by batch: 8 calls expected" in text and "at standard prices (50% less)" in text
    assert "results within the provider's 24 h window" in text
    _run(path, batch=True, use_cache=False)
    later = " ".join(in_process(["estimate", str(path), "--batch"], tmp_path).stdout.split())
    assert "the last 1 batches here took" in later
    assert "by batch" not in " ".join(in_process(["estimate", str(path)], tmp_path).stdout.split())


def test_a_judge_is_batched_too(tmp_path: Path, server: BatchServer) -> None:
    rubric = tmp_path / "prompts" / "judges"
    judge = {"model": {**fake_model(server, OTHER), "execution": FAST}, "rubric": "prompts/judges/r.j2"}
    path = _project(tmp_path, server, scorers=["exact_match", {"llm_judge": judge}])
    rubric.mkdir(parents=True)
    (rubric / "r.j2").write_text("{% block user %}Candidate: {{ output }}. Say Score: N (1-5).{% endblock %}")
    server.answer = lambda request: "Score: 4" if "Candidate:" in str(request["messages"]) else _topic(request)
    outcome = _run(path)
    judged = [b for b in server.batches.values() if b"Candidate:" in server.files[b.input_file_id]]
    assert len(judged) == 1 and len(server.files[judged[0].input_file_id].splitlines()) == 8
    assert len(server.requests) == 8  # the candidate directly, the judge by batch
    assert all(r.scores["llm_judge"] == 0.75 for r in outcome.records)
    assert sum(r.eval_cost_usd for r in outcome.records) == pytest.approx(
        8 * _batch_price(OTHER, server.usage), abs=1e-12
    )


@pytest.mark.slow
def test_the_sequential_gate_submits_one_batch_per_stage(tmp_path: Path, server: BatchServer) -> None:
    items = [
        {"id": f"i{n}", "document": f"Document {n} is about topic {n}.", "reference": f"topic {n}"} for n in range(60)
    ]
    config = base_config(
        [fake_model(server, MODEL), fake_model(server, OTHER)],
        params={"temperature": 0, "max_tokens": 32},
        scorers=["exact_match"],
        baseline={"model": f"openai/{MODEL}", "prompt": "terse"},
        gate={"metric": "exact_match", "margin": 0.2, "sequential": {"looks": 5}},
        execution=FAST,
    )
    path = write_project(tmp_path, config, items=items)
    # both models miss the items ending in 7 (no ceiling); otherwise alike, so the gate passes early
    server.answer = lambda request: "zebra" if _topic(request).endswith("7") else _topic(request)
    outcome = harness_gate(path, None, None, RunOptions(tracking=False, assume_yes=True), Console(file=io.StringIO()))
    stages = None
    used = len({r.item_id for r in outcome.run.records})
    assert used < 60  # stopped early: identical answers pass before the last look
    assert server.requests == []
    per_stage = [len(server.files[b.input_file_id].splitlines()) for b in server.batches.values()]
    assert len(server.batches) % 2 == 0 and sum(per_stage) == 2 * used, (per_stage, stages)
    assert len(server.batches) == 2 * (used // 12)  # one batch per model and stage of 12 items


def test_a_model_without_a_batch_api_is_refused_before_any_call(tmp_path: Path, server: BatchServer) -> None:
    config = base_config(
        [{"model": "local/smollm2-135m", "execution": {"mode": "batch"}}, fake_model(server, MODEL)],
        scorers=["exact_match"],
    )
    path = write_project(tmp_path, config, items=ITEMS)
    with pytest.raises(ConfigError) as raised:
        prepare(prepare_experiment(path))
    assert raised.value.field == "models[0].execution.mode" and "no batch API" in raised.value.problem
    assert server.requests == [] and server.batches == {}


def test_run_batch_calls_a_model_with_no_batch_api_directly(tmp_path: Path, server: BatchServer) -> None:
    cfg = ModelConfig(model="local/smollm2-135m")
    pool = ModelPool(execution=ExecutionConfig(mode="batch"))
    assert not pool.batched(cfg)
    remote = ModelConfig(model=f"openai/{MODEL}", api_base=server.url)
    assert pool.batched(remote) and not ModelPool().batched(remote)
    spec = CallSpec(remote, resolve_price(remote, "test"), [{"role": "user", "content": "x"}], {"max_tokens": 8})
    assert pool.tier(spec) == "batch" and ModelPool().tier(spec) is None


CLAUDE = "claude-haiku-4-5"
SYSTEM_PROMPT = "{% block system %}Be brief.{% endblock %}{% block user %}Summarise: {{ document }}{% endblock %}"


def _claude_project(root: Path, server: BatchServer, **execution: Any) -> Path:
    model = {"model": f"anthropic/{CLAUDE}", "api_base": server.origin}
    config = base_config(
        [model],
        params={"temperature": 0, "max_tokens": 32},
        scorers=["exact_match"],
        execution={**FAST, **execution},
    )
    return write_project(root, config, items=ITEMS, templates={"terse": SYSTEM_PROMPT})


def test_anthropic_message_batches_through_our_adapter_at_the_maps_batch_prices(
    tmp_path: Path, server: BatchServer
) -> None:
    server.usage = Usage(prompt_tokens=100, completion_tokens=20, cached_tokens=40)
    server.expire_after, server.expire_once = 6, True
    outcome = _run(_claude_project(tmp_path, server))
    assert server.requests == [] and len(server.batches) == 2  # 2 of 8 expired, sent again in a second batch
    assert [b.counts["total"] for b in server.batches.values()] == [8, 2]
    assert all(p["system"] == "Be brief." and p["max_tokens"] == 32 for p in server.anthropic_params)
    assert all(m["role"] == "user" for p in server.anthropic_params for m in p["messages"])
    path = bundled_path()
    assert path is not None
    entry = json.loads(path.read_text(encoding="utf-8"))[CLAUDE]
    expected = (
        60 * entry["input_cost_per_token_batches"]
        + 40 * entry["cache_read_input_token_cost_batches"]
        + 20 * entry["output_cost_per_token_batches"]
    )
    for record in outcome.records:
        assert record.error is None and record.usage.service_tier == "batch"
        assert record.usage.input_tokens == 100 and record.usage.cached_input_tokens == 40
        assert abs(record.cost_usd - expected) < 1e-12
        assert record.output == f"topic {record.item_id.removeprefix('i')}"


def test_a_message_batch_whose_id_was_lost_is_found_again_not_bought_twice(tmp_path: Path, server: BatchServer) -> None:
    """The first run gives up waiting (max_wait_h) with its batch running; its id is then lost from the
    ledger (as if the process died before storing it). The next run finds the batch, creates none."""
    path = _claude_project(tmp_path, server, max_wait_h=0.0002)
    server.hold.set()
    first = _run(path)
    assert all(r.error is not None and r.error.type == "BatchPending" for r in first.records)
    assert first.result.spent_usd == 0 or first.status.spent_usd >= 0
    with sqlite3.connect(tmp_path / "mlruns" / "batches.sqlite") as db:
        db.execute("UPDATE submissions SET batch_id = NULL")
    server.hold.clear()
    again = _run(_claude_project(tmp_path, server))
    assert len(server.batches) == 1 and sorted(server.batch_answered.values()) == [1] * 8
    assert all(r.error is None and r.usage.service_tier == "batch" for r in again.records)


def test_a_hostile_output_file_loses_nothing_and_pays_for_nothing_twice(tmp_path: Path, server: BatchServer) -> None:
    """Lines that are not JSON, a line for a request never sent, and an answer whose body is not a chat
    completion: the run ends, the garbled answer is an error record (the provider billed it, so it is not
    bought again directly), every other item is answered, and nothing is called directly."""

    def mangle(rows: list[dict[str, Any]]) -> list[Any]:
        rows[0] = {**rows[0], "response": {"status_code": 200, "body": {"choices": [1], "usage": 7}}}
        return ["{not json", *rows, {"custom_id": "never-sent", "response": {"status_code": 200, "body": {}}}, "\x00"]

    server.mangle = mangle
    path = _project(tmp_path, server, execution=FAST)
    outcome = _run(path)
    assert len(outcome.records) == len(ITEMS) and server.requests == []
    errors = [r for r in outcome.records if r.error is not None]
    assert len(errors) == 1 and errors[0].error.type == "BatchResultError", [r.error for r in errors]
    assert all(r.scores["exact_match"] == 1.0 for r in outcome.records if r.error is None)
