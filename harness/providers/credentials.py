"""Which models lack an API key, found before anything runs.

A missing key discovered mid-run would leave a half-filled comparison; found up front, the model is
skipped loudly (or the run refused with --strict).
"""

from __future__ import annotations

import os

from harness.config import ModelConfig
from harness.endpoints import is_local_model, is_loopback
from harness.model_map import missing_keys
from harness.offline import import_litellm


def missing_credentials(cfg: ModelConfig) -> list[str]:
    """Names of the environment variables the model needs but that are unset (never their values)."""
    if cfg.api_key_env:  # named on purpose, so needed even by a server on this machine
        return [] if os.environ.get(cfg.api_key_env) else [cfg.api_key_env]
    if is_local_model(cfg.model) or is_loopback(cfg.api_base):
        return []
    if cfg.api_base is None:
        known = missing_keys(cfg.model)  # the common providers, without importing litellm
        if known is not None:
            return known

    litellm = import_litellm()
    try:
        report = litellm.validate_environment(model=cfg.model, api_base=cfg.api_base)
    except Exception:
        return []
    return list(report.get("missing_keys") or [])
