"""Which response cache a run opens: a SQLite file, a Redis server, or none.

One place decides it, for a run, a shard and `estimate` alike, and opens it before any call, so a cache
that cannot be opened (a folder, an unreachable server, a URL of no known kind) is a config error
naming its field, never a failure halfway through the paid calls.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from harness.cache import ResponseCache, SqliteCache
from harness.config import CACHE_URL_SCHEMES, ConfigError, Experiment
from harness.redis_cache import RedisCache
from harness.secrets import redact_url, remember, scrub, url_secrets


def open_cache(experiment: Experiment, enabled: bool = True) -> ResponseCache | None:
    """The response cache: `HARNESS_CACHE` (a path or a redis:// URL), else `cache.url`, else `cache.path`;
    None with --no-cache (`enabled` False). Opened (and a Redis server reached) before any call."""
    if not enabled or not experiment.cache.enabled:
        return None
    override = os.environ.get("HARNESS_CACHE", "").strip()
    location = override or experiment.cache.url
    field = "HARNESS_CACHE" if override else "cache.url"
    lease = experiment.cache.lease_s
    if location and location.startswith(CACHE_URL_SCHEMES):
        return _open_redis(experiment, location, field, lease)
    if location and "://" in location:
        raise ConfigError(
            experiment.source_path,
            field,
            f"{redact_url(location)} is neither a file path nor a Redis URL",
            "give a path such as mlruns/responses.sqlite, or redis://host:6379/0",
        )
    path = Path(location) if location else experiment.project_file(experiment.cache.path, "cache.path")
    field = field if location else "cache.path"
    if path.is_dir():
        raise ConfigError(
            experiment.source_path, field, f"{path} is a folder", "give a file path, e.g. mlruns/responses.sqlite"
        )
    try:
        return SqliteCache(path, lease)
    except (sqlite3.Error, OSError) as exc:
        raise ConfigError(
            experiment.source_path,
            field,
            f"cannot open the response cache {path} ({exc})",
            "give a new file or an existing cache",
        ) from None


def _open_redis(experiment: Experiment, url: str, field: str, lease_s: float) -> ResponseCache:

    remember(url_secrets(url))
    try:
        return RedisCache(url, lease_s)
    except Exception as exc:  # redis-py raises ConnectionError, AuthenticationError, ValueError for a bad URL
        raise ConfigError(
            experiment.source_path,
            field,
            f"cannot reach the Redis cache at {redact_url(url)} ({scrub(f'{type(exc).__name__}: {exc}')})",
            "start the server or fix the URL (redis://[:password@]host:6379/0), or run with --no-cache",
        ) from None
