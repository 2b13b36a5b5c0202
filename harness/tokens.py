"""Every token count harness makes, and the memo that lets a re-run make none.

Counts come from litellm's offline tokenizers (tiktoken where a model has none of its own), so the figure
harness prices is the figure litellm would; and each is remembered per machine, keyed by litellm's
version, the model and the text (`TokenMemo`): exact by construction, and a run whose counts are all
known imports no litellm. Two shapes of input, one counter: rendered messages (`count_tokens`, many at
once with `count_prompts`) and plain text (`count_text_tokens`, a prompt's shared prefix).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from harness.offline import import_litellm

Messages = list[dict[str, str]]


def token_memo_path() -> Path | None:
    """Where counted texts are remembered: `HARNESS_TOKEN_MEMO` (`off` for nowhere), else the user's
    cache folder."""
    chosen = os.environ.get("HARNESS_TOKEN_MEMO", "").strip()
    if chosen.lower() == "off":
        return None
    if chosen:
        return Path(chosen)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "harness" / "token-counts.sqlite"


class TokenMemo:
    """litellm's token counts, remembered per machine: a count is a pure function of litellm's version, the
    model and the text, so it is computed once and then read (one batched lookup per run)."""

    def __init__(self, version: str) -> None:
        self.version = version
        self._db: sqlite3.Connection | None = None
        self._known: dict[str, int] = {}
        self._new: dict[str, int] = {}
        path = token_memo_path()
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), timeout=30, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS counts (key TEXT PRIMARY KEY, tokens INTEGER NOT NULL)")
        except (OSError, sqlite3.Error):
            self._db = None  # a memo that cannot be kept only costs time

    def key(self, model: str, what: str, payload: Any) -> str:
        text = json.dumps([self.version, model, what, payload], sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def load(self, keys: list[str]) -> None:
        """Read the counts among `keys` that are remembered, in one pass."""
        if self._db is None:
            return
        wanted = [k for k in dict.fromkeys(keys) if k not in self._known]
        try:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(f"SELECT key, tokens FROM counts WHERE key IN ({marks})", chunk)
                self._known.update({k: int(n) for k, n in rows})
        except sqlite3.Error:
            return

    def get(self, key: str) -> int | None:
        if key not in self._known and self._db is not None:
            self.load([key])
        return self._known.get(key)

    def put(self, key: str, tokens: int) -> None:
        self._known[key] = tokens
        self._new[key] = tokens

    def save(self) -> None:
        """Write the counts made since the last save, in one transaction."""
        if self._db is None or not self._new:
            return
        pending, self._new = self._new, {}
        try:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO counts VALUES (?, ?)", list(pending.items()))
            self._db.execute("COMMIT")
        except sqlite3.Error:
            return


@functools.cache
def token_memo() -> TokenMemo:
    """The process's memo, for the installed litellm."""
    from importlib.metadata import version

    return TokenMemo(version("litellm"))


def truncate_tokens(text: str, max_tokens: int) -> str:
    """Jinja filter `{{ document | truncate_tokens(2000) }}`: the first tokens of a text (tiktoken o200k).

    The way a config asks for long items to be cut to fit a context window, or tests a shorter prompt.
    """

    litellm = import_litellm()
    tokens = litellm.encode(model="gpt-4o-mini", text=str(text))
    if len(tokens) <= max_tokens:
        return str(text)
    return str(litellm.decode(model="gpt-4o-mini", tokens=list(tokens)[:max_tokens]))


def count_text_tokens(model: str, text: str) -> int:
    """Tokens in a piece of text by the model's offline tokenizer (remembered: see `count_prompts`)."""

    memo = token_memo()
    key = memo.key(model, "text", text)
    known = memo.get(key)
    if known is None:
        known = _token_counter(model, text=text)
        memo.put(key, known)
        memo.save()
    return known


def count_prompts(prompts: list[tuple[str, Messages]]) -> list[int]:
    """Prompt tokens of many (model, messages) by litellm's counter, each counted once per machine: the
    counts are remembered (`harness.model_map.TokenMemo`), so a re-run reads them and imports no litellm."""

    memo = token_memo()
    keys = [memo.key(model, "messages", messages) for model, messages in prompts]
    memo.load(keys)
    counts = []
    for key, (model, messages) in zip(keys, prompts, strict=True):
        known = memo.get(key)
        if known is None:
            known = count_tokens(model, messages)
            memo.put(key, known)
        counts.append(known)
    memo.save()
    return counts


def count_tokens(model: str, messages: Messages) -> int:
    """Prompt tokens by litellm's offline tokenizers (tiktoken where the model has no tokenizer of its own)."""
    return _token_counter(model, messages=messages)


def _token_counter(model: str, **what: Any) -> int:

    litellm = import_litellm()
    try:
        return int(litellm.token_counter(model=model, **what))
    except Exception:
        return int(litellm.token_counter(model="gpt-4o-mini", **what))
