"""A team's shared cache: concurrent runs never pay twice (SQLite and Redis), claims outlive neither their
owner nor their lease, and N shards plus the assembling run equal one run.

Calls are counted on the test server, which is what a provider would bill.
"""

from __future__ import annotations

import collections
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from harness.api import run as harness_run
from harness.cache import ResponseCache, SqliteCache
from harness.config import ConfigError, load_config
from harness.records import Usage
from harness.workflow import RunOptions
from tests.conftest import REPO, base_config, fake_model, wait_for_requests, write_project
from tests.fake_server import FakeModelServer
from tests.servers import free_port, start_redis
from tests.test_cli import harness as run_cli

PRICE = {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}
JUDGE_RUBRIC = '{% block user %}Candidate: {{ output }}\nEnd with "Score: N" (1-5).{% endblock %}'


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from start_redis(tmp_path_factory.mktemp("redis"))


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The session's Redis, emptied for this test."""
    import redis

    client = redis.Redis.from_url(redis_server)
    client.flushall()
    client.close()
    return redis_server


def items(n: int) -> list[dict[str, str]]:
    return [{"id": f"i{k:03d}", "document": f"Item number {k} is here.", "reference": f"item {k}"} for k in range(n)]


def judged_project(root: Path, server: FakeModelServer, n_items: int, embedder: bool = False, **overrides: Any) -> Path:
    """Two candidates and an LLM judge on the test server (and an embedder): their calls are paid too."""
    judge = {"model": fake_model(server, "judge", price=PRICE), "rubric": "prompts/judges/r.j2"}
    scorers: list[Any] = ["rouge", {"llm_judge": judge}]
    if embedder:
        scorers.append({"embedding_similarity": {"model": fake_model(server, "embedder", price=PRICE)}})
    config = base_config(
        [fake_model(server, "cand-a", price=PRICE), fake_model(server, "cand-b", price=PRICE)],
        scorers=scorers,
        **overrides,
    )
    path = write_project(root, config, items=items(n_items))
    (root / "prompts" / "judges").mkdir(exist_ok=True)
    (root / "prompts" / "judges" / "r.j2").write_text(JUDGE_RUBRIC)
    return path


def answer(request: dict[str, Any]) -> str:
    if request["model"] == "judge":
        return "Fine. Score: 4"
    return f"{request['model']} says: " + request["messages"][-1]["content"][-30:]


def paid_calls(server: FakeModelServer) -> collections.Counter[str]:
    """What the server was paid for: each chat request, and each text of an embedding batch."""
    paid: collections.Counter[str] = collections.Counter()
    for request in server.requests:
        if "input" in request:
            texts = request["input"] if isinstance(request["input"], list) else [request["input"]]
            paid.update(json.dumps({"model": request["model"], "text": t}) for t in texts)
        else:
            paid[json.dumps(request, sort_keys=True)] += 1
    return paid


def paid_twice(server: FakeModelServer) -> int:
    """Calls the server answered more than once (same model, messages and parameters; same text embedded)."""
    return sum(n - 1 for n in paid_calls(server).values())


def harness(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "harness", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> str:
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, out + err
    return out + err


@pytest.mark.slow
@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_two_concurrent_runs_of_one_experiment_pay_each_call_once(
    store: str,
    tmp_path: Path,
    model_server: FakeModelServer,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both start at once, as two CI jobs do: each call (candidates and judge) is paid once in all, the
    work is split between them, and both runs end with every record."""
    model_server.answer = answer
    model_server.delay_s = 0.1
    # A run has at most 3 calls in flight: 4 at once means both were calling, however long the tracked
    # one took to start (on a loaded machine the other could otherwise finish alone).
    model_server.hold_until_in_flight = 4
    n = 40
    # The server holds the first calls until both runs call, as long as the later one takes to start: on
    # a loaded machine, longer than the usual 10 s timeout, and a held call that timed out is retried and
    # billed twice (by any server). The timeout here outlasts the hold.
    path = judged_project(tmp_path, model_server, n, embedder=True, concurrency=3, timeout_s=90)
    cache = request.getfixturevalue("redis_url") if store == "redis" else str(tmp_path / "shared.sqlite")
    monkeypatch.setenv("HARNESS_CACHE", cache)
    # One of the pair is a process of its own and tracked (MLflow over sqlite), the other runs in this
    # process, untracked: the claim cares about neither. This one starts once the other is calling.
    first = harness("run", str(path), cwd=tmp_path, env={})
    wait_for_requests(model_server, 1, first, timeout_s=120)
    second = run_cli("run", str(path), "--no-tracking", cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    logs = [finish(first), second.stdout + second.stderr]
    assert paid_twice(model_server) == 0
    chats = [r for r in model_server.requests if "input" not in r]
    assert len(chats) == 2 * n + 2 * n  # each candidate answer, each judgement, once
    texts = sum(paid_calls(model_server)[k] for k in paid_calls(model_server) if '"text"' in k)
    assert texts > 0
    made = [re.search(r"(\d+) calls made, (\d+) served from the response cache", log) for log in logs]
    assert made[0] is not None and made[1] is not None, logs
    assert int(made[0][1]) > 0 and int(made[1][1]) > 0, "one run found nothing left to do: they did not overlap"
    assert int(made[0][1]) + int(made[1][1]) == 2 * n


@pytest.fixture(params=["sqlite", "redis"])
def two_caches(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[ResponseCache, ResponseCache]]:
    """Two owners of one store (as two processes would be)."""
    if request.param == "redis":
        from harness.redis_cache import RedisCache

        url = request.getfixturevalue("redis_url")
        pair: tuple[ResponseCache, ResponseCache] = (RedisCache(url, lease_s=0.6), RedisCache(url, lease_s=0.6))
    else:
        pair = (SqliteCache(tmp_path / "c.sqlite", lease_s=0.6), SqliteCache(tmp_path / "c.sqlite", lease_s=0.6))
    yield pair
    for cache in pair:
        cache.close()


def test_a_claim_is_renewed_while_held_and_released_by_put_or_close(
    two_caches: tuple[ResponseCache, ResponseCache],
) -> None:
    mine, theirs = two_caches
    assert mine.claim("k1") and mine.claim("k2")
    assert not theirs.claim("k1")
    time.sleep(1.5)  # more than two leases: renewal keeps them
    assert not theirs.claim("k1") and theirs.claimed_elsewhere("k1")
    mine.put("k1", "m", "answer", Usage(input_tokens=3, output_tokens=2), 0.25)
    assert theirs.claim("k1"), "storing the answer releases the claim"
    assert theirs.get("k1") is not None and theirs.get("k1").output == "answer"  # type: ignore[union-attr]
    mine.close()
    assert theirs.claim("k2"), "closing (an interrupted run) releases what it held"


def test_a_dead_owner_is_taken_over_at_once_and_a_silent_one_after_its_lease(
    two_caches: tuple[ResponseCache, ResponseCache],
) -> None:
    mine, theirs = two_caches
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    theirs.owner = f"{socket.gethostname()}|{dead_pid}|deadbeef0000"
    theirs._stop.set()  # it stops renewing, as a dead process would
    assert theirs.claim("k")
    assert not mine.claimed_elsewhere("k")
    assert mine.claim("k"), "the owner's pid is gone on this machine: no wait"
    theirs.owner = "another-machine|1|cafe00000000"
    assert theirs.claim("k2")
    assert not mine.claim("k2") and mine.claimed_elsewhere("k2")
    time.sleep(0.8)
    assert mine.claim("k2"), "an unrenewed lease lapses"


def run_quietly(path: Path, **options: Any) -> Any:
    console = Console(file=io.StringIO(), width=200)
    outcome = harness_run(load_config(path), RunOptions(tracking=False, **options), console)
    return outcome, console.file.getvalue()  # type: ignore[attr-defined]


def test_redis_cache_resumes_refreshes_and_keeps_the_sqlite_values(
    tmp_path: Path, model_server: FakeModelServer, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_server.answer = answer
    path = judged_project(tmp_path, model_server, 6)
    monkeypatch.setenv("HARNESS_CACHE", redis_url)
    first, _ = run_quietly(path)
    assert first.result.calls_made == 12 and len(model_server.requests) == 24
    again, _ = run_quietly(path)
    assert again.result.calls_made == 0 and len(model_server.requests) == 24
    fresh, _ = run_quietly(path, refresh=True)
    assert fresh.result.calls_made == 12 and len(model_server.requests) == 48
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "local.sqlite"))
    local, _ = run_quietly(path)

    def view(outcome: Any) -> dict[tuple[str, str], tuple[Any, ...]]:
        return {(r.variant, r.item_id): (r.output, r.usage, r.scores) for r in outcome.records}

    assert view(local) == view(first) == view(again)
    from harness.redis_cache import RedisCache

    shared = RedisCache(redis_url)
    try:
        keys = [spec_key for spec_key in _keys(local)]
        assert set(shared.get_many(keys)) == set(keys), "the same keys in both stores"
    finally:
        shared.close()


def _keys(outcome: Any) -> list[str]:
    plan = outcome.plan
    return [plan.call(v, item, 0).key for v in plan.runnable for item in plan.eval_set.items]


@pytest.mark.slow
def test_an_unreachable_redis_is_refused_before_any_call_without_its_password(
    tmp_path: Path, model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = judged_project(tmp_path, model_server, 2)
    monkeypatch.setenv("HARNESS_CACHE", f"redis://:canary-REDISPASS-5e1f@127.0.0.1:{free_port()}/0")
    done = run_cli("run", str(path), "--no-tracking", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "HARNESS_CACHE" in done.stderr and "cannot reach the Redis cache" in done.stderr
    assert "canary-REDISPASS" not in done.stdout + done.stderr
    assert model_server.requests == []


def test_a_shard_needs_the_cache_and_an_i_of_n(tmp_path: Path, model_server: FakeModelServer) -> None:
    path = judged_project(tmp_path, model_server, 4)
    with pytest.raises(ConfigError, match="only through the response cache"):
        run_quietly(path, shard=(1, 2), use_cache=False)
    with pytest.raises(ConfigError, match="not a part"):
        run_quietly(path, shard=(3, 2))
    from harness.cli import main

    assert main(["run", str(path), "--shard", "0/4"]) == 2
    assert main(["run", str(path), "--shard", "two"]) == 2
    assert model_server.requests == []


def test_shards_are_disjoint_stable_and_cover_every_item(tmp_path: Path, model_server: FakeModelServer) -> None:
    from harness.planner import prepare

    plan = prepare(load_config(judged_project(tmp_path, model_server, 23)))
    parts = [[i.id for i in plan.shard(k, 4).eval_set.items] for k in range(1, 5)]
    assert sorted(i for part in parts for i in part) == sorted(i.id for i in plan.eval_set.items)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert parts == [[i.id for i in plan.shard(k, 4).eval_set.items] for k in range(1, 5)]


@pytest.mark.slow
def test_four_shards_then_the_assembling_run_equal_one_run(
    tmp_path: Path, model_server: FakeModelServer, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four shards (a CI matrix's jobs) against one Redis cache, then the plain command: it makes no call
    and its records and analysis equal one run's on its own cache. The shards run one after another in
    this process: what they share is the cache, and runs that overlap in time have their own test above."""
    model_server.answer = answer
    n = 20
    path = judged_project(tmp_path, model_server, n, epochs=2, params={"temperature": 0.7, "max_tokens": 16})
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "alone.sqlite"))
    single, _ = run_quietly(path)
    one_run = collections.Counter(json.dumps(r, sort_keys=True) for r in model_server.requests)
    model_server.requests.clear()
    monkeypatch.setenv("HARNESS_CACHE", redis_url)
    shards = [run_cli("run", str(path), "--shard", f"{k}/4", "--max-usd", "1", cwd=tmp_path) for k in range(1, 5)]
    assert [s.returncode for s in shards] == [0] * 4, [s.stdout + s.stderr for s in shards]
    logs = [s.stdout + s.stderr for s in shards]
    assert all("25% of any budget cap" in log and "not tracked" in log for log in logs)
    four_shards = collections.Counter(json.dumps(r, sort_keys=True) for r in model_server.requests)
    assert four_shards == one_run, "the shards together paid for exactly what one run pays for"
    assembling = run_cli("run", str(path), cwd=tmp_path)
    assert assembling.returncode == 0, assembling.stdout + assembling.stderr
    assert "0 calls made" in assembling.stdout and sum(four_shards.values()) == len(model_server.requests)
    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    parents = mlflow.search_runs(
        experiment_names=["test-exp"], filter_string="tags.`harness.kind` = 'experiment'", output_format="list"
    )
    assert len(parents) == 1, "shards are not tracked; the assembling run is"
    from harness.tracking.read import read_run

    stored = read_run(parents[0].info.run_id, os.environ["MLFLOW_TRACKING_URI"])

    def view(records: list[Any]) -> dict[tuple[str, str, int], tuple[Any, ...]]:
        return {(r.variant, r.item_id, r.sample): (r.output, r.scores) for r in records}

    assert view(stored.records) == view(single.records)
    assert len(stored.records) == 2 * n * 2


def test_gate_shards_fill_the_cache_and_decide_nothing_then_the_gate_decides_for_free(
    tmp_path: Path, model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`gate --shard I/N` (the shipped workflow's matrix) calls the gated variants' part of the items and
    exits 0 without a verdict; the plain gate then makes no call and decides as one gate alone does."""
    from harness.cli import main

    model_server.answer = answer
    baseline = {"model": "openai/cand-a", "prompt": "terse"}
    path = judged_project(tmp_path, model_server, 12, baseline=baseline, gate={"metric": "rouge", "margin": 0.05})
    gate = ["gate", str(path), "--candidate", "openai/cand-b", "--no-tracking", "--max-usd", "1"]
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "alone.sqlite"))
    alone_code = main(gate)
    alone = capsys.readouterr().out
    alone_calls = len(model_server.requests)
    model_server.requests.clear()
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "shared.sqlite"))
    for k in (1, 2):
        assert main([*gate, "--shard", f"{k}/2"]) == 0
        shard_log = capsys.readouterr().out
        assert "GATE" not in shard_log and "50% of any budget cap" in shard_log
    assert len(model_server.requests) == alone_calls
    assert main(gate) == alone_code
    assembled = capsys.readouterr().out
    assert "0 calls made" in assembled and len(model_server.requests) == alone_calls
    verdict = next(line for line in alone.splitlines() if line.startswith("GATE"))
    assert verdict in assembled


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_two_pools_embedding_the_same_texts_at_once_pay_for_each_text_once(
    store: str, tmp_path: Path, model_server: FakeModelServer, request: pytest.FixtureRequest
) -> None:
    """Embedding batches claim their texts too: the second pool waits for the first's vectors."""
    import asyncio

    from harness.config import ModelConfig
    from harness.pool import ModelPool
    from harness.pricing import ModelPrice

    model_server.delay_s = 0.2
    if store == "redis":
        from harness.redis_cache import RedisCache

        url = request.getfixturevalue("redis_url")
        caches: list[ResponseCache] = [RedisCache(url), RedisCache(url)]
    else:
        caches = [SqliteCache(tmp_path / "c.sqlite"), SqliteCache(tmp_path / "c.sqlite")]
    model = ModelConfig(model="openai/embedder", api_base=model_server.url)
    price = ModelPrice.of({"input_cost_per_token": 1e-6})
    texts = [f"text number {k}" for k in range(70)]
    pools = [ModelPool(cache, concurrency=4, timeout_s=10, max_retries=1) for cache in caches]

    async def both() -> list[Any]:
        return list(await asyncio.gather(*(pool.embed(model, price, texts, batch_size=8) for pool in pools)))

    try:
        results = asyncio.run(both())
    finally:
        for cache in caches:
            cache.close()
    assert paid_twice(model_server) == 0 and sum(paid_calls(model_server).values()) == len(texts)
    assert results[0][0] == results[1][0] and len(results[0][0]) == len(texts)
    assert pools[1].counts.cache_hits == len(texts) and pools[1].counts.calls_made == 0


@pytest.mark.slow
def test_a_redis_password_in_the_config_never_leaks(
    tmp_path: Path, model_server: FakeModelServer, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`cache.url` with a password (a Redis ACL user): the run works, tracked, and the password reaches no
    terminal line, MLflow param, tag or artifact, report or record."""
    import redis

    canary = "canary-REDISPW-42ab"
    admin = redis.Redis.from_url(redis_url)
    admin.execute_command("ACL", "SETUSER", "team", "on", f">{canary}", "~*", "&*", "+@all")
    admin.close()
    url = redis_url.replace("redis://", f"redis://team:{canary}@")
    path = judged_project(tmp_path / "project", model_server, 3, cache={"url": url})
    tracked = finish(harness("run", str(path), cwd=tmp_path / "project", env={}))
    assert "6 calls made" in tracked
    # The process above showed every channel of a process; the re-run, served from the cache, in this one.
    rerun = run_cli("run", str(path), cwd=tmp_path / "project")
    again = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0 and "0 calls made" in again, again
    monkeypatch.setenv("HARNESS_CACHE", url.replace(canary, canary + "-wrong"))
    wrong = run_cli("run", str(path), "--no-tracking", cwd=tmp_path / "project")
    assert wrong.returncode == 2 and "HARNESS_CACHE" in wrong.stderr
    store = Path(os.environ["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///")).parent
    assert canary not in tracked + again + wrong.stdout + wrong.stderr
    leaks = [
        str(file)
        for root in (store, tmp_path / "project")
        for file in root.rglob("*")
        if file.is_file() and file != path and canary.encode() in file.read_bytes()
    ]
    assert leaks == []


@pytest.mark.slow
def test_gate_shards_against_a_stored_baseline_call_only_the_candidates_part(
    tmp_path: Path, model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`gate --against RUN --shard I/N`: the stored baseline is cut to the shard's items too."""
    import mlflow

    from harness.cli import main

    model_server.answer = answer
    baseline = {"model": "openai/cand-a", "prompt": "terse"}
    path = judged_project(tmp_path, model_server, 8, baseline=baseline, gate={"metric": "rouge", "margin": 0.05})
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "first.sqlite"))
    assert main(["run", str(path)]) == 0
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    run_id = mlflow.search_runs(
        experiment_names=["test-exp"], filter_string="tags.`harness.kind` = 'experiment'", output_format="list"
    )[0].info.run_id
    model_server.requests.clear()
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "second.sqlite"))
    gate = ["gate", str(path), "--candidate", "openai/cand-b", "--against", run_id, "--no-tracking"]
    for k in (1, 2):
        assert main([*gate, "--shard", f"{k}/2"]) == 0, capsys.readouterr()
    assert {r["model"] for r in model_server.requests} == {"cand-b", "judge"}
    assert sum(r["model"] == "cand-b" for r in model_server.requests) == 8
    capsys.readouterr()
    main(gate)
    assert "0 calls made" in capsys.readouterr().out
