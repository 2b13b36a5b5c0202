"""llm_judge against the local test server (through litellm) and against the local SmolLM2 model."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from harness.api import run as harness_run
from harness.config import ConfigError, load_config
from harness.planner import prepare
from harness.scorers.judge import parse_score
from harness.workflow import RunOptions
from tests.conftest import ITEMS, REPO, base_config, fake_model, write_project
from tests.fake_server import FakeModelServer, Usage

JUDGE_PRICE = {"input_cost_per_token": 2e-6, "output_cost_per_token": 8e-6}
RUBRIC = (
    "{% block user %}Reference: {{ reference }}\nCandidate: {{ output }}\nDocument: {{ document }}\n"
    'End with "Score: N" (1-5).{% endblock %}'
)


def judge_config(server: FakeModelServer, tmp_path: Path, **judge: Any) -> dict[str, Any]:
    options = {"model": fake_model(server, "judge", price=JUDGE_PRICE), "rubric": "prompts/judges/r.j2", **judge}
    return base_config(
        [fake_model(server)],
        scorers=["rouge", {"llm_judge": options}],
        cache={"path": str(tmp_path / "cache.sqlite")},
    )


def project(
    tmp_path: Path, config: dict[str, Any], rubric: str = RUBRIC, items: list[dict[str, str]] | None = None
) -> Path:
    path = write_project(tmp_path, config, items=items)
    (tmp_path / "prompts" / "judges").mkdir()
    (tmp_path / "prompts" / "judges" / "r.j2").write_text(rubric)
    return path


def answers(verdicts: dict[str, str]):
    """Candidate outputs echo the item; the judge's reply depends on which item it grades."""

    def answer(request: dict[str, Any]) -> str:
        text = request["messages"][-1]["content"]
        if request["model"] != "judge":
            document = text.split("<document>")[1]
            return document.split(".")[0].lower()
        return next(reply for key, reply in verdicts.items() if f"Candidate: {key}" in text)

    return answer


def run(path: Path) -> Any:
    return harness_run(load_config(path), RunOptions(tracking=False), Console(file=io.StringIO(), width=200))


@pytest.mark.parametrize(
    ("reply", "scale", "expected"),
    [
        ("Clear and faithful.\nScore: 4", (1, 5), 0.75),
        ("Score: 2\nOn reflection... Score: 5", (1, 5), 1.0),
        ("**Score:** 3", (1, 5), 0.5),
        ("5", (1, 5), 1.0),
        ("Too vague. The score is 2.", (1, 5), 0.25),
        ("I'd give it 4/5.", (1, 5), 0.75),
        ("4 out of 10", (1, 5), None),
        ("1. Incremental learning is", (1, 5), None),
        ("Score: 9", (1, 5), None),
        ("It is quite good.", (1, 5), None),
        ("Matches.\nVerdict: PASS", None, 1.0),
        ("verdict: fail", None, 0.0),
        ("I cannot tell.", None, None),
    ],
)
def test_verdicts_are_parsed_or_refused(reply: str, scale: tuple[float, float] | None, expected: float | None) -> None:
    assert parse_score(reply, scale) == expected


def test_judge_scores_costs_apart_caches_and_never_turns_garbage_into_zero(
    tmp_path: Path, model_server: FakeModelServer
) -> None:
    model_server.usage = Usage(prompt_tokens=100, completion_tokens=10)
    verdicts = {"cats": "Faithful.\nScore: 5", "dogs": "Close.\nScore: 4", "birds": "Hmm.", "fish": "Score: 2"}
    model_server.answer = answers(verdicts)
    items = [*ITEMS, {"id": "d", "document": "Fish swim. They have fins.", "reference": "fish swim fast"}]
    path = project(tmp_path, judge_config(model_server, tmp_path), items=items)
    first = run(path)
    by_item = {r.item_id: r for r in first.records}
    assert by_item["a"].scores["llm_judge"] == 1.0 and by_item["b"].scores["llm_judge"] == 0.75
    assert by_item["c"].scores["llm_judge"] is None
    assert "unparseable verdict" in by_item["c"].score_errors["llm_judge"]
    judge_cost = 100 * 2e-6 + 10 * 8e-6
    assert by_item["d"].scores["llm_judge"] == 0.25
    assert all(r.eval_cost_usd == pytest.approx(judge_cost) for r in first.records)
    assert all(r.cost_usd == 0 for r in first.records), "the candidate is on loopback without a price: $0"
    summary = first.summaries[0]
    assert summary.eval_cost_usd == pytest.approx(4 * judge_cost)
    assert summary.quality["llm_judge"] == pytest.approx(2 / 3), "the unparseable verdict is left out, not 0"
    judged = [r for r in model_server.requests if r["model"] == "judge"]
    assert len(judged) == 4 and judged[0]["temperature"] == 0
    pair = next(a for a in first.analysis.agreement if {a.first, a.second} == {"rouge", "llm_judge"})
    # ROUGE-L: a 1.0, b 0.8 ("dogs bark loudly"), d 0.8, ranks (3, 1.5, 1.5); judge ranks (3, 2, 1): rho = sqrt(3)/2
    assert pair.n == 3 and pair.rho == pytest.approx(3**0.5 / 2)
    run(path)
    assert len(model_server.requests) == 8, "a re-run calls neither the candidate nor the judge again"


def test_pass_fail_judge_is_a_binary_scorer(tmp_path: Path, model_server: FakeModelServer) -> None:
    model_server.answer = answers({"cats": "Verdict: PASS", "dogs": "Verdict: FAIL", "birds": "Verdict: FAIL"})
    rubric = "{% block user %}Reference: {{ reference }}\nCandidate: {{ output }}{% endblock %}"
    path = project(tmp_path, judge_config(model_server, tmp_path, scale="pass_fail"), rubric)
    outcome = run(path)
    assert [r.scores["llm_judge"] for r in outcome.records] == [1.0, 0.0, 0.0]
    assert outcome.analysis.estimates["llm_judge"]["openai/fake-model:terse"].method == "Wilson"


def test_rubric_with_an_undefined_variable_fails_before_any_call(tmp_path: Path, model_server: FakeModelServer) -> None:
    path = project(tmp_path, judge_config(model_server, tmp_path), "{{ output }} {{ question }}")
    with pytest.raises(ConfigError, match=r"r\.j2: item a: template variable 'question' is undefined"):
        prepare(load_config(path))
    assert model_server.requests == []


def test_judge_without_its_key_fails_before_any_call(tmp_path: Path, model_server: FakeModelServer) -> None:
    config = judge_config(model_server, tmp_path, model="openai/gpt-4o-mini")
    with pytest.raises(ConfigError, match=r"scorers\[1\]\.options: .*needs OPENAI_API_KEY"):
        prepare(load_config(project(tmp_path, config)))
    assert model_server.requests == []


def test_bad_scale_is_a_config_error(tmp_path: Path, model_server: FakeModelServer) -> None:
    with pytest.raises(ConfigError, match=r"scale must be \[low, high\] or pass_fail"):
        prepare(load_config(project(tmp_path, judge_config(model_server, tmp_path, scale=[5, 1]))))


def test_local_smollm2_as_judge_gives_a_score_or_a_recorded_scorer_error(
    tmp_path: Path, model_server: FakeModelServer
) -> None:
    model_server.answer = answers({})
    config = base_config(
        [fake_model(model_server)],
        scorers=[
            {
                "llm_judge": {
                    "model": "local/smollm2-135m",
                    "rubric": "summary.j2",
                    "params": {"max_tokens": 24},
                }
            }
        ],
        cache={"enabled": False},
    )
    shutil.copy(REPO / "prompts/judges/summary.j2", tmp_path / "summary.j2")
    outcome = run(write_project(tmp_path, config, items=base_items()))
    for r in outcome.records:
        value = r.scores["llm_judge"]
        assert (value is not None and 0 <= value <= 1) or "unparseable verdict" in r.score_errors["llm_judge"]
        assert r.eval_cost_usd == 0.0


def base_items() -> list[dict[str, str]]:
    return [{"id": "a", "document": "Cats purr.", "reference": "cats purr"}]
