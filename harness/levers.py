"""Levers: what the same outputs would cost if you bought them differently, from stored records alone.

A bill moves with how calls are bought, not only with which model answers: the Batch API, flex and
priority tiers, prompt caching and a tighter `max_tokens` are decisions a team can take without changing
a single answer. Each lever here reprices a variant's stored records (no new call) with the prices the run
was billed at, so every figure can be checked by hand against the records and the price map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

from harness.pricing import TIERS, ModelPrice
from harness.records import Record
from harness.summary import DAYS_PER_MONTH


class CarriesLevers(Protocol):
    """What `attach_levers` fills in (an `Analysis`; named by shape, so levers never imports analysis)."""

    levers: dict[str, VariantLevers]
    warnings: list[str]


CACHE_TTL_MINUTES = 5.0
"""How long a provider keeps a prompt prefix after its last use (Anthropic's default lifetime, OpenAI's
and Gemini's implicit caches at least as long)."""

MIN_CACHEABLE_TOKENS = {"anthropic": 1024, "openai": 1024, "gemini": 1024, "vertex_ai": 1024}
"""The shortest prefix a provider caches, from each provider's prompt-caching documentation."""
MIN_CACHEABLE_BY_MODEL = {
    "claude-haiku-4-5": 4096,
    "claude-opus-4-5": 4096,
    "claude-3-5-haiku": 2048,
    "claude-3-haiku": 2048,
    "gemini-2.5-pro": 4096,
}
"""Models whose minimum differs from their provider's (matched as a substring of the model name)."""

TIER_TRADE_OFF = {
    "batch": "results within 24 hours (the batch window): for evals, backfills and nightly jobs, not a user waiting",
    "flex": "slower answers, refused (429) when capacity is short: for work that can wait and retry",
    "priority": "faster, steadier latency, at a premium",
}

OUTPUT_CAP_PERCENTILE = 95


@dataclass(frozen=True)
class Lever:
    """One way of buying the same outputs, and what it would cost."""

    name: str
    """`batch`, `flex`, `priority`, `prompt_cache` or `output_cap`."""
    cost_usd: float | None
    """The variant's calls in this run, bought this way; None when the lever is not available."""
    saving_usd: float | None
    """Now minus with the lever: positive saves, negative is a premium."""
    monthly_saving_usd: float | None
    """The saving at the config's `traffic:`, per month."""
    how: str
    """How the figure was computed, the trade-off, or why the lever is not available."""


@dataclass(frozen=True)
class VariantLevers:
    """Every lever for one variant."""

    variant: str
    model: str
    cost_usd: float
    """The variant's successful calls at the prices the run was billed at."""
    calls: int
    monthly_usd: float | None
    levers: list[Lever] = field(default_factory=list)

    def lever(self, name: str) -> Lever | None:
        return next((lv for lv in self.levers if lv.name == name), None)

    def metrics(self) -> dict[str, float]:
        """MLflow metrics, one set per lever that is available."""
        out: dict[str, float] = {}
        for lv in self.levers:
            if lv.cost_usd is None or lv.saving_usd is None:
                continue
            out[f"lever.{lv.name}.cost_usd"] = lv.cost_usd
            out[f"lever.{lv.name}.saving_usd"] = lv.saving_usd
            if lv.monthly_saving_usd is not None:
                out[f"lever.{lv.name}.monthly_saving_usd"] = lv.monthly_saving_usd
        return out


def min_cacheable_tokens(model: str) -> int:
    """The provider's minimum cacheable prompt length for a model (1024 when the provider is not listed)."""
    for name, tokens in MIN_CACHEABLE_BY_MODEL.items():
        if name in model:
            return tokens
    provider = model.split("/", 1)[0] if "/" in model else ("anthropic" if model.startswith("claude") else "openai")
    return MIN_CACHEABLE_TOKENS.get(provider, 1024)


def levers_for(
    records: list[Record],
    prices: dict[str, ModelPrice],
    prefixes: dict[str, int | None],
    requests_per_day: float | None,
) -> dict[str, VariantLevers]:
    """Levers for every priced variant (a $0 variant has nothing to save), by variant name."""
    by_variant: dict[str, list[Record]] = {}
    for r in records:
        if r.error is None:
            by_variant.setdefault(r.variant, []).append(r)
    out = {}
    for name, mine in by_variant.items():
        price = prices.get(name)
        if price is None or not _priced(price):
            continue
        out[name] = variant_levers(name, mine, price, prefixes.get(name), requests_per_day)
    return out


def _priced(price: ModelPrice) -> bool:
    return any(v > 0 for v in price.table.values())


def variant_levers(
    variant: str, records: list[Record], price: ModelPrice, prefix_tokens: int | None, requests_per_day: float | None
) -> VariantLevers:
    """Every lever for one variant's successful records."""
    now = sum(price.cost(r.usage, r.latency_s, r.usage.service_tier) for r in records)
    n = len(records)

    def monthly(usd: float) -> float | None:
        return usd / n * requests_per_day * DAYS_PER_MONTH if requests_per_day and n else None

    def lever(name: str, cost: float | None, how: str) -> Lever:
        if cost is None:
            return Lever(name, None, None, None, how)
        return Lever(name, cost, now - cost, monthly(now - cost), how)

    levers = [lever(t, *_tier(records, price, t)) for t in TIERS]
    levers.append(lever("prompt_cache", *_prompt_cache(records, price, prefix_tokens, requests_per_day)))
    levers.append(lever("output_cap", *_output_cap(records, price)))
    model = records[0].model if records else ""
    return VariantLevers(variant, model, now, n, monthly(now), levers)


def _tier(records: list[Record], price: ModelPrice, tier: str) -> tuple[float | None, str]:
    if tier not in price.tiers():
        return None, f"no {tier} prices for this model in {price.source or 'its price'}"
    cost = sum(price.cost(r.usage, r.latency_s, tier) for r in records)
    return cost, f"the same usage at {tier} prices; {TIER_TRADE_OFF[tier]}"


def _prompt_cache(
    records: list[Record], price: ModelPrice, prefix_tokens: int | None, requests_per_day: float | None
) -> tuple[float | None, str]:
    if "cache_read_input_token_cost" not in price.table:
        return None, "the price has no cached-input rate"
    if prefix_tokens is None:
        return None, "the run did not record its prompts' shared prefix"
    model = price.priced_as or (records[0].model if records else "")
    minimum = min_cacheable_tokens(model)
    if prefix_tokens < minimum:
        return None, (
            f"the prompts share a {prefix_tokens}-token prefix, under the provider's {minimum}-token minimum: "
            "nothing would be cached (put long fixed instructions and examples first to make one)"
        )
    cold = cold_share(requests_per_day, len(records))
    if requests_per_day:
        traffic = f"at {requests_per_day:g} requests/day a call finds the cache cold {cold:.1%} of the time"
    else:
        traffic = "without traffic:, one cache write per run"
    total = 0.0
    for r in records:
        bill = price.cost(r.usage, r.latency_s, r.usage.service_tier)
        already = r.usage.cached_input_tokens + r.usage.cache_creation_input_tokens
        cached = min(prefix_tokens, r.usage.input_tokens)
        if already or not cached:
            total += bill
            continue
        tokens, tier = r.usage.input_tokens, r.usage.service_tier
        total += bill - input_usd(price, tokens, 0, tier, cold) + input_usd(price, tokens, cached, tier, cold)
    return total, (
        f"a {prefix_tokens}-token prefix shared by every prompt (minimum {minimum}) read from the provider's "
        f"cache; writes at the cache-write rate, reads at the cached-input rate; {traffic} "
        f"({CACHE_TTL_MINUTES:g}-minute lifetime)"
    )


def cold_share(requests_per_day: float | None, calls: int) -> float:
    """The share of calls that find the provider's prompt cache cold and write it: at traffic, the chance
    no call came within the cache's lifetime; without traffic, one write per run of `calls`."""
    if requests_per_day:
        return math.exp(-requests_per_day / (24 * 60) * CACHE_TTL_MINUTES)
    return 1 / max(calls, 1)


def input_usd(price: ModelPrice, input_tokens: int, cached_prefix: int, tier: str | None, cold: float) -> float:
    """The input side of one call whose first `cached_prefix` tokens come from the provider's cache (written
    on a cold share of calls, read on the rest): what shortening or reordering a prompt changes."""
    rates, _ = price.rates_at(input_tokens, tier)
    plain = rates["input_cost_per_token"] or 0.0
    read = _first(rates.get("cache_read_input_token_cost"), plain)
    write = _first(rates.get("cache_creation_input_token_cost"), plain)
    cached = min(cached_prefix, input_tokens)
    return (input_tokens - cached) * plain + cached * (cold * write + (1 - cold) * read)


def _first(value: float | None, default: float) -> float:
    return default if value is None else value


def _output_cap(records: list[Record], price: ModelPrice) -> tuple[float | None, str]:
    lengths = sorted(r.usage.output_tokens for r in records)
    if not lengths or lengths[-1] == 0:
        return None, "no output tokens recorded"
    rank = max(math.ceil(OUTPUT_CAP_PERCENTILE / 100 * len(lengths)), 1)
    cap = lengths[rank - 1]
    saving = 0.0
    output_bill = 0.0
    cut = 0
    for r in records:
        rates, _ = price.rates_at(r.usage.input_tokens, r.usage.service_tier)
        bill = price.bill(r.usage, r.latency_s, r.usage.service_tier)
        output_bill += sum(v for k, v in bill.lines.items() if k.startswith("output_"))
        excess = max(r.usage.output_tokens - cap, 0)
        if excess:
            cut += 1
            saving += excess * (rates["output_cost_per_token"] or 0.0)
    now = sum(price.cost(r.usage, r.latency_s, r.usage.service_tier) for r in records)
    share = saving / output_bill if output_bill else 0.0
    return now - saving, (
        f"max_tokens: {cap} (the {OUTPUT_CAP_PERCENTILE}th percentile of {len(lengths)} answers) would cut "
        f"{cut} answers, {share:.1%} of the output bill; a cut answer loses its end, so re-run the eval with "
        "the cap before adopting it"
    )


def attach_levers(
    analysis: CarriesLevers,
    records: list[Record],
    prices: dict[str, ModelPrice],
    prefixes: dict[str, int | None],
    requests_per_day: float | None,
) -> None:
    """Put the levers and the run's pricing warnings on the analysis everything downstream shows."""
    analysis.levers = levers_for(records, prices, prefixes, requests_per_day)
    analysis.warnings += price_warnings(records)


def price_warnings(records: list[Record]) -> list[str]:
    """Each distinct pricing note of the run once, with how many calls it concerns."""
    counts: dict[str, int] = {}
    for r in records:
        for note in r.price_notes:
            counts[note] = counts.get(note, 0) + 1
    return [f"{note} ({n} call{'s' if n != 1 else ''})" for note, n in counts.items()]
