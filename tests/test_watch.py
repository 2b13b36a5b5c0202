"""Decisions that stay true: `watch` against the bundled map and modified copies (a price raised, a
deprecation date past, a cheaper model added), `savings` against a hand computation, the FOCUS export
against its column list, and the scheduled workflow's commands."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.focus import COLUMNS
from harness.model_map import MAP_ENV, bundled_path
from tests.conftest import REPO, base_config, fake_model, write_project
from tests.fake_server import FakeModelServer, Usage
from tests.test_cli import in_process

pytestmark = pytest.mark.slow

BASE, CANDIDATE = "gpt-4o-mini", "gpt-4.1-nano"
RPD = 1000
ITEMS = [{"id": f"i{n}", "document": f"Doc {n}. More text.", "reference": f"answer {n} is here"} for n in range(30)]


@dataclass
class Project:
    root: Path
    config: Path
    server: FakeModelServer
    run_id: str


def map_copy(root: Path, name: str, change: dict[str, dict[str, Any]]) -> Path:
    """The bundled map with the models' entries updated (a key set to None is removed), and no
    deprecation dates on the two models the runs use unless `change` sets one."""
    path = bundled_path()
    assert path is not None
    data = json.loads(path.read_text(encoding="utf-8"))
    for model in (BASE, CANDIDATE):
        data[model].pop("deprecation_date", None)
    for model, fields in change.items():
        entry = data.setdefault(model, {})
        for key, value in fields.items():
            if value is None:
                entry.pop(key, None)
            else:
                entry[key] = value
    out = root / f"{name}.json"
    out.write_text(json.dumps(data), encoding="utf-8")
    return out


def _answer(n: int) -> str:
    return f"answer {n} is" if n % 2 else f"answer {n}"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    root = tmp_path_factory.mktemp("watch")
    server = FakeModelServer().start()
    server.usage = Usage(prompt_tokens=100, completion_tokens=20)
    # both models answer alike: the cheaper one is as good, so it is recommended at today's prices
    server.answer = lambda request: _answer(int(re.findall(r"Doc (\d+)", str(request))[0]))
    models = [fake_model(server, name=BASE), fake_model(server, name=CANDIDATE)]
    config = base_config(
        models,
        baseline={"model": f"openai/{BASE}", "prompt": "terse"},
        gate={"margin": 0.1},
        traffic={"requests_per_day": RPD},
        params={"temperature": 0, "max_tokens": 32},
    )
    path = write_project(root, config, items=ITEMS)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
        done = in_process(["run", str(path), "--yes"], root)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"Recommendation: openai/{CANDIDATE}:terse is non-inferior" in " ".join(done.stdout.split()), done.stdout
        run_id = re.search(r"MLflow: run (\w+)", done.stdout).group(1)  # type: ignore[union-attr]
        yield Project(root, path, server, run_id)
    server.stop()


def harness(project: Project, *argv: str) -> Any:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project.root / 'mlruns' / 'mlflow.db'}")
        patch.delenv("GITHUB_STEP_SUMMARY", raising=False)
        return in_process(list(argv), project.root)


def test_an_unchanged_map_leaves_the_decision_and_exits_0(project: Project) -> None:
    same = map_copy(project.root, "same", {})
    done = harness(project, "watch", str(project.config), "--map", str(same), "--summary", "watch.md")
    assert done.returncode == 0, done.stdout + done.stderr
    text = " ".join(done.stdout.split())
    assert f"decision unchanged: openai/{CANDIDATE}:terse" in text
    assert "price:" not in text and "DEPRECATION" not in text
    page = (project.root / "watch.md").read_text()
    assert page.startswith("# harness watch") and "| test-exp | unchanged |" in page


def test_a_price_rise_that_flips_the_decision_exits_1_with_the_change(project: Project) -> None:
    dearer = map_copy(
        project.root, "dearer", {CANDIDATE: {"input_cost_per_token": 1e-5, "output_cost_per_token": 4e-5}}
    )
    done = harness(project, "watch", str(project.config), "--map", str(dearer))
    assert done.returncode == 1, done.stdout + done.stderr
    text = " ".join(done.stdout.split())
    assert f"DECISION CHANGED: was openai/{CANDIDATE}:terse, now openai/{BASE}:terse" in text
    assert f"price: openai/{CANDIDATE} input_cost_per_token $0.1 -> $10 per 1M (+9900%)" in text
    # $/month of the recommendation, then and now, at 100 tokens in and 20 out per call and 1,000 calls a day
    then = (100 * 1e-7 + 20 * 4e-7) * RPD * 30.44
    now = (100 * 1.5e-7 + 20 * 6e-7) * RPD * 30.44
    assert f"${then:,.2f} -> ${now:,.2f}" in text


def test_a_deprecation_date_past_or_near_exits_1(project: Project) -> None:
    past = map_copy(project.root, "past", {BASE: {"deprecation_date": "2025-01-01"}})
    done = harness(project, "watch", str(project.config), "--map", str(past))
    assert done.returncode == 1
    assert f"DEPRECATION: openai/{BASE} was deprecated on 2025-01-01" in " ".join(done.stdout.split())
    soon = map_copy(project.root, "soon", {BASE: {"deprecation_date": "2999-01-01"}})
    assert harness(project, "watch", str(project.config), "--map", str(soon)).returncode == 0


def test_a_cheaper_model_in_the_map_is_proposed_with_the_lines_to_add(project: Project) -> None:
    entry = {"input_cost_per_token": 1e-9, "output_cost_per_token": 1e-9, "mode": "chat", "litellm_provider": "openai"}
    cheaper = map_copy(project.root, "cheaper", {"gpt-test-penny": entry})
    done = harness(project, "watch", str(project.config), "--map", str(cheaper))
    assert done.returncode == 0, done.stdout
    lines = done.stdout.splitlines()
    assert any(line.strip() == "- gpt-test-penny" for line in lines), done.stdout
    usd = (100 + 20) * 1e-9
    assert any(f"gpt-test-penny: ${usd:.6f}/item" in line for line in lines)


def test_savings_against_a_hand_computation(project: Project) -> None:
    same = map_copy(project.root, "same2", {})
    done = harness(project, "savings", str(project.config), "--map", str(same), "-o", "savings.json")
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads((project.root / "savings.json").read_text())
    (line,) = doc["experiments"]
    now = (100 * 1.5e-7 + 20 * 6e-7) * RPD * 30.44
    after = (100 * 1e-7 + 20 * 4e-7) * RPD * 30.44
    assert line["today"] == f"openai/{BASE}:terse" and line["recommended"] == f"openai/{CANDIDATE}:terse"
    assert line["now_usd_month"] == pytest.approx(now) and line["after_usd_month"] == pytest.approx(after)
    assert line["saving_usd_month"] == pytest.approx(now - after)
    # every item costs the same on each side, so the interval is the figure itself
    assert line["saving_low"] == pytest.approx(now - after) and line["saving_high"] == pytest.approx(now - after)
    assert doc["totals"]["saving_usd_month"] == pytest.approx(now - after)
    assert line["verdict"] == "pass" and not line["stale"]
    assert line["estimate_error"] is not None  # the run stored its estimate beside what it spent
    assert f"${now - after:,.2f}" in done.stdout


def test_the_focus_export_has_the_columns_and_bills_what_the_run_spent(project: Project) -> None:
    done = harness(project, "export", "--focus", "focus.csv", project.run_id)
    assert done.returncode == 0, done.stdout + done.stderr
    with (project.root / "focus.csv").open() as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        rows = list(reader)
    for row in rows:
        for number in ("BilledCost", "EffectiveCost", "ListCost", "ConsumedQuantity", "PricingQuantity"):
            float(row[number])
        for moment in ("ChargePeriodStart", "ChargePeriodEnd"):
            datetime.fromisoformat(row[moment].replace("Z", "+00:00"))
        assert row["BillingCurrency"] == "USD" and row["ChargeCategory"] == "Usage"
        assert {"experiment", "variant"} <= set(json.loads(row["Tags"]))
    spent = (100 * 1.5e-7 + 20 * 6e-7 + 100 * 1e-7 + 20 * 4e-7) * len(ITEMS)  # the first run paid every call
    assert sum(float(r["BilledCost"]) for r in rows) == pytest.approx(spent)
    tokens = [r for r in rows if r["ConsumedUnit"] == "Tokens"]
    assert {r["SkuId"] for r in tokens} == {
        f"openai/{m}:{kind}" for m in (BASE, CANDIDATE) for kind in ("input", "output")
    }
    assert sum(float(r["ConsumedQuantity"]) for r in tokens) == 2 * len(ITEMS) * 120
    projected = [r for r in rows if "projection" in r["Tags"]]
    assert len(projected) == 2 and all(float(r["BilledCost"]) == 0 for r in projected)


def test_bad_input_to_watch_is_one_line(project: Project, tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    done = harness(project, "watch", str(project.config), "--map", str(broken))
    assert done.returncode == 2 and "--map" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_the_scheduled_workflow_parses_and_runs_commands_that_exist() -> None:
    from harness.commands import COMMANDS

    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "model-watch.yml").read_text())
    triggers = workflow.get("on") or workflow.get(True)  # YAML 1.1 reads a bare `on` as true
    assert "schedule" in triggers and "workflow_dispatch" in triggers
    assert re.fullmatch(r"[\d*/, -]+", triggers["schedule"][0]["cron"])
    steps = [s for job in workflow["jobs"].values() for s in job["steps"]]
    commands = re.findall(r"-m harness (\w+)", " ".join(s.get("run", "") for s in steps))
    assert "watch" in commands and "gate" in commands
    assert set(commands) <= set(COMMANDS)


def test_the_estimates_error_over_recent_runs(project: Project) -> None:
    """Each run keeps its estimate beside its spend; watch reads them over the recent runs (last here:
    it adds a run, the latest, with the same decision)."""
    again = harness(project, "run", str(project.config), "--yes", "--refresh")
    assert again.returncode == 0, again.stdout + again.stderr
    same = map_copy(project.root, "same3", {})
    done = harness(project, "watch", str(project.config), "--map", str(same), "--json", "watch.json")
    assert done.returncode == 0
    doc = json.loads((project.root / "watch.json").read_text())
    (found,) = doc["experiments"]
    assert len(found["estimate_errors"]) == 2 and found["estimate_error"] == found["estimate_errors"][0]
    assert all(-1 < e < 1 for e in found["estimate_errors"])
    assert "over its last 2 runs the estimate was off by" in " ".join(done.stdout.split())


def test_a_store_that_cannot_be_reached_is_said_and_the_others_are_watched(project: Project) -> None:
    """A weekly job over many experiments: a dead tracking server is a line and exit 4, not minutes of
    MLflow's retries; the experiments whose store answers are still watched."""
    other = project.root / "experiments" / "elsewhere.yaml"
    config = yaml.safe_load(project.config.read_text())
    config.update(name="elsewhere", tracking_uri="http://127.0.0.1:9")
    other.write_text(yaml.safe_dump(config))
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.delenv(MAP_ENV, raising=False)
        done = in_process(["watch", str(other)], project.root)
    assert done.returncode == 4, done.stdout + done.stderr
    assert "cannot reach http://127.0.0.1:9" in done.stdout and "1 stores could not be read" in done.stdout
    other.unlink()
