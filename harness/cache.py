"""The response cache: every successful call is stored the moment it returns, so nothing is paid twice.

A small SQLite store rather than litellm's cache, because:
- the key must cover everything that changes an answer, the sample index included (repeated samples of
  one prompt are distinct calls), while litellm's default key covers model, messages and a few params;
- each response is committed as it arrives (WAL mode), which is what makes a killed run resumable and
  lets two processes share one file safely;
- the runner must know every hit *before* it schedules anything, so the budget guard and the estimate
  count hits as free; one batched lookup does that;
- it keeps the original usage and latency, so a cached record still shows what the call costs.
A team shares it by pointing `cache.path` (or `HARNESS_CACHE`) at a shared location.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.config import ModelConfig
from harness.records import Usage
from harness.secrets import redact

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    output TEXT NOT NULL,
    usage TEXT NOT NULL,
    latency_s REAL NOT NULL,
    created REAL NOT NULL
)
"""


@dataclass(frozen=True)
class CachedResponse:
    """A stored successful call."""

    output: str
    usage: Usage
    latency_s: float


def call_key(model: ModelConfig, messages: list[dict[str, str]], params: dict[str, Any], sample: int) -> str:
    """Identity of a call: model, endpoint, messages, parameters and sample index (secret values excluded)."""
    identity = {
        "model": model.model,
        "api_base": model.api_base,
        "messages": messages,
        "params": redact(params),
        "sample": sample,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


class ResponseCache:
    """SQLite-backed store of successful responses, safe across threads and processes."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), timeout=60, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    def get_many(self, keys: list[str]) -> dict[str, CachedResponse]:
        """Every stored response among `keys`, in one pass."""
        found: dict[str, CachedResponse] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT key, output, usage, latency_s FROM responses WHERE key IN ({marks})", chunk
                ).fetchall()
                for key, output, usage, latency in rows:
                    found[key] = CachedResponse(output, Usage.model_validate_json(usage), latency)
        return found

    def put(self, key: str, model: str, output: str, usage: Usage, latency_s: float) -> None:
        """Store one response, committed at once (a crash after this line loses nothing)."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?)",
                (key, model, output, usage.model_dump_json(), latency_s, time.time()),
            )

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()
