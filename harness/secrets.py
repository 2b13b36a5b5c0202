"""Secrets never reach records, the cache, MLflow, reports or the terminal.

A secret is known three ways: by the name it is stored under (`api_key`, `X-Api-Key`, `Authorization`,
`Cookie`, any depth of a tree; `-` and `_` alike, any case), and every `extra_headers` value unless its
header is on the short list of known non-secret headers (`PUBLIC_HEADERS`), by the environment variable it
comes from (provider keys, and every `api_key_env` a config names,
whatever the variable is called), and by where it sits in a URL (`user:password@`, `?key=...`). Every
value known these ways is remembered for the process, so text from anywhere (a provider's 401 body that
echoes the key, an output, a report) is scrubbed by value as a last line of defence.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_SECRET_NAME = re.compile(
    r"api_?key|secret|password|passwd|authorization|bearer|credential|creds|access_token|auth_token|^token$|(?<!per)_token$"
    r"|^key$|^sig$|signature|cookie|subscription_key|private_key|^x_.*_key$",
    re.IGNORECASE,
)
PUBLIC_HEADERS = frozenset(
    {
        "accept",
        "accept-encoding",
        "accept-language",
        "anthropic-beta",
        "anthropic-version",
        "content-type",
        "http-referer",
        "openai-beta",
        "openai-organization",
        "openai-project",
        "user-agent",
        "x-request-id",
        "x-title",
    }
)
"""The `extra_headers` whose values are kept as written (lower case): every other header's value is masked,
because a header is where providers put keys under names nobody can list in advance."""
MASK = "***"
MIN_SECRET_LENGTH = 6
"""Shorter values are not scrubbed by value: masking every `abc` in every text would mangle it."""
_KNOWN: set[str] = set()


def is_secret_name(name: str) -> bool:
    """True for names that carry credentials (`api_key`, `Authorization`, `LLM_CREDS`, `key`, ...); not for
    `api_key_env`, which names the variable holding a key, not the key."""
    normal = name.lower().replace("-", "_")
    return not normal.endswith("_env") and _SECRET_NAME.search(normal) is not None


def is_header_group(name: str) -> bool:
    """`extra_headers` (or `extra-headers`, `headers`): a mapping whose values are secret by default."""
    return name.lower().replace("-", "_") in ("extra_headers", "headers")


def is_public_header(name: str) -> bool:
    return name.lower().replace("_", "-") in PUBLIC_HEADERS


def remember_tree(tree: Any) -> None:
    """Remember every secret a config tree holds (see `tree_secrets`)."""
    remember(tree_secrets(tree))


def remember(values: Iterable[str]) -> None:
    """Scrub these values from every text this process writes from now on."""
    _KNOWN.update(v for v in values if isinstance(v, str) and len(v) >= MIN_SECRET_LENGTH)


def redact(params: dict[str, Any]) -> dict[str, Any]:
    """A copy with every secret value masked, at any depth (`extra_headers.Authorization` included)."""
    return redact_tree(params)[0]


def redact_url(url: str) -> str:
    """The URL with a password and secret-looking query values masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return scrub(url)
    if not parts.scheme or not parts.netloc:
        return url
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", f":{MASK}@", 1)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(is_secret_name(k) for k, _ in query):
        masked = urlencode([(k, MASK if is_secret_name(k) else v) for k, v in query], safe="*")
        return urlunsplit((parts.scheme, netloc, parts.path, masked, parts.fragment))
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def url_secrets(url: str) -> list[str]:
    """The credentials a URL carries."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found = [parts.password] if parts.password else []
    return found + [v for k, v in parse_qsl(parts.query) if is_secret_name(k)]


def redact_tree(value: Any) -> tuple[Any, bool]:
    """A nested YAML/JSON tree with secrets masked (by name, in URLs, known values), and whether any was."""
    if isinstance(value, dict):
        out, masked = {}, False
        for key, inner in value.items():
            if is_header_group(str(key)) and isinstance(inner, dict):
                out[key] = {h: v if is_public_header(str(h)) or v in (None, "") else MASK for h, v in inner.items()}
                masked = masked or out[key] != inner
            elif is_secret_name(str(key)) and inner not in (None, ""):
                out[key], masked = MASK, True
            else:
                out[key], inner_masked = redact_tree(inner)
                masked = masked or inner_masked
        return out, masked
    if isinstance(value, list | tuple):
        pairs = [redact_tree(v) for v in value]
        return [p[0] for p in pairs], any(p[1] for p in pairs)
    if isinstance(value, str):
        clean = scrub(redact_url(value)) if "://" in value else scrub(value)
        return clean, clean != value
    return value, False


def tree_secrets(value: Any) -> set[str]:
    """Every secret a tree holds: values under secret names, credentials in URLs, and the values of the
    environment variables its `api_key_env` entries name."""
    found: set[str] = set()
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, inner in node.items():
                if key == "api_key_env":
                    if isinstance(inner, str) and os.environ.get(inner):
                        found.add(os.environ[inner])
                elif is_header_group(str(key)) and isinstance(inner, dict):
                    found.update(str(v) for h, v in inner.items() if not is_public_header(str(h)) and v)
                elif is_secret_name(str(key)) and isinstance(inner, str):
                    found.add(inner)
                else:
                    stack.append(inner)
        elif isinstance(node, list | tuple):
            stack.extend(node)
        elif isinstance(node, str) and "://" in node:
            found.update(url_secrets(node))
    return found


def secret_values() -> list[str]:
    """Every secret value known: secret-named environment variables and those remembered, longest first.

    Asked for on every call (an error message is scrubbed before it is kept); the environment's names
    are matched again only when it or the remembered set changed since the last answer."""
    global _LAST
    state = (tuple(os.environ.items()), len(_KNOWN))
    if _LAST is None or _LAST[0] != state:
        values = {v for k, v in state[0] if is_secret_name(k) and len(v) >= MIN_SECRET_LENGTH}
        _LAST = (state, sorted(values | _KNOWN, key=len, reverse=True))
    return list(_LAST[1])


_LAST: tuple[tuple[tuple[tuple[str, str], ...], int], list[str]] | None = None


def scrub(text: str) -> str:
    """Text with every known secret masked (error messages can echo a key back)."""
    return scrubber()(text)


def scrubber() -> Callable[[str], str]:
    """`scrub` with the secrets known now, for many texts in a row: finding them reads the whole
    environment, which would dominate scrubbing thousands of records one by one."""
    values = secret_values()

    def apply(text: str) -> str:
        for value in values:
            if value in text:
                text = text.replace(value, MASK)
        return text

    return apply
