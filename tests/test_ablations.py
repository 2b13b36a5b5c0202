"""Prompt ablations (`vars`) and repeated samples (`epochs`), through litellm to the test server."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from harness.api import run as harness_run
from harness.config import ConfigError, load_config
from harness.planner import prepare
from harness.workflow import RunOptions
from tests.conftest import base_config, fake_model, write_project
from tests.fake_server import FakeModelServer

SHOTS = (
    "{% block user %}{% for ex in examples[:shots] %}Example: {{ ex }}\n{% endfor %}"
    "Summarise: {{ document | truncate_tokens(doc_tokens) }}{% endblock %}"
)
LONG = [
    {"id": f"d{n}", "document": " ".join(f"Sentence {k} of document {n}." for k in range(40)), "reference": "doc"}
    for n in range(4)
]


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


@pytest.mark.slow
def test_vars_matrix_expands_into_prompt_variants_with_their_token_counts(
    tmp_path: Path, model_server: FakeModelServer
) -> None:
    config = base_config(
        [fake_model(model_server)],
        prompts=["prompts/shots.j2"],
        vars={"shots": [0, 2], "doc_tokens": [16, 128]},
        constants={"examples": ["cats purr", "dogs bark", "birds sing"]},
        baseline={"model": "openai/fake-model", "prompt": "shots(shots=2,doc_tokens=128)"},
    )
    path = write_project(tmp_path, config, items=LONG, templates={"shots": SHOTS})
    outcome = harness_run(load_config(path), RunOptions(tracking=False, use_cache=False), quiet())
    names = [s.variant for s in outcome.summaries]
    assert names == [
        "openai/fake-model:shots(shots=0,doc_tokens=16)",
        "openai/fake-model:shots(shots=0,doc_tokens=128)",
        "openai/fake-model:shots(shots=2,doc_tokens=16)",
        "openai/fake-model:shots(shots=2,doc_tokens=128)",
    ]
    tokens = {s.variant.split(":")[1]: s.mean_prompt_tokens_estimate for s in outcome.summaries}
    assert tokens["shots(shots=0,doc_tokens=16)"] < tokens["shots(shots=0,doc_tokens=128)"]
    assert tokens["shots(shots=0,doc_tokens=16)"] < tokens["shots(shots=2,doc_tokens=16)"]
    sent = [r["messages"][0]["content"] for r in model_server.requests]
    assert sum(c.startswith("Example: cats purr\nExample: dogs bark\nSummarise") for c in sent) == 8
    assert sum(c.startswith("Summarise") for c in sent) == 8
    assert outcome.analysis.baseline == "openai/fake-model:shots(shots=2,doc_tokens=128)"


@pytest.mark.slow
def test_baseline_must_name_a_prompt_variant(tmp_path: Path, model_server: FakeModelServer) -> None:
    config = base_config(
        [fake_model(model_server)],
        vars={"n": [1, 2]},
        baseline={"model": "openai/fake-model", "prompt": "terse"},
    )
    with pytest.raises(ConfigError, match=r"baseline.prompt.*terse\(n=1\), terse\(n=2\)"):
        prepare(load_config(write_project(tmp_path, config)))


@pytest.mark.parametrize(("value", "problem"), [({"n": []}, "has no values"), ({"n": [1, 1]}, "repeats a value")])
def test_vars_need_distinct_values(tmp_path: Path, model_server: FakeModelServer, value: dict, problem: str) -> None:
    path = write_project(tmp_path, base_config([fake_model(model_server)], vars=value))
    with pytest.raises(ConfigError, match=problem):
        load_config(path)


def test_epochs_at_temperature_zero_is_refused_before_any_call(tmp_path: Path, model_server: FakeModelServer) -> None:
    path = write_project(tmp_path, base_config([fake_model(model_server)], epochs=3))
    with pytest.raises(ConfigError, match=r"epochs.*temperature above 0"):
        prepare(load_config(path))
    assert model_server.requests == []


@pytest.mark.slow
def test_epochs_sample_each_item_k_times_cached_per_sample_and_clustered_by_item(
    tmp_path: Path, model_server: FakeModelServer
) -> None:
    answers = iter(range(1000))
    model_server.answer = lambda request: f"answer {next(answers)}"
    config = base_config(
        [fake_model(model_server)],
        epochs=3,
        params={"temperature": 0.8, "max_tokens": 16},
        scorers=[{"regex": {"pattern": "[02468]$"}}],
        cache={"path": str(tmp_path / "cache.sqlite")},
    )
    path = write_project(tmp_path, config)
    first = harness_run(load_config(path), RunOptions(tracking=False), quiet())
    assert len(model_server.requests) == 9
    assert sorted((r.item_id, r.sample) for r in first.records) == [(i, k) for i in "abc" for k in range(3)]
    assert len({r.output for r in first.records}) == 9
    estimate = first.analysis.estimates["regex"]["openai/fake-model:terse"]
    assert estimate.n == 3, "the interval is over 3 items, not 9 samples"
    assert estimate.method == "bootstrap (items)"
    again = harness_run(load_config(path), RunOptions(tracking=False), quiet())
    assert len(model_server.requests) == 9
    assert [r.output for r in again.records] == [r.output for r in first.records]
    assert all(r.cache_hit for r in again.records)


def test_variants_that_render_the_same_prompt_share_one_paid_call(
    tmp_path: Path, model_server: FakeModelServer
) -> None:
    # A document shorter than both truncation lengths renders one prompt for both variants.
    template = "{% block user %}Summarise: {{ document | truncate_tokens(doc_tokens) }}{% endblock %}"
    price = {"input_cost_per_token": 1e-6, "output_cost_per_token": 1e-6}
    config = base_config(
        [fake_model(model_server, price=price)], prompts=["prompts/t.j2"], vars={"doc_tokens": [64, 128]}
    )
    path = write_project(tmp_path, config, templates={"t": template})
    outcome = harness_run(load_config(path), RunOptions(tracking=False, use_cache=False), quiet())
    assert len(model_server.requests) == 3, "three items, one call each, though two variants need them"
    assert len(outcome.records) == 6
    assert outcome.result.calls_made == 3 and outcome.result.cache_hits == 3
    assert outcome.result.spent_usd == pytest.approx(sum(r.cost_usd for r in outcome.records if not r.cache_hit))
    assert {r.output for r in outcome.records} == {"a fake answer."}


@pytest.mark.slow
def test_shipped_ablation_runs_offline_and_orders_prompt_lengths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, smollm2_cache: Path
) -> None:
    from tests.conftest import REPO
    from tests.test_cli import harness

    monkeypatch.setenv("HARNESS_CACHE", str(smollm2_cache))
    out = harness(
        "run",
        str(REPO / "experiments/summarize-ablation.yaml"),
        "--limit",
        "1",
        "--no-tracking",
        "--wide",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    header = next(line for line in lines if line.startswith("┃ variant") and "in tok" in line and "p50" in line)
    column = [c.strip() for c in header.split("┃")].index("in tok")
    rows = [line.split("│") for line in lines if line.startswith("│ local/smollm2-135m:truncated(doc_tokens=")]
    in_tokens = [int(cells[column].replace(",", "")) for cells in rows if len(cells) == len(header.split("┃"))]
    assert in_tokens == sorted(in_tokens) and len(set(in_tokens)) == 3, "longer truncation, longer prompt"
    assert "Routing simulated from the records" in out.stdout and "cascade(min_words=12)" in out.stdout
