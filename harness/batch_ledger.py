"""The ledger of submitted batches: what makes a batch run resumable without paying twice.

A batch is paid for when the provider runs it, hours after it was submitted, so the response cache
alone cannot protect it: between submission and results there is no answer to store. The ledger keeps
each submission from before its upload to after its results are in the cache:

1. `begin`: a submission token and the call keys it carries, committed before the file is uploaded;
2. `uploaded`: the input file's id, committed before the batch is created;
3. `submitted`: the provider's batch id, committed the moment the provider returns it;
4. `collected`: every answer is in the cache, the submission is closed.

A run that finds an open submission for a call it needs adopts it instead of submitting the call again:
with a batch id it polls that batch; with only a file id it first asks the provider for a batch tagged
with the token (the process may have died between creating the batch and storing its id), creating
one from the stored file only when there is none; with neither, nothing reached the provider and the
submission is dropped. One SQLite file beside the response cache, WAL mode, committed at every step.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS submissions (
    token TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    file_id TEXT,
    batch_id TEXT,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    finished REAL
);
CREATE TABLE IF NOT EXISTS submission_calls (
    token TEXT NOT NULL,
    key TEXT NOT NULL,
    PRIMARY KEY (token, key)
);
CREATE INDEX IF NOT EXISTS submission_calls_key ON submission_calls (key);
"""

OPEN = "open"
COLLECTED = "collected"
DROPPED = "dropped"


@dataclass(frozen=True)
class Submission:
    """One batch submission as the ledger holds it."""

    token: str
    endpoint: str
    keys: tuple[str, ...]
    file_id: str | None
    batch_id: str | None
    created: float


class BatchLedger:
    """Submissions by token, and the open ones by the call keys they carry."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a stored batch id survives a power cut, not only a kill
        self._db.executescript(_SCHEMA)

    def begin(self, endpoint: str, keys: list[str]) -> str:
        """A new submission carrying `keys`, committed before anything is sent: its token."""
        token = uuid.uuid4().hex
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT INTO submissions (token, endpoint, state, created) VALUES (?, ?, ?, ?)",
                (token, endpoint, OPEN, time.time()),
            )
            self._db.executemany("INSERT INTO submission_calls (token, key) VALUES (?, ?)", [(token, k) for k in keys])
        return token

    def uploaded(self, token: str, file_id: str) -> None:
        self._set(token, "file_id", file_id)

    def submitted(self, token: str, batch_id: str) -> None:
        self._set(token, "batch_id", batch_id)

    def collected(self, token: str) -> None:
        """Every answer of the submission is in the cache (or recorded as failed): closed."""
        self._close(token, COLLECTED)

    def dropped(self, token: str) -> None:
        """Nothing of the submission reached the provider (no file), so nothing can be billed: closed."""
        self._close(token, DROPPED)

    def open_for(self, endpoint: str, keys: list[str]) -> list[Submission]:
        """The open submissions at `endpoint` that carry any of `keys`, oldest first, each with all its keys."""
        wanted = set(keys)
        with self._lock:
            rows = self._db.execute(
                "SELECT token, file_id, batch_id, created FROM submissions WHERE state = ? AND endpoint = ?"
                " ORDER BY created",
                (OPEN, endpoint),
            ).fetchall()
            out = []
            for token, file_id, batch_id, created in rows:
                carried = tuple(
                    k for (k,) in self._db.execute("SELECT key FROM submission_calls WHERE token = ?", (token,))
                )
                if wanted.intersection(carried):
                    out.append(Submission(token, endpoint, carried, file_id, batch_id, created))
        return out

    def batch_ids(self, endpoint: str) -> list[str]:
        """Every batch id stored for `endpoint`: batches that are someone's, whatever their state."""
        with self._lock:
            rows = self._db.execute(
                "SELECT batch_id FROM submissions WHERE endpoint = ? AND batch_id IS NOT NULL", (endpoint,)
            ).fetchall()
        return [r[0] for r in rows]

    def durations(self, endpoint: str | None = None, last: int = 50) -> list[float]:
        """Seconds from submission to collection of the latest collected batches (at `endpoint`)."""
        query = "SELECT finished - created FROM submissions WHERE state = ? AND finished IS NOT NULL"
        args: tuple[str, ...] = (COLLECTED,)
        if endpoint is not None:
            query += " AND endpoint = ?"
            args += (endpoint,)
        with self._lock:
            rows = self._db.execute(query + f" ORDER BY finished DESC LIMIT {int(last)}", args).fetchall()
        return [float(r[0]) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _set(self, token: str, column: str, value: str) -> None:
        with self._lock:
            self._db.execute(f"UPDATE submissions SET {column} = ? WHERE token = ?", (value, token))

    def _close(self, token: str, state: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE submissions SET state = ?, finished = ? WHERE token = ?", (state, time.time(), token)
            )


def batch_durations(path: Path) -> list[float]:
    """How long the latest batches kept at `path` took (none when no batch was ever made there)."""
    if not path.is_file():
        return []
    ledger = BatchLedger(path)
    try:
        return ledger.durations()
    finally:
        ledger.close()
