"""`harness shorten`: a search that keeps the sentences the answers need and drops the rest, against a local
server whose model is right only when the prompt keeps them; confirmation items disjoint from the
search's; and no more false claims than the gate's alpha when the answers do not depend on the prompt."""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pytest

from harness.prompt_units import STRING, TAG, containers, units, without
from harness.shorten import search, split_items
from tests.conftest import base_config, fake_model, write_project
from tests.fake_server import FakeModelServer, Usage
from tests.test_cli import in_process

NEEDED = ("Answer with the topic only.", "Write the word topic first.")
FILLER = ("You are a careful and helpful assistant.", "Readers value clear writing.", "Take your time to think.")
TEMPLATE = (
    "{% block system %}"
    f"{FILLER[0]} {NEEDED[0]} {FILLER[1]}\n{NEEDED[1]} {FILLER[2]}"
    "{% endblock %}{% block user %}Document: {{ document }}{% endblock %}"
)
ITEMS = [{"id": f"i{n}", "document": f"Document {n} is about topic {n}.", "reference": f"topic {n}"} for n in range(40)]


def test_units_are_the_literal_sentences_and_any_removal_still_renders() -> None:
    found = units(TEMPLATE)
    assert [u.text for u in found if u.kind == "sentence"] == [FILLER[0], NEEDED[0], FILLER[1], NEEDED[1], FILLER[2]]
    assert [u.kind for u in found if u.kind != "sentence"] == ["block"]
    for mask in range(2 ** len(found)):
        removed = frozenset(i for i in range(len(found)) if mask >> i & 1)
        text = without(TEMPLATE, found, removed)
        assert "{{ document }}" in text and text.count("{% block") == 2
        inside = containers(found)
        sentences = [u for u in found if u.kind == "sentence"]
        assert all((u.text in text) == (not ({u.index} | inside[u.index]) & removed) for u in sentences)


@pytest.mark.parametrize("path", sorted(Path("prompts").glob("*/*.j2")), ids=str)
def test_any_units_removed_from_a_shipped_prompt_leave_its_tags_whole_and_it_parses(path: Path) -> None:
    """On every shipped template: no unit cuts a tag's edge or an escape (a unit holds a tag whole, lies
    inside one of its string literals, or misses it), and random sets of units removed still parse."""
    source = path.read_text()
    found = units(source)
    for unit in found:
        assert source[unit.start - 1 : unit.start] != "\\" and source[unit.end - 1 : unit.end] != "\\", unit
        for tag in TAG.finditer(source):
            holds = unit.start <= tag.start() and tag.end() <= unit.end
            misses = unit.end <= tag.start() or tag.end() <= unit.start
            in_string = any(
                m.start() < unit.start and unit.end < m.end() for m in STRING.finditer(source, tag.start(), tag.end())
            )
            assert holds or misses or in_string, (unit, tag.group(0))
    rng = random.Random(path.name)
    for _ in range(50):
        removed = frozenset(u.index for u in found if rng.random() < 0.4)
        jinja2.Environment().parse(without(source, found, removed))


def test_the_search_and_confirmation_items_are_disjoint_halves() -> None:
    ids = [f"i{n}" for n in range(41)]
    for seed in range(5):
        searched, confirmed = split_items(ids, seed)
        assert not set(searched) & set(confirmed) and sorted(searched + confirmed) == sorted(ids)
        assert abs(len(searched) - len(confirmed)) <= 1


def _coin_flips(seed: int, p: float = 0.6) -> Any:
    """A model whose right and wrong answers do not depend on the prompt: each (prompt, item) a fresh coin."""

    def evaluate(removed: frozenset[int], ids: list[str]) -> np.ndarray:
        draws = [hashlib.sha256(f"{seed}|{sorted(removed)}|{i}".encode()).digest()[0] / 256 for i in ids]
        return np.array([1.0 if d < p else 0.0 for d in draws])

    return evaluate


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["binary", "continuous"])
def test_with_answers_that_ignore_the_prompt_a_shorter_prompt_is_claimed_at_most_alpha(kind: str) -> None:
    """At margin 0 a claim of non-inferiority is a claim that the shorter prompt is no worse with nothing
    to spare: with answers independent of the prompt, the true difference is exactly 0, so every claim is
    false. Over 400 searches the rate stays within alpha (0.05) and its sampling error
    (benchmarks/shorten_alpha.py sets it beside the same searches judged on their own items)."""
    ids = [f"i{n}" for n in range(40)]
    claims = 0
    trials = 400
    for seed in range(trials):
        searched, confirmed = split_items(ids, seed)
        sizes = [16, 14, 12, 10, 8, 6, 4, 2]
        found = search(sizes, _coin_flips(seed), searched, confirmed, 0.0, 0.95, kind)
        claims += found.confirmation is not None and found.confirmation.status == "pass"
    bound = 0.05 + 3 * (0.05 * 0.95 / trials) ** 0.5
    assert claims / trials <= bound, claims / trials


def test_only_the_original_and_the_winner_ever_see_a_confirmation_item() -> None:
    """On random unit counts, margins and answers, every trial the search chose among ran on search items
    alone; the confirmation items were scored twice, for the original and the winner, and the verdict is
    theirs."""
    rng = np.random.default_rng(7)
    ids = [f"i{n}" for n in range(30)]
    for seed in range(60):
        searched, confirmed = split_items(ids, seed)
        seen: list[tuple[frozenset[int], list[str]]] = []
        flips = _coin_flips(seed, p=float(rng.uniform(0.2, 0.9)))

        def evaluate(removed: frozenset[int], asked: list[str], flips: Any = flips, seen: Any = seen) -> Any:
            seen.append((removed, list(asked)))
            return flips(removed, asked)

        sizes = [int(n) for n in rng.integers(1, 50, size=int(rng.integers(1, 7)))]
        found = search(sizes, evaluate, searched, confirmed, float(rng.choice([0.0, 0.1, 0.3])), 0.95, "binary")
        judged = [(removed, asked) for removed, asked in seen if set(asked) & set(confirmed)]
        assert all(set(asked) <= set(searched) for removed, asked in seen if (removed, asked) not in judged)
        if found.confirmation is None:
            assert judged == [] and found.removed == frozenset()
        else:
            assert judged == [(frozenset(), confirmed), (found.removed, confirmed)]
            assert found.confirmation.n_pairs == len(confirmed)


def test_a_deletion_that_would_lose_the_cached_prefix_is_never_tried() -> None:
    """Unit 0 sits in the cached prefix: removing it costs more per call, so no call is made for it."""
    asked: list[frozenset[int]] = []

    def evaluate(removed: frozenset[int], ids: list[str]) -> Any:
        asked.append(removed)
        return np.ones(len(ids))

    def cost(removed: frozenset[int]) -> float:
        return (2.0 if 0 in removed else 1.0) - 0.1 * len(removed)

    ids = [f"i{n}" for n in range(20)]
    found = search([30, 5, 4], evaluate, ids[:10], ids[10:], 0.1, 0.95, "binary", cost=cost)
    assert found.removed == frozenset({1, 2}) and not any(0 in removed for removed in asked)
    assert "cached prefix" in next(t.reason for t in found.trials if t.unit == 0)


@pytest.fixture
def server() -> Any:
    model_server = FakeModelServer().start()
    model_server.usage = lambda request: Usage(  # a prompt's tokens grow with its text, as a real model's
        prompt_tokens=sum(len(str(m["content"])) for m in request["messages"]) // 4, completion_tokens=4
    )

    def answer(request: dict[str, Any]) -> str:
        system = str(request["messages"][0]["content"])
        text = str(request["messages"][-1]["content"])
        topic = "topic " + text.split("Document ")[1].split(" ")[0]
        right = all(s in system for s in NEEDED) and int(topic.split()[1]) % 7 != 3  # a few it never gets
        return topic if right else "zebra"

    model_server.answer = answer
    yield model_server
    model_server.stop()


def _project(
    tmp_path: Path, server: FakeModelServer, template: str, margin: float, model: Any = None, **overrides: Any
) -> Path:
    entry = model or fake_model(server, "gpt-4o-mini")
    config = base_config([entry], **{"scorers": ["exact_match"], "gate": {"margin": margin}, **overrides})
    return write_project(tmp_path, config, items=ITEMS, templates={"terse": template})


def _shorten(path: Path, *flags: str) -> tuple[int, str]:
    """Exit code and the output, whitespace collapsed."""
    prompt = [] if "--prompt" in flags else ["--prompt", "terse"]
    tracking = [] if "--tracking" in flags else ["--no-tracking"]
    flags = tuple(f for f in flags if f != "--tracking")
    done = in_process(["shorten", str(path), *prompt, "--yes", *tracking, *flags], path.parent.parent)
    return done.returncode, " ".join((done.stdout + done.stderr).split())


def test_a_metric_that_cannot_tell_the_prompts_apart_confirms_nothing() -> None:
    """Every confirmation item right with either prompt: no verdict may rest on it (the gate's rule)."""
    ids = [f"i{n}" for n in range(20)]
    found = search([5, 3], lambda removed, asked: np.ones(len(asked)), ids[:10], ids[10:], 0.1, 0.95, "binary")
    assert found.removed and found.confirmation is not None and found.confirmation.status == "undecided"


def test_the_search_keeps_the_sentences_the_answers_need_and_drops_the_rest(
    tmp_path: Path, server: FakeModelServer
) -> None:
    path = _project(tmp_path, server, TEMPLATE, 0.2, traffic={"requests_per_day": 1000})
    code, text = _shorten(path)
    assert code == 0, text
    shortened = (tmp_path / "prompts" / "terse.short.j2").read_text()
    assert all(s in shortened for s in NEEDED) and not any(s in shortened for s in FILLER)
    assert (tmp_path / "prompts" / "terse.j2").read_text() == TEMPLATE  # never overwritten
    assert "3 of 6 units removed" in text and "confirmed on 20 items the search never saw: pass" in text
    _, confirmed = split_items([i["id"] for i in ITEMS], 0)
    asked = {r["messages"][-1]["content"].split("Document ")[1].split(" ")[0] for r in server.requests}
    assert asked == {str(n) for n in range(40)}  # both halves were called, each in its own role
    report = (tmp_path / "reports" / "shorten-terse.md").read_text()
    assert "## Removed" in report and FILLER[0] in report
    saved = float(text.split("saves $")[1].split()[0])
    month = float(text.split("per call, $")[1].split()[0].replace(",", ""))
    assert saved > 0 and month > 0 and "a month at traffic" in report
    assert "the search made 0 calls" in _shorten(path)[1]  # cached: a re-run pays nothing
    assert (tmp_path / "prompts" / "terse.short-2.j2").exists()
    final = shortened.split("{% endblock %}")[0].removeprefix("{% block system %}")
    for request in server.requests:  # all the first run's: the second made none
        system = str(request["messages"][0]["content"])
        item = request["messages"][-1]["content"].split("Document ")[1].split(" ")[0]
        if f"i{item}" in confirmed:  # the confirmation: the original or the winner, nothing the search tried
            assert all(s in system for s in FILLER + NEEDED) or system.strip() == final.strip(), system


def test_a_search_under_a_cap_never_passes_it_and_says_the_budget_ran_out(
    tmp_path: Path, server: FakeModelServer
) -> None:
    path = _project(tmp_path, server, TEMPLATE, 0.2)
    for cap in (0.0001, 0.0003):  # the whole search costs about $0.0007
        code, text = _shorten(path, "--max-usd", str(cap))
        assert code == 0, text
        spent = float(text.split("spent $")[1].split()[0])
        assert 0 < spent <= cap and "ran out" in text, text


@pytest.mark.slow
def test_a_prefix_the_provider_caches_is_never_cut_under_its_minimum(tmp_path: Path, server: FakeModelServer) -> None:
    """The system text every prompt starts with is a few sentences over the 1,024 tokens OpenAI caches:
    the search may trim it, but never under the minimum, where the whole prefix would lose the cache
    discount; the sentences after the item are free to go."""
    from harness.tokens import count_text_tokens

    rules = [f"Rule {n}: keep every answer consistent with house style number {n} of the guide." for n in range(59)]
    template = (
        "{% block system %}" + " ".join(rules) + f" {NEEDED[0]} {NEEDED[1]}{{% endblock %}}"
        "{% block user %}Document: {{ document }}\n" + " ".join(FILLER) + "{% endblock %}"
    )
    prefix_tokens = count_text_tokens("gpt-4o-mini", "<system>\n" + " ".join(rules))
    assert 1024 < prefix_tokens < 1024 + 3 * 20, prefix_tokens  # room to cut a few rules, not all
    path = _project(tmp_path, server, template, 0.2, traffic={"requests_per_day": 100000})
    code, text = _shorten(path)
    assert code == 0, text
    shortened = (tmp_path / "prompts" / "terse.short.j2").read_text()
    assert not any(s in shortened for s in FILLER) and all(s in shortened for s in NEEDED)
    kept = shortened.split("{% endblock %}")[0].removeprefix("{% block system %}")
    assert sum(r in kept for r in rules) < len(rules)  # some rules went...
    after = int(text.split(" tokens before, ")[1].split()[0])
    assert after >= 1024 and count_text_tokens("gpt-4o-mini", "<system>\n" + kept) >= 1024 - 8  # ...not too many
    assert "cached before, cached after" in text and "it would take the cached prefix under" in text


def test_a_shorter_prompt_not_shown_as_good_is_reported_but_never_written_as_a_template(
    tmp_path: Path, server: FakeModelServer
) -> None:
    """At margin 0 equal answers cannot show non-inferiority: the report and its diff, no template."""
    code, text = _shorten(_project(tmp_path, server, TEMPLATE, 0.0))
    assert code == 0, text
    assert "the search never saw: undecided" in text and "no template was written" in text
    assert sorted(p.name for p in (tmp_path / "prompts").iterdir()) == ["terse.j2"]
    assert "```diff" in (tmp_path / "reports" / "shorten-terse.md").read_text()


def test_a_prompt_of_a_vars_ablation_is_shortened_beside_its_one_file(tmp_path: Path, server: FakeModelServer) -> None:
    path = _project(tmp_path, server, TEMPLATE, 0.2, vars={"style": ["plain", "warm"]})
    code, text = _shorten(path, "--prompt", "terse(style=warm)")
    assert code == 0 and "the search never saw: pass" in text, text
    assert sorted(p.name for p in (tmp_path / "prompts").iterdir()) == ["terse.j2", "terse.short.j2"]


@pytest.mark.slow
def test_a_search_bought_through_a_batch_api_makes_no_direct_call(tmp_path: Path) -> None:
    """`shorten --batch`: every look of every deletion is one batch, and the search finds what it finds
    directly (the needed sentences kept, the fillers gone)."""
    from tests.batch_server import BatchServer

    batch_server = BatchServer().start()
    try:
        batch_server.usage = Usage(prompt_tokens=40, completion_tokens=4)

        def answer(request: dict[str, Any]) -> str:
            system = str(request["messages"][0]["content"])
            topic = "topic " + str(request["messages"][-1]["content"]).split("Document ")[1].split(" ")[0]
            right = all(s in system for s in NEEDED) and int(topic.split()[1]) % 7 != 3
            return topic if right else "zebra"

        batch_server.answer = answer
        config = base_config(
            [fake_model(batch_server, "gpt-4o-mini")],
            scorers=["exact_match"],
            gate={"margin": 0.2},
            execution={"poll_s": 0.02},
        )
        path = write_project(tmp_path, config, items=ITEMS, templates={"terse": TEMPLATE})
        code, text = _shorten(path, "--batch")
        assert code == 0 and "the search never saw: pass" in text, text
        shortened = (tmp_path / "prompts" / "terse.short.j2").read_text()
        assert all(s in shortened for s in NEEDED) and not any(s in shortened for s in FILLER)
        assert batch_server.requests == [] and batch_server.batches  # nothing called directly
        lines = sum(len(batch_server.files[b.input_file_id].splitlines()) for b in batch_server.batches.values())
        assert lines == int(text.split("the search made ")[1].split()[0])  # each paid call in one batch line
    finally:
        batch_server.stop()


def test_the_search_is_an_mlflow_run_of_its_own_that_no_reader_of_experiment_runs_takes_for_one(
    tmp_path: Path, server: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.tracking.read import latest_run
    from harness.tracking.store import open_store

    key = "sk-shorten-0123456789abcdef"
    monkeypatch.setenv("SHORTEN_TEST_KEY", key)
    model = fake_model(server, "gpt-4o-mini", api_key_env="SHORTEN_TEST_KEY")
    path = _project(tmp_path, server, TEMPLATE, 0.2, model, traffic={"requests_per_day": 1000})
    code, text = _shorten(path, "--tracking")
    assert code == 0 and "logged to MLflow as run" in text, text
    uri = os.environ["MLFLOW_TRACKING_URI"]  # the suite's store for this test
    client = open_store(uri).MlflowClient()
    (experiment,) = [e for e in client.search_experiments() if e.name != "Default"]
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.tags["harness.kind"] == "shorten" and run.data.params["verdict"] == "pass"
    assert run.data.metrics["input_tokens_after"] < run.data.metrics["input_tokens_before"]
    assert run.data.metrics["diff_ci_low"] <= run.data.metrics["diff"] <= run.data.metrics["diff_ci_high"]
    logged = [a.path for a in client.list_artifacts(run.info.run_id)]
    assert sorted(logged) == ["shorten-report.md", "terse.short.j2"]
    report = Path(client.download_artifacts(run.info.run_id, "shorten-report.md", str(tmp_path / "dl"))).read_text()
    assert "the search never saw: pass" in " ".join(report.split())
    assert key not in text and key not in report and key not in str(run.data.params)
    assert latest_run(uri, experiment.name) is None  # watch, savings and gate --against never read it


def test_a_judged_metric_over_epochs_is_searched_and_confirmed_like_any_other(
    tmp_path: Path, server: FakeModelServer
) -> None:
    """The gate's metric an llm_judge, every item asked twice (epochs): the judge's calls go through the
    same pool, the item means are what the engine pairs, and the search still finds the needed sentences."""
    answer = server.answer

    def judged(request: dict[str, Any]) -> str:
        text = str(request["messages"])
        if "Candidate:" in text:
            return "Score: 5" if "Candidate: topic" in text else "Score: 1"
        return answer(request)

    server.answer = judged
    judge = {"model": fake_model(server, "gpt-4.1-nano"), "rubric": "prompts/judges/r.j2"}
    path = _project(
        tmp_path,
        server,
        TEMPLATE,
        0.2,
        scorers=[{"llm_judge": judge}],
        epochs=2,
        gate={"metric": "llm_judge", "margin": 0.2},
        params={"temperature": 0.7, "max_tokens": 32},
    )
    (tmp_path / "prompts" / "judges").mkdir()
    (tmp_path / "prompts" / "judges" / "r.j2").write_text(
        "{% block user %}Candidate: {{ output }}. Say Score: N (1-5).{% endblock %}"
    )
    code, text = _shorten(path)
    assert code == 0 and "the search never saw: pass" in text, text
    shortened = (tmp_path / "prompts" / "terse.short.j2").read_text()
    assert all(s in shortened for s in NEEDED) and not any(s in shortened for s in FILLER)


def test_bad_input_is_one_clear_line_before_any_call(tmp_path: Path, server: FakeModelServer) -> None:
    path = _project(tmp_path, server, TEMPLATE, 0.2)
    for flags, field in (
        (("--prompt", "nope"), "--prompt"),
        (("--model", "openai/gpt-5"), "--model"),
        (("--limit", "9"), "dataset"),
    ):
        code, text = _shorten(path, *flags)
        assert code == 2 and field in text and "Fix:" in text and "Traceback" not in text, text
    assert server.requests == []


def test_without_a_response_cache_no_request_is_sent_twice(tmp_path: Path, server: FakeModelServer) -> None:
    """Each look reads more items of the same template: the earlier ones are never asked again, so a search
    with the cache off pays each (template, item) once."""
    code, text = _shorten(_project(tmp_path, server, TEMPLATE, 0.2, cache={"enabled": False}))
    assert code == 0 and "the search never saw: pass" in text, text
    sent = [json.dumps(r["messages"], sort_keys=True) for r in server.requests]
    assert len(sent) == len(set(sent)) == int(text.split("the search made ")[1].split()[0])
