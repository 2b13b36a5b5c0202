"""The response cache: every successful call is stored the moment it returns, so nothing is paid twice.

Our own store rather than litellm's cache, because:
- the key must cover everything that changes an answer, the sample index included (repeated samples of
  one prompt are distinct calls), while litellm's default key covers model, messages and a few params;
- each response is committed as it arrives, which is what makes a killed run resumable;
- the runner must know every hit *before* it schedules anything, so the budget guard and the estimate
  count hits as free; one batched lookup does that;
- it keeps the original usage and latency, so a cached record still shows what the call costs;
- several processes share it without paying twice: before calling, a process *claims* the call's key
  with a lease; another process that finds a live claim waits for the answer instead of calling. The
  lease is renewed while the call runs and lapses when the process dies (at once, on the same machine,
  when the owner's pid is gone), so a crashed worker never blocks the others for long.

Two stores, one contract: SQLite (`cache.path`, the default; one machine, WAL mode) and Redis
(`cache.url` or `HARNESS_CACHE=redis://...`, `harness.redis_cache`) for a team's machines and CI jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sqlite3
import threading
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from harness.records import Usage

DEFAULT_LEASE_S = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    output TEXT NOT NULL,
    usage TEXT NOT NULL,
    latency_s REAL NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS claims (
    key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires REAL NOT NULL
);
"""


@dataclass(frozen=True)
class CachedResponse:
    """A stored successful call."""

    output: str
    usage: Usage
    latency_s: float
    created: float = 0.0
    """When it was stored (epoch seconds): `--refresh` accepts only answers newer than its own start."""


def new_owner() -> str:
    """A claim owner: host and pid (so a dead owner on this machine is recognised at once) and a token (so
    two caches in one process are distinct owners)."""
    return f"{socket.gethostname()}|{os.getpid()}|{uuid.uuid4().hex[:12]}"


def owner_is_dead(owner: str) -> bool:
    """True when the owner ran on this machine and its process is gone; unknown owners count as alive
    (their lease decides)."""
    host, _, rest = owner.partition("|")
    pid_text = rest.partition("|")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class ResponseCache(ABC):
    """The contract both stores keep: batched lookup, committed writes, and claims with renewed leases."""

    def __init__(self, lease_s: float = DEFAULT_LEASE_S) -> None:
        self.lease_s = lease_s
        self.owner = new_owner()
        self._held: set[str] = set()
        self._held_lock = threading.Lock()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    @abstractmethod
    def describe(self) -> str:
        """Where the cache lives, safe to print (no credentials)."""

    @abstractmethod
    def get_many(self, keys: list[str]) -> dict[str, CachedResponse]:
        """Every stored response among `keys`, in one pass."""

    @abstractmethod
    def _store(self, key: str, model: str, output: str, usage: Usage, latency_s: float) -> None:
        """Commit a response and drop this owner's claim on its key, atomically."""

    @abstractmethod
    def _try_claim(self, key: str) -> str | None:
        """Claim `key` for this owner unless another owner's lease is live; None when claimed, else the
        live claim's owner."""

    @abstractmethod
    def _take_over(self, key: str, dead_owner: str) -> bool:
        """Replace `dead_owner`'s claim with this owner's, if it is still that owner's."""

    @abstractmethod
    def _claim_owner(self, key: str) -> str | None:
        """The owner of a live claim on `key`, or None."""

    @abstractmethod
    def _drop_claims(self, keys: list[str]) -> None:
        """Delete this owner's claims on `keys` (never another owner's)."""

    @abstractmethod
    def _extend_claims(self, keys: list[str]) -> None:
        """Push this owner's leases on `keys` to now + lease_s."""

    @abstractmethod
    def _close(self) -> None:
        """Close the connection."""

    def get(self, key: str) -> CachedResponse | None:
        """One stored response, or None."""
        return self.get_many([key]).get(key)

    def put(self, key: str, model: str, output: str, usage: Usage, latency_s: float) -> None:
        """Store one response, committed at once (a crash after this line loses nothing); releases the claim."""
        self._store(key, model, output, usage, latency_s)
        with self._held_lock:
            self._held.discard(key)

    def claim(self, key: str) -> bool:
        """Claim a call before paying for it: False while another live process holds it."""
        owner = self._try_claim(key)
        if owner is not None and owner_is_dead(owner) and self._take_over(key, owner):
            owner = None
        if owner is not None:
            return False
        with self._held_lock:
            self._held.add(key)
        self._start_renewer()
        return True

    def claimed_elsewhere(self, key: str) -> bool:
        """True while another process holds a live claim on `key` (a dead owner's claim does not count)."""
        owner = self._claim_owner(key)
        return owner is not None and owner != self.owner and not owner_is_dead(owner)

    def release(self, key: str) -> None:
        """Give up a claim without an answer (the call failed, or was never made): another may call."""
        with self._held_lock:
            if key not in self._held:
                return
            self._held.discard(key)
        self._drop_claims([key])

    def claim_or_answer(self, key: str, newer_than: float | None = None) -> CachedResponse | bool:
        """Before paying for a call: True when this process now holds its claim; an answer another process
        stored meanwhile (newer than `newer_than`, when given: `--refresh`); False while another calls."""
        if not self.claim(key):
            return False
        answer = _fresh(self.get(key), newer_than)
        if answer is None:
            return True
        self.release(key)
        return answer

    async def wait_for(
        self, keys: list[str], newer_than: float | None = None
    ) -> tuple[dict[str, CachedResponse], list[str]]:
        """Wait while other processes hold claims on `keys`: the answers they stored, and the keys whose
        claim ended without one (the call failed or its process died), which this process may claim."""
        pending, answers, orphaned = list(keys), {}, []
        pause = 0.05
        while pending:
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)
            found = self.get_many(pending)
            still = []
            for key in pending:
                answer = _fresh(found.get(key), newer_than)
                if answer is not None:
                    answers[key] = answer
                elif self.claimed_elsewhere(key):
                    still.append(key)
                else:
                    orphaned.append(key)
            pending = still
        return answers, orphaned

    def close(self) -> None:
        """Release every claim still held, stop renewing, close."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
        with self._held_lock:
            held, self._held = list(self._held), set()
        with contextlib.suppress(Exception):
            if held:
                self._drop_claims(held)
        self._close()

    def _start_renewer(self) -> None:
        if self._renewer is None:
            self._renewer = threading.Thread(target=self._renew_loop, name="cache-claims", daemon=True)
            self._renewer.start()

    def _renew_loop(self) -> None:
        """A thread, not a task: a busy event loop must not let leases lapse under a call in flight."""
        while not self._stop.wait(self.lease_s / 3):
            with self._held_lock:
                held = list(self._held)
            if held:
                with contextlib.suppress(Exception):  # a lapsed lease costs at most a duplicate call
                    self._extend_claims(held)


def _fresh(answer: CachedResponse | None, newer_than: float | None) -> CachedResponse | None:
    if answer is None or (newer_than is not None and answer.created < newer_than):
        return None
    return answer


class SqliteCache(ResponseCache):
    """The default store: one SQLite file in WAL mode, safe across threads and processes of one machine
    (not over a network file system: use Redis there)."""

    def __init__(self, path: Path, lease_s: float = DEFAULT_LEASE_S) -> None:
        super().__init__(lease_s)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), timeout=60, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def describe(self) -> str:
        return str(self.path)

    def get_many(self, keys: list[str]) -> dict[str, CachedResponse]:
        found: dict[str, CachedResponse] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT key, output, usage, latency_s, created FROM responses WHERE key IN ({marks})", chunk
                ).fetchall()
                for key, output, usage, latency, created in rows:
                    with contextlib.suppress(ValueError):  # an unreadable entry is a miss, paid again and replaced
                        found[key] = CachedResponse(output, Usage.model_validate_json(usage), float(latency), created)
        return found

    def _store(self, key: str, model: str, output: str, usage: Usage, latency_s: float) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?)",
                    (key, model, output, usage.model_dump_json(), latency_s, time.time()),
                )
                self._db.execute("DELETE FROM claims WHERE key = ? AND owner = ?", (key, self.owner))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _try_claim(self, key: str) -> str | None:
        now = time.time()
        with self._lock:
            taken = self._db.execute(
                "INSERT INTO claims VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE SET owner = excluded.owner, "
                "expires = excluded.expires WHERE claims.expires < ? OR claims.owner = excluded.owner",
                (key, self.owner, now + self.lease_s, now),
            ).rowcount
            if taken:
                return None
            row = self._db.execute("SELECT owner FROM claims WHERE key = ?", (key,)).fetchone()
        return row[0] if row is not None else ""

    def _take_over(self, key: str, dead_owner: str) -> bool:
        with self._lock:
            return bool(
                self._db.execute(
                    "UPDATE claims SET owner = ?, expires = ? WHERE key = ? AND owner = ?",
                    (self.owner, time.time() + self.lease_s, key, dead_owner),
                ).rowcount
            )

    def _claim_owner(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT owner FROM claims WHERE key = ? AND expires >= ?", (key, time.time())
            ).fetchone()
        return row[0] if row is not None else None

    def _drop_claims(self, keys: list[str]) -> None:
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                self._db.execute(f"DELETE FROM claims WHERE owner = ? AND key IN ({marks})", [self.owner, *chunk])

    def _extend_claims(self, keys: list[str]) -> None:
        with self._lock:
            self._db.execute("UPDATE claims SET expires = ? WHERE owner = ?", (time.time() + self.lease_s, self.owner))

    def _close(self) -> None:
        with self._lock:
            self._db.close()
