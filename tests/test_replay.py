"""Experiments over production logs: OpenAI-format lines, litellm spend-log rows and MLflow traces written
by MLflow's own autologging around the real OpenAI SDK; the production model never called; stratified
weights; both orders of the pairwise judge; the per-segment month against a hand computation."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.api import run as harness_run
from harness.config import ConfigError, load_config
from harness.decision import decide
from harness.logs import allocate, redact_text
from harness.pricing import map_price
from harness.workflow import RunOptions
from tests.conftest import REPO, fake_model
from tests.fake_server import FakeModelServer, Usage

DAY = 86400
START = 1_793_491_200.0  # 2026-11-01T00:00:00Z
CHEAP = {"input_cost_per_token": 1e-7, "output_cost_per_token": 2e-7}
AS_LOGGED = "{% block messages %}{% for m in messages %}{{ turn(m.role, m.content) }}{% endfor %}{% endblock %}"
USAGE = {"a": (100, 10), "b": (300, 30)}
"""Logged prompt and completion tokens per segment."""


def openai_line(i: int, feature: str, when: float, answer: str = "", model: str = "gpt-4o-mini") -> dict[str, Any]:
    prompt, completion = USAGE[feature]
    return {
        "request": {
            "model": model,
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"question {i}"}],
        },
        "response": {
            "id": f"call-{i}",
            "choices": [{"message": {"role": "assistant", "content": answer or f"answer {i}"}}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion},
        },
        "timestamp": when,
        "metadata": {"feature": feature},
    }


def log_project(root: Path, lines: list[dict[str, Any]], logs: dict[str, Any], models: list[Any], **extra: Any) -> Path:
    """A project whose eval is a log file at evals/log.jsonl."""
    import yaml

    for folder in ("evals", "prompts", "experiments"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "evals" / "log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    (root / "prompts" / "as_logged.j2").write_text(AS_LOGGED, encoding="utf-8")
    config = {
        "name": "replay-test",
        "dataset": {"logs": {"path": "evals/log.jsonl", **logs}},
        "prompts": ["prompts/as_logged.j2"],
        "models": models,
        "params": {"temperature": 0, "max_tokens": 16},
        "scorers": ["rouge"],
        "concurrency": 2,
        "timeout_s": 10,
        "max_retries": 1,
        **extra,
    }
    path = root / "experiments" / "replay.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def two_segments() -> list[dict[str, Any]]:
    """40 calls of feature a and 20 of b, spread evenly over two days."""
    features = ["a", "a", "b"] * 20
    return [openai_line(i, f, START + i * (2 * DAY / 60)) for i, f in enumerate(features)]


def quiet_run(path: Path) -> Any:
    return harness_run(load_config(path), RunOptions(assume_yes=True, tracking=False, quiet=True))


def test_production_is_never_called_and_each_segment_is_projected_as_by_hand(
    tmp_path: Path, model_server: FakeModelServer
) -> None:
    model_server.usage = Usage(prompt_tokens=20, completion_tokens=4)
    model_server.answer = lambda request: "answer"
    logs = {"segment_by": "feature", "sample": 7, "since": "2026-11-01", "until": "2026-11-03"}
    path = log_project(tmp_path, two_segments(), logs, [fake_model(model_server, name="cheap", price=CHEAP)])
    outcome = quiet_run(path)
    # only the candidate was called, once per sampled call; production's answers came from the log
    assert len(model_server.requests) == 7
    assert {r["model"] for r in model_server.requests} == {"cheap"}
    items = outcome.plan.eval_set.items
    # 7 of 60 split 40:20 -> 4.67 and 2.33 -> 5 and 2 (largest remainder); each stands for its share
    assert sorted((i.segment, i.weight) for i in items) == [("a", 8.0)] * 5 + [("b", 10.0)] * 2
    price = map_price("gpt-4o-mini")
    assert price is not None
    usd = {f: p * price["input_cost_per_token"] + c * price["output_cost_per_token"] for f, (p, c) in USAGE.items()}
    production = [r for r in outcome.records if r.variant == "production"]
    assert len(production) == 7
    assert all(r.cost_usd == pytest.approx(usd[_seg(items, r.item_id)]) for r in production)
    projection = outcome.analysis.projection
    assert projection is not None and projection.days == pytest.approx(2.0)
    by = {s.segment: s for s in projection.segments}
    cheap = 20 * 1e-7 + 4 * 2e-7
    for feature, calls in (("a", 40), ("b", 20)):
        per_day = calls / 2
        assert by[feature].per_day == pytest.approx(per_day)
        assert by[feature].monthly["production"][0] == pytest.approx(usd[feature] * per_day * 30.44)
        assert by[feature].monthly["openai/cheap:as_logged"][0] == pytest.approx(cheap * per_day * 30.44)
    now = sum(usd[f] * n / 2 * 30.44 for f, n in (("a", 40), ("b", 20)))
    assert projection.now[0] == pytest.approx(now)
    assert projection.now[1] <= projection.now[0] <= projection.now[2]
    # the summary's $/item is weighted by the calls each item stands for: (5 x 8 x a + 2 x 10 x b) / 60
    summary = next(s for s in outcome.summaries if s.variant == "production")
    assert summary.cost_per_item_usd == pytest.approx((40 * usd["a"] + 20 * usd["b"]) / 60)
    assert summary.monthly_cost_usd == pytest.approx(now)


def _seg(items: list[Any], item_id: str) -> str:
    return next(i.segment for i in items if i.id == item_id)


def test_a_logged_spend_that_todays_price_does_not_match_is_noted(
    tmp_path: Path, model_server: FakeModelServer
) -> None:
    price = map_price("gpt-4o-mini")
    assert price is not None
    rows = []
    for i in range(4):
        usd = 100 * price["input_cost_per_token"] + 10 * price["output_cost_per_token"]
        rows.append(
            {
                "request_id": f"req-{i}",
                "call_type": "acompletion",
                "model": "gpt-4o-mini",
                "spend": usd * (1.5 if i == 3 else 1.0),
                "prompt_tokens": 100,
                "completion_tokens": 10,
                "startTime": f"2026-11-0{i + 1}T10:00:00Z",
                "endTime": f"2026-11-0{i + 1}T10:00:01.5Z",
                "messages": [{"role": "user", "content": f"question {i}"}],
                "response": {"choices": [{"message": {"role": "assistant", "content": f"answer {i}"}}]},
                "request_tags": ["feature:support"],
                "metadata": {"user_api_key_team_alias": "ops"},
                "end_user": "customer-1",
            }
        )
    path = log_project(tmp_path, rows, {"segment_by": "feature"}, [fake_model(model_server, name="cheap", price=CHEAP)])
    outcome = quiet_run(path)
    production = {r.item_id: r for r in outcome.records if r.variant == "production"}
    assert set(production) == {f"req-{i}" for i in range(4)}
    assert [bool(r.price_notes) for _, r in sorted(production.items())] == [False, False, False, True]
    assert "the log's spend is more than 1% above today's price" in production["req-3"].price_notes[0]
    assert any("the log's spend" in w and "(1 call)" in w for w in outcome.analysis.warnings)
    assert production["req-0"].latency_s == pytest.approx(1.5)
    assert outcome.plan.eval_set.items[0].fields["tags"]["end_user"] == "customer-1"
    assert outcome.plan.eval_set.log.segments == {"support": 4}


def judge_project(root: Path, server: FakeModelServer) -> Path:
    lines = [openai_line(i, "a", START + i * 600, answer=f"production answer {i}") for i in range(6)]
    judge = {"model": "openai/judge", "api_base": server.url, "price": CHEAP}
    return log_project(
        root,
        lines,
        {},
        [fake_model(server, name="cheap", price=CHEAP)],
        scorers=[{"pairwise": {"model": judge}}],
        gate={"metric": "pairwise", "margin": 0.1},
    )


def test_the_pairwise_judge_asks_both_orders_and_a_position_biased_judge_makes_ties(
    tmp_path: Path, model_server: FakeModelServer
) -> None:
    def answer(request: dict[str, Any]) -> str:
        if request["model"] == "judge":
            return "Verdict: A"  # always the first answer shown: pure position bias
        return "candidate answer"

    model_server.answer = answer
    outcome = quiet_run(judge_project(tmp_path, model_server))
    asked = [r for r in model_server.requests if r["model"] == "judge"]
    assert len(asked) == 2 * 6
    firsts = [m["content"].split("Answer A:\n", 1)[1].split("\n", 1)[0] for r in asked for m in r["messages"][-1:]]
    assert sum(f.startswith("candidate") for f in firsts) == 6 and sum(f.startswith("production") for f in firsts) == 6
    tally = outcome.analysis.pairwise["openai/cheap:as_logged"]
    assert tally == {"win": 0, "tie": 6, "loss": 0, "by_position": 6}
    scores = [r.scores["pairwise"] for r in outcome.records if r.variant == "openai/cheap:as_logged"]
    assert scores == [0.5] * 6
    assert all(r.scores["pairwise"] == 0.5 for r in outcome.records if r.variant == "production")


def test_a_judge_that_prefers_the_candidate_in_both_orders_gives_wins(
    tmp_path: Path, model_server: FakeModelServer
) -> None:
    def answer(request: dict[str, Any]) -> str:
        if request["model"] != "judge":
            return "candidate answer"
        text = request["messages"][-1]["content"]
        first = text.split("Answer A:\n", 1)[1].split("\n", 1)[0]
        return "Verdict: A" if first.startswith("candidate") else "Verdict: B"

    model_server.answer = answer
    outcome = quiet_run(judge_project(tmp_path, model_server))
    assert outcome.analysis.pairwise["openai/cheap:as_logged"] == {"win": 6, "tie": 0, "loss": 0, "by_position": 0}


def test_redaction_masks_before_any_call_and_is_counted(tmp_path: Path, model_server: FakeModelServer) -> None:
    lines = [openai_line(i, "a", START + i) for i in range(3)]
    secret = "mail ann@example.com or call +1 (415) 555-0100, key sk-abcdefghijklmnop1234"
    lines[0]["request"]["messages"][1]["content"] = secret
    path = log_project(tmp_path, lines, {"redact": True}, [fake_model(model_server, name="cheap", price=CHEAP)])
    outcome = quiet_run(path)
    sent = json.dumps(model_server.requests)
    assert "ann@example.com" not in sent and "555-0100" not in sent and "sk-abcdefghijklmnop1234" not in sent
    assert "[email]" in sent and "[phone]" in sent and "[key]" in sent
    assert outcome.plan.eval_set.log.redacted == {"email": 1, "phone": 1, "key": 1}


def test_redaction_leaves_dates_and_amounts() -> None:
    counts: dict[str, int] = {}
    text = "on 2026-11-01 the order 1234 cost 19.99"
    assert redact_text(text, counts) == text and counts == {}


@pytest.mark.parametrize(
    ("counts", "sample"),
    [({"a": 40, "b": 20}, 7), ({"a": 1, "b": 999}, 10), ({"a": 3, "b": 3, "c": 3}, 100), ({"x": 5}, 5)],
)
def test_allocation_is_proportional_with_one_each(counts: dict[str, int], sample: int) -> None:
    take = allocate(counts, sample)
    assert sum(take.values()) == min(sample, sum(counts.values()))
    assert all(1 <= take[s] <= counts[s] for s in counts)
    total = sum(counts.values())
    for s in counts:  # no segment more than one call away from its share (past the one each)
        assert abs(take[s] - max(1.0, sample * counts[s] / total)) <= 1 or sample >= total


@pytest.mark.parametrize("seed", range(3))
def test_a_weighted_false_pass_at_the_margin_stays_at_alpha(seed: int) -> None:
    """Two strata, one standing for 4 times the calls of the other per sampled item; the candidate's
    weighted mean difference is exactly -margin. Scaled by the weights (mean 1) through the one engine,
    it passes at most alpha of the time."""
    rng = np.random.default_rng(seed)
    margin, alpha, trials, passes = 0.1, 0.05, 400, 0
    n_small, n_big = 30, 30
    weights = np.r_[np.full(n_small, 1.0), np.full(n_big, 4.0)]
    weights /= weights.mean()
    # stratum means of the difference: -0.3 and -0.05, weighted by 1 and 4 -> exactly -0.1
    means = np.r_[np.full(n_small, -0.3), np.full(n_big, -0.05)]
    for _ in range(trials):
        base = rng.uniform(0.3, 0.7, size=n_small + n_big)
        candidate = base + means + rng.normal(0, 0.2, size=base.size)
        decision = decide(base * weights, {"c": candidate * weights}, margin=margin, confidence=1 - alpha)
        passes += decision.candidates["c"].status == "pass"
    assert passes / trials <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / trials)


@pytest.mark.parametrize(
    ("lines", "logs", "field", "words"),
    [
        ([{"nothing": 1}], {"format": "openai"}, "dataset.logs", "no call to replay"),
        (["not json"], {"format": "openai"}, "dataset.logs", "not JSON"),
        ([{"x": 1}], {}, "dataset.logs.format", "cannot tell how"),
        ([openai_line(0, "a", START)], {"since": "2027-01-01"}, "dataset.logs", "outside since/until"),
    ],
)
def test_a_log_without_usable_calls_is_one_line_before_any_call(
    tmp_path: Path, model_server: FakeModelServer, lines: list[Any], logs: dict[str, Any], field: str, words: str
) -> None:
    path = log_project(tmp_path, [], logs, [fake_model(model_server, name="cheap", price=CHEAP)])
    (tmp_path / "evals" / "log.jsonl").write_text(
        "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), encoding="utf-8"
    )
    with pytest.raises(ConfigError) as raised:
        quiet_run(path)
    assert raised.value.field == field and words in raised.value.line(), raised.value.line()
    assert model_server.requests == []


def test_a_log_outside_the_project_is_refused(tmp_path: Path, model_server: FakeModelServer) -> None:
    models = [fake_model(model_server, name="c", price=CHEAP)]
    path = log_project(tmp_path / "p", [openai_line(0, "a", START)], {}, models)
    config = path.read_text().replace("evals/log.jsonl", "../outside.jsonl")
    (tmp_path / "outside.jsonl").write_text(json.dumps(openai_line(0, "a", START)) + "\n")
    path.write_text(config)
    with pytest.raises(ConfigError, match="outside the project"):
        quiet_run(path)


APP = textwrap.dedent(
    """
    import httpx, openai  # before MLflow starts its export thread
    import sys, mlflow
    url, store = sys.argv[1], sys.argv[2]
    mlflow.set_tracking_uri(store)
    mlflow.set_experiment("support-app")
    mlflow.openai.autolog()
    client = openai.OpenAI(base_url=url, api_key="sk-test-not-real")

    @mlflow.trace
    def handle(question, feature):
        mlflow.update_current_trace(tags={"feature": feature})
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": question}], temperature=0
        )
        return reply.choices[0].message.content

    for i in range(6):
        handle(f"question {i}", "billing" if i % 3 == 0 else "faq")
    """
)


@pytest.mark.slow
def test_traces_written_by_mlflow_autolog_around_the_openai_sdk_are_replayed(
    tmp_path: Path, model_server: FakeModelServer
) -> None:
    model_server.usage = Usage(prompt_tokens=12, completion_tokens=3)
    model_server.answer = lambda request: f"served: {request['messages'][-1]['content']}"
    store = f"sqlite:///{tmp_path / 'app' / 'traces.db'}"
    (tmp_path / "app").mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(
        [sys.executable, "-c", APP, model_server.url, store], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    app_calls = len(model_server.requests)
    assert app_calls == 6
    source = {"tracking_uri": "sqlite:///app/traces.db", "experiment": "support-app"}
    path = log_project(tmp_path, [], {}, [fake_model(model_server, name="cheap", price=CHEAP)])
    mlflow_source = "mlflow: " + json.dumps(source) + "\n    segment_by: feature"
    config = path.read_text().replace("path: evals/log.jsonl", mlflow_source)
    path.write_text(config)
    outcome = quiet_run(path)
    items = outcome.plan.eval_set.items
    assert len(items) == 6
    assert sorted(i.fields["production_output"] for i in items) == sorted(f"served: question {i}" for i in range(6))
    assert {i.segment for i in items} == {"billing", "faq"}
    assert outcome.plan.eval_set.log.segments == {"billing": 2, "faq": 4}
    production = [r for r in outcome.records if r.variant == "production"]
    assert all(r.usage.input_tokens == 12 and r.usage.output_tokens == 3 for r in production)
    # the candidate was called on every replayed call; production never again
    assert len(model_server.requests) == app_calls + 6
    assert all(r["model"] == "cheap" for r in model_server.requests[app_calls:])


def test_a_judge_that_mostly_picks_by_position_cannot_pass_a_candidate(
    tmp_path: Path, model_server: FakeModelServer
) -> None:
    """Ties from a judge that cannot tell the answers apart would read as "as good" and pass the gate."""
    asked: dict[str, int] = {}

    def answer(request: dict[str, Any]) -> str:
        if request["model"] != "judge":
            return "candidate answer"
        text = request["messages"][-1]["content"]
        asked[text] = asked.get(text, 0) + 1
        first = text.split("Answer A:\n", 1)[1].split("\n", 1)[0]
        question = text.split("Request:\n", 1)[1].split("\n", 1)[0]
        if question.endswith(("0", "1")):  # two of six pairs judged on their merits: the candidate wins
            return "Verdict: A" if first.startswith("candidate") else "Verdict: B"
        return "Verdict: A"

    model_server.answer = answer
    outcome = quiet_run(judge_project(tmp_path, model_server))
    name = "openai/cheap:as_logged"
    assert outcome.analysis.pairwise[name] == {"win": 2, "tie": 4, "loss": 0, "by_position": 4}
    verdict = outcome.analysis.verdicts[name]
    assert verdict.status == "undecided" and "by position alone in 4 of 6" in verdict.reason


def test_init_from_logs_writes_an_experiment_that_plans(tmp_path: Path) -> None:
    from harness.planner import prepare
    from tests.test_cli import in_process

    (tmp_path / "evals").mkdir()
    (tmp_path / "evals" / "prod.jsonl").write_text("".join(json.dumps(x) + "\n" for x in two_segments()))
    done = in_process(["init", "--from-logs", "evals/prod.jsonl"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "60 calls (openai); models gpt-4o-mini (60)" in done.stdout.replace("\n", " ")
    assert "segments by 'feature': a (40), b (20)" in done.stdout
    experiment = load_config(tmp_path / "experiments" / "prod.yaml")
    assert experiment.dataset.logs is not None and experiment.dataset.logs.segment_by == "feature"
    plan = prepare(experiment)
    assert plan.baseline == "production" and plan.variants[0].replayed
    assert len(plan.eval_set.items) == 60 and {i.weight for i in plan.eval_set.items} == {1.0}
    again = in_process(["init", "--from-logs", "evals/prod.jsonl"], tmp_path)
    assert again.returncode != 0 and "already exists" in again.stdout + again.stderr


def test_sampling_holds_the_sample_not_the_log(tmp_path: Path) -> None:
    """The fast bound beside benchmarks/bench_logs.py: 30,000 lines sampled to 50 with traced memory that
    does not grow with the log (keeping every parsed line would hold tens of megabytes)."""
    import tracemalloc

    from harness.config import LogsConfig
    from harness.logs import read_log

    path = tmp_path / "log.jsonl"
    features = ["a", "b", "c"]
    with path.open("w") as out:
        for i in range(30_000):
            out.write(json.dumps(openai_line(i, features[i % 3] if i % 3 < 2 else "a", START + i)) + "\n")
    tracemalloc.start()
    sampled = read_log(LogsConfig(path=str(path), segment_by="feature", sample=50), path, "test", None)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert sampled.lines == 30_000 and len(sampled.calls) == 50
    assert sum(sampled.segments.values()) == 30_000
    assert peak < 8_000_000, f"{peak / 1e6:.1f} MB traced while sampling"


def test_hostile_and_odd_lines_are_counted_not_fatal(tmp_path: Path, model_server: FakeModelServer) -> None:
    """Epoch milliseconds, content parts, a tool call with no text answer, a line that is not JSON and
    one without messages: the calls are read, the rest counted and the first named."""
    good = openai_line(0, "a", START)
    millis = openai_line(1, "a", (START + 3600) * 1000)
    parts = openai_line(2, "b", START + 7200)
    parts["request"]["messages"][1]["content"] = [{"type": "text", "text": "question "}, {"type": "text", "text": "2"}]
    tool = openai_line(3, "a", START)
    tool["response"]["choices"][0]["message"] = {"role": "assistant", "content": None, "tool_calls": [{"id": "x"}]}
    nomessages = {"request": {"model": "gpt-4o-mini"}, "response": good["response"]}
    path = log_project(tmp_path, [good, millis, parts, tool, nomessages], {}, [fake_model(model_server, name="c")])
    with (tmp_path / "evals" / "log.jsonl").open("a") as log:
        log.write("{not json\n")
    outcome = quiet_run(path)
    facts = outcome.plan.eval_set.log
    assert facts.lines == 6 and facts.skipped == 3 and "line 4: no answer to compare with" in facts.first_skip
    assert facts.window_s == (START, START + 7200)
    asked = [r["messages"][-1]["content"] for r in model_server.requests]
    assert "question 2" in asked


def test_a_logged_model_without_a_price_is_refused_before_any_call(
    tmp_path: Path, model_server: FakeModelServer
) -> None:
    lines = [openai_line(0, "a", START, model="acme/in-house-7b")]
    path = log_project(tmp_path, lines, {}, [fake_model(model_server, name="c", price=CHEAP)])
    with pytest.raises(ConfigError) as raised:
        quiet_run(path)
    assert raised.value.field == "dataset.logs.price" and "acme/in-house-7b" in raised.value.line()
    assert model_server.requests == []
    priced = path.read_text().replace("path: evals/log.jsonl", "path: evals/log.jsonl\n    price: {like: gpt-4o-mini}")
    path.write_text(priced)
    outcome = quiet_run(path)
    assert next(r for r in outcome.records if r.variant == "production").cost_usd > 0


@pytest.mark.slow
def test_a_stored_replay_run_rebuilds_the_same_weighted_figures_and_projection(
    tmp_path: Path, model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.api import analyze, load_run

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    model_server.usage = Usage(prompt_tokens=20, completion_tokens=4)
    logs = {"segment_by": "feature", "sample": 7, "since": "2026-11-01", "until": "2026-11-03"}
    path = log_project(tmp_path, two_segments(), logs, [fake_model(model_server, name="cheap", price=CHEAP)])
    live = harness_run(load_config(path), RunOptions(assume_yes=True, quiet=True))
    assert live.run_id
    rebuilt = analyze(load_run(live.run_id))
    assert rebuilt.analysis.projection is not None and live.analysis.projection is not None
    assert rebuilt.analysis.projection.now[0] == pytest.approx(live.analysis.projection.now[0])
    by_live = {s.variant: s for s in live.summaries}
    for s in rebuilt.summaries:
        assert s.cost_per_item_usd == pytest.approx(by_live[s.variant].cost_per_item_usd)
        assert s.monthly_cost_usd == pytest.approx(by_live[s.variant].monthly_cost_usd)


def test_repeated_call_ids_and_a_single_call_still_replay(tmp_path: Path, model_server: FakeModelServer) -> None:
    lines = [openai_line(0, "a", START), openai_line(0, "a", START + 60)]  # one id logged twice
    path = log_project(tmp_path, lines, {}, [fake_model(model_server, name="c", price=CHEAP)])
    outcome = quiet_run(path)
    assert sorted(i.id for i in outcome.plan.eval_set.items) == ["call-0", "call-0@line-2"]
    single = log_project(tmp_path / "one", lines[:1], {}, [fake_model(model_server, name="c", price=CHEAP)])
    alone = quiet_run(single)
    assert [r.variant for r in alone.records] == ["production", "openai/c:as_logged"]
    assert alone.analysis.recommendation is not None


@pytest.mark.slow
def test_mlflow_shows_the_production_variant_and_the_month_on_the_mix(
    tmp_path: Path, model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    logs = {"segment_by": "feature", "sample": 7, "since": "2026-11-01", "until": "2026-11-03"}
    path = log_project(tmp_path, two_segments(), logs, [fake_model(model_server, name="cheap", price=CHEAP)])
    live = harness_run(load_config(path), RunOptions(assume_yes=True, quiet=True))
    before = mlflow.get_tracking_uri()
    try:
        mlflow.set_tracking_uri(uri)  # search_traces reads the global URI (an earlier test may have set another)
        client = mlflow.MlflowClient(tracking_uri=uri)
        parent = client.get_run(live.run_id)
        note = parent.data.tags["mlflow.note.content"]
        assert "on the log's mix: production" in note and "a: " in note and "b: " in note
        children = client.search_runs(
            [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{live.run_id}'"
        )
        production = next(c for c in children if c.info.run_name == "production")
        assert production.data.params["model"] == "gpt-4o-mini"
        assert production.data.metrics["spent_usd"] == 0.0  # replayed: nothing paid now
        assert production.data.metrics["cost_per_item_usd"] > 0  # but priced at today's prices
        traces = mlflow.search_traces(
            locations=[parent.info.experiment_id], run_id=production.info.run_id, return_type="list"
        )
        assert len(traces) == 7
        assert all(json.loads(t.info.trace_metadata["mlflow.trace.cost"])["total_cost"] == 0.0 for t in traces)
    finally:
        mlflow.set_tracking_uri(before)


@pytest.mark.parametrize("scorer", ["rouge", "pairwise"])
def test_a_candidate_answering_as_production_did_passes(
    tmp_path: Path, model_server: FakeModelServer, scorer: str
) -> None:
    """Every answer the same as production's: as good by construction, though every score is the same
    (rouge 1 against production's own answer, or a pairwise tie without a judge call)."""
    model_server.answer = lambda request: "answer " + request["messages"][-1]["content"].split()[-1]
    lines = [openai_line(i, "a", START + i * 60) for i in range(40)]
    judge = {"model": "openai/judge", "api_base": model_server.url, "price": CHEAP}
    scorers = ["rouge"] if scorer == "rouge" else [{"pairwise": {"model": judge}}]
    gate = {"metric": scorer, "margin": 0.1}
    path = log_project(
        tmp_path, lines, {}, [fake_model(model_server, name="cheap", price=CHEAP)], scorers=scorers, gate=gate
    )
    outcome = quiet_run(path)
    assert outcome.analysis.verdicts["openai/cheap:as_logged"].status == "pass"
    assert outcome.analysis.recommendation is not None
    assert outcome.analysis.recommendation.variant == "openai/cheap:as_logged"
    assert not any(r["model"] == "judge" for r in model_server.requests)
