"""The scorer registry and protocol: one decorator, one lookup, one way to build a scorer from config.

Scorers are registered on a factory that takes the scorer's options and returns the scoring function,
so the name and options are recorded and the scorer can be rebuilt from a stored run (Inspect AI's
pattern). A factory returns either a score function or `ScorerParts` when it also aggregates across
items (macro-F1 cannot be computed item by item).
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

from harness.config import ConfigError, ScorerConfig, inside_project
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

    label: str
    """The column and metric its scores go under (`ScorerConfig.label`, else the registry name made
    unique); the registry name itself is `ScorerConfig.name`."""
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
    root = root or Path(config_file).resolve().parent
    entry = _lookup(cfg.name, config_file, field_path, root)
    parameters = inspect.signature(entry.factory).parameters
    options = dict(cfg.options)
    if "root" in parameters and "root" not in options:
        options["root"] = root
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
    if not isinstance(built, ScorerParts) and not callable(built):
        raise ConfigError(
            config_file,
            field_path,
            f"scorer '{cfg.name}' returned {type(built).__name__}, not a score function",
            "a scorer factory returns score(output, item) -> float, or ScorerParts",
        )
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


def _lookup(name: str, config_file: str, field_path: str, root: Path) -> _Entry:
    if name in REGISTRY:
        return REGISTRY[name]
    if ":" in name:
        factory = project_factory(name, root, config_file, field_path)
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
        f"{hint}built-in scorers: {', '.join(sorted(REGISTRY))}; or path/to/file.py:function in the project",
    )


def project_factory(name: str, root: Path, config_file: str, field_path: str) -> Callable[..., Any]:
    """A user's scorer factory, `path/to/file.py:function` or `package.module:function`, from a file
    inside the project only.

    The trust model (docs/reliability.md): a config is data, and a pull request that edits one must not
    run code. So the name is looked up as a file under the project root (`a.b` is `a/b.py` or
    `a/b/__init__.py`), never imported by name: `os:system` or `builtins:print` name nothing in the
    project and are refused before anything runs. The function must be defined in that file, not imported
    into it from elsewhere.
    """
    where, _, attr = name.rpartition(":")
    fix = (
        "a custom scorer is path/to/file.py:function (or a.b:function for a/b.py) inside the project; "
        "the standard library and installed packages are never run from a config"
    )
    if where.endswith(".py"):
        relative = Path(where)
    elif where and all(part.isidentifier() for part in where.split(".")):
        stem = Path(*where.split("."))
        relative = stem.with_suffix(".py") if not (root / stem / "__init__.py").is_file() else stem / "__init__.py"
    else:
        raise ConfigError(config_file, field_path, f"'{name}' is neither file.py:function nor module:function", fix)
    if not attr.isidentifier():
        raise ConfigError(config_file, field_path, f"'{attr}' in '{name}' is not a function name", fix)
    path = inside_project(relative, root, config_file, field_path)
    if not path.is_file():
        raise ConfigError(config_file, field_path, f"scorer '{name}': no file {relative} in the project {root}", fix)
    try:
        module = _load_file(path)
    except Exception as exc:  # the user's file failed to import: their code, reported as their config's fault
        problem = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ConfigError(
            config_file, field_path, f"cannot load {relative}: {type(exc).__name__}: {problem}", "fix the file"
        ) from None
    factory = getattr(module, attr, None)
    if not (inspect.isfunction(factory) or inspect.isclass(factory)) or factory.__module__ != module.__name__:
        raise ConfigError(
            config_file, field_path, f"{relative} defines no function '{attr}'", f"define {attr}(...) in {relative}"
        )
    return factory


def _load_file(path: Path) -> Any:
    """The module in `path`, loaded once per process under a name of its own (never shadowing a real one)."""
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    module_name = f"harness_project_scorer_{path.stem}_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module
