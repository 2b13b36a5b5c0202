"""Levers from a run's stored records: batch, flex, priority, prompt caching and an output cap.

A variant priced from litellm's map (gpt-4o-mini, served by the local test server) runs 20 items with a
long shared system prompt; every lever figure is then recomputed here by hand from the records, the map's
own fields and the traffic, and checked in the run's analysis, MLflow, the report and the commands.
"""

from __future__ import annotations

import io
import math
import os
import re
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import harness
from harness import cli
from harness.levers import CACHE_TTL_MINUTES, min_cacheable_tokens
from harness.offline import import_litellm
from harness.prompts import shared_prefix
from harness.summary import DAYS_PER_MONTH
from harness.workflow import RunOptions
from tests.conftest import base_config, fake_model, write_project
from tests.fake_server import FakeModelServer, Usage

RPD = 14_400.0
RULES = " ".join(
    f"Rule {i}: answer in plain words, never invent a fact, keep the reader's time in mind." for i in range(80)
)
LONG = "{% block system %}" + RULES + "{% endblock %}{% block user %}Summarise: {{ document }}{% endblock %}"
ITEMS = [
    {"id": f"i{k:02d}", "document": f"Document {k} about topic {k * 7}.", "reference": f"topic {k}"} for k in range(20)
]
PROMPT_TOKENS = 2_000


def output_tokens(request: dict[str, Any]) -> int:
    number = int(re.search(r"Document (\d+)", request["messages"][-1]["content"]).group(1))
    return 10 + 5 * number


@pytest.fixture
def priced_run(tmp_path: Path, model_server: FakeModelServer) -> tuple[harness.RunOutcome, Path]:
    model_server.usage = lambda request: Usage(prompt_tokens=PROMPT_TOKENS, completion_tokens=output_tokens(request))
    model_server.answer = lambda request: "a summary"
    config = base_config(
        [fake_model(model_server, name="gpt-4o-mini"), "local/lead"],
        baseline={"model": "local/lead", "prompt": "long"},
        prompts=["prompts/long.j2"],
        traffic={"requests_per_day": RPD},
        params={"temperature": 0, "max_tokens": 200},
    )
    path = write_project(tmp_path, config, items=ITEMS, templates={"long": LONG})
    outcome = harness.run(path, RunOptions(), Console(file=io.StringIO(), width=200))
    assert outcome.exit_code in (0, 1, 3)
    return outcome, path


@pytest.mark.slow
def test_every_lever_equals_the_hand_computed_figure(priced_run: tuple[harness.RunOutcome, Path]) -> None:
    outcome, _ = priced_run
    e = dict(import_litellm().get_model_info("gpt-4o-mini"))
    outputs = sorted(10 + 5 * k for k in range(20))
    levers = outcome.analysis.levers["openai/gpt-4o-mini:long"]
    assert "local/lead:long" not in outcome.analysis.levers, "a $0 variant has nothing to save"

    def at(suffix: str) -> float:
        return sum(
            PROMPT_TOKENS * e[f"input_cost_per_token{suffix}"] + o * e[f"output_cost_per_token{suffix}"]
            for o in outputs
        )

    now = at("")
    assert levers.cost_usd == pytest.approx(now, rel=1e-12)
    assert levers.monthly_usd == pytest.approx(now / 20 * RPD * DAYS_PER_MONTH, rel=1e-12)
    batch = levers.lever("batch")
    assert batch.cost_usd == pytest.approx(at("_batches"), rel=1e-12)
    assert batch.monthly_saving_usd == pytest.approx((now - at("_batches")) / 20 * RPD * DAYS_PER_MONTH, rel=1e-12)
    assert "24 hours" in batch.how
    assert levers.lever("priority").saving_usd == pytest.approx(now - at("_priority"), rel=1e-12)
    assert levers.lever("priority").saving_usd < 0, "priority is a premium"
    assert levers.lever("flex").cost_usd is None and "no flex prices" in levers.lever("flex").how

    prefix = outcome.plan.shared_prefix_tokens(outcome.plan.variants[0])
    assert min_cacheable_tokens("gpt-4o-mini") <= prefix < PROMPT_TOKENS
    cold = math.exp(-RPD / 1440 * CACHE_TTL_MINUTES)
    per_call_prefix = prefix * (cold * e["input_cost_per_token"] + (1 - cold) * e["cache_read_input_token_cost"])
    cached = sum(
        (PROMPT_TOKENS - prefix) * e["input_cost_per_token"] + per_call_prefix + o * e["output_cost_per_token"]
        for o in outputs
    )
    assert levers.lever("prompt_cache").cost_usd == pytest.approx(cached, rel=1e-12)
    assert f"{prefix}-token prefix" in levers.lever("prompt_cache").how

    cap = outputs[18]  # the 95th percentile of 20 answers by nearest rank: the 19th
    assert levers.lever("output_cap").saving_usd == pytest.approx((outputs[19] - cap) * e["output_cost_per_token"])
    assert f"max_tokens: {cap}" in levers.lever("output_cap").how


@pytest.mark.slow
def test_levers_reach_mlflow_the_report_and_the_commands(
    priced_run: tuple[harness.RunOutcome, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    import mlflow

    outcome, path = priced_run
    levers = outcome.analysis.levers["openai/gpt-4o-mini:long"]
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])  # this test's own store
    child = mlflow.search_runs(
        search_all_experiments=True,
        filter_string="tags.mlflow.runName = 'openai/gpt-4o-mini:long'",
        output_format="list",
    )[0]
    assert child.data.metrics["lever.batch.saving_usd"] == pytest.approx(levers.lever("batch").saving_usd)
    assert "lever.flex.saving_usd" not in child.data.metrics
    capsys.readouterr()
    assert cli.main(["report", outcome.run_id, "--out", str(path.parent / "rebuilt")]) == 0
    report = (path.parent / "rebuilt" / "report.md").read_text(encoding="utf-8")
    rebuilt_row = next(line for line in report.split("## Levers")[1].splitlines() if "openai/gpt-4o-mini:long" in line)
    batch_saving = levers.lever("batch").monthly_saving_usd
    assert f"-${batch_saving:,.4f}" in rebuilt_row, "the stored run rebuilds the same levers"
    assert "Levers" in capsys.readouterr().out
    assert cli.main(["levers", outcome.run_id]) == 0
    shown = capsys.readouterr().out
    assert "batch API" in shown and "prompt cache" in shown and "24 hours" in shown

    assert cli.main(["reprice", outcome.run_id, "--tier", "batch"]) == 0
    shown = capsys.readouterr().out
    e = dict(import_litellm().get_model_info("gpt-4o-mini"))
    batch_total = sum(
        PROMPT_TOKENS * e["input_cost_per_token_batches"] + (10 + 5 * k) * e["output_cost_per_token_batches"]
        for k in range(20)
    )
    assert f"${batch_total:.6f} repriced at batch prices" in shown
    assert cli.main(["reprice", outcome.run_id, "--tier", "flex"]) == 0
    assert "gpt-4o-mini has no flex prices" in capsys.readouterr().out


@pytest.mark.slow
def test_levers_under_a_price_sheet_for_a_free_model(
    priced_run: tuple[harness.RunOutcome, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outcome, _ = priced_run
    sheet = tmp_path / "prices.yaml"
    sheet.write_text("local/lead: {like: claude-haiku-4-5}\n", encoding="utf-8")
    stored = harness.load_run(outcome.run_id)
    levers = harness.levers_of(stored, sheet)
    lead = levers["local/lead:long"]
    e = dict(import_litellm().get_model_info("claude-haiku-4-5"))
    records = [r for r in stored.records if r.variant == "local/lead:long"]
    now = sum(
        r.usage.input_tokens * e["input_cost_per_token"] + r.usage.output_tokens * e["output_cost_per_token"]
        for r in records
    )
    assert lead.cost_usd == pytest.approx(now, rel=1e-12)
    assert lead.lever("batch").saving_usd == pytest.approx(now / 2, rel=1e-9), "Anthropic's batch API halves the bill"
    capsys.readouterr()
    assert cli.main(["levers", outcome.run_id, "--prices", str(sheet)]) == 0
    assert "local/lead:long" in capsys.readouterr().out


def test_shared_prefix_is_what_every_prompt_starts_with() -> None:
    def chat(system: str, user: str) -> list[dict[str, str]]:
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    assert shared_prefix([chat("Be brief.", "Summarise: cats"), chat("Be brief.", "Summarise: dogs")]) == (
        "<system>\nBe brief.\n<user>\nSummarise: "
    )
    assert shared_prefix([chat("A", "x"), chat("B", "x")]) == "<system>\n"
    assert shared_prefix([]) == ""


def test_levers_count_every_epoch_as_a_call_and_project_per_request() -> None:
    """With epochs, each sample is one call: the run's figure covers all of them, the monthly projection one
    call per request, exactly as the results table projects cost."""
    from harness.config import ModelConfig
    from harness.levers import levers_for
    from harness.pricing import resolve_price
    from harness.records import Record
    from harness.records import Usage as Billed

    price = resolve_price(ModelConfig(model="gpt-4o-mini"), "exp.yaml")
    records = [
        Record(
            variant="v",
            item_id=f"i{i}",
            sample=s,
            model="gpt-4o-mini",
            prompt="p",
            prompt_hash="h",
            output="x",
            usage=Billed(input_tokens=1_000, output_tokens=100 * (s + 1)),
        )
        for i in range(5)
        for s in range(2)
    ]
    e = dict(import_litellm().get_model_info("gpt-4o-mini"))
    per_call = [1_000 * e["input_cost_per_token"] + 100 * (s + 1) * e["output_cost_per_token"] for s in range(2)]
    batch = [
        1_000 * e["input_cost_per_token_batches"] + 100 * (s + 1) * e["output_cost_per_token_batches"] for s in range(2)
    ]
    levers = levers_for(records, {"v": price}, {"v": None}, 1_000.0)["v"]
    assert levers.calls == 10 and levers.cost_usd == pytest.approx(5 * sum(per_call), rel=1e-12)
    assert levers.monthly_usd == pytest.approx(sum(per_call) / 2 * 1_000 * DAYS_PER_MONTH, rel=1e-12)
    saving = levers.lever("batch").monthly_saving_usd
    assert saving == pytest.approx((sum(per_call) - sum(batch)) / 2 * 1_000 * DAYS_PER_MONTH, rel=1e-12)
    assert "shared prefix" in levers.lever("prompt_cache").how
