"""The record: one per (variant, item, sample). Everything downstream reads records.

Records are the contract between the runner and every later stage (scoring, analysis, tracking,
repricing), so each field is documented and nothing downstream reaches back into the runner.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class Usage(BaseModel):
    """Token counts as billed by the provider."""

    input_tokens: int = 0
    """All prompt tokens, cached ones included (the provider's `prompt_tokens`)."""
    output_tokens: int = 0
    """All completion tokens, reasoning tokens included (the provider's `completion_tokens`)."""
    cached_input_tokens: int = 0
    """Input tokens served from the provider's prompt cache (billed at a discount)."""
    cache_creation_input_tokens: int = 0
    """Input tokens written to the prompt cache (Anthropic bills these at a premium)."""
    cache_creation_1h_input_tokens: int = 0
    """The part of `cache_creation_input_tokens` written with a one-hour lifetime (billed above five-minute writes)."""
    reasoning_tokens: int = 0
    """Output tokens spent on hidden reasoning (a subset of `output_tokens`)."""
    input_audio_tokens: int = 0
    """Audio among the input tokens (priced apart where the map says so)."""
    input_image_tokens: int = 0
    output_audio_tokens: int = 0
    output_image_tokens: int = 0
    service_tier: str | None = None
    """The service tier that served the call, as the provider reported it (else as requested); None: standard.
    Kept with the usage because it bills like a dimension of it, and the cache keeps it with the usage."""


class RecordError(BaseModel):
    """Why a call produced no output. A failed item is recorded, never dropped or scored as 0."""

    type: str
    """The exception class or a harness category such as `Timeout` or `EmptyResponse`."""
    message: str


class Record(BaseModel):
    """One model call for one item of the eval under one variant."""

    variant: str
    """The variant's name, `<model display name>:<prompt name>` (`identity.variant_name`)."""
    item_id: str
    sample: int = 0
    """Sample index, for repeated samples of the same item."""
    model: str
    """The litellm model string that was called."""
    prompt: str
    """The prompt variant's name."""
    prompt_hash: str
    """SHA-256 of the rendered messages: the same hash means the model saw the same text."""
    prompt_tokens_estimate: int = 0
    """Token count of the rendered prompt, counted locally before the call."""
    output: str | None = None
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float = 0.0
    price_source: str = ""
    """Where the price came from, e.g. `litellm 1.110.2 price map` or `config override`."""
    reported_cost_usd: float | None = None
    """The cost the provider (`usage.cost`) or litellm reported for the call, kept beside harness's figure."""
    reported_cost_source: str = ""
    price_notes: list[str] = Field(default_factory=list)
    """What the price could not cover exactly: an unpriced dimension, a reported cost that disagrees."""
    latency_s: float = 0.0
    attempts: int = 1
    """Calls made for this record, retries included."""
    error: RecordError | None = None
    cache_hit: bool = False
    replayed: bool = False
    """The answer is a production log's (the `production` variant): nothing was called or paid for it now."""
    scores: dict[str, float | None] = Field(default_factory=dict)
    """Scorer name to value; None where the item errored and could not be scored."""
    eval_cost_usd: float = 0.0
    """Dollars scorers (judges) spent grading this record, apart from `cost_usd`, the variant's own cost."""
    score_errors: dict[str, str] = Field(default_factory=dict)
    """Scorer name to the reason it could not score this output."""
    rationales: dict[str, str] = Field(default_factory=dict)
    """Scorer name to why it gave its value (a judge's reply, trimmed); logged with the score in MLflow."""

    @property
    def paid_now(self) -> bool:
        """Whether this invocation paid for the call: neither served from the cache nor replayed from a log."""
        return not (self.cache_hit or self.replayed)

    @property
    def ok(self) -> bool:
        """True when the call produced an output to score."""
        return self.error is None


PAIRWISE_RATIONALE = "pairwise candidate first:"
"""How the pairwise judge's rationale starts: then both orders' verdicts and the outcome, which the
analysis counts (`analysis.pairwise_tally`)."""

NOT_A_LABEL = "not_a_label"
"""The `accuracy` aggregate holding the share of outputs outside the label set (lower is better); the
analysis warns on it."""


def usd_per_item(records: list[Record]) -> dict[str, float]:
    """Dollars per item by variant, every sample and its scoring included, as the records were billed:
    what more items (`estimate`) or the items a sequential gate never ran would cost."""
    spent: dict[str, float] = {}
    items: dict[str, set[str]] = {}
    for r in records:
        spent[r.variant] = spent.get(r.variant, 0.0) + r.cost_usd + r.eval_cost_usd
        items.setdefault(r.variant, set()).add(r.item_id)
    return {name: spent[name] / len(ids) for name, ids in items.items()}
