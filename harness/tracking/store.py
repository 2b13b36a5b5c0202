"""The MLflow store: where runs go, opening it, and a lock so processes sharing a sqlite file take turns.

`MLFLOW_TRACKING_URI` wins so a team's tracking server works unchanged; otherwise the embedded default is
`sqlite:///<project>/mlruns/mlflow.db` with artifacts under `<project>/mlruns/artifacts` (the plain
`./mlruns` file store is in maintenance mode in MLflow 3). `run` and the stored-run commands (`report`,
`route`, `reprice`, `gate --against`) find the store through the same function, `default_uri`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.config import ConfigError, Experiment, inside_project
from harness.offline import apply_offline_defaults
from harness.secrets import redact_url


def default_uri(root: Path) -> str:
    """The embedded store of the project at `root`."""
    return f"sqlite:///{(root / 'mlruns' / 'mlflow.db').resolve()}"


def tracking_uri(experiment: Experiment) -> str:
    """Where runs go: the environment, then the config, then the project's embedded sqlite store."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    if experiment.tracking_uri:
        return confined_uri(experiment)
    return default_uri(experiment.root)


def confined_uri(experiment: Experiment) -> str:
    """The config's `tracking_uri`, with a local store (sqlite file, file: folder) held inside the project
    like every other file a config names (relative to the project root); servers are taken as given."""

    uri = str(experiment.tracking_uri)
    for prefix in ("sqlite:///", "file://", "file:"):
        if uri.startswith(prefix):
            path = inside_project(uri.removeprefix(prefix), experiment.root, experiment.source_path, "tracking_uri")
            return f"{prefix.rstrip('/')}///{path}" if prefix != "file:" else f"file://{path}"
    return uri


KNOWN_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "file", "databricks")


def check_store(uri: str, field: str = "MLFLOW_TRACKING_URI") -> None:
    """Refuse, before any paid call, a store MLflow cannot use: an unknown scheme, or an sqlite file that is
    not a database (found only after the calls, it would cost the run its tracking)."""

    scheme = uri.split("://", 1)[0].split("+", 1)[0] if "://" in uri else ""
    if scheme and scheme not in KNOWN_SCHEMES:
        raise ConfigError(
            uri,
            field,
            f"'{scheme}' is not a tracking store MLflow knows",
            "use sqlite:///path/mlflow.db, postgresql+psycopg2://..., http(s)://server, or unset it",
        )
    if uri.startswith(("postgresql://", "postgres://")) and importlib.util.find_spec("psycopg") is None:
        raise ConfigError(
            redact_url(uri),
            field,
            "plain postgresql:// makes SQLAlchemy 2 load psycopg 3, which is not installed",
            "name the driver harness installs: postgresql+psycopg2://user:password@host:5432/mlflow",
        )
    if scheme != "sqlite":
        return
    path = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
    if path is None or not path.exists():
        return
    if not path.is_file():
        raise ConfigError(uri, field, f"{path} is a folder, not an sqlite file", "point at a .db file")
    with path.open("rb") as handle:
        header = handle.read(16)
    if header and header != b"SQLite format 3\x00":
        raise ConfigError(uri, field, f"{path} is not an SQLite database", "move it away or point at another file")


def find_project_root(start: Path | None = None) -> Path:
    """The project a command run in `start` (default: the current folder) belongs to: the nearest folder,
    going up, that holds `mlruns/mlflow.db`, else `experiments/`, else `start` itself."""
    here = (start or Path.cwd()).resolve()
    chain = [here, *here.parents]
    for marker in ("mlruns/mlflow.db", "experiments"):
        for folder in chain:
            if (folder / marker).exists():
                return folder
    return here


def stored_run_uri(explicit: str | None = None, start: Path | None = None) -> str:
    """The store a stored-run command reads: a flag, then `MLFLOW_TRACKING_URI`, then the project's own."""
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or default_uri(find_project_root(start))


def open_store(uri: str) -> Any:
    """mlflow, pointed at `uri`, with the store's schema created once per process."""

    apply_offline_defaults()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # reading a run back prints no bars
    import logging

    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(uri)
    if uri.startswith("sqlite:///") and uri not in _READY:
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        with store_lock(uri), _no_termination():
            # The first touch creates the schema; two processes migrating one new file at once corrupt it.
            mlflow.MlflowClient().search_experiments(max_results=1)
        _READY.add(uri)
    return mlflow


_READY: set[str] = set()


_MIGRATING = False
_TERMINATED = False


@contextlib.contextmanager
def _no_termination() -> Iterator[None]:
    """A SIGTERM (see `end_on_sigterm`) waits until the block is done: a tracking process ended
    mid-migration, its run refused, would leave a new store's schema half made."""
    global _MIGRATING
    _MIGRATING = True
    try:
        yield
    finally:
        _MIGRATING = False
        if _TERMINATED:
            os._exit(143)


def end_on_sigterm() -> None:
    """In a tracking process: SIGTERM ends it at once, except while a store's schema is being made."""
    import signal

    def handler(signum: int, frame: object) -> None:
        global _TERMINATED
        if not _MIGRATING:
            os._exit(143)
        _TERMINATED = True

    signal.signal(signal.SIGTERM, handler)


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """An exclusive lock beside an embedded sqlite store, so concurrent harness processes take turns writing.

    A tracking server (http URIs) serialises writes itself; there the lock is a no-op.
    """
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    lock_path = Path(uri.removeprefix("sqlite:///") + ".lock")
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def experiment_page(address: str, uri: str, name: str | None = None) -> str:
    """Where to click: the experiment's Evaluation runs page (variants side by side, with Overview and
    Traces beside it) under `address`. The experiment is `name`, else the one run most recently."""

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # an unreachable server answers at once
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    try:
        client = open_store(uri).MlflowClient(tracking_uri=uri)
        if name is not None:
            found = client.get_experiment_by_name(name)
        else:
            runs = client.search_runs(
                [e.experiment_id for e in client.search_experiments(max_results=1000)],
                max_results=1,
                order_by=["attributes.start_time DESC"],
            )
            found = client.get_experiment(runs[0].info.experiment_id) if runs else None
    except Exception as exc:  # the link is a convenience; the server or UI still starts
        return f"could not read the experiments in {redact_url(uri)}: {type(exc).__name__}"
    if found is None:
        what = f"no experiment named {name!r}" if name else "no runs"
        return f"{what} in {redact_url(uri)} yet: run `python -m harness run CONFIG` first"
    base = redact_url(address).rstrip("/")
    return f"experiment {found.name}: {base}/#/experiments/{found.experiment_id}/evaluation-runs"


def warm(uri: str) -> None:
    """What every run's logging needs first, done while the run prepares and calls: the store's schema
    check (the imports came with the process, see `tracking.job.import_logging`)."""
    open_store(uri)
