"""Calling models through litellm: one code path for cloud, self-hosted and local offline models."""

from harness.providers.credentials import missing_credentials

__all__ = ["missing_credentials"]
