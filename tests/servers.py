"""Real Redis and PostgreSQL servers from the Debian packages, started by the tests on 127.0.0.1 only.

Absent locally, their tests skip with the reason; with `HARNESS_REQUIRE_SERVERS=1` (set by `.ci/run`) an
absent server is a failure, so CI can never pass them without running.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import stop_server, wait_for_health


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _absent(what: str) -> None:
    if os.environ.get("HARNESS_REQUIRE_SERVERS") == "1":
        pytest.fail(f"{what} is not installed (HARNESS_REQUIRE_SERVERS=1): apt-get install it")
    pytest.skip(f"{what} is not installed here (apt-get install it to run this test)")


def _wait(ready: Callable[[], bool], process: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{what} did not start: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.1)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def start_redis(folder: Path) -> Iterator[str]:
    """A throwaway redis-server on 127.0.0.1 (no persistence); yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        _absent("redis-server")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = folder / "redis.log"
    process = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait(lambda: _accepts(port), process, "redis-server", log)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_server(process)


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def start_postgres(folder: Path) -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 with a database `mlflow`; yields its SQLAlchemy URI with
    the psycopg2 driver. Run as the `postgres` user when the tests run as root (postgres refuses root)."""
    initdb, postgres, createdb = _pg_bin("initdb"), _pg_bin("postgres"), _pg_bin("createdb")
    if initdb is None or postgres is None or createdb is None:
        _absent("postgresql")
    as_user: list[str] = []
    if os.geteuid() == 0:
        # postgres refuses root and cannot enter pytest's root-only folders: a folder of its own in /tmp.
        folder = Path(tempfile.mkdtemp(prefix="harness-postgres-"))
        shutil.chown(folder, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    folder.mkdir(parents=True, exist_ok=True)
    data, port = folder / "data", free_port()
    log = folder / "postgres.log"
    subprocess.run(
        [*as_user, initdb, "-D", str(data), "-A", "trust", "-U", "postgres"], check=True, capture_output=True
    )
    process = subprocess.Popen(
        [*as_user, postgres, "-D", str(data), "-h", "127.0.0.1", "-p", str(port), "-k", str(folder)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait(lambda: _accepts(port), process, "postgres", log)
        deadline = time.monotonic() + 30
        while True:
            made = subprocess.run(
                [*as_user, createdb, "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "mlflow"],
                capture_output=True,
                text=True,
            )
            if made.returncode == 0:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"createdb failed: {made.stderr}")
            time.sleep(0.3)
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/mlflow"
    finally:
        stop_server(process)
        if as_user:
            shutil.rmtree(folder, ignore_errors=True)


def start_mlflow_server(backend_store_uri: str, folder: Path) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1 over `backend_store_uri`, artifacts under `folder`; yields its URL."""
    import sys

    port = free_port()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)),
            *("--backend-store-uri", backend_store_uri, "--artifacts-destination", str(folder / "artifacts")),
            *("--workers", "1"),  # one client: MLflow's four workers and its job consumers only cost start time
        ],
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        cwd=folder,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_health(url, process, f"mlflow server on {backend_store_uri.split(':', 1)[0]}")
        yield url
    finally:
        stop_server(process)
