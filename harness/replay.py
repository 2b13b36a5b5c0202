"""The production model as a variant that is never called: its records come from the log.

A decision on production traffic compares candidates with what production already answered, so paying
the incumbent again would only buy the same answers. The `production` variant's output, usage and latency
are the logged ones; its cost is the logged usage priced at today's prices (the log's model, through the
same price map every candidate uses), and the logged spend, where the log has one, is kept beside it and
compared (a price note above 1%).
"""

from __future__ import annotations

from harness.config import ConfigError, Experiment, ModelConfig
from harness.datasets import PRODUCTION_OUTPUT, EvalSet, Item
from harness.identity import messages_hash
from harness.pricing import ModelPrice, cost_differs, resolve_price
from harness.prompts import Messages, PromptTemplate, make_environment
from harness.records import Record, RecordError, Usage

PRODUCTION = "production"
"""The production variant's name, and the baseline of an experiment over logs unless it names another."""

AS_LOGGED = "as_logged"
AS_LOGGED_SOURCE = "{% block messages %}{% for m in messages %}{{ turn(m.role, m.content) }}{% endfor %}{% endblock %}"
"""The messages exactly as logged; a project's own template can send them with another system prompt."""


def as_logged_template(experiment: Experiment) -> PromptTemplate:
    """The template that renders an item's logged messages unchanged."""
    environment = make_environment(experiment.root)
    return PromptTemplate(AS_LOGGED, experiment.root, AS_LOGGED_SOURCE, environment.from_string(AS_LOGGED_SOURCE))


def logged_models(eval_set: EvalSet) -> list[str]:
    """The models the sampled calls were made with, most calls first."""
    counts: dict[str, float] = {}
    for item in eval_set.items:
        model = str(item.fields.get("production_model") or "")
        counts[model] = counts.get(model, 0.0) + item.weight
    return sorted(counts, key=lambda m: -counts[m])


def production_prices(experiment: Experiment, eval_set: EvalSet) -> dict[str, ModelPrice]:
    """Today's price of every logged model; an unpriced one is an error before any call."""
    logs = experiment.dataset.logs
    assert logs is not None
    file = str(experiment.source_path)
    prices = {}
    for model in logged_models(eval_set):
        if not model and logs.price is None:
            raise ConfigError(
                file,
                "dataset.logs.price",
                "some logged calls name no model, so today's price of them is unknown",
                "give dataset.logs.price: {like: MODEL} or per-token prices",
            )
        try:
            prices[model] = resolve_price(ModelConfig(model=model or PRODUCTION, price=logs.price), file)
        except ConfigError as exc:
            raise ConfigError(
                file,
                "dataset.logs.price",
                f"the logged model {exc.problem.removeprefix('no price known for ')}",
                "give dataset.logs.price: {like: MODEL-THE-MAP-KNOWS} or per-token prices",
            ) from None
    return prices


def production_model(eval_set: EvalSet) -> ModelConfig:
    """The production variant's model: the log's most used model, shown as `production`."""
    return ModelConfig(model=logged_models(eval_set)[0] or PRODUCTION, name=PRODUCTION)


def replayed_record(item: Item, messages: Messages, prices: dict[str, ModelPrice]) -> Record:
    """The record of what production answered for one item, priced at today's prices."""
    fields = item.fields
    model = str(fields.get("production_model") or "")
    price = prices[model]
    usage = Usage(**(fields.get("production_usage") or {}))
    latency = float(fields.get("production_latency_s") or 0.0)
    cost = price.cost(usage, latency)
    spend = fields.get("production_spend_usd")
    notes = []
    if spend is not None and cost_differs(cost, float(spend)):
        side = "above" if float(spend) > cost else "below"
        notes.append(
            f"{model or PRODUCTION}: the log's spend is more than 1% {side} today's price of its usage "
            f"({price.source}): the price changed, or the log's spend is wrong"
        )
    output = fields.get(PRODUCTION_OUTPUT) or None
    return Record(
        variant=PRODUCTION,
        item_id=item.id,
        model=model or PRODUCTION,
        prompt=AS_LOGGED,
        prompt_hash=messages_hash(messages),
        prompt_tokens_estimate=usage.input_tokens,
        output=output,
        usage=usage,
        cost_usd=cost,
        price_source=price.source,
        reported_cost_usd=None if spend is None else float(spend),
        reported_cost_source="" if spend is None else "the log's spend",
        price_notes=notes,
        latency_s=latency,
        replayed=True,
        error=None if output is not None else RecordError(type="EmptyResponse", message="the log has no answer"),
    )
