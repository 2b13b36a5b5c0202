"""The scorer registry and protocol: one decorator, one lookup, one way to build a scorer from config.

Scorers are registered on a factory that takes the scorer's options and returns the scoring function,
so the name and options are recorded and the scorer can be rebuilt from a stored run (Inspect AI's
pattern). A factory returns either a score function or `ScorerParts` when it also aggregates across
items (macro-F1 cannot be computed item by item).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol

from harness.config import ConfigError, ScorerConfig
from harness.datasets import Item

Kind = Literal["binary", "continuous"]


class Scored(NamedTuple):
    """A score with what it cost to compute: scorers that call models (judges) return this."""

    value: float | None
    """None when the scorer could not decide (an unparseable verdict): recorded, never read as 0."""
    cost_usd: float = 0.0
    """Dollars the scorer spent, accounted apart from the variant's own cost."""
    detail: str = ""


class ScoreFn(Protocol):
    """Grades one output against its item: 0..1, higher is better (or `Scored` when it costs money)."""

    def __call__(self, output: str, item: Item) -> float | Scored: ...


class AggregateFn(Protocol):
    """Metrics over all scored items of a variant (beyond the mean), such as macro-F1."""

    def __call__(self, outputs: list[str], items: list[Item]) -> dict[str, float]: ...


class ScorerParts(NamedTuple):
    """What a factory returns when it has an aggregate as well as a per-item score."""

    score: ScoreFn
    aggregate: AggregateFn


@dataclass(frozen=True)
class Scorer:
    """A configured scorer, ready to grade records."""

    name: str
    score: ScoreFn
    kind: Kind = "continuous"
    """`binary` scores are pass/fail (0 or 1); the analysis picks its tests by kind."""
    options: dict[str, Any] = field(default_factory=dict)
    aggregate: AggregateFn | None = None


@dataclass(frozen=True)
class _Entry:
    factory: Callable[..., ScoreFn | ScorerParts]
    kind: Kind


REGISTRY: dict[str, _Entry] = {}


def scorer(name: str, kind: Kind = "continuous") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a scorer factory under `name`."""

    def register(factory: Callable[..., Any]) -> Callable[..., Any]:
        REGISTRY[name] = _Entry(factory=factory, kind=kind)
        return factory

    return register


def build_scorer(cfg: ScorerConfig, config_file: str, field_path: str, label: str | None = None) -> Scorer:
    """A Scorer from config: a registered name, or `module:function` for a user's own factory.

    `label` names the scorer's column and metrics (the experiment makes repeated names unique).
    """
    label = label or cfg.label or cfg.name
    entry = _lookup(cfg.name, config_file, field_path)
    try:
        inspect.signature(entry.factory).bind(**cfg.options)
    except TypeError:
        allowed = [p for p in inspect.signature(entry.factory).parameters]
        raise ConfigError(
            config_file,
            f"{field_path}.options",
            f"scorer '{cfg.name}' does not take options {sorted(cfg.options)}",
            f"allowed options: {', '.join(allowed) or 'none'}",
        ) from None
    try:
        built = entry.factory(**cfg.options)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            config_file, f"{field_path}.options", f"scorer '{cfg.name}': {exc}", "fix the option's value"
        ) from None
    if isinstance(built, ScorerParts):
        return Scorer(label, built.score, entry.kind, dict(cfg.options), built.aggregate)
    return Scorer(label, built, entry.kind, dict(cfg.options))


def _lookup(name: str, config_file: str, field_path: str) -> _Entry:
    if name in REGISTRY:
        return REGISTRY[name]
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(
                config_file,
                field_path,
                f"cannot import scorer '{name}' ({exc})",
                "give module:function for a module on the Python path",
            ) from None
        return _Entry(factory=factory, kind=getattr(factory, "kind", "continuous"))
    import difflib

    close = difflib.get_close_matches(name, REGISTRY, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise ConfigError(
        config_file,
        field_path,
        f"unknown scorer '{name}'",
        f"{hint}built-in scorers: {', '.join(sorted(REGISTRY))}; or module:function",
    )
