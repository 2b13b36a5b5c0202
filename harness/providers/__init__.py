"""Calling models through litellm: one code path for cloud, self-hosted and local offline models."""

from harness.providers.call import CallResult, call_model
from harness.providers.credentials import missing_credentials

__all__ = ["CallResult", "call_model", "missing_credentials"]
