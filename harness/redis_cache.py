"""The response cache on Redis: the server-grade store a team's machines and CI jobs share.

Same keys, values and claims as the SQLite store (`harness.cache`): a claim is `SET NX PX` (atomic
set-if-absent with expiry), and every change to a claim that must check its owner first (store-and-release,
release, renew, take over from a dead owner) is one Lua script, so it is atomic on the server.
Responses never expire; persistence is the server's (`appendonly yes` for a cache worth keeping).
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

from harness.cache import DEFAULT_LEASE_S, CachedResponse, ResponseCache
from harness.records import Usage
from harness.secrets import redact_url

PREFIX = "harness:"

_STORE_AND_RELEASE = """
redis.call('SET', KEYS[1], ARGV[1])
if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end
return 1
"""
_RELEASE = """
local n = 0
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then n = n + redis.call('DEL', key) end
end
return n
"""
_EXTEND = """
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('PEXPIRE', key, ARGV[2]) end
end
return 1
"""
_TAKE_OVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""


def response_key(key: str) -> str:
    return f"{PREFIX}response:{key}"


def claim_key(key: str) -> str:
    return f"{PREFIX}claim:{key}"


class RedisCache(ResponseCache):
    """Responses and claims on a Redis server (`redis://[:password@]host:port/db` or `rediss://`)."""

    def __init__(self, url: str, lease_s: float = DEFAULT_LEASE_S) -> None:
        super().__init__(lease_s)
        import redis

        self.url = url
        self._client: Any = redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=10)
        self._client.ping()  # an unreachable or refusing server is an error before any call
        self._scripts = {
            name: self._client.register_script(source)
            for name, source in (
                ("store", _STORE_AND_RELEASE),
                ("release", _RELEASE),
                ("extend", _EXTEND),
                ("take_over", _TAKE_OVER),
            )
        }

    def describe(self) -> str:
        return redact_url(self.url)

    def get_many(self, keys: list[str]) -> dict[str, CachedResponse]:
        found: dict[str, CachedResponse] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            for key, value in zip(chunk, self._client.mget([response_key(k) for k in chunk]), strict=True):
                if value is not None:
                    with contextlib.suppress(ValueError, KeyError, TypeError):  # unreadable: a miss, replaced
                        found[key] = _decode(value)
        return found

    def _store(self, key: str, model: str, output: str, usage: Usage, latency_s: float) -> None:
        value = json.dumps(
            {
                "model": model,
                "output": output,
                "usage": usage.model_dump(mode="json"),
                "latency_s": latency_s,
                "created": time.time(),
            }
        )
        self._scripts["store"](keys=[response_key(key), claim_key(key)], args=[value, self.owner])

    def _try_claim(self, key: str) -> str | None:
        name = claim_key(key)
        if self._client.set(name, self.owner, nx=True, px=self._lease_ms()):
            return None
        owner = self._client.get(name)
        if owner is None:  # lapsed between the two commands: try once more
            return None if self._client.set(name, self.owner, nx=True, px=self._lease_ms()) else ""
        owner = owner.decode()
        if owner == self.owner:
            self._client.pexpire(name, self._lease_ms())
            return None
        return owner

    def _take_over(self, key: str, dead_owner: str) -> bool:
        return bool(self._scripts["take_over"](keys=[claim_key(key)], args=[dead_owner, self.owner, self._lease_ms()]))

    def _claim_owner(self, key: str) -> str | None:
        owner = self._client.get(claim_key(key))
        return owner.decode() if owner is not None else None

    def _drop_claims(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 500):
            self._scripts["release"](keys=[claim_key(k) for k in keys[start : start + 500]], args=[self.owner])

    def _extend_claims(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 500):
            chunk = [claim_key(k) for k in keys[start : start + 500]]
            self._scripts["extend"](keys=chunk, args=[self.owner, self._lease_ms()])

    def _close(self) -> None:
        self._client.close()

    def _lease_ms(self) -> int:
        return max(1, round(self.lease_s * 1000))


def _decode(value: bytes) -> CachedResponse:
    data = json.loads(value)
    return CachedResponse(
        data["output"], Usage.model_validate(data["usage"]), float(data["latency_s"]), float(data.get("created", 0))
    )
