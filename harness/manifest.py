"""The stored-run contract: what a run writes beside its records so later commands can trust them.

`report`, `route`, `reprice` and `gate --against` work from a stored run without a model call. They
rebuild scorers (and so aggregates such as macro-F1) from the scorer specs, as Inspect rebuilds scorers
from `ScorerSpec`, and they refuse records that do not match the eval they are compared with: the
dataset fingerprint and the prompt hashes say whether two runs asked the same questions.
One manifest model, written by `RunManifest.of` and read by `RunManifest.read`; nothing else parses it.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from harness.config import AnalysisConfig, DecisionConfig, GateConfig, RoutingConfig, ScorerConfig, TrafficConfig
from harness.logs import LogFacts
from harness.model_map import map_provenance
from harness.pricing import litellm_version
from harness.secrets import redact_tree
from harness.summary import VariantInfo

MANIFEST_ARTIFACT = "harness_run.json"
ITEMS_ARTIFACT = "items.jsonl"
SCHEMA_VERSION = 2


class ScorerSpec(BaseModel):
    """A scorer as configured: enough to rebuild it (`build_scorer`) and to analyse its scores."""

    model_config = ConfigDict(frozen=True)

    name: str
    """The registry name or `module:function`."""
    label: str
    """The column and metric name its scores are stored under."""
    kind: str = "continuous"
    """`binary` (pass/fail) or `continuous`: the analysis picks its intervals and tests by it."""
    options: dict[str, Any] = Field(default_factory=dict)

    def config(self) -> ScorerConfig:
        """The scorer's config entry, to rebuild it."""
        return ScorerConfig(name=self.name, options=self.options, label=self.label)


class VariantSpec(BaseModel):
    """A variant of the run, ran or skipped."""

    model_config = ConfigDict(frozen=True)

    name: str
    model: str
    prompt: str
    skipped: str | None = None
    template_hash: str = ""
    """SHA-256 (16 hex) of the prompt's template text."""
    shared_prefix_tokens: int | None = None
    """Tokens every rendered prompt of the variant starts with (the prompt-caching lever reads it)."""
    price: dict[str, Any] | None = None
    """The price the variant was billed at (`ModelPrice.stored()`); older runs keep prices by model only."""

    def info(self) -> VariantInfo:
        """What a summary needs about the variant."""
        return VariantInfo(self.name, self.model, self.prompt, self.skipped)


class RunStatus(BaseModel):
    """What the invocation did with the cache and the budget (the lines `run` prints)."""

    calls_made: int = 0
    cache_hits: int = 0
    calls_not_run: int = 0
    spent_usd: float = 0.0
    eval_cost_usd: float = 0.0
    budget_exhausted: bool = False
    estimated_usd: float | None = None
    """What the estimate before the run expected it to spend (cached calls free), beside `spent_usd`:
    `watch` and `savings` show the estimate's error over past runs."""
    estimated_max_usd: float | None = None
    sequential: str = ""
    """How a sequential gate ended (`SequentialOutcome.summary`); empty for a fixed design."""

    def notes(self) -> list[str]:
        """The run's cache and budget notes, as `run` printed them."""
        out = [
            f"{self.calls_made} calls made, {self.cache_hits} served from the response cache, "
            f"${self.spent_usd:.4f} spent"
        ]
        if self.eval_cost_usd:
            out.append(f"scoring cost ${self.eval_cost_usd:.4f} (judge and embedding calls)")
        if self.budget_exhausted:
            out.append(f"the budget ran out: {self.calls_not_run} calls were not started")
        if self.sequential:
            out.append(self.sequential)
        return out


class RunManifest(BaseModel):
    """Everything besides the records that the analysis of a stored run depends on."""

    schema_version: int = SCHEMA_VERSION
    experiment: str
    description: str = ""
    baseline: str | None = None
    scorers: list[ScorerSpec] = Field(default_factory=list)
    gate: GateConfig = Field(default_factory=GateConfig)
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    dataset: str = ""
    """Where the items came from (a path or a Hub id)."""
    dataset_fingerprint: str = ""
    variants: list[VariantSpec] = Field(default_factory=list)
    prompt_hashes: dict[str, str] = Field(default_factory=dict)
    """Prompt variant name to its template hash."""
    prices: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Model string to the price fields it was billed at, `source` included."""
    traffic: TrafficConfig | None = None
    log: LogFacts | None = None
    """The production log the items were sampled from (their weights are in the items artifact)."""
    decision: DecisionConfig = Field(default_factory=DecisionConfig)
    routing: RoutingConfig | None = None
    epochs: int = 1
    project_root: str = ""
    """The folder scorer options (a judge's rubric) are relative to."""
    harness_version: str = ""
    litellm_version: str = ""
    price_map: dict[str, str] = Field(default_factory=dict)
    """The price map the run was priced with: `source` (`bundled`, or the file given) and its `sha256`."""
    status: RunStatus = Field(default_factory=RunStatus)

    @model_validator(mode="before")
    @classmethod
    def _from_version_1(cls, data: Any) -> Any:
        """Manifests written before the scorer specs listed only metric names and kinds."""
        if isinstance(data, dict) and "metrics" in data and "scorers" not in data:
            data = dict(data)
            data["scorers"] = [{"name": m["name"], "label": m["name"], "kind": m["kind"]} for m in data.pop("metrics")]
        return data

    @property
    def metrics(self) -> list[tuple[str, str]]:
        """(label, kind) of every scorer."""
        return [(s.label, s.kind) for s in self.scorers]

    @classmethod
    def read(cls, text: str) -> RunManifest:
        """Parse a stored manifest."""
        return cls.model_validate(json.loads(text))

    @classmethod
    def of(cls, plan: Any, status: RunStatus | None = None) -> RunManifest:
        """The manifest of a planned run (`plan` is a `harness.plan.Plan`)."""
        from importlib.metadata import version

        experiment = plan.experiment
        labels = experiment.scorer_labels()
        configs = dict(zip(labels, experiment.scorers, strict=True))
        return cls(
            experiment=experiment.name,
            description=experiment.description,
            baseline=plan.baseline,
            scorers=[
                ScorerSpec(
                    name=configs[s.label].name,
                    label=s.label,
                    kind=s.kind,
                    options=redact_tree(configs[s.label].options)[0],
                )
                for s in plan.scorers
            ],
            gate=experiment.gate,
            analysis=experiment.analysis,
            dataset=plan.eval_set.source,
            dataset_fingerprint=plan.eval_set.fingerprint,
            variants=[
                VariantSpec(
                    name=v.name,
                    model=v.model.model,
                    prompt=v.prompt.name,
                    skipped=v.skipped,
                    template_hash=v.prompt.template_hash,
                    shared_prefix_tokens=plan.shared_prefix_tokens(v),
                    price=v.price.stored(),
                )
                for v in plan.variants
            ],
            prompt_hashes={v.prompt.name: v.prompt.template_hash for v in plan.variants},
            prices={v.model.model: v.price.stored() for v in plan.variants},
            traffic=experiment.traffic,
            log=plan.eval_set.log,
            decision=experiment.decision,
            routing=experiment.routing,
            epochs=experiment.epochs,
            project_root=str(experiment.root.resolve()),
            harness_version=version("harness"),
            litellm_version=litellm_version(),
            price_map=map_provenance(),
            status=status or RunStatus(),
        )
