"""Tracking processes from a launcher: each run its own process, with the asker's directory, environment
and output, and MLflow imported once per asking process, not once per run."""

from __future__ import annotations

import io
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from harness import tracking_process
from harness.api import run as harness_run
from harness.config import load_config
from harness.tracking_process import TrackingProcess
from harness.workflow import RunOptions
from tests.conftest import REPO, base_config, fake_model, write_project
from tests.fake_server import FakeModelServer


@pytest.fixture
def own_launcher(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This test's launcher, started by its first tracking process and closed at its end."""
    monkeypatch.setattr(tracking_process, "_LAUNCHER", None)
    yield
    if tracking_process._LAUNCHER is not None:
        tracking_process._LAUNCHER.close()


def started_by_us(process: TrackingProcess) -> bool:
    return bool(process.call(os.getppid) == os.getpid())


@pytest.mark.slow
@pytest.mark.skipif(not tracking_process.FORKS, reason="launchers fork successors on Linux only")
def test_a_later_run_gets_a_forked_process_with_the_askers_directory_environment_and_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, own_launcher: None
) -> None:
    monkeypatch.setenv("HARNESS_PROBE_GONE", "set when the launcher started")
    first = TrackingProcess()
    assert first.call(os.getpid) == first.pid and started_by_us(first)
    first.close()
    assert not tracking_process._alive(first.pid)  # closed: the run's process ended with it

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HARNESS_PROBE", "set after the launcher started")
    monkeypatch.delenv("HARNESS_PROBE_GONE")
    out = tmp_path / "stdout.txt"
    saved = os.dup(1)
    try:
        with open(out, "wb") as handle:
            os.dup2(handle.fileno(), 1)
        second = TrackingProcess()
        assert second.call(os.getpid) == second.pid != first.pid
        assert not started_by_us(second)  # forked by the launcher, MLflow already imported
        assert second.call(os.getcwd) == str(tmp_path)
        assert second.call(os.getenv, "HARNESS_PROBE") == "set after the launcher started"
        assert second.call(os.getenv, "HARNESS_PROBE_GONE") is None
        assert second.call(os.getsid, 0) == second.pid  # its own session: a terminal's Ctrl-C is ours
        second.call(os.write, 1, b"written by the tracking process\n")
        second.close()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    assert out.read_text() == "written by the tracking process\n"


@pytest.mark.slow
@pytest.mark.skipif(not tracking_process.FORKS, reason="launchers fork successors on Linux only")
def test_a_killed_launcher_is_replaced(own_launcher: None) -> None:
    first = TrackingProcess()
    first.call(os.getpid)
    first.close()
    launcher = tracking_process._LAUNCHER
    assert launcher is not None
    waiting = launcher.successor()
    os.kill(waiting, signal.SIGKILL)
    assert tracking_process._wait_gone(waiting, 30)
    second = TrackingProcess()
    assert second.call(os.getpid) == second.pid != waiting
    assert started_by_us(second)  # a new launcher, whose first process is our own child
    second.close()


@pytest.mark.slow
def test_without_forking_every_run_starts_its_own_process(monkeypatch: pytest.MonkeyPatch, own_launcher: None) -> None:
    monkeypatch.setattr(tracking_process, "FORKS", False)
    pids = []
    for _ in range(2):
        process = TrackingProcess()
        assert started_by_us(process)
        pids.append(process.call(os.getpid))
        process.close()
    assert pids[0] != pids[1]


@pytest.mark.slow
def test_runs_in_one_process_each_log_to_the_store_the_environment_names_then(
    tmp_path: Path, model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch, own_launcher: None
) -> None:
    """An embedding program tracking two experiments, switching stores between them: each run lands in
    the store named when it ran, whichever process imported MLflow."""
    model_server.answer = lambda request: "cats purr"
    path = write_project(tmp_path / "project", base_config([fake_model(model_server)]))
    stores = [tmp_path / "a" / "mlflow.db", tmp_path / "b" / "mlflow.db"]
    outcomes = []
    for store in stores:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
        console = Console(file=io.StringIO(), width=200)
        outcomes.append(harness_run(load_config(path), RunOptions(use_cache=False), console))
    for store, outcome in zip(stores, outcomes, strict=True):
        with sqlite3.connect(store) as db:
            ids = {row[0] for row in db.execute("SELECT run_uuid FROM runs")}
        assert outcome.run_id in ids and len(ids) == 2  # the parent run and the one variant's


FORKED_AND_CLOSED = """
import os, sys
from harness.tracking_process import TrackingProcess

def one():
    process = TrackingProcess()
    pid = process.call(os.getpid)
    process.close()
    return pid == process.pid

first = one()
child = os.fork()
if child == 0:  # a program forking after a run: the child must not share its parent's launcher
    os._exit(0 if one() else 3)
_, status = os.waitpid(child, 0)
again = one()
out = open(sys.argv[1], "w")
os.close(1)
os.close(2)  # a daemon: no stdout or stderr to hand the tracking process
closed = one()
out.write(f"{first} {os.waitstatus_to_exitcode(status)} {again} {closed}")
out.close()
"""


@pytest.mark.slow
@pytest.mark.skipif(not tracking_process.FORKS, reason="launchers fork successors on Linux only")
def test_a_forked_program_and_a_daemon_without_output_still_get_tracking_processes(tmp_path: Path) -> None:
    result = tmp_path / "result.txt"
    done = subprocess.run(
        [sys.executable, "-c", FORKED_AND_CLOSED, str(result)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert result.read_text() == "True 0 True True"


@pytest.mark.slow
def test_a_caller_whose_directory_was_removed_still_gets_a_tracking_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    process = TrackingProcess()
    assert process.call(os.getpid) == process.pid
    process.close()
