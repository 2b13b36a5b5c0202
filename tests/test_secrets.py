"""Scrubbing reads the environment once per change: a key exported or changed after the first scrub, or
remembered later, is still masked from then on (the answer is cached, never stale)."""

from __future__ import annotations

import pytest

from harness.secrets import MASK, remember, scrub, secret_values


def test_a_key_exported_after_the_first_scrub_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert scrub("plain text") == "plain text"  # fills the cache
    monkeypatch.setenv("UNUSUAL_LLM_TOKEN", "tok-exported-later-123")
    assert scrub("said tok-exported-later-123") == f"said {MASK}"
    monkeypatch.setenv("UNUSUAL_LLM_TOKEN", "tok-changed-value-456")
    assert scrub("tok-changed-value-456 and tok-exported-later-123") == f"{MASK} and tok-exported-later-123"
    monkeypatch.delenv("UNUSUAL_LLM_TOKEN")
    assert "tok-changed-value-456" not in secret_values()


def test_a_value_remembered_after_the_first_scrub_is_masked() -> None:
    assert scrub("nothing here") == "nothing here"
    remember(["remembered-secret-789"])
    assert scrub("x remembered-secret-789 y") == f"x {MASK} y"


def test_the_list_handed_out_cannot_change_the_cache() -> None:
    first = secret_values()
    first.append("not-a-secret-at-all")
    assert "not-a-secret-at-all" not in secret_values()
