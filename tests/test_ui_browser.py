"""The MLflow UI over a store a small run filled, rendered by headless Chromium (the DOM after the page's
scripts ran): Overview, Traces, Evaluation runs, the compare view of two variants, and the parent run."""

from __future__ import annotations

import base64
import html
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.conftest import ITEMS, REPO, base_config, fake_model, stop_server, wait_for_health, write_project
from tests.fake_server import FakeModelServer, Usage
from tests.test_cli import in_process

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and os.environ.get("HARNESS_REQUIRE_BROWSER") == "1":
    raise RuntimeError("HARNESS_REQUIRE_BROWSER=1 but no chromium on PATH: apt-get install chromium")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (apt-get install chromium)"),
]

# $0.0005 in + $0.0002 out per call: each paid variant costs $0.0021 over the three items.
PRICE = {"input_cost_per_token": 1e-5, "output_cost_per_token": 2e-5}


@dataclass
class UI:
    address: str
    root: Path
    experiment_id: str
    link: str
    runs: dict[str, str]
    """Run name to run id."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UI]:
    root = tmp_path_factory.mktemp("ui")
    server = FakeModelServer().start()
    server.usage = Usage(prompt_tokens=50, completion_tokens=10)
    server.answer = lambda request: "cats purr" if "Cats" in str(request) else "no idea"
    models = [
        fake_model(server, name="big", price=PRICE),
        fake_model(server, name="small", price=PRICE),
        {"model": "anthropic/claude-haiku-4-5"},  # no key in the tests' environment: skipped
    ]
    baseline = {"model": "openai/big", "prompt": "terse"}
    config = base_config(models, scorers=["rouge"], baseline=baseline, traffic={"requests_per_day": 100})
    path = write_project(root, config)
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlruns' / 'mlflow.db'}",
    }
    with pytest.MonkeyPatch.context() as patch:  # the run in this process, tracked into this store
        patch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
        done = in_process(["run", str(path), "--yes"], root)
    server.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"python -m harness ui {path}" in done.stdout.replace("\n", "") or "harness ui" in done.stdout
    port = _free_port()
    log = root / "ui.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "harness", "ui", str(path), "--port", str(port)],
            cwd=root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        address = f"http://127.0.0.1:{port}"
        wait_for_health(address, process, f"harness ui ({log})")
        found = re.search(r"experiment test-exp: (\S+)", log.read_text())
        assert found, log.read_text()
        with sqlite3.connect(root / "mlruns" / "mlflow.db") as db:
            runs = dict(db.execute("select name, run_uuid from runs").fetchall())
            (experiment_id,) = db.execute("select experiment_id from experiments where name='test-exp'").fetchone()
        yield UI(address, root, str(experiment_id), found.group(1), runs)
    finally:
        stop_server(process)


def dump_dom(url: str, loaded: str, attempts: int = 3) -> str:
    """The DOM of `url` once its scripts ran (headless Chromium, virtual time) and `loaded` is in it.
    Why the attempts: on a loaded machine the page's data can arrive after Chromium's time budget, and
    the DOM is then the empty app shell; each attempt loads the page afresh, and the assertions still
    judge the last DOM, so a page that never shows its content fails."""
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
    command += ["--virtual-time-budget=20000", "--dump-dom", url]
    dom = ""
    for _ in range(attempts):
        dom = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False).stdout
        if loaded in dom:
            break
    return dom


def page_text(url: str, loaded: str) -> str:
    """The visible text of `url` once its scripts ran and `loaded` is in it."""
    dom = re.sub(r"<script.*?</script>|<style.*?</style>", " ", dump_dom(url, loaded), flags=re.DOTALL)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom)))


class _Table(HTMLParser):
    """Collects the page's grid: each `role="row"` element's cells (`columnheader` or `cell`) as text, an
    icon-only cell as `icon:` and the start of its first path (status icons have no text)."""

    VOID = frozenset({"input", "img", "br", "hr", "meta", "link", "source", "col", "area", "base", "wbr"})

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.stack: list[str | None] = []  # the role of each open element, None for others
        self.cell: list[str] | None = None
        self.icon = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        role = dict(attrs).get("role")
        if role == "row":
            self.rows.append([])
        elif role in ("cell", "columnheader") and self.cell is None:
            self.cell, self.icon = [], ""
        if tag == "path" and self.cell is not None and not self.icon:
            self.icon = "icon:" + (dict(attrs).get("d") or "")[:24]
        if tag not in self.VOID:
            self.stack.append(role)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID or not self.stack:
            return
        role = self.stack.pop()
        if role in ("cell", "columnheader") and self.cell is not None and role not in self.stack:
            words = " ".join(" ".join(self.cell).split())
            if self.rows:
                self.rows[-1].append(words or self.icon)
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def table(dom: str) -> tuple[list[str], dict[str, dict[str, str]]]:
    """The runs table as a reader sees it: the column headers, and each run's row as header to cell text,
    by the run's name (the cell under "Run Name" starts with the run's colour, then its name)."""
    parser = _Table()
    parser.feed(re.sub(r"<script.*?</script>|<style.*?</style>", " ", dom, flags=re.DOTALL))
    header = next(row for row in parser.rows if "Run Name" in row)
    rows: dict[str, dict[str, str]] = {}
    for row in parser.rows:
        if row is header or len(row) != len(header):
            continue
        cells = dict(zip(header, row, strict=True))
        rows[cells["Run Name"].split(" ", 1)[-1]] = cells
    return header, rows


def test_ui_prints_the_link_to_the_experiment(ui: UI) -> None:
    assert ui.link == f"{ui.address}/#/experiments/{ui.experiment_id}/evaluation-runs"


def test_overview_charts_usage_cost_and_quality(ui: UI) -> None:
    text = page_text(f"{ui.address}/#/experiments/{ui.experiment_id}", "Total Cost")
    assert f"Traces {2 * len(ITEMS)}" in text  # one trace per item and variant
    assert "Token Usage 360 (300 input, 60 output)" in text
    assert "$0.0042 Total Cost" in text  # the traces' costs, summed by MLflow
    assert "openai/big" in text and "openai/small" in text
    quality = page_text(f"{ui.address}/#/experiments/{ui.experiment_id}/overview/quality", "rouge")
    assert re.search(r"rouge \d+ 0\.33", quality), quality[:2000]


def test_traces_page_lists_every_item_with_scores(ui: UI) -> None:
    text = page_text(f"{ui.address}/#/experiments/{ui.experiment_id}/traces", "harness.variant")
    for row in ITEMS:
        assert row["document"] in text
    assert "harness.variant: openai/big:terse" in text
    assert "harness.variant: openai/small:terse" in text
    assert "rouge" in text and "expected_response" in text


def test_evaluation_runs_and_compare_view_show_items_side_by_side(ui: UI) -> None:
    text = page_text(ui.link, "rouge/mean")
    assert "openai/big:terse" in text and "openai/small:terse" in text
    assert "rouge/mean" in text
    big, small = ui.runs["openai/big:terse"], ui.runs["openai/small:terse"]
    compare = page_text(f"{ui.link}?selectedRunUuid={big}&compareToRunUuid={small}", "Comparing")
    assert "Comparing" in compare and "openai/small:terse" in compare
    assert "Expected output" in compare
    assert compare.count("cats purr") >= 3  # both answers and the reference on the same row
    for row in ITEMS:
        assert row["document"] in compare


def test_evaluation_runs_lead_with_quality_and_dollars_and_the_parent_row_is_empty(ui: UI) -> None:
    """What a newcomer sees without picking columns: the first figures are each scorer's mean and the
    dollars per item and month; the parent run adds no column of its own counters; the variant that did
    not run has no figures and not the finished check."""
    headers, rows = table(dump_dom(ui.link, "rouge/mean"))
    metrics = headers[headers.index("Dataset") + 1 :]
    assert metrics[:3] == ["rouge/mean", "cost_per_item_usd", "monthly_cost_usd"], headers
    assert len(metrics) == len(set(metrics))  # no figure logged twice under two names
    for counter in ("calls_made", "cache_hits", "n_variants", "agreement", "sequential.items"):
        assert not any(h.startswith(counter) for h in metrics), metrics
    parent = rows["test-exp"]
    assert {parent[m] for m in metrics} == {"-"}, parent
    big, skipped = rows["openai/big:terse"], rows["anthropic/claude-haiku-4-5:terse"]
    assert float(big["rouge/mean"]) > 0 and float(big["cost_per_item_usd"]) == pytest.approx(0.0007)
    assert float(big["monthly_cost_usd"]) == pytest.approx(0.0007 * 100 * 30.44)
    assert {skipped[m] for m in metrics} == {"-"}, skipped
    assert skipped["Status"].startswith("icon:") and skipped["Status"] != big["Status"], (skipped, big)


def test_parent_run_says_what_to_pick_and_shows_the_frontier(ui: UI) -> None:
    parent = ui.runs["test-exp"]
    overview = page_text(f"{ui.address}/#/experiments/{ui.experiment_id}/runs/{parent}", "Recommendation")
    assert "Recommendation: keep openai/big:terse" in overview  # the description, one line
    # then the results table, rendered: a row per variant with its figures, the one not run named under it
    assert re.search(r"openai/small:terse \d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\] \$0\.000700 \$2\.13", overview), overview
    assert "not run (1): anthropic/claude-haiku-4-5:terse (ANTHROPIC_API_KEY not set)" in overview
    assert "|" not in overview.split("Recommendation", 1)[1][:2000]  # a table, not markdown source
    page = f"{ui.address}/#/experiments/{ui.experiment_id}/runs/{parent}/artifacts/report.html"
    dom = dump_dom(page, "mlflow-html-iframe")
    assert 'class="mlflow-html-iframe"' in dom  # the viewer renders the HTML report in place
    artifacts = ui.root / "mlruns" / "artifacts" / parent / "artifacts"
    report = (artifacts / "report.html").read_text(encoding="utf-8")
    inlined = re.search(r'<img src="data:image/png;base64,([^"]+)"', report)
    assert inlined and base64.b64decode(inlined.group(1)) == (artifacts / "frontier.png").read_bytes()
    report_md = f"{ui.address}/#/experiments/{ui.experiment_id}/runs/{parent}/artifacts/report.md"
    markdown = page_text(report_md, "paired comparison")
    assert "](frontier.png)" not in markdown and "inside report.html" in markdown
