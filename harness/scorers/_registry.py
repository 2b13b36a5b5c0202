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
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

from harness.config import ConfigError, ScorerConfig
from harness.datasets import Item

if TYPE_CHECKING:
    from harness.pool import ModelPool

Kind = Literal["binary", "continuous"]


class Scored(NamedTuple):
    """A score with what it cost to compute: scorers that call models (judges) return this."""

    value: float | None
    """None when the scorer could not decide (an unparseable verdict): recorded, never read as 0."""
    cost_usd: float = 0.0
    """Dollars the scorer spent, accounted apart from the variant's own cost."""
    detail: str = ""
    rationale: str = ""
    """Why the scorer gave this value (a judge's reply), shown beside the score in MLflow's trace view."""


class ScoreFn(Protocol):
    """Grades one output against its item: 0..1, higher is better (or `Scored` when it costs money)."""

    def __call__(self, output: str, item: Item) -> float | Scored: ...


class AggregateFn(Protocol):
    """Metrics over all scored items of a variant (beyond the mean), such as macro-F1."""

    def __call__(self, outputs: list[str], items: list[Item]) -> dict[str, float]: ...


class BatchScoreFn(Protocol):
    """Grades many outputs at once: scorers that call a model (judges, embedders) ask the run's model
    pool, which runs the calls concurrently, serves and fills the cache, prices them and holds them to
    the budget; each `Scored` carries the cost. `advance` ticks a progress bar once per output. `pool`
    is None outside a run (the scorer then gets a private pool)."""

    def __call__(
        self, pairs: list[tuple[str, Item]], pool: ModelPool | None, advance: Callable[[], None]
    ) -> list[Scored]: ...


class WorstCaseFn(Protocol):
    """The most a scorer's model calls can cost, before any output exists: `output_limits` holds, for each
    output an item will get (one per variant and sample), the most tokens it can have. Returns (calls,
    dollars); `pool` prices a call's worst case as it prices a candidate's."""

    def __call__(self, items: list[Item], output_limits: list[int], pool: ModelPool) -> tuple[int, float]: ...


class CheckFn(Protocol):
    """Raises ConfigError for a problem found from the items alone, before any model is called."""

    def __call__(self, items: list[Item]) -> None: ...


class ScorerParts(NamedTuple):
    """What a factory returns when it has more than a per-item score function."""

    score: ScoreFn
    aggregate: AggregateFn | None = None
    batch: BatchScoreFn | None = None
    """Preferred over `score` when scoring a run: many outputs, concurrent calls, cached."""
    kind: Kind | None = None
    """Overrides the registered kind (a judge is binary with a pass/fail rubric, continuous with a scale)."""
    check: CheckFn | None = None
    worst_case: WorstCaseFn | None = None
    """For scorers that call models: their worst-case spend, shown in the estimate and the spend question."""


@dataclass(frozen=True)
class Scorer:
    """A configured scorer, ready to grade records."""

    name: str
    score: ScoreFn
    kind: Kind = "continuous"
    """`binary` scores are pass/fail (0 or 1); the analysis picks its tests by kind."""
    options: dict[str, Any] = field(default_factory=dict)
    aggregate: AggregateFn | None = None
    batch: BatchScoreFn | None = None
    check: CheckFn | None = None
    needs_reference: bool = False
    """Scores against the item's reference: preflight refuses items without one."""
    worst_case: WorstCaseFn | None = None


@dataclass(frozen=True)
class _Entry:
    factory: Callable[..., ScoreFn | ScorerParts]
    kind: Kind
    needs_reference: bool = False


REGISTRY: dict[str, _Entry] = {}


def scorer(
    name: str, kind: Kind = "continuous", needs_reference: bool = False
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a scorer factory under `name`. `needs_reference`: every item must have a reference (or
    references), checked before any paid call."""

    def register(factory: Callable[..., Any]) -> Callable[..., Any]:
        REGISTRY[name] = _Entry(factory=factory, kind=kind, needs_reference=needs_reference)
        # The kind travels with the function, so `module:function` finds it without the registry.
        factory.kind = kind  # type: ignore[attr-defined]
        factory.needs_reference = needs_reference  # type: ignore[attr-defined]
        return factory

    return register


def build_scorer(
    cfg: ScorerConfig, config_file: str, field_path: str, label: str | None = None, root: Path | None = None
) -> Scorer:
    """A Scorer from config: a registered name, or `module:function` for a user's own factory.

    `label` names the scorer's column and metrics (the experiment makes repeated names unique). A factory
    with a `root` parameter receives the project root, which its file options are relative to.
    """
    label = label or cfg.label or cfg.name
    entry = _lookup(cfg.name, config_file, field_path)
    parameters = inspect.signature(entry.factory).parameters
    options = dict(cfg.options)
    if "root" in parameters and "root" not in options:
        options["root"] = root or Path(config_file).resolve().parent
    try:
        inspect.signature(entry.factory).bind(**options)
    except TypeError:
        allowed = [p for p in parameters if p != "root"]
        raise ConfigError(
            config_file,
            f"{field_path}.options",
            f"scorer '{cfg.name}' does not take options {sorted(cfg.options)}",
            f"allowed options: {', '.join(allowed) or 'none'}",
        ) from None
    try:
        built = entry.factory(**options)
    except Exception as exc:  # a bad regex, an option of the wrong type: the config's fault, found before a call
        problem = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ConfigError(
            config_file, f"{field_path}.options", f"scorer '{cfg.name}': {problem}", "fix the option's value"
        ) from None
    needs = entry.needs_reference
    if isinstance(built, ScorerParts):
        kind = built.kind or entry.kind
        return Scorer(
            label,
            built.score,
            kind,
            dict(cfg.options),
            built.aggregate,
            built.batch,
            built.check,
            needs,
            built.worst_case,
        )
    return Scorer(label, built, entry.kind, dict(cfg.options), needs_reference=needs)


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
        return _Entry(
            factory=factory,
            kind=getattr(factory, "kind", "continuous"),
            needs_reference=getattr(factory, "needs_reference", False),
        )
    import difflib

    close = difflib.get_close_matches(name, REGISTRY, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise ConfigError(
        config_file,
        field_path,
        f"unknown scorer '{name}'",
        f"{hint}built-in scorers: {', '.join(sorted(REGISTRY))}; or module:function",
    )
