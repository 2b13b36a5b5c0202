"""What people read and machines parse: the compact table at any width, the files, and every output
showing the same figure the same way."""

from __future__ import annotations

import csv
import io
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from rich.console import Console

import harness
from harness import figures, results
from harness.analysis import Analysis, Verdict
from harness.report import markdown_report
from harness.workflow import RunOptions, RunOutcome
from tests.conftest import ITEMS, base_config, fake_model, write_project
from tests.fake_server import FakeModelServer, Usage
from tests.test_cli import harness as cli

PRICE = {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}
CHEAP = {"input_cost_per_token": 1e-7, "output_cost_per_token": 2e-7}
LONG = "a-candidate-model-with-a-rather-long-name"


def project(tmp_path: Path, server: FakeModelServer) -> Path:
    server.usage = Usage(prompt_tokens=50, completion_tokens=10)
    models = [
        fake_model(server, name="base", price=PRICE),
        fake_model(server, name=LONG, price=CHEAP),
        "anthropic/claude-haiku-4-5",  # no key here: skipped
    ]
    config = base_config(
        models, baseline={"model": "openai/base", "prompt": "terse"}, traffic={"requests_per_day": 1000}
    )
    return write_project(tmp_path, config)


def run_at(path: Path, width: int, **options: object) -> tuple[RunOutcome, str]:
    out = io.StringIO()
    console = Console(file=out, width=width, emoji=False)
    outcome = harness.run(path, RunOptions(tracking=False, assume_yes=True, **options), console)  # type: ignore[arg-type]
    return outcome, out.getvalue()


@pytest.mark.parametrize("width", [80, 100, 160])
def test_the_results_table_fits_the_terminal_and_never_cuts_a_figure(
    tmp_path: Path, model_server: FakeModelServer, width: int
) -> None:
    outcome, text = run_at(project(tmp_path, model_server), width)
    table = text[text.index("test-exp: results") :].split("\n\n\n")[0]
    assert all(len(line) <= width for line in table.splitlines()), table
    assert "…" not in text
    lines = table.splitlines()
    for row in results.result_rows(outcome.summaries, outcome.analysis):
        *_name, mean, cost, monthly, delta, verdict = row.cells()
        line = next(line for line in lines if mean in line and cost in line)  # a figure is never wrapped
        assert monthly in line and delta in line and verdict in line
    skipped = [line for line in text.splitlines() if line.startswith("not run")]
    assert len(skipped) == 1 and "anthropic/claude-haiku-4-5:terse" in skipped[0]


def test_terminal_report_json_and_csv_show_the_same_figures(tmp_path: Path, model_server: FakeModelServer) -> None:
    path = project(tmp_path, model_server)
    out = cli("run", str(path), "--no-tracking", "--yes", "-o", str(tmp_path / "r.json"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["schema"] == results.SCHEMA and doc["items"] == len(ITEMS)
    assert cli("run", str(path), "--no-tracking", "--yes", "-o", str(tmp_path / "r.csv"), cwd=tmp_path).returncode == 0
    assert cli("run", str(path), "--no-tracking", "--yes", "-o", str(tmp_path / "r.md"), cwd=tmp_path).returncode == 0
    rows = {r["variant"]: r for r in csv.DictReader((tmp_path / "r.csv").open())}
    report = (tmp_path / "r.md").read_text()
    terminal = out.stdout.split(": results", 1)[1]  # the results table, not the estimate before it
    metric = doc["metric"]
    ran = [v for v in doc["variants"] if not v["skipped"]]
    assert len(ran) == 2 and {v["variant"] for v in doc["variants"] if v["skipped"]} == {
        "anthropic/claude-haiku-4-5:terse"
    }
    for v in ran:
        interval = v["intervals"][metric]
        shown = [
            figures.interval(interval["mean"], interval["low"], interval["high"]),
            figures.usd(v["cost"]["per_item_usd"]),
            figures.usd_month(v["cost"]["monthly_usd"]),
            figures.delta(v["vs_baseline"]["diff"] if v["vs_baseline"] else None),
        ]
        terminal_line = next(line for line in terminal.splitlines() if line.lstrip().startswith(v["variant"][:20]))
        report_line = next(line for line in report.splitlines() if line.startswith(f"| {v['variant']}"))
        for figure in shown:
            assert figure in terminal_line and figure in report_line, (figure, terminal_line, report_line)
        assert float(rows[v["variant"]]["mean"]) == pytest.approx(interval["mean"])
        assert float(rows[v["variant"]]["cost_per_item_usd"]) == pytest.approx(v["cost"]["per_item_usd"])
    assert doc["recommendation"]["line"] in " ".join(terminal.split())


def test_a_bad_output_path_is_refused_before_any_call(tmp_path: Path, model_server: FakeModelServer) -> None:
    path = project(tmp_path, model_server)
    for flag, value in (("-o", "results.txt"), ("-o", "missing/r.json")):
        out = cli("run", str(path), "--no-tracking", "--yes", flag, str(tmp_path / value), cwd=tmp_path)
        assert out.returncode == 2 and out.stderr.startswith("error: command line: --output"), out.stderr
    out = cli("gate", str(path), "--no-tracking", "--yes", "--junit", str(tmp_path / "j.json"), cwd=tmp_path)
    assert out.returncode == 2 and "--junit" in out.stderr
    assert model_server.requests == []


def test_only_runs_the_matching_variants_and_the_baseline(tmp_path: Path, model_server: FakeModelServer) -> None:
    path = project(tmp_path, model_server)
    outcome, _ = run_at(path, 120, only=("openai/a-candidate*",))
    assert {r.variant for r in outcome.records} == {"openai/base:terse", f"openai/{LONG}:terse"}
    with pytest.raises(harness.ConfigError, match="--only"):
        run_at(path, 120, only=("nothing*",))
    before = len(model_server.requests)
    out = cli("run", str(path), "--no-tracking", "--only", "openai/base*", cwd=tmp_path)
    assert out.returncode == 0 and len(model_server.requests) == before  # the baseline's answers are cached


def test_quiet_prints_nothing_and_the_version_is_one_line(tmp_path: Path, model_server: FakeModelServer) -> None:
    path = project(tmp_path, model_server)
    out = cli("run", str(path), "--no-tracking", "--yes", "-q", cwd=tmp_path)
    assert out.returncode == 0 and out.stdout == "" and out.stderr == ""
    outcome, text = run_at(path, 100, quiet=True)
    assert outcome.records and text == ""
    version = cli("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == f"harness {harness.__version__}"


def test_the_header_names_the_cache_in_use(tmp_path: Path, model_server: FakeModelServer) -> None:
    path = project(tmp_path, model_server)
    _, text = run_at(path, 200)
    assert f"response cache {(tmp_path / 'mlruns' / 'responses.sqlite').resolve()}" in text.splitlines()[0]
    _, text = run_at(path, 200, use_cache=False)
    assert "no response cache" in text.splitlines()[0]


def test_a_run_from_another_folder_finds_the_projects_files(
    tmp_path: Path, model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = project(tmp_path / "project", model_server)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    outcome, _ = run_at(path, 100)
    assert len(outcome.records) == 2 * len(ITEMS) and not list(elsewhere.iterdir())


def _analysis(verdicts: dict[str, Verdict]) -> Analysis:
    return Analysis(metric="q", margin=0.02, confidence=0.95, baseline="base", verdicts=verdicts)


@pytest.mark.parametrize("seed", range(8))
def test_junit_has_a_case_per_candidate_failing_exactly_the_regressions(seed: int) -> None:
    import random

    rng = random.Random(seed)
    statuses = {f"c{i}": rng.choice(["pass", "fail", "undecided", None]) for i in range(rng.randint(1, 6))}
    verdicts = {name: Verdict(status, f"why {name}") for name, status in statuses.items() if status}  # type: ignore[arg-type]
    suite = ET.fromstring(results.junit_xml("exp", _analysis(verdicts), statuses, "GATE FAIL"))
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert set(cases) == set(statuses) and suite.get("tests") == str(len(statuses))
    for name, status in statuses.items():
        kinds = [child.tag for child in cases[name] if child.tag in ("failure", "skipped")]
        assert kinds == {"fail": ["failure"], "undecided": ["skipped"], None: ["skipped"], "pass": []}[status]
    assert suite.get("failures") == str(sum(s == "fail" for s in statuses.values()))
    assert suite.get("skipped") == str(sum(s in ("undecided", None) for s in statuses.values()))


def test_the_report_leads_with_the_same_table(tmp_path: Path, model_server: FakeModelServer) -> None:
    outcome, _ = run_at(project(tmp_path, model_server), 100)
    report = markdown_report("t", outcome.summaries, outcome.analysis, None)
    assert results.markdown_table(outcome.summaries, outcome.analysis) in report


def test_docs_name_every_field_of_the_json_document(tmp_path: Path, model_server: FakeModelServer) -> None:
    from tests.conftest import REPO

    outcome, _ = run_at(project(tmp_path, model_server), 100)
    doc = results.document("t", outcome.summaries, outcome.analysis, None, outcome.status, {})
    page = (REPO / "docs" / "outputs.md").read_text()
    named = set(re.findall(r"`([a-z_0-9]+)`", page))
    keys = set(doc) | {k for v in doc["variants"] for k in v} | {k for v in doc["variants"] for k in v["cost"]}
    keys |= {k for v in doc["variants"] if v["vs_baseline"] for k in v["vs_baseline"]}
    keys |= set(results.CSV_FIELDS) | set(doc["status"])
    assert keys - named == set()


def test_the_command_to_paste_is_named_as_harness_was_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from harness import invocation

    python = tmp_path / ".venv" / "bin" / "python"
    monkeypatch.setattr(sys, "argv", ["/somewhere/harness/__main__.py", "run"])
    monkeypatch.setattr(sys, "executable", str(python))
    monkeypatch.chdir(tmp_path)
    assert invocation.command() == ".venv/bin/python -m harness"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert invocation.command() == f"{python} -m harness"
    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/harness", "run"])
    assert invocation.command() == "harness"


@pytest.mark.parametrize("width", [80, 100, 160])
def test_the_estimate_keeps_every_figure_whole_at_any_width(width: int) -> None:
    from rich.console import Console

    from harness.estimate import VariantEstimate
    from harness.report import estimate_table

    estimates = [
        VariantEstimate(
            "anthropic/claude-haiku-4-5:detailed", 2000, 13, 1_234_567, 512.0, "max_tokens", 0.5, 12.3456, 20.5, 9.0
        ),
        VariantEstimate("local/smollm2-135m:terse", 20, 0, 4471, 64.0, "history", 0.0, 0.000123, 0.000456, 3.0),
        VariantEstimate("scorer llm_judge", 40, 0, 9000, None, "worst case", 0.0, 0.0012, 0.0049, None),
    ]
    console = Console(width=width, record=True, color_system=None)
    console.print(estimate_table(estimates, None))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= width
    expected = {f"${v:.6f}" if v < 0.01 else f"${v:,.4f}" for e in estimates for v in (e.expected_usd, e.max_usd)}
    expected |= {"1,234,567", "4,471", "2000"}
    for figure in expected:
        assert figure in text, (figure, text)
