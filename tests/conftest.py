"""Shared fixtures: offline environment, the fake model server, and throwaway projects."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# One BLAS thread per process: the suite runs three workers on two cores, each starting harness processes,
# and OpenBLAS's extra threads only spin there. The gate simulations in test_stats.py took the same wall
# time on one thread with half the CPU (25 s against 47 s). Set before anything imports numpy; the
# processes the tests start inherit it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pytest
import yaml

from harness.offline import OFFLINE_DEFAULTS, collect_young_less_often

for _key, _value in OFFLINE_DEFAULTS.items():
    os.environ.setdefault(_key, _value)

# A test process runs experiment after experiment in-process, as the command line runs one: its youngest
# generation collected as seldom as there (`harness.offline.short_lived_process`).
collect_young_less_often()

from tests.fake_server import FakeModelServer  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def model_server() -> Iterator[FakeModelServer]:
    """A real HTTP server on 127.0.0.1 speaking the OpenAI chat API."""
    server = FakeModelServer().start()
    yield server
    server.stop()


SHARED_FIXTURE_MODULES = {"tests/test_ui_browser.py", "tests/test_postgres_tracking.py", "tests/test_watch.py"}
"""Modules whose module fixture is a whole system (a tracked run and an MLflow server to browse, a
PostgreSQL cluster, stored runs to watch): each is sent to one worker as a unit, so the fixture is built
once, not per worker."""


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Test by test, as `--dist load`, except the modules above. `xdist_group` with `--dist loadgroup`
    would say this, but under pytest 9.2 its groups are silently ignored (pytest-xdist issue #1386)."""
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module in SHARED_FIXTURE_MODULES else nodeid

    return SharedFixtureScheduling(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Those modules first: each is the longest unit of work, and starting it last would leave one worker
    running it alone at the end."""
    items.sort(key=lambda item: item.nodeid.split("::", 1)[0] not in SHARED_FIXTURE_MODULES)


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """The test session's own folder, shared by all its workers (each worker's base temp is below it)."""
    root = tmp_path_factory.getbasetemp()
    return root if worker_id == "master" else root.parent


@pytest.fixture(scope="session")
def smollm2_cache(session_dir: Path) -> Path:
    """One response cache for the tests that run the shipped SmolLM2 ablation (2-3 s of CPU a call): their
    calls overlap, and a call at temperature 0 answers the same from the cache. Fresh each session (the
    repository's own cache would serve a second run of the suite), shared by the workers; each test still
    passes alone, making the calls it needs."""
    return session_dir / "smollm2-cache.sqlite"


@pytest.fixture(scope="session")
def _empty_store(session_dir: Path) -> Path:
    """An MLflow sqlite store with its schema made, once per test session. Creating the schema runs every
    one of MLflow's migrations (seconds); each test's store starts as a copy of this one, as a user's store
    is after its first run, instead of paying them again in every tracked test. The workers share one,
    made by whichever asks first (under a lock, and renamed into place whole)."""
    from harness.tracking.store import store_lock

    db = session_dir / "empty-store" / "mlflow.db"
    db.parent.mkdir(exist_ok=True)
    with store_lock(f"sqlite:///{db}"):
        if not db.exists():
            making = db.with_name("making.db")
            code = "import sys; from harness.tracking.store import open_store; open_store(sys.argv[1])"
            made = subprocess.run([sys.executable, "-c", code, f"sqlite:///{making}"], cwd=REPO, capture_output=True)
            assert made.returncode == 0, made.stderr
            making.rename(db)
    return db


@pytest.fixture(autouse=True)
def _no_cloud_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, _empty_store: Path) -> None:
    """No test may reach a cloud provider: provider keys are removed, MLflow points at a temp store."""
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}")
    (tmp_path / "store").mkdir(exist_ok=True)
    shutil.copyfile(_empty_store, tmp_path / "store" / "mlflow.db")


def wait_for_requests(server: FakeModelServer, n: int, process: subprocess.Popen[str], timeout_s: float = 60) -> None:
    """Until `server` has had `n` requests, failing at once, with its output, if `process` ended first."""
    deadline = time.monotonic() + timeout_s
    while len(server.requests) < n:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{len(server.requests)} of {n} requests after {timeout_s} s"
        time.sleep(0.05)


def no_runs(store: Path) -> bool:
    """Whether an MLflow sqlite store holds no run (a test's store starts with the schema made, no run)."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(store)) as db:
        return db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0


TERSE = (
    "{% block system %}Be brief.{% endblock %}"
    "{% block user %}Summarise: <document>{{ document }}</document>{% endblock %}"
)

ITEMS = [
    {"id": "a", "document": "Cats purr. They sleep a lot.", "reference": "cats purr"},
    {"id": "b", "document": "Dogs bark loudly. They fetch.", "reference": "dogs bark"},
    {"id": "c", "document": "Birds sing at dawn. They fly.", "reference": "birds sing"},
]


def fake_model(server: FakeModelServer, name: str = "fake-model", **extra: Any) -> dict[str, Any]:
    """A model entry pointing litellm's OpenAI provider at the test server."""
    return {"model": f"openai/{name}", "api_base": server.url, **extra}


def write_project(
    root: Path,
    config: dict[str, Any],
    items: list[dict[str, Any]] | None = None,
    templates: dict[str, str] | None = None,
) -> Path:
    """A minimal project (evals/, prompts/, experiments/) and its config path."""
    (root / "evals").mkdir(parents=True, exist_ok=True)
    (root / "prompts").mkdir(exist_ok=True)
    (root / "experiments").mkdir(exist_ok=True)
    rows = ITEMS if items is None else items
    (root / "evals" / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    for name, text in (templates or {"terse": TERSE}).items():
        (root / "prompts" / f"{name}.j2").write_text(text, encoding="utf-8")
    if any(":" in str(s) for s in config.get("scorers", []) for s in ([s] if isinstance(s, str) else s)):
        # A custom scorer lives in the project it scores (a config never runs code from elsewhere).
        (root / "tests").mkdir(exist_ok=True)
        shutil.copy(REPO / "tests" / "custom_scorers.py", root / "tests" / "custom_scorers.py")
    path = root / "experiments" / "exp.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def base_config(models: list[Any], **overrides: Any) -> dict[str, Any]:
    """A valid config over the ITEMS dataset and the terse prompt."""
    config: dict[str, Any] = {
        "name": "test-exp",
        "dataset": {"path": "evals/data.jsonl", "fields": {"id": "id", "reference": "reference"}},
        "prompts": ["prompts/terse.j2"],
        "models": models,
        "params": {"temperature": 0, "max_tokens": 16},
        "scorers": ["rouge"],
        "concurrency": 2,
        "timeout_s": 10,
        "max_retries": 2,
    }
    config.update(overrides)
    return config


def stop_server(process: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    """Stop a server started with `start_new_session=True` and every process it spawned (the MLflow
    server runs uvicorn workers and job consumers that outlive a plain terminate)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_for_health(address: str, process: subprocess.Popen[bytes] | subprocess.Popen[str], what: str) -> None:
    """Wait until the MLflow server at `address` answers /health; fail with `what` if it exits or stalls."""
    import time
    import urllib.request

    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{address}/health", timeout=2):
                return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{what} did not serve")
            time.sleep(0.5)
