"""What litellm knows about a model, answered without importing litellm (seconds of CPU) where it can be.

A re-run served from the cache calls no model, so it should not pay for litellm's import. The facts a
run needs before calling are read here from the same sources litellm reads:
- prices, context windows and providers from litellm's bundled price map, the JSON file inside the
  installed litellm package (the one `LITELLM_LOCAL_MODEL_COST_MAP=True` makes litellm use);
- which environment variables a provider's key lives in, for the providers litellm names in
  `validate_environment`;
- token counts from a per-machine memo of litellm's own counts (`harness.tokens`).

Every answer this module cannot give is None, and the caller asks litellm itself. A price read here
carries every rate of the model's map entry, which can be one more than litellm's `get_model_info` passes
on (it drops fields its `ModelInfo` does not declare, e.g. a flex rate for long cached input). `tests/test_model_map.py`
checks that the answers agree with litellm's for every model of every shipped experiment.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from importlib import util
from pathlib import Path
from typing import Any

PROVIDER_KEYS: dict[str, tuple[str, ...]] = {
    "openai": ("OPENAI_API_KEY",),
    "anthropic": ("ANTHROPIC_API_KEY",),
    "gemini": ("GOOGLE_API_KEY", "GEMINI_API_KEY"),
    "mistral": ("MISTRAL_API_KEY",),
    "groq": ("GROQ_API_KEY",),
    "deepseek": ("DEEPSEEK_API_KEY",),
    "openrouter": ("OPENROUTER_API_KEY",),
    "together_ai": ("TOGETHERAI_API_KEY",),
    "xai": ("XAI_API_KEY",),
    "cohere": ("COHERE_API_KEY",),
}
"""Provider -> the variables litellm's `validate_environment` accepts its key from (any one suffices)."""


MAP_ENV = "HARNESS_PRICE_MAP"
"""A price map file in litellm's format to price with instead of the bundled one (`watch --map FILE`:
a newer map than the installed litellm's, to see what it would change before upgrading)."""


def map_path() -> Path | None:
    """The price map file in use: `HARNESS_PRICE_MAP`, else the one inside the installed litellm."""
    if os.environ.get(MAP_ENV):
        return Path(os.environ[MAP_ENV])
    return bundled_path()


def bundled_path() -> Path | None:
    """The price map inside the installed litellm (what `LITELLM_LOCAL_MODEL_COST_MAP=True` reads)."""
    spec = util.find_spec("litellm")  # finds the package without importing it
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "model_prices_and_context_window_backup.json"


@functools.cache
def bundled_map() -> dict[str, dict[str, Any]]:
    """The price map in use (`map_path`), as litellm's format has it; {} when it cannot be found."""
    path = map_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path is not None else {}
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict) and k != "sample_spec"}


@functools.cache
def map_provenance() -> dict[str, str]:
    """Which map priced a run, recorded with it: the file (`bundled` for litellm's own) and its SHA-256,
    so `watch` can say which prices moved since."""

    path = map_path()
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path is not None and path.is_file() else ""
    return {"source": "bundled" if not os.environ.get(MAP_ENV) else str(path), "sha256": digest}


def use_map(path: Path | None) -> None:
    """Price with the map at `path` from now on (None: the bundled one again)."""
    if path is None:
        os.environ.pop(MAP_ENV, None)
    else:
        os.environ[MAP_ENV] = str(path.resolve())
    for cached in (bundled_map, map_provenance, providers):
        cached.cache_clear()


@functools.cache
def providers() -> frozenset[str]:
    """Every provider the map names."""
    return frozenset(str(v.get("litellm_provider")) for v in bundled_map().values() if v.get("litellm_provider"))


def map_entry(model: str) -> tuple[str, dict[str, Any]] | None:
    """The map key and entry litellm's `get_model_info` finds for `model`, for the two spellings it
    resolves without guessing: the key itself (`gpt-4o-mini`, `gemini/gemini-2.5-flash`) and
    `provider/name` where `name` is that provider's key (`openai/gpt-4o-mini`). None otherwise."""
    table = bundled_map()
    if model in table:
        return model, table[model]
    provider, _, name = model.partition("/")
    if name and name in table and table[name].get("litellm_provider") == provider:
        return name, table[name]
    return None


def provider_of(model: str) -> str | None:
    """The provider litellm routes `model` to, when the map tells it plainly; else None."""
    found = map_entry(model)
    if found is not None:
        return str(found[1].get("litellm_provider") or "") or None
    prefix, _, name = model.partition("/")
    return prefix if name and prefix in providers() else None


def missing_keys(model: str) -> list[str] | None:
    """The key variables `model` needs and lacks (all of a provider's names when none is set, as
    `validate_environment` reports them); None for a provider not in `PROVIDER_KEYS`."""
    provider = provider_of(model)
    names = PROVIDER_KEYS.get(provider or "")
    if names is None:
        return None
    return [] if any(os.environ.get(n) for n in names) else list(names)
