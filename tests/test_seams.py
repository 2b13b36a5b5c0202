"""One fact, one place: the decision and the dollar figure hold where two features meet.

Each test pins down a behaviour that broke where two modules kept their own copy of one fact: variant
names before and after `vars`, the calls an estimate counts, the budget over scorer calls, stored runs
compared with a new eval, key checks, exit codes, stored-run commands, scorer kinds and limits.
"""

from __future__ import annotations

import io
import shlex
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

import harness
from harness.config import ConfigError, load_config
from harness.exit_codes import EXIT_INCOMPLETE, EXIT_USAGE
from harness.gating import gate_variants
from harness.planner import prepare
from harness.workflow import RunOptions
from tests.conftest import ITEMS, REPO, TERSE, base_config, fake_model, write_project
from tests.fake_server import FakeModelServer, Fault, Usage
from tests.test_cli import harness as cli

PRICE = {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}
TRUNCATED = "{% block user %}Summarise: <document>{{ document | truncate_tokens(doc_tokens) }}</document>{% endblock %}"


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def ablation_project(root: Path) -> Path:
    config = base_config(
        ["local/lead"],
        prompts=["prompts/truncated.j2"],
        vars={"doc_tokens": [4, 64]},
        baseline={"model": "local/lead", "prompt": "truncated(doc_tokens=64)"},
    )
    return write_project(root, config, templates={"truncated": TRUNCATED})


# 1. The gate names variants after `vars` are expanded.


def test_plan_resolves_variants_after_vars_expansion(tmp_path: Path) -> None:
    plan = prepare(load_config(ablation_project(tmp_path)))
    assert plan.variant("local/lead:truncated(doc_tokens=4)").name == "local/lead:truncated(doc_tokens=4)"
    assert plan.variant("local/lead").name == "local/lead:truncated(doc_tokens=64)"  # the baseline's prompt
    with pytest.raises(ConfigError) as ambiguous:
        plan.variant("local/lead:truncated")
    assert "several variants" in str(ambiguous.value) and "truncated(doc_tokens=4)" in str(ambiguous.value)
    with pytest.raises(ConfigError) as unknown:
        plan.variant("local/lead:truncated(doc_tokens=5)", "--candidate")
    assert "--candidate" in str(unknown.value) and "use one of" in str(unknown.value)
    baseline, candidates = gate_variants(plan, None)
    assert baseline == "local/lead:truncated(doc_tokens=64)"
    assert candidates == {"local/lead:truncated(doc_tokens=4)"}


@pytest.mark.slow
def test_gate_decides_on_an_ablation_variant(tmp_path: Path) -> None:
    path = ablation_project(tmp_path)
    result = cli("gate", str(path), "--candidate", "local/lead:truncated(doc_tokens=4)", cwd=tmp_path)
    assert result.returncode in (0, 1, 3), result.stdout + result.stderr
    assert "GATE" in result.stdout and "local/lead:truncated(doc_tokens=4)" in result.stdout
    default = cli("gate", str(path), cwd=tmp_path)
    assert default.returncode in (0, 1, 3), default.stdout + default.stderr
    assert "not one of" not in default.stderr


@pytest.mark.slow
def test_shipped_ablation_gate_runs_and_decides(monkeypatch: pytest.MonkeyPatch, smollm2_cache: Path) -> None:
    """The shipped SmolLM2 ablation, gated on one truncation length (a few items: SmolLM2 takes 2-3 s a call),
    with the session's SmolLM2 cache (the repository's would serve a second run of the suite)."""
    monkeypatch.setenv("HARNESS_CACHE", str(smollm2_cache))
    candidate = "local/smollm2-135m:truncated(doc_tokens=128)"
    result = cli(
        "gate", "experiments/summarize-ablation.yaml", "--candidate", candidate, "--limit", "2", cwd=REPO, timeout=600
    )
    assert result.returncode in (0, 1, 3), result.stdout + result.stderr
    assert candidate in result.stdout and "GATE" in result.stdout


# 2. The estimate counts every call the runner makes, epochs included.


def test_estimate_counts_every_epoch_the_runner_makes(tmp_path: Path, model_server: FakeModelServer) -> None:
    def config(epochs: int) -> dict[str, Any]:
        return base_config(
            [fake_model(model_server, price=PRICE)],
            epochs=epochs,
            params={"temperature": 0.7, "max_tokens": 16},
            cache={"path": f"mlruns/cache{epochs}.sqlite"},
        )

    from harness.caches import open_cache
    from harness.spending import estimates_for

    one = prepare(load_config(write_project(tmp_path / "one", config(1))))
    three = prepare(load_config(write_project(tmp_path / "three", config(3))))
    (e1,), _ = estimates_for(one, None, False)
    (e3,), _ = estimates_for(three, open_cache(three.experiment), False)
    assert e3.calls == 3 * e1.calls == 3 * len(ITEMS)
    assert e3.max_usd == pytest.approx(3 * e1.max_usd) and e3.expected_usd == pytest.approx(3 * e1.expected_usd)
    outcome = harness.run(three.experiment, RunOptions(tracking=False), quiet())
    assert outcome.result.calls_made == e3.calls == len(model_server.requests)
    (after,), _ = estimates_for(three, open_cache(three.experiment), False)
    assert after.calls == 0 and after.cached == e3.calls


# 3. One pool: the budget covers judge calls; a judge call without usage is priced.

JUDGE_PRICE = {"input_cost_per_token": 1e-5, "output_cost_per_token": 1e-5}
RUBRIC = "{% block user %}Reference: {{ reference }}\nCandidate: {{ output }}\nEnd with Score: N{% endblock %}"


def judged_project(tmp_path: Path, server: FakeModelServer, **overrides: Any) -> Path:
    judge = {"model": fake_model(server, "judge", price=JUDGE_PRICE), "rubric": "prompts/rubric.j2", "scale": [1, 5]}
    config = base_config(
        [fake_model(server, price=PRICE)],
        scorers=["rouge", {"llm_judge": judge}],
        cache={"path": str(tmp_path / "cache.sqlite")},
        **overrides,
    )
    return write_project(tmp_path, config, templates={"terse": TERSE, "rubric": RUBRIC})


def test_budget_covers_judge_calls(tmp_path: Path, model_server: FakeModelServer) -> None:
    model_server.answer = lambda request: "Score: 4" if request["model"] == "judge" else "an answer"
    model_server.usage = Usage(prompt_tokens=20, completion_tokens=4)
    # Candidates: 3 x (20 x 1e-6 + 4 x 2e-6) = $0.000084. A judge call costs 24 x 1e-5 = $0.00024, but its
    # worst case (about 30 x 1.25 + 16 input tokens and 256 output tokens at 1e-5) is about $0.0030. Under a
    # cap of $0.0035 the first judge call fits, the second once the first has settled, the third never.
    path = judged_project(tmp_path, model_server, budget={"max_usd": 0.0035})
    outcome = harness.run(path, RunOptions(tracking=False), quiet())
    judge_calls = [r for r in model_server.requests if r["model"] == "judge"]
    paid = sum(r.cost_usd for r in outcome.records) + sum(r.eval_cost_usd for r in outcome.records)
    assert len(judge_calls) == 2 and outcome.status.budget_exhausted and outcome.exit_code == 3
    assert paid == pytest.approx(outcome.status.spent_usd) and paid <= 0.0035
    unscored = [r for r in outcome.records if r.scores.get("llm_judge") is None]
    assert len(unscored) == 1 and "budget" in unscored[0].score_errors["llm_judge"]


def test_judge_call_without_reported_usage_is_priced(tmp_path: Path, model_server: FakeModelServer) -> None:
    model_server.answer = lambda request: "Score: 4" if request["model"] == "judge" else "an answer"
    from harness.config import ScorerConfig

    config = load_config(judged_project(tmp_path, model_server))
    candidates_only = config.model_copy(update={"scorers": [ScorerConfig(name="rouge")]})
    harness.run(candidates_only, RunOptions(tracking=False), quiet())  # the candidates' calls are cached now
    model_server.fail_next(*[Fault(kind="no_usage")] * 3)  # so the next three calls are the judge's
    outcome = harness.run(config, RunOptions(tracking=False), quiet())
    assert len(model_server.requests) == 6
    assert all(r.scores["llm_judge"] == pytest.approx(0.75) for r in outcome.records)
    assert all(r.eval_cost_usd > 0 for r in outcome.records)  # estimated from local token counts, never $0


def test_budget_covers_embedding_calls(tmp_path: Path, model_server: FakeModelServer) -> None:
    """Embedding requests reserve their worst case like any call: the cap holds over candidates and scorers."""
    embedder = fake_model(model_server, "embedder", price={"input_cost_per_token": 1e-5, "output_cost_per_token": 0})
    scorer = {"embedding_similarity": {"model": embedder, "batch_size": 1}}
    # Six texts (3 outputs, 3 references), one request each: a worst case near $0.0003 (a few tokens x 1.25
    # + 16), an actual cost near $0.00003 (the server counts words). A cap of $0.0004 admits some, not all.
    config = base_config(["local/lead"], scorers=[scorer], budget={"max_usd": 0.0004}, cache={"enabled": False})
    outcome = harness.run(write_project(tmp_path, config), RunOptions(tracking=False), quiet())
    requests = [r for r in model_server.requests if "input" in r]
    assert outcome.status.budget_exhausted and outcome.exit_code == 3
    assert 0 < len(requests) < 6 and 0 < outcome.status.spent_usd <= 0.0004
    unscored = [r for r in outcome.records if r.scores["embedding_similarity"] is None]
    assert unscored and all("budget" in r.score_errors["embedding_similarity"] for r in unscored)


def test_candidate_and_judge_share_one_slot_of_a_one_slot_model(tmp_path: Path, model_server: FakeModelServer) -> None:
    """The judge is the candidate's own endpoint with concurrency 1: the pool holds both to one slot."""
    model_server.answer = lambda request: "Score: 3" if "Reference:" in request["messages"][-1]["content"] else "x"
    model_server.delay_s = 0.05
    one_slot = fake_model(model_server, price=PRICE, concurrency=1)
    judge = {"model": fake_model(model_server, price=PRICE), "rubric": "prompts/rubric.j2"}  # no limit of its own
    config = base_config([one_slot], scorers=[{"llm_judge": judge}], concurrency=8)
    path = write_project(tmp_path, config, templates={"terse": "{{ document }}", "rubric": RUBRIC})
    outcome = harness.run(path, RunOptions(tracking=False, use_cache=False), quiet())
    assert all(r.scores["llm_judge"] == pytest.approx(0.5) for r in outcome.records)
    assert model_server.max_in_flight == 1


# 4. gate --against refuses records made on another eval or with other prompts.


def stored_run_id() -> str:
    from tests.test_spending import parent_run

    return parent_run().info.run_id


def two_prompt_project(
    root: Path, items: list[dict[str, Any]] | None = None, terse: str | None = None, baseline: str = "local/lead"
) -> Path:
    config = base_config(
        ["local/lead", "local/lead-2"],
        prompts=["prompts/terse.j2"],
        baseline={"model": baseline, "prompt": "terse"},
    )
    templates = {"terse": terse or "{% block user %}Summarise: {{ document }}{% endblock %}"}
    return write_project(root, config, items=items, templates=templates)


@pytest.mark.slow
def test_gate_against_refuses_another_eval_other_prompts_and_missing_items(tmp_path: Path) -> None:
    path = two_prompt_project(tmp_path)
    assert cli("run", str(path), cwd=tmp_path).returncode == 0
    run_id = stored_run_id()
    same = cli("gate", str(path), "--candidate", "local/lead-2", "--against", run_id, cwd=tmp_path)
    assert same.returncode in (0, 1, 3) and "using stored records for local/lead:terse" in same.stdout

    other_items = [{**item, "document": item["document"] + " More."} for item in ITEMS]
    other = two_prompt_project(tmp_path / "other", items=other_items)
    refused = cli("gate", str(other), "--candidate", "local/lead-2", "--against", run_id, cwd=tmp_path)
    assert refused.returncode == EXIT_USAGE, refused.stdout + refused.stderr
    assert "another eval" in refused.stderr and "Traceback" not in refused.stderr

    edited = two_prompt_project(tmp_path / "edited", terse="{% block user %}TL;DR: {{ document }}{% endblock %}")
    refused = cli("gate", str(edited), "--candidate", "local/lead-2", "--against", run_id, cwd=tmp_path)
    assert refused.returncode == EXIT_USAGE and "prompts differ" in refused.stderr

    from harness.rebuild import comparable_records

    stored = harness.load_run(run_id)
    plan = prepare(load_config(path))
    partial = [r for r in stored.records if r.item_id != "b"]
    with pytest.raises(ConfigError) as missing:
        comparable_records(stored.manifest, partial, plan, plan.variant("local/lead"), run_id)
    assert "lacks 1 of the eval's 3 calls (e.g. b)" in str(missing.value)


# 5. The shipped workflow checks the keys of the gated variants only.


def test_shipped_workflow_checks_only_the_gated_variants_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    workflow = yaml.safe_load((REPO / ".github/workflows/model-gate.yml").read_text())
    steps = workflow["jobs"]["gate"]["steps"]
    command = shlex.split(next(s["run"] for s in steps if "harness gate" in s.get("run", "")))
    args = command[command.index("gate") + 1 :]
    config, candidate = args[0], args[args.index("--candidate") + 1]
    for key in workflow["jobs"]["gate"]["env"]:
        if key.endswith("_API_KEY"):
            monkeypatch.setenv(key, "sk-test-not-a-real-key")
    plan = prepare(load_config(REPO / config))
    baseline, candidates = gate_variants(plan, candidate)
    selected = plan.select({baseline, *candidates}, strict=True)  # gemini has no key here, and is not gated
    assert {v.name for v in selected.runnable} == {baseline, *candidates}
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(ConfigError) as missing:
        prepare(load_config(REPO / config)).select({baseline, *candidates}, strict=True)
    assert "ANTHROPIC_API_KEY" in str(missing.value)


def test_shipped_workflow_shards_run_the_gates_own_command() -> None:
    """The matrix workers fill the cache with exactly the calls the gate job makes: same command, same
    config, candidate and cap, plus --shard I/N for every I of N."""
    workflow = yaml.safe_load((REPO / ".github/workflows/model-gate.yml").read_text())

    def command(job: str) -> list[str]:
        steps = workflow["jobs"][job]["steps"]
        text = next(s["run"] for s in steps if "harness gate" in s.get("run", ""))
        return shlex.split(text.replace("${{ matrix.shard }}", "MATRIX"))

    shard, gate = command("shards"), command("gate")
    position = shard.index("--shard")
    spec = shard[position + 1]
    assert shard[:position] + shard[position + 2 :] == gate
    matrix = workflow["jobs"]["shards"]["strategy"]["matrix"]["shard"]
    count = int(spec.rsplit("/", 1)[1])
    assert sorted(matrix) == list(range(1, count + 1)) and spec.startswith("MATRIX/")
    assert workflow["jobs"]["gate"]["needs"] == "shards"


# 6. Unexpected failures exit 4, never 1; a tracking failure loses nothing.


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_unreachable_tracking_server_exits_4_and_keeps_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = two_prompt_project(tmp_path, baseline="local/lead-2")  # local/lead is better: the gate would pass
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    result = cli("run", str(path), cwd=tmp_path)
    assert result.returncode == EXIT_INCOMPLETE, result.stdout + result.stderr
    assert "TRACKING FAILED" in result.stdout and "Traceback" not in result.stderr
    reports = list((tmp_path / "reports").glob("*/report.md"))
    assert len(reports) == 1 and "local/lead:terse" in reports[0].read_text()
    gated = cli("gate", str(path), "--candidate", "local/lead", cwd=tmp_path)
    assert gated.returncode == EXIT_INCOMPLETE, gated.stdout + gated.stderr
    assert "GATE INCOMPLETE" in gated.stdout and "6 served from the response cache" in gated.stdout


@pytest.mark.slow
def test_an_internal_error_exits_4_in_one_line(tmp_path: Path) -> None:
    config = base_config(["local/lead"], scorers=["tests.custom_scorers:crashing_batch"])
    result = cli("run", str(write_project(tmp_path, config)), "--no-tracking", cwd=tmp_path)
    assert result.returncode == EXIT_INCOMPLETE, result.stdout + result.stderr
    assert "could not complete" in result.stderr and "Traceback" not in result.stderr


# 7. and 8. report keeps aggregates and notes, never overwrites the run's report, finds the store.

LABELS = {"a": "cats", "b": "dogs", "c": "birds"}


def results_row(stdout: str) -> str:
    """The variant's row of the results table (the first row under the header naming macro-F1)."""
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if "accuracy.macro_f1" in line)
    return next(line for line in lines[header:] if "openai/fake-model:terse" in line)


@pytest.mark.slow
def test_report_keeps_aggregates_and_notes_and_finds_the_store_from_a_subfolder(
    tmp_path: Path, model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_server.answer = lambda request: "cats" if "Cats" in request["messages"][-1]["content"] else "dogs"
    items = [{**item, "reference": LABELS[item["id"]]} for item in ITEMS]
    config = base_config([fake_model(model_server, price=PRICE)], scorers=["accuracy"])
    path = write_project(tmp_path, config, items=items)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    first = cli("run", str(path), "--wide", cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert (tmp_path / "mlruns" / "mlflow.db").is_file()
    run_id = first.stdout.split("MLflow: run ")[1].split()[0]
    rebuilt = cli("report", run_id, "--wide", cwd=tmp_path / "experiments")  # from a subfolder of the project
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert "accuracy.macro_f1" in rebuilt.stdout
    assert results_row(first.stdout) == results_row(rebuilt.stdout)  # macro-F1 and every other column
    assert "as run: 3 calls made, 0 served from the response cache" in rebuilt.stdout

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    original = Path(
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="report.md", dst_path=str(tmp_path / "o"))
    )
    again = Path(
        mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="rebuilt/report.md", dst_path=str(tmp_path / "r")
        )
    )
    assert "accuracy.macro_f1" in original.read_text() and "accuracy.macro_f1" in again.read_text()
    assert "Run: 3 calls made" in original.read_text()
    assert (tmp_path / "reports" / run_id / "report.md").is_file()


# 9. A module:function scorer keeps its kind; --limit must be positive.


def test_module_function_scorer_declared_pass_fail_stays_binary(tmp_path: Path) -> None:
    config = base_config(["local/lead"], scorers=["tests.custom_scorers:non_empty"])
    path = write_project(tmp_path, config)
    plan = prepare(load_config(path))
    assert plan.scorers[0].kind == "binary"
    outcome = harness.run(path, RunOptions(tracking=False), quiet())
    assert outcome.analysis.estimates["tests.custom_scorers:non_empty"]["local/lead:terse"].method == "Wilson"


@pytest.mark.parametrize("limit", ["0", "-2"])
@pytest.mark.slow
def test_limit_must_be_positive(tmp_path: Path, limit: str) -> None:
    path = two_prompt_project(tmp_path)
    for command in ("run", "estimate", "gate"):
        result = cli(command, str(path), "--limit", limit, cwd=tmp_path)
        assert result.returncode == EXIT_USAGE, (command, result.stdout, result.stderr)
        assert "--limit" in result.stderr and "positive" in result.stderr


# 10. An experiment built in Python is tracked.


@pytest.mark.slow
def test_experiment_built_in_python_is_tracked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Built in Python, an experiment's project is the working directory: its files are found there."""
    write_project(tmp_path, base_config(["local/lead"]))
    monkeypatch.chdir(tmp_path)
    experiment = harness.Experiment.model_validate(
        {
            "name": "built-in-python",
            "dataset": {"path": "evals/data.jsonl"},
            "prompts": ["prompts/terse.j2"],
            "models": ["local/lead"],
            "scorers": ["rouge"],
            "cache": {"enabled": False},
        }
    )
    outcome = harness.run(experiment, console=quiet())
    assert outcome.exit_code == 0 and outcome.run_id is not None
    stored = harness.load_run(outcome.run_id)
    assert stored.manifest.experiment == "built-in-python" and len(stored.records) == 3
    import mlflow

    config = mlflow.artifacts.list_artifacts(run_id=outcome.run_id, artifact_path="config")
    assert [Path(c.path).name for c in config] == ["built-in-python.yaml"]


# 11. Every cost $0 and every score missing: tracked, not crashed.


@pytest.mark.slow
def test_near_zero_costs_and_no_scores_still_track(tmp_path: Path) -> None:
    """Costs of a fraction of a cent (compute by the hour) and no score at all: the plot has no point."""
    models = [{"model": m, "price": {"usd_per_hour": 0.1}} for m in ("local/lead", "local/lead-2")]
    config = base_config(models, scorers=["tests.custom_scorers:always_fails"])
    outcome = harness.run(write_project(tmp_path, config), console=quiet())
    assert outcome.run_id is not None and outcome.tracking_error is None, outcome.tracking_error
    assert outcome.analysis.recommendation is None and outcome.exit_code == 0
    stored = harness.load_run(outcome.run_id)
    assert stored.records and all(r.cost_usd > 0 for r in stored.records)


# 12. A variant whose calls all failed is never recommended; a run where every call failed exits 4.


def test_a_variant_whose_calls_all_failed_is_never_recommended(tmp_path: Path, model_server: FakeModelServer) -> None:
    for _ in range(3 * 5):
        model_server.fail_next(Fault(status=401))
    config = base_config(
        [fake_model(model_server), "local/lead"], baseline={"model": "local/lead", "prompt": "terse"}, max_retries=0
    )
    outcome = harness.run(write_project(tmp_path, config), RunOptions(tracking=False), quiet())
    failed = "openai/fake-model:terse"
    assert all(r.error is not None for r in outcome.records if r.variant == failed)
    rec = outcome.analysis.recommendation
    assert rec is not None and rec.variant == "local/lead:terse"
    assert outcome.analysis.verdicts[failed].status == "undecided"


@pytest.mark.slow
def test_a_run_where_every_call_failed_exits_4(tmp_path: Path, model_server: FakeModelServer) -> None:
    for _ in range(10):
        model_server.fail_next(Fault(status=401, body={"error": {"message": "bad key", "type": "auth"}}))
    config = base_config([fake_model(model_server)], max_retries=0)
    result = cli("run", str(write_project(tmp_path, config)), cwd=tmp_path)
    assert result.returncode == EXIT_INCOMPLETE, result.stdout + result.stderr
    assert "every one of the 3 calls failed" in result.stderr
    assert "Recommendation: " not in result.stdout or "No recommendation" in result.stdout


@pytest.mark.slow
def test_routing_names_are_checked_before_any_call_and_never_fail_a_paid_run(
    tmp_path: Path, model_server: FakeModelServer
) -> None:
    routing = {"weak": "local/lead:terse", "policies": [{"kind": "cascade", "check": {"min_words": 3}}]}
    typo = base_config([fake_model(model_server), "local/lead"], routing={**routing, "strong": "local/leed:terse"})
    result = cli("run", str(write_project(tmp_path / "typo", typo)), cwd=tmp_path)
    assert result.returncode == EXIT_USAGE and "routing.strong" in result.stderr and not model_server.requests
    # The strong variant's key is missing, so it is skipped: the run completes and says routing was not simulated.
    skipped = base_config(
        ["openai/gpt-4o-mini", "local/lead"], routing={**routing, "strong": "openai/gpt-4o-mini:terse"}
    )
    outcome = harness.run(write_project(tmp_path / "skip", skipped), RunOptions(tracking=False), quiet())
    assert outcome.exit_code == 0
    assert any(w.startswith("routing not simulated") for w in outcome.analysis.warnings)


def test_conventional_column_names_take_their_roles_and_a_mapping_wins(tmp_path: Path) -> None:
    items = [{"id": f"q{n}", "question": f"What is {n}?", "answer": str(n), "gold": "x"} for n in range(3)]
    config = base_config(["local/lead"], scorers=["exact_match"])
    del config["dataset"]["fields"]
    path = write_project(tmp_path, config, items=items, templates={"terse": "{{ question }}"})
    plan = prepare(load_config(path))
    assert [i.id for i in plan.eval_set.items] == ["q0", "q1", "q2"]
    assert [i.reference for i in plan.eval_set.items] == ["0", "1", "2"]
    assert plan.eval_set.conventional == {"id": "id", "reference": "answer"}
    mapped = base_config(
        ["local/lead"], scorers=["exact_match"], dataset={"path": "evals/data.jsonl", "fields": {"reference": "gold"}}
    )
    plan = prepare(
        load_config(write_project(tmp_path / "mapped", mapped, items=items, templates={"terse": "{{ question }}"}))
    )
    assert [i.reference for i in plan.eval_set.items] == ["x", "x", "x"]


def test_the_estimate_and_the_spend_question_count_judge_calls(tmp_path: Path, model_server: FakeModelServer) -> None:
    from harness.spending import estimates_for

    model_server.answer = lambda request: "Score: 4" if request["model"] == "judge" else "an answer"
    model_server.usage = Usage(prompt_tokens=20, completion_tokens=4)
    plan = prepare(load_config(judged_project(tmp_path, model_server)))
    estimates, _ = estimates_for(plan, None, False)
    candidate, judge = estimates
    assert judge.variant == "scorer llm_judge" and judge.calls == 3
    # A spend threshold above the candidates' worst case but below the judge's stops a run nobody confirms.
    threshold = candidate.max_usd + judge.max_usd / 2
    config = plan.experiment.model_copy(
        update={"budget": plan.experiment.budget.model_copy(update={"confirm_above_usd": threshold})}
    )
    with pytest.raises(ConfigError) as refused:
        harness.run(config, RunOptions(tracking=False), quiet())
    assert "budget.confirm_above_usd" in str(refused.value) and not model_server.requests
    outcome = harness.run(config, RunOptions(tracking=False, assume_yes=True), quiet())
    assert 0 < sum(r.eval_cost_usd for r in outcome.records) <= judge.max_usd


def test_dir_shows_the_lazy_api_and_each_name_loads() -> None:
    names = [n for n in dir(harness) if not n.startswith("_")]
    assert {"run", "gate", "decide", "load_run", "Experiment", "RunOptions"} <= set(names)
    for name in harness.__all__:
        assert getattr(harness, name) is not None
