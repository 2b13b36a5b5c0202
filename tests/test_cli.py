"""The CLI end to end in a subprocess: a tiny experiment with the real local models and the test server."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO, base_config, fake_model, no_runs, stop_server, write_project
from tests.fake_server import FakeModelServer


def harness(*args: str, cwd: Path, timeout: float = 300, process: bool = False) -> subprocess.CompletedProcess[str]:
    """`python -m harness ARGS` in `cwd`: its exit code, stdout and stderr.

    In this process by default: the command is `harness.cli.main`, the same code the console entry runs,
    and a test pays neither Python's start nor litellm's import (3-4 s of CPU) for each command. A test of
    what only a process shows (signals, what reaches a child's output, what gets imported) passes
    `process=True` for a real `python -m harness`.
    """
    if process:
        env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
        return subprocess.run(
            [sys.executable, "-m", "harness", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    return in_process(list(args), cwd)


def in_process(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`main(argv)` as a process would run it: in `cwd`, 200 columns, its own stdout and stderr, and the
    SIGTERM handler put back afterwards. The environment is left as the command leaves it: libraries set
    variables when first imported (litellm points tiktoken at its bundled encodings) and import only once,
    so taking those back would break every later command in this process."""
    from harness.cli import main

    out, err = io.StringIO(), io.StringIO()
    here = os.getcwd()
    sigterm = signal.getsignal(signal.SIGTERM)
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "200"
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse's usage errors
                code = exc.code if isinstance(exc.code, int) else 2
    finally:
        os.chdir(here)
        signal.signal(signal.SIGTERM, sigterm)
        if columns is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = columns
    return subprocess.CompletedProcess(["harness", *argv], code, out.getvalue(), err.getvalue())


@pytest.mark.slow
def test_run_end_to_end_with_real_smollm2(tmp_path: Path, model_server: FakeModelServer) -> None:
    model_server.answer = lambda request: "cats purr"
    models = [
        "local/smollm2-135m",
        "local/lead",
        fake_model(model_server, price={"input_cost_per_token": 1e-6, "output_cost_per_token": 1e-6}),
        "anthropic/claude-haiku-4-5",
    ]
    config = base_config(models, baseline={"model": "local/lead", "prompt": "terse"})
    config["dataset"]["limit"] = 2
    path = write_project(tmp_path, config)
    result = harness("run", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for variant in ("local/smollm2-135m:terse", "local/lead:terse", "openai/fake-model:terse"):
        assert variant in out
    assert "ANTHROPIC_API_KEY not set" in out and "WARNING" in out
    assert "MLflow: run" in out
    assert len(model_server.requests) == 2

    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    exp = mlflow.get_experiment_by_name("test-exp")
    runs = mlflow.search_runs(
        [exp.experiment_id], filter_string="attributes.run_name = 'local/smollm2-135m:terse'", output_format="list"
    )
    smol = runs[0]
    assert smol.data.metrics["n_items"] == 2 and smol.data.metrics["n_errors"] == 0
    assert smol.data.metrics["mean_output_tokens"] > 0
    assert smol.data.metrics["cost_total_usd"] == 0.0


def test_config_error_is_one_line_exit_2_and_nothing_logged(tmp_path: Path) -> None:
    config = base_config(["local/lead"])
    config["temprature"] = 0.5
    path = write_project(tmp_path, config)
    result = harness("run", str(path), cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert str(path) in lines[0] and "temprature" in lines[0] and "temperature" in lines[0]
    assert no_runs(Path(os.environ["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///")))


def test_help_lists_commands(tmp_path: Path) -> None:
    result = harness("--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "run" in result.stdout and "ui" in result.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_ui_serves_the_store(tmp_path: Path) -> None:
    path = write_project(tmp_path, base_config(["local/lead"]))
    assert harness("run", str(path), cwd=tmp_path).returncode == 0
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    server = subprocess.Popen(
        [sys.executable, "-m", "harness", "ui", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        body = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name=test-exp"
                with urllib.request.urlopen(url, timeout=2) as response:
                    body = json.loads(response.read())
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail("mlflow server exited")
                time.sleep(0.5)
        assert body is not None and body["experiment"]["name"] == "test-exp"
    finally:
        stop_server(server)


def test_ui_refuses_a_bad_port_or_worker_count_in_one_line(tmp_path: Path) -> None:
    for flag, value in (("--port", "0"), ("--workers", "0"), ("--workers", "-3")):
        result = harness("ui", flag, value, cwd=tmp_path)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert flag in result.stderr and value in result.stderr


def test_litellms_import_is_frozen_only_in_a_process_that_ends_with_its_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`gc.freeze` after litellm's import: the command line's process, which exits with its command, never
    needs those objects collected; a program (this test process is one) keeps the collector's full sight."""
    import gc

    from harness import offline

    offline.import_litellm()
    assert gc.get_freeze_count() == 0, "a program's objects stay collectable"
    monkeypatch.setitem(offline._SHORT_LIVED, "process", True)
    try:
        offline.import_litellm.__wrapped__()
        assert gc.get_freeze_count() > 100_000, "litellm's import is several hundred thousand objects"
    finally:
        gc.unfreeze()


def test_the_command_line_exits_with_its_code_and_its_objects_frozen(tmp_path: Path) -> None:
    """`python -m harness` runs `entry`: the command's exit code, exit handlers still run, the interpreter's
    last collection spared (everything alive is frozen first), and young objects collected less often."""
    from harness.offline import GC_YOUNG_THRESHOLD

    watch = (
        "import atexit, gc, runpy, sys\n"
        "young = lambda: gc.get_threshold()[0]\n"
        "atexit.register(lambda: print('young every', young(), 'frozen at exit:', gc.get_freeze_count()))\n"
        "sys.argv = ['harness', *sys.argv[1:]]\n"
        "runpy.run_module('harness', run_name='__main__')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-c", watch]
    done = subprocess.run(
        [*args, "estimate", "experiments/summarize.yaml"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.rsplit("frozen at exit:", 1)[1]) > 10_000
    assert f"young every {GC_YOUNG_THRESHOLD} " in done.stdout
    program = subprocess.run(
        [sys.executable, "-c", "import gc, harness.cli; print(gc.get_threshold()[0])"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert program.stdout.strip() == "700", "a program importing harness keeps Python's default"
    bad = subprocess.run(
        [*args, "estimate", str(tmp_path / "missing.yaml")], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "no such config file" in bad.stderr


@pytest.mark.parametrize(("raised", "code"), [("Terminated()", 143), ("KeyboardInterrupt()", 130)])
def test_a_signal_where_python_ignores_exceptions_still_ends_the_command(raised: str, code: int) -> None:
    """A SIGTERM or Ctrl-C whose exception lands in a finalizer is not printed as "Exception ignored"
    and then forgotten: the process ends with the resume line, as anywhere else."""
    script = (
        "import sys, harness.cli as cli\n"
        "sys.unraisablehook = cli._interrupt_where_python_ignores_it\n"
        "class Finalized:\n"
        f"    def __del__(self): raise {'cli.' if raised.startswith('Terminated') else ''}{raised}\n"
        "Finalized()\n"
        "print('went on')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == code, done.stderr
    assert "went on" not in done.stdout and "Traceback" not in done.stderr
    assert "run the same command again to resume" in done.stderr
