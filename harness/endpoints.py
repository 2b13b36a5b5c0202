"""Where a model is served: harness's own offline models, a server on this machine, or a provider.

Pricing, credentials and the pool each ask it: an in-process model needs no key and bills nothing, a
loopback server (self-hosted, or a test's) needs no key either, and neither is held to a provider's
usage limits. One answer for all of them, so a model never counts as local in one place and remote in
another.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlparse

LOCAL_PROVIDER = "local"
"""The litellm provider prefix of harness's in-process models (`local/smollm2`, `local/lead-3`)."""


def is_local_model(model: str) -> bool:
    """True for harness's in-process offline models."""
    return model.split("/", 1)[0] == LOCAL_PROVIDER


def is_loopback(api_base: str | None) -> bool:
    """True when the model is served from this machine (a self-hosted server, a test server)."""
    if not api_base:
        return False
    host = urlparse(api_base).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
