"""`run --background-logging`: the command returns once the results are printed, and the tracking process
finishes the MLflow logging on its own, or, when the store fails meanwhile, says so and leaves the report.

The store's own lock (the one concurrent harness processes take turns on) is held by the test while the
run executes, so "returned before logging" is shown by order, not by timing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, base_config, fake_model, write_project
from tests.fake_server import FakeModelServer
from tests.test_cli import harness

ITEMS = [{"id": f"i{n}", "document": f"Document number {n}. It says {n}.", "reference": f"doc {n}"} for n in range(6)]


@contextlib.contextmanager
def store_locked(db: Path) -> Iterator[None]:
    """Hold the lock harness takes before creating or writing an embedded store."""
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{db}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_in_background(path: Path, cwd: Path) -> tuple[int, str]:
    """The command with its output in files, as a terminal would keep it (a pipe would stay open while the
    tracking process, which shares it, logs)."""
    out = cwd / "run.out"
    with out.open("w") as handle:
        done = subprocess.run(
            [sys.executable, "-m", "harness", "run", str(path), "--background-logging"],
            cwd=cwd,
            env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"},
            stdout=handle,
            stderr=subprocess.STDOUT,
            timeout=120,
        )
    return done.returncode, out.read_text()


def runs_in(db: Path) -> list[tuple[str, str]]:
    """(name, status) of every run in the store, read with sqlite3 so the test holds no MLflow state."""
    import sqlite3

    if not db.exists():
        return []
    with contextlib.closing(sqlite3.connect(db)) as connection:
        return list(connection.execute("select name, status from runs"))


def wait_for(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def cached_project(tmp_path: Path, server: FakeModelServer) -> Path:
    """Two variants, their answers already in the cache (a run not tracked): the loop of someone
    iterating, where the estimate needs no history from the store."""
    config = base_config([fake_model(server, "m-a"), fake_model(server, "m-b")])
    path = write_project(tmp_path, config, items=ITEMS)
    first = harness("run", str(path), "--no-tracking", cwd=tmp_path)  # in this process: only the cache counts
    assert first.returncode == 0, first.stdout + first.stderr
    return path


@pytest.mark.slow
def test_the_command_returns_before_logging_and_the_run_lands_after(
    tmp_path: Path, model_server: FakeModelServer
) -> None:
    path = cached_project(tmp_path, model_server)
    db = Path(os.environ["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///"))
    with store_locked(db):
        code, out = run_in_background(path, tmp_path)
        assert code == 0, out
        assert runs_in(db) == []  # nothing could be logged yet: the command returned first
    assert "0 calls made" in out
    match = re.search(r"MLflow: logging in the background \(process (\d+)\)", out)
    assert match, out
    assert "MLflow: run " not in out  # no id is claimed that the store does not hold yet
    # The parent and one child run per variant, all finished, once the lock is free.
    expected = sorted([("test-exp", "FINISHED"), ("openai/m-a:terse", "FINISHED"), ("openai/m-b:terse", "FINISHED")])
    wait_for(lambda: sorted(runs_in(db)) == expected, f"{expected} (have {runs_in(db)})")
    assert not (tmp_path / "reports").exists()


@pytest.mark.slow
def test_a_store_that_breaks_after_the_command_returned_gets_the_report_and_a_message(
    tmp_path: Path, model_server: FakeModelServer
) -> None:
    path = cached_project(tmp_path, model_server)
    db = Path(os.environ["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///"))
    with store_locked(db):
        code, out = run_in_background(path, tmp_path)
        assert code == 0, out
        db.write_bytes(b"not a database, " * 256)  # broken before the tracking process could write
    wait_for(lambda: list(tmp_path.glob("reports/*/tracking-error.txt")), "the failure to be reported")
    error = next(tmp_path.glob("reports/*/tracking-error.txt"))
    assert "not a database" in error.read_text()
    assert (error.parent / "report.md").is_file()
    wait_for(lambda: "TRACKING FAILED in the background" in (tmp_path / "run.out").read_text(), "the message")
    assert str(error.parent) in (tmp_path / "run.out").read_text().replace("\n", "")


def tracking_processes_for(marker: str) -> list[int]:
    """Live processes whose environment names this store path (the test's own, so no other test's)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            status = (entry / "status").read_text()
        except OSError:
            continue
        if marker.encode() in environ and "State:\tZ" not in status:
            found.append(int(entry.name))
    return found


def test_a_run_refused_after_its_tracking_process_started_leaves_none_behind(tmp_path: Path) -> None:
    """The template needs a field the dataset lacks: refused in preparation, after the tracking process
    was started to overlap it. That process is ended, not left to finish importing MLflow."""
    config = base_config(["local/lead"])
    path = write_project(tmp_path, config, templates={"terse": "{% block user %}{{ missing_field }}{% endblock %}"})
    store = tmp_path / "fresh-store" / "mlflow.db"
    done = subprocess.run(
        [sys.executable, "-m", "harness", "run", str(path)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": f"sqlite:///{store}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "missing_field" in done.stderr
    assert tracking_processes_for(str(store)) == []


def test_sigterm_while_a_store_schema_is_made_waits_for_it(tmp_path: Path) -> None:
    """What makes ending a refused run's tracking process safe: a SIGTERM inside the schema's block is
    held until the block ends, then the process exits (143); outside it, it exits at once."""
    script = (
        "import os, signal, sys\n"
        "from harness.tracking import store\n"
        "store.end_on_sigterm()\n"
        "with store._no_termination():\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    open(sys.argv[1], 'w').write('finished')\n"
        "open(sys.argv[1], 'a').write(' and went on')\n"
    )
    marker = tmp_path / "block.txt"
    done = subprocess.run(
        [sys.executable, "-c", script, str(marker)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 143, done.stderr
    assert marker.read_text() == "finished"
