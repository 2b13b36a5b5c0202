"""The experiment schema, YAML loading, and errors that name the file, the field and the fix.

An experiment is checked completely before any model is called: a typo found after an hour of paid
calls is money lost, so unknown keys are errors and every message says what is allowed.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

CALL_PARAMS = (
    "temperature",
    "max_tokens",
    "top_p",
    "seed",
    "stop",
    "frequency_penalty",
    "presence_penalty",
    "reasoning_effort",
    "response_format",
    "n",
    "logprobs",
)
"""Common model-call parameters, recognised so a misplaced one gets a pointed fix."""


MAX_TREE_NODES = 1_000_000
"""The most values a config, constants or price file may expand to: a YAML alias bomb is refused at load."""


class ConfigError(Exception):
    """A mistake in user input, reported as one line: file, field, problem, fix."""

    def __init__(self, file: str | Path, field: str, problem: str, fix: str = "") -> None:
        self.file = str(file)
        self.field = field
        self.problem = problem
        self.fix = fix
        super().__init__(self.line())

    def line(self) -> str:
        """The one-line message the CLI prints."""
        where = f"{self.file}: {self.field}" if self.field else self.file
        fix = f" Fix: {self.fix}" if self.fix else ""
        return f"{where}: {self.problem.rstrip('.')}.{fix}"


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are typos, not silently ignored; NaN and infinities
    are not numbers; `true` is not a number either (YAML would make `concurrency: true` a 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_as_number(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name is not None:
            annotation = cls.model_fields[info.field_name].annotation
            if _takes_number(annotation) and not _takes(annotation, bool):
                raise ValueError("use a number, not true/false")
        return value


def _takes(annotation: Any, kind: type) -> bool:
    return annotation is kind or any(_takes(a, kind) for a in getattr(annotation, "__args__", ()) or ())


def _takes_number(annotation: Any) -> bool:
    return _takes(annotation, int) or _takes(annotation, float)


def check_call_params(params: dict[str, Any]) -> dict[str, Any]:
    """The common call parameters with the types and ranges providers accept; others pass through."""
    for name, low, high, integer in _PARAM_RANGES:
        if name not in params or params[name] is None:
            continue
        value = params[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
            raise ValueError(f"{name} must be {'a whole number' if integer else 'a number'} (got {value!r})")
        if not math.isfinite(value) or not low <= value <= high:
            raise ValueError(f"{name} must be between {low:g} and {high:g} (got {value!r})")
    if params.get("extra_headers") is not None:
        check_headers(params["extra_headers"])
    return params


HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""An HTTP header name (RFC 9110's token)."""


def check_headers(headers: object) -> None:
    """`extra_headers` is a mapping of header names to one-line values; said before any call, not after
    every call's retries, and never quoting a value (a header is where keys live)."""
    if not isinstance(headers, dict):
        raise ValueError(f"extra_headers must be a mapping of header names to values, not {type(headers).__name__}")
    for name, value in headers.items():
        if not isinstance(name, str) or not HEADER_NAME.fullmatch(name):
            raise ValueError(f"extra_headers: {str(name)[:40]!r} is not a header name (letters, digits and -)")
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError(f"extra_headers.{name} must be text, not {type(value).__name__}")
        if any(c in str(value) for c in "\r\n\0"):
            raise ValueError(f"extra_headers.{name} holds a line break or NUL; a header value is one line")


_PARAM_RANGES = (
    ("max_tokens", 1, 10_000_000, True),
    ("max_completion_tokens", 1, 10_000_000, True),
    ("temperature", 0, 2, False),
    ("top_p", 0, 1, False),
    ("n", 1, 128, True),
    ("seed", -(2**63), 2**63 - 1, True),
    ("frequency_penalty", -2, 2, False),
    ("presence_penalty", -2, 2, False),
)


class DatasetFields(StrictModel):
    """Which dataset columns play which role. Every column is also a template variable."""

    id: str | None = None
    """Column with a stable item id; the row number when absent."""
    reference: str | None = None
    """Column with the expected output (a string, or a list of strings for several references)."""
    references: str | None = None
    """Column with a list of acceptable references (best match is scored)."""


LOG_FORMATS = ("openai", "litellm_spend", "mlflow")


class MlflowLogSource(StrictModel):
    """Production traces in an MLflow tracking store (an app instrumented with `mlflow.openai.autolog()`,
    `mlflow.litellm.autolog()` or manual LLM spans)."""

    tracking_uri: str
    experiment: str
    """The experiment's name."""
    filter: str | None = None
    """An MLflow trace filter string, e.g. `tags.feature = 'summarize'`."""


class LogsConfig(StrictModel):
    """Production calls as the eval: each sampled call is an item holding its messages, the production
    answer, usage, model and tags; the production model becomes the baseline variant `production`, never
    called (docs/replay.md)."""

    path: str | None = None
    """A .jsonl (or .json) log file in the project: OpenAI-format lines or litellm spend-log rows."""
    mlflow: MlflowLogSource | None = None
    format: Literal["openai", "litellm_spend", "mlflow"] | None = None
    """How the file is written; read from the first line when not given."""
    since: str | None = None
    """Only calls at or after this time (ISO 8601, e.g. 2026-11-01 or 2026-11-01T00:00:00Z)."""
    until: str | None = None
    """Only calls before this time."""
    segment_by: str | None = None
    """A tag (metadata key, `key:value` request tag, or spend-log column such as end_user) whose values are
    the segments: sampled apart, weighted, projected and recommended for one by one."""
    sample: int = Field(default=200, gt=0, le=100_000)
    """Calls to sample, split across segments in proportion to their calls (at least one each)."""
    seed: int = 0
    redact: bool = False
    """Mask e-mail addresses, phone numbers and key-like strings in the messages before any call."""
    price: Price | None = None
    """The production model's price, when litellm's map does not have it."""

    @field_validator("since", "until", mode="before")
    @classmethod
    def _time_as_text(cls, value: Any) -> Any:
        """YAML reads `2026-11-01` as a date and `2026-11-01T00:00:00Z` as a datetime: both are times here."""
        from datetime import date

        return value.isoformat() if isinstance(value, date) else value

    @model_validator(mode="after")
    def _one_source(self) -> LogsConfig:
        if (self.path is None) == (self.mlflow is None):
            raise ValueError("give exactly one of 'path' (a log file) or 'mlflow' (a tracking store)")
        if self.mlflow is not None and self.format not in (None, "mlflow"):
            raise ValueError("an mlflow source is read as traces: leave 'format' out")
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and parse_time(value) is None:
                raise ValueError(f"{name} must be an ISO 8601 time such as 2026-11-01T00:00:00Z, not {value!r}")
        return self


def parse_time(value: object) -> float | None:
    """Epoch seconds from ISO 8601 text (a date alone is its midnight UTC; no zone means UTC) or a number;
    None when it is neither."""
    from datetime import UTC, datetime

    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


class DatasetConfig(StrictModel):
    """Where the eval items come from. Loaded through the `datasets` library."""

    path: str | None = None
    """A local .jsonl, .json, .csv or .parquet file, relative to the config's project root."""
    hub: str | None = None
    """A Hugging Face Hub dataset id (needs network)."""
    subset: str | None = None
    split: str = "train"
    logs: LogsConfig | None = None
    """Production logs or traces instead of an eval file (docs/replay.md)."""
    fields: DatasetFields = Field(default_factory=DatasetFields)
    limit: int | None = Field(default=None, gt=0)
    shuffle: bool = False
    seed: int = 0

    @model_validator(mode="after")
    def _one_source(self) -> DatasetConfig:
        if sum(source is not None for source in (self.path, self.hub, self.logs)) != 1:
            raise ValueError(
                "give exactly one of 'path' (a local file), 'hub' (a Hub dataset id) or 'logs' (production logs)"
            )
        return self


class PromptConfig(StrictModel):
    """A prompt template file; its name identifies the prompt variant."""

    name: str
    path: str


PRICE_DIMENSIONS = (
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
    "cache_creation_input_token_cost_above_1hr",
    "output_cost_per_reasoning_token",
    "input_cost_per_audio_token",
    "output_cost_per_audio_token",
    "input_cost_per_image_token",
    "output_cost_per_image_token",
)
"""The per-token prices harness bills, in litellm's names; each may carry a context tier and a service tier."""

PRICE_FIELD = re.compile(
    rf"^(?P<base>{'|'.join(PRICE_DIMENSIONS)})"
    r"(?:_above_(?P<n>\d+(?:\.\d+)?)(?P<k>k?)_tokens)?(?P<tier>_flex|_priority|_batches)?$"
)
"""A price field: a dimension, then optionally a context tier (`_above_200k_tokens`), then a service tier."""


class Price(StrictModel):
    """A price override in USD, in litellm's per-token field names.

    Any field litellm's map uses for the dimensions harness bills is accepted (context tiers such as
    `input_cost_per_token_above_200k_tokens`, service tiers such as `output_cost_per_token_flex`,
    `cache_creation_input_token_cost_above_1hr`), so a private price sheet can say everything the map can.
    """

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)

    like: str | None = None
    """Price this model as litellm's map prices another (a self-hosted model costed as a cloud one)."""
    input_cost_per_token: float | None = Field(default=None, ge=0)
    output_cost_per_token: float | None = Field(default=None, ge=0)
    cache_read_input_token_cost: float | None = Field(default=None, ge=0)
    cache_creation_input_token_cost: float | None = Field(default=None, ge=0)
    output_cost_per_reasoning_token: float | None = Field(default=None, ge=0)
    usd_per_hour: float | None = Field(default=None, ge=0)
    """For self-hosted models: compute cost per hour, charged per call by its latency."""

    @model_validator(mode="after")
    def _extra_fields_are_prices(self) -> Price:
        for key, value in (self.model_extra or {}).items():
            if not PRICE_FIELD.match(key):
                known = [*type(self).model_fields, *PRICE_DIMENSIONS]
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ValueError(
                    f"unknown price field '{key}'{hint}: use litellm's names, e.g. input_cost_per_token, "
                    "input_cost_per_token_above_200k_tokens, output_cost_per_token_flex"
                )
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"price field '{key}' must be a number of USD per token, zero or more (got {value!r})")
        return self

    def rates(self) -> dict[str, float]:
        """Every per-token price given, by litellm field name."""
        given = self.model_dump(exclude_none=True, exclude={"like", "usd_per_hour"})
        return {k: float(v) for k, v in given.items()}


class ExecutionConfig(StrictModel):
    """How calls are bought: one at a time (`direct`), or grouped into provider Batch API jobs (`batch`),
    billed at the map's batch prices (about half) with results within the provider's 24-hour window."""

    mode: Literal["direct", "batch"] = "direct"
    poll_s: float = Field(default=30.0, gt=0, le=3600)
    """Seconds between looks at a submitted batch's status."""
    max_requests: int = Field(default=50_000, gt=0, le=50_000)
    """Requests per batch at most (OpenAI's limit is 50,000); more calls are split into several batches."""
    max_bytes: int = Field(default=200_000_000, gt=0, le=200_000_000)
    """Bytes of input file per batch at most (OpenAI's limit is 200 MB)."""
    max_wait_h: float = Field(default=24.0, gt=0, le=72)
    """Hours to wait for a batch before reporting it still pending (the run can be resumed later)."""


class ModelConfig(StrictModel):
    """A candidate model: any litellm model string plus optional settings."""

    model: str
    name: str | None = None
    """Display name used in tables and variant names (defaults to the model string)."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Per-model call parameters, overriding the shared `params`."""
    api_base: str | None = None
    api_key_env: str | None = None
    """Environment variable holding the API key, when not the provider's usual one."""
    price: Price | None = None
    concurrency: int | None = Field(default=None, gt=0)
    """At most this many calls to this model at once (local/smollm2-135m: 1, it has one slot)."""
    execution: ExecutionConfig | None = None
    """How this model's calls are bought, in place of the experiment's `execution`."""

    @field_validator("params")
    @classmethod
    def _params_in_range(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_call_params(value)

    @field_validator("api_base")
    @classmethod
    def _api_base_is_a_url(cls, value: str | None) -> str | None:
        from urllib.parse import urlsplit

        if value is not None and (urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).netloc):
            raise ValueError("api_base must be an http(s) URL such as http://127.0.0.1:8080/v1")
        return value

    @property
    def display_name(self) -> str:
        """The name shown to people."""
        return self.name or self.model


class ScorerConfig(StrictModel):
    """A scorer by registry name (or `module:function`) with its options."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)
    label: str | None = None
    """The column and metric name; defaults to the name, plus option values when a name repeats."""


class Baseline(StrictModel):
    """The variant every candidate is compared against."""

    model: str
    """A model's display name or model string."""
    prompt: str
    """A prompt's name."""


class SequentialConfig(StrictModel):
    """A group-sequential gate (`harness.sequential`): look after each of `looks` equal stages of items, in a
    seeded random order, and stop as soon as the decision is clear; later stages' calls are never made."""

    looks: int = Field(default=5, ge=2, le=50)
    spending: Literal["pocock", "obrien-fleming"] = "pocock"
    """How the one-sided alpha is spent across looks (Lan-DeMets): Pocock-type spends evenly and stops
    earliest on clear answers; O'Brien-Fleming-type keeps almost all of it for the last look."""
    futility: float = Field(default=0.1, ge=0, lt=1)
    """Stop when, under the trend so far, the chance of deciding by the last look is below this (0: never)."""


class GateConfig(StrictModel):
    """Non-inferiority: a candidate passes when the one-sided lower bound of (candidate - baseline) > -margin."""

    metric: str | None = None
    """A scorer label; defaults to the first scorer."""
    margin: float = Field(default=0.02, ge=0)
    """The largest quality loss that still counts as 'as good', in the metric's units."""
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    errors: Literal["exclude", "as_failure"] = "exclude"
    """Items where a call errored: left out of the paired test, or scored 0 for the side that errored."""
    max_error_rate: float = Field(default=0.1, ge=0, le=1)
    """Above this error rate (candidate or baseline) the gate cannot decide."""
    multiplicity: Literal["holm", "bonferroni", "none"] = "holm"
    """With several candidates, how verdicts keep the family-wise error at 1 - confidence: Holm's
    step-down (default), Bonferroni, or none (each candidate at the full level)."""
    sequential: SequentialConfig | None = None
    """Decide in stages and stop early (the `gate` command; `gate --sequential` turns it on with defaults).
    With several candidates each gets alpha / k (Bonferroni) unless multiplicity is none."""


class DecisionConfig(StrictModel):
    """What quality is worth, so the recommendation can trade dollars for it."""

    usd_per_point_per_month: float | None = Field(default=None, ge=0)
    """Dollars a month one point of the gate metric (0.01 of its scale) is worth at the configured traffic:
    a variant shown better is recommended when its gain, at the lower bound of its interval, is worth more
    than it costs. Needs `traffic:`."""


class AnalysisConfig(StrictModel):
    """How the statistics are computed."""

    resamples: int = Field(default=2000, ge=100, le=100_000)
    seed: int = 0
    frontier_latency: bool = False
    """Include latency p95 as a third axis of the Pareto frontier."""


class BudgetConfig(StrictModel):
    """Spending limits: a hard cap, and a threshold above which `run` asks before spending."""

    max_usd: float | None = Field(default=None, gt=0)
    """Never start a call whose worst-case cost would take this invocation's spend past this."""
    confirm_above_usd: float = Field(default=1.0, ge=0)
    """Ask before a run whose estimated maximum cost is above this (`--yes` skips the question)."""


CACHE_URL_SCHEMES = ("redis://", "rediss://", "unix://")


class CacheConfig(StrictModel):
    """The response cache that makes re-runs free and interrupted runs resumable."""

    enabled: bool = True
    path: str = "mlruns/responses.sqlite"
    """SQLite file, relative to the project root: one machine's processes share it (never a network
    file system). `HARNESS_CACHE` (a path or a redis:// URL) overrides `path` and `url`."""
    url: str | None = None
    """A Redis server shared by a team's machines and CI jobs (`redis://[:password@]host:6379/0`,
    `rediss://` for TLS); takes the place of `path`."""
    lease_s: float = Field(default=30.0, gt=0, le=3600)
    """How long a claim on a call in flight lasts unless renewed (every lease_s / 3 while the call runs):
    how long other processes wait for a crashed one on another machine (on the same machine, not at all)."""

    @field_validator("url")
    @classmethod
    def _url_is_redis(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(CACHE_URL_SCHEMES):
            raise ValueError("the cache url must start with redis://, rediss:// or unix:// (a Redis server)")
        return value


class TrafficConfig(StrictModel):
    """Production traffic, to project each variant's monthly cost."""

    requests_per_day: float = Field(gt=0)


class CheckConfig(StrictModel):
    """A test of a cheap answer from what a deployed router could see (the output, never the reference).

    An answer passes when every given condition holds; failing escalates to the next variant.
    """

    json_valid: bool = False
    regex: str | None = None
    """The output must contain a match."""
    min_words: int | None = Field(default=None, ge=0)
    max_words: int | None = Field(default=None, ge=0)
    agree_with: str | None = None
    """Another variant's answer must be the same (normalised); that variant's call is paid too."""
    score: str | None = None
    """A reference-free scorer of the run (a judge with its own rubric); its cost is counted."""
    min_score: float | Literal["auto"] = 0.5
    """`auto`: the cheapest threshold recovering `target_pgr` of the weak-to-strong gap, chosen on one half
    of the items and reported on the other (cross-fitting, `harness.routing.cross_fitted`)."""
    target_pgr: float = Field(default=0.8, gt=0, le=1)


class PolicyConfig(StrictModel):
    """One routing policy, simulated from stored records without a new call."""

    kind: Literal["cascade", "oracle", "random"]
    name: str | None = None
    chain: list[str] | None = None
    """cascade: the variants in the order tried (default: routing.weak then routing.strong)."""
    check: CheckConfig | None = None
    """cascade: when to accept an answer (required for a cascade)."""
    target: float | None = None
    """oracle: the quality an item must reach (default: what the strong variant scored on that item)."""
    p: float | None = Field(default=None, ge=0, le=1)
    """random: the share of items sent to the strong variant."""

    @property
    def label(self) -> str:
        """The policy's name in tables, plots and MLflow."""
        if self.name:
            return self.name
        if self.kind == "random":
            return f"random(p={self.p if self.p is not None else 0.5:g})"
        if self.kind == "oracle":
            return "oracle" if self.target is None else f"oracle(target={self.target:g})"
        check = self.check.model_dump(exclude_defaults=True) if self.check else {}
        if self.check and self.check.score:
            check["min_score"] = self.check.min_score
            if self.check.min_score == "auto":
                check["target_pgr"] = self.check.target_pgr
        return "cascade(" + ",".join(f"{k}={v}" for k, v in check.items()) + ")"


class RoutingConfig(StrictModel):
    """Routers and cascades to simulate from the run's records (`run` reports them; `route` too)."""

    metric: str | None = None
    """The quality metric (default: the gate's metric, else the first scorer)."""
    weak: str | None = None
    """The cheap variant (default: the cheapest that ran)."""
    strong: str | None = None
    """The strong variant (default: the baseline, else the best that ran)."""
    policies: list[PolicyConfig] = Field(default_factory=list)


class Experiment(StrictModel):
    """A whole experiment: dataset x models x prompts, scored and tracked."""

    name: str = Field(min_length=1)
    description: str = ""
    dataset: DatasetConfig
    prompts: list[PromptConfig] = Field(min_length=1)
    models: list[ModelConfig] = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    """Call parameters shared by all models (temperature, max_tokens, ...)."""
    constants: dict[str, Any] = Field(default_factory=dict)
    """Extra template variables; `{file: path}` loads a JSON/YAML/text file."""
    vars: dict[str, list[Any]] = Field(default_factory=dict)
    """Template variables with several values each (few-shot count, truncation length): every
    combination becomes a prompt variant named like `terse(doc_tokens=128)`, an ablation."""
    epochs: int = Field(default=1, ge=1, le=100)
    """Samples per item and variant; above 1 needs temperature > 0 (the statistics cluster by item)."""
    scorers: list[ScorerConfig] = Field(min_length=1)
    baseline: Baseline | None = None
    gate: GateConfig = Field(default_factory=GateConfig)
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    traffic: TrafficConfig | None = None
    decision: DecisionConfig = Field(default_factory=DecisionConfig)
    routing: RoutingConfig | None = None
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    """How the calls are bought: `{mode: batch}` sends them through the providers' Batch APIs."""
    concurrency: int = Field(default=4, gt=0, le=1024)
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=4, ge=0, le=20)
    max_retry_after_s: float = Field(default=120.0, gt=0, le=3600)
    """The longest a provider's Retry-After is obeyed before a retry (a longer one is cut to this)."""
    max_response_chars: int = Field(default=1_000_000, gt=0)
    """A longer answer is recorded as an error (ResponseTooLarge) instead of being scored and stored."""
    tracking_uri: str | None = None
    """MLflow tracking URI; `MLFLOW_TRACKING_URI` wins, else `sqlite:///mlruns/mlflow.db`."""
    traces: bool | int = True
    """Each record as an MLflow trace of its variant's run (scores as assessments): true for every record,
    false for none, N for the first N items of each variant. Runs, metrics and `report` are unaffected."""

    # Where the config was read from; set by load_config, not by users.
    source_path: Path = Field(default=Path("."), exclude=True)
    root: Path = Field(default=Path("."), exclude=True)

    @field_validator("params")
    @classmethod
    def _params_in_range(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_call_params(value)

    @field_validator("traces")
    @classmethod
    def _traces_not_negative(cls, value: bool | int) -> bool | int:
        if not isinstance(value, bool) and value < 0:
            raise ValueError("must be true, false or a number of items per variant (0 or more)")
        return value

    @field_validator("prompts", mode="before")
    @classmethod
    def _prompt_shorthand(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        return [{"name": Path(v).stem, "path": v} if isinstance(v, str) else v for v in value]

    @field_validator("models", mode="before")
    @classmethod
    def _model_shorthand(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        return [{"model": v} if isinstance(v, str) else v for v in value]

    @field_validator("scorers", mode="before")
    @classmethod
    def _scorer_shorthand(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        out = []
        for v in value:
            if isinstance(v, str):
                out.append({"name": v})
            elif isinstance(v, dict) and len(v) == 1 and "name" not in v:
                ((name, options),) = v.items()
                if options is not None and not isinstance(options, dict):
                    raise ValueError(
                        f"scorer {name}'s options must be a mapping such as {{{name}: {{label: x}}}}, "
                        f"not {type(options).__name__} {str(options)[:40]!r}"
                    )
                options = dict(options or {})
                label = options.pop("label", None)
                out.append({"name": name, "options": options, "label": label})
            else:
                out.append(v)
        return out

    def scorer_labels(self) -> list[str]:
        """Unique labels: the scorer's name, with its option values appended where the name repeats."""
        names = [s.name for s in self.scorers]
        labels = []
        for s in self.scorers:
            if s.label:
                labels.append(s.label)
            elif names.count(s.name) > 1 and s.options:
                labels.append("_".join([s.name, *(str(v) for v in s.options.values())]))
            else:
                labels.append(s.name)
        return labels

    @field_validator("vars")
    @classmethod
    def _vars_have_values(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for name, values in value.items():
            if not name.isidentifier():
                raise ValueError(f"'{name}' is not a template variable name (letters, digits and _)")
            if not values:
                raise ValueError(f"vars.{name} has no values; give a list such as [128, 512]")
            if len(set(map(str, values))) != len(values):
                raise ValueError(f"vars.{name} repeats a value")
        return value

    @model_validator(mode="after")
    def _value_needs_traffic(self) -> Experiment:
        if self.decision.usd_per_point_per_month is not None and self.traffic is None:
            raise ValueError(
                "decision.usd_per_point_per_month prices a month of quality: add traffic: {requests_per_day: N}"
            )
        return self

    @model_validator(mode="after")
    def _names_unique(self) -> Experiment:
        for label, names in (
            ("prompts", [p.name for p in self.prompts]),
            ("models", [m.display_name for m in self.models]),
            ("scorers", self.scorer_labels()),
        ):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                hint = " (give each a distinct `label` option)" if label == "scorers" else ""
                raise ValueError(f"{label} names must be unique; repeated: {', '.join(dupes)}{hint}")
        return self

    def project_file(self, relative: str, field: str) -> Path:
        """A file the config names at `field`, relative to the project root and confined to it (see
        `inside_project`)."""
        return inside_project(relative, self.root, self.source_path, field)

    def model_by_ref(self, ref: str) -> ModelConfig | None:
        """Find a model by display name or model string."""
        return next((m for m in self.models if ref in (m.display_name, m.model)), None)


def inside_project(relative: str | Path, root: Path, file: str | Path, field: str) -> Path:
    """`relative` under the project root, links followed, or a ConfigError naming `field`.

    A config is data a pull request can change, so every file it names (dataset, prompts, constants,
    rubrics, scorer files, the cache) must lie inside the project: `path: /etc/passwd` or `../../secrets`
    would otherwise be read, sent to a model and stored in the cache, MLflow and the records. Files given
    on the command line (`--prices FILE`) are the user's own choice and are not held to this.
    """
    path = Path(relative)
    full = path if path.is_absolute() else root / path
    home = root.resolve()
    real = full.resolve()
    if not real.is_relative_to(home):
        shown = f"{relative} (a link to {real})" if real != Path(os.path.abspath(full)) else str(relative)
        raise ConfigError(
            file,
            field,
            f"{shown} is outside the project {home}",
            "keep every file an experiment names inside its project folder (copy it in, do not link out)",
        )
    return real


def project_root(config_path: Path) -> Path:
    """The folder paths in a config are relative to: the parent of `experiments/`, else its own."""
    parent = config_path.resolve().parent
    return parent.parent if parent.name == "experiments" else parent


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key repeated in one mapping (YAML itself keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' appears twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, file: str | Path, field: str = "") -> Any:
    """Parse YAML safely: no duplicate keys, no nesting deeper than Python can walk, no alias bomb.

    Raises ConfigError naming the file, the line and the fix.
    """
    try:
        tree = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else field
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(
            file, where, f"invalid YAML: {problem}", "fix the YAML syntax (indentation, colons, quotes, one key once)"
        ) from None
    except RecursionError:
        raise ConfigError(file, field, "nested too deeply to read", "flatten the structure") from None
    check_tree_size(tree, file, field)
    return tree


def check_tree_size(tree: Any, file: str | Path, field: str = "", limit: int = MAX_TREE_NODES) -> None:
    """Refuse a tree that expands to more than `limit` values (YAML aliases can make a few lines into
    billions, which would hang every later walk: hashing, redaction, rendering)."""
    count, stack = 0, [tree]
    while stack:
        node = stack.pop()
        count += 1
        if count > limit:
            raise ConfigError(
                file,
                field,
                f"expands to more than {limit:,} values (YAML aliases repeating aliases?)",
                "write the data out plainly, without nested aliases",
            )
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list | tuple):
            stack.extend(node)


def load_config(path: str | Path) -> Experiment:
    """Read and validate an experiment YAML, raising ConfigError with file, field and fix."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(path, "", "no such config file", "check the path (configs live in experiments/)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            path, "", f"not UTF-8 text ({exc.reason} at byte {exc.start})", "save the file as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read the config ({exc.strerror})", "check the path") from None
    raw = load_yaml(text, path)
    if not isinstance(raw, dict):
        raise ConfigError(
            path, "", "the config must be a YAML mapping of keys to values", "start from experiments/summarize.yaml"
        )
    try:
        experiment = Experiment.model_validate(raw)
    except ValidationError as exc:
        raise _to_config_error(path, exc) from None
    return experiment.model_copy(update={"source_path": path, "root": project_root(path)})


def _to_config_error(path: Path, exc: ValidationError) -> ConfigError:
    """Turn pydantic's first error into one actionable line."""
    errors = exc.errors()
    # A misspelt required key (`scorer:`) is both "unknown key" and "missing": the unknown key, with its
    # did-you-mean, is the one that says what to fix.
    errors = sorted(errors, key=lambda e: e["type"] != "extra_forbidden")
    err = errors[0]
    loc = [p for p in err["loc"] if p not in ("function-after", "function-before")]
    branches = [e for e in errors if tuple(e["loc"][:-1]) == tuple(err["loc"][:-1]) and e["loc"] != ()]
    if len(branches) > 1 and all(e["type"].endswith(("_parsing", "_type", "literal_error")) for e in branches):
        # A value that fits no member of a union (min_score: a number or auto): name the field, not a member.
        got = err.get("input")
        allowed = " or ".join(e["msg"].removeprefix("Input should be ").split(",")[0] for e in branches)
        return ConfigError(path, _format_loc(loc[:-1]), f"got {got!r}", f"use {allowed}")
    field = _format_loc(loc)
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        key = str(loc[-1])
        close = difflib.get_close_matches(key, allowed, n=1)
        param = difflib.get_close_matches(key, CALL_PARAMS, n=1)
        if close:
            fix = f"did you mean '{close[0]}'?"
        elif param and "params" in allowed:
            fix = f"call parameters go under params (did you mean params: {{{param[0]}: ...}}?)"
        else:
            fix = f"allowed keys: {', '.join(allowed)}"
        return ConfigError(path, field, f"unknown key '{key}'", fix)
    if err["type"] == "missing":
        return ConfigError(path, field, "required field is missing", "add it (see docs/config.md)")
    message = err["msg"].removeprefix("Value error, ")
    got = err.get("input")
    shown = f" (got {got!r})" if got is not None and not isinstance(got, dict | list) else ""
    fix = _fix_for(err["type"])
    limit = (err.get("ctx") or {}).get("ge")
    if err["type"] == "greater_than_equal" and limit not in (None, 0):
        fix = f"use {limit} or more"
    elif err["type"] in ("less_than_equal", "less_than"):
        bound = next(iter((err.get("ctx") or {"": "the limit"}).values()))
        fix = f"use a number {'at most' if err['type'] == 'less_than_equal' else 'below'} {bound}"
    return ConfigError(path, field or "(top level)", f"{message}{shown}", fix)


def _fix_for(error_type: str) -> str:
    return {
        "int_parsing": "use a whole number",
        "int_type": "use a whole number",
        "float_parsing": "use a number",
        "float_type": "use a number",
        "bool_parsing": "use true or false",
        "string_type": "use a quoted string",
        "list_type": "use a YAML list (lines starting with '- ')",
        "dict_type": "use a YAML mapping (key: value lines)",
        "greater_than": "use a positive number",
        "greater_than_equal": "use zero or a positive number",
        "too_short": "give at least one entry",
        "literal_error": "use one of the allowed values",
        "finite_number": "use a finite number (not .nan or .inf)",
    }.get(error_type, "see docs/config.md")


def _format_loc(loc: list[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _allowed_keys(loc: list[Any]) -> list[str]:
    """The keys allowed at a location, found by walking the schema along the error's path."""
    model: type[BaseModel] = Experiment
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            break
        inner = _model_in(field.annotation)
        if inner is None:
            break
        model = inner
    return sorted(name for name, f in model.model_fields.items() if not f.exclude)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None
