"""Scorer factories a bad config names: one imported from the standard library, one returning nothing."""

from os import system  # noqa: F401  (a config must not reach it through this file)


def returns_nothing() -> None:
    """A factory that builds no score function."""
