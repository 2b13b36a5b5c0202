"""Recognising secrets by name, so API keys never reach MLflow, caches, reports or logs."""

from __future__ import annotations

import re
from typing import Any

_SECRET_NAME = re.compile(
    r"api_?key|secret|password|authorization|bearer|access_token|auth_token|^token$|_token$", re.IGNORECASE
)


def is_secret_name(name: str) -> bool:
    """True for parameter names that carry credentials (`api_key`, `Authorization`, ...)."""
    return _SECRET_NAME.search(name) is not None


def redact(params: dict[str, Any]) -> dict[str, Any]:
    """A copy with every secret-named value masked."""
    return {k: ("***" if is_secret_name(str(k)) else v) for k, v in params.items()}


def redact_tree(value: Any) -> tuple[Any, bool]:
    """A nested YAML/JSON tree with secret-named values masked, and whether anything was masked."""
    if isinstance(value, dict):
        out, masked = {}, False
        for key, inner in value.items():
            if is_secret_name(str(key)):
                out[key], masked = "***", True
            else:
                out[key], inner_masked = redact_tree(inner)
                masked = masked or inner_masked
        return out, masked
    if isinstance(value, list):
        pairs = [redact_tree(v) for v in value]
        return [p[0] for p in pairs], any(p[1] for p in pairs)
    return value, False


def secret_values() -> list[str]:
    """Values of secret-named environment variables (API keys), longest first, for scrubbing text."""
    import os

    values = {v for k, v in os.environ.items() if is_secret_name(k) and len(v) >= 8}
    return sorted(values, key=len, reverse=True)


def scrub(text: str) -> str:
    """Text with every API key from the environment masked (error messages can echo a key back)."""
    for value in secret_values():
        if value in text:
            text = text.replace(value, "***")
    return text
