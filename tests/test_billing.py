"""Bills through litellm's real Anthropic, Gemini and OpenAI adapters over HTTP, against hand-computed ones.

A local server answers in each provider's own wire format with scripted usage; the call goes through
harness's pool exactly as a run's would. Every expected figure is written out from the map's own fields
(never a hard-coded price), on both sides of each context-tier boundary.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from harness.config import ModelConfig, Price
from harness.offline import import_litellm
from harness.pool import CallSpec, Completion, ModelPool
from harness.pricing import resolve_price
from tests.provider_server import ProviderServer

REL = 1e-12


@pytest.fixture(scope="module")
def provider() -> Iterator[ProviderServer]:
    server = ProviderServer().start()
    yield server
    server.stop()


def entry(model: str) -> dict[str, Any]:
    return dict(import_litellm().get_model_info(model))


def call(server: ProviderServer, model: str, params: dict[str, Any] | None = None, **cfg: Any) -> Completion:
    """One call through the pool, as a run makes it."""
    base = server.url + "/v1" if model.startswith("openai/") else server.url
    config = ModelConfig(model=model, api_base=base, **cfg)
    spec = CallSpec(config, resolve_price(config, "exp.yaml"), [{"role": "user", "content": "hi"}], params or {}, 0, 5)
    completion = asyncio.run(ModelPool(None).complete(spec))
    assert completion.error is None, completion.error
    return completion


# --- Gemini: the 200k context tier, standard and service tiers ---------------------------------------


def gemini_usage(prompt: int, cached: int, visible: int, thoughts: int) -> dict[str, int]:
    return {
        "promptTokenCount": prompt,
        "cachedContentTokenCount": cached,
        "candidatesTokenCount": visible,
        "thoughtsTokenCount": thoughts,
        "totalTokenCount": prompt + visible + thoughts,
    }


@pytest.mark.parametrize("prompt", [200_000, 200_001])
def test_gemini_long_context_bills_the_whole_call_at_the_tier(provider: ProviderServer, prompt: int) -> None:
    provider.gemini_usage = gemini_usage(prompt, cached=40_000, visible=700, thoughts=300)
    done = call(provider, "gemini/gemini-2.5-pro")
    e = entry("gemini/gemini-2.5-pro")
    tier = "_above_200k_tokens" if prompt > 200_000 else ""
    expected = (
        (prompt - 40_000) * e[f"input_cost_per_token{tier}"]
        + 40_000 * e[f"cache_read_input_token_cost{tier}"]
        + 1_000 * e[f"output_cost_per_token{tier}"]
    )
    assert done.usage.input_tokens == prompt and done.usage.reasoning_tokens == 300
    assert done.cost_usd == pytest.approx(expected, rel=REL)
    assert done.reported_cost_usd == pytest.approx(expected, rel=1e-9), "litellm's own figure agrees"
    assert done.price_notes == []


@pytest.mark.parametrize(("tier", "prompt"), [("priority", 200_000), ("priority", 200_001), ("flex", 200_001)])
def test_gemini_service_tier_in_params_is_billed_at_that_tier(provider: ProviderServer, tier: str, prompt: int) -> None:
    provider.gemini_usage = gemini_usage(prompt, cached=0, visible=1_000, thoughts=0)
    done = call(provider, "gemini/gemini-2.5-pro", {"service_tier": tier})
    e = entry("gemini/gemini-2.5-pro")
    context = "_above_200k_tokens" if prompt > 200_000 else ""
    expected = prompt * e[f"input_cost_per_token{context}_{tier}"] + 1_000 * e[f"output_cost_per_token{context}_{tier}"]
    assert done.usage.service_tier == tier
    assert done.cost_usd == pytest.approx(expected, rel=REL)


# --- OpenAI: the 272k context tier, and the tier the response says served the call ---------------------


def openai_usage(prompt: int, cached: int, completion: int, reasoning: int, **extra: Any) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, **extra.pop("prompt_details", {})},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
        **extra,
    }


@pytest.mark.parametrize("prompt", [272_000, 272_001])
@pytest.mark.parametrize("served", ["default", "flex", "priority"])
def test_openai_served_tier_and_272k_context_tier(provider: ProviderServer, prompt: int, served: str) -> None:
    provider.openai_usage = openai_usage(prompt, cached=100_000, completion=2_000, reasoning=1_500)
    provider.openai_extra = {"service_tier": served}
    try:
        done = call(provider, "openai/gpt-5.4", {"service_tier": "flex"})
    finally:
        provider.openai_extra = {}
    e = entry("gpt-5.4")
    context = "_above_272k_tokens" if prompt > 272_000 else ""
    suffix = "" if served == "default" else f"_{served}"

    def rate(base: str) -> float:
        # A dimension the tier leaves unpriced at this context falls back to the standard rate there.
        at_tier = e.get(f"{base}{context}{suffix}")
        return e[f"{base}{context}"] if at_tier is None else at_tier

    expected = (
        (prompt - 100_000) * rate("input_cost_per_token")
        + 100_000 * rate("cache_read_input_token_cost")
        + 2_000 * rate("output_cost_per_token")
    )
    assert done.usage.service_tier == (None if served == "default" else served), "the served tier wins"
    assert done.cost_usd == pytest.approx(expected, rel=REL)


def test_a_private_price_sheet_bills_the_128k_tier(provider: ProviderServer) -> None:
    sheet = Price.model_validate(
        {
            "input_cost_per_token": 1e-6,
            "output_cost_per_token": 4e-6,
            "input_cost_per_token_above_128k_tokens": 2e-6,
            "output_cost_per_token_above_128k_tokens": 8e-6,
        }
    )
    for prompt, expected in ((128_000, 128_000 * 1e-6 + 50 * 4e-6), (128_001, 128_001 * 2e-6 + 50 * 8e-6)):
        provider.openai_usage = openai_usage(prompt, cached=0, completion=50, reasoning=0)
        done = call(provider, "openai/private-model", price=sheet)
        assert done.cost_usd == pytest.approx(expected, rel=REL)


def test_a_model_the_map_lacks_hands_litellm_its_price_and_keeps_no_echo(provider: ProviderServer) -> None:
    """litellm searches its whole map for a model it lacks on every response; given the configured rates
    with the call, it prices from them (its own logging shows the figure). That figure is harness's price
    echoed, so the record keeps no second figure; the rates never reach the provider; a model the map
    knows is left to the map."""
    from litellm.integrations.custom_logger import CustomLogger

    seen: list[Any] = []

    class Costs(CustomLogger):
        async def async_log_success_event(
            self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any
        ) -> None:
            seen.append(kwargs.get("response_cost"))

    sheet = Price(input_cost_per_token=1e-6, output_cost_per_token=4e-6, cache_read_input_token_cost=5e-7)
    config = ModelConfig(model="openai/private-model", api_base=provider.url + "/v1", price=sheet)
    price = resolve_price(config, "exp.yaml")
    assert price.for_litellm(config.model) == {"input_cost_per_token": 1e-6, "output_cost_per_token": 4e-6}
    provider.openai_usage = openai_usage(2_000, cached=500, completion=30, reasoning=0)
    provider.requests.clear()

    async def logged_call() -> Completion:
        done = await ModelPool(None).complete(CallSpec(config, price, [{"role": "user", "content": "hi"}], {}, 0, 5))
        for _ in range(250):  # litellm logs in a task of its own, after the answer
            if seen:
                break
            await asyncio.sleep(0.02)
        return done

    litellm = import_litellm()
    litellm.callbacks.append(logger := Costs())
    try:
        done = asyncio.run(logged_call())
    finally:
        litellm.callbacks.remove(logger)
    assert done.error is None, done.error
    assert seen == [pytest.approx(2_000 * 1e-6 + 30 * 4e-6, rel=1e-9)], "litellm priced it from the rates"
    assert done.cost_usd == pytest.approx(1_500 * 1e-6 + 500 * 5e-7 + 30 * 4e-6, rel=REL), "harness bills every rate"
    assert done.reported_cost_usd is None and done.reported_cost_source == ""
    sent = [body for _, body in provider.requests]
    assert len(sent) == 1 and not any("cost" in key for key in sent[0]), sent
    assert resolve_price(ModelConfig(model="openai/gpt-4o-mini"), "exp.yaml").for_litellm("openai/gpt-4o-mini") == {}
    override = ModelConfig(model="openai/gpt-4o-mini", price=Price(output_cost_per_token=1e-6))
    assert resolve_price(override, "exp.yaml").for_litellm(override.model) == {}, "litellm's own map figure stays"
    like = ModelConfig(model="openai/gpt-4o", price=Price(like="gpt-4o-mini"))
    assert resolve_price(like, "exp.yaml").for_litellm(like.model) == {}, "a model the map knows keeps its figure"
    hourly = ModelConfig(model="openai/rented", api_base="http://10.1.2.3/v1", price=Price(usd_per_hour=2.0))
    assert resolve_price(hourly, "exp.yaml").for_litellm(hourly.model) == {}


@pytest.mark.parametrize("model", ["anthropic/claude-private", "gemini/gemini-private"])
def test_handed_rates_never_reach_anthropic_or_gemini(provider: ProviderServer, model: str) -> None:
    """Each provider's adapter builds its own request body: the rates litellm is handed stay with litellm."""
    sheet = Price(input_cost_per_token=1e-6, output_cost_per_token=4e-6)
    provider.anthropic_usage = {"input_tokens": 10, "output_tokens": 5}
    provider.gemini_usage = {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15}
    provider.requests.clear()
    done = call(provider, model, price=sheet)
    assert done.cost_usd == pytest.approx(10 * 1e-6 + 5 * 4e-6, rel=REL) and done.reported_cost_usd is None
    ((path, body),) = provider.requests
    assert "cost" not in json.dumps(body), (path, body)


def test_openai_reported_cost_is_kept_and_a_disagreement_is_a_warning(provider: ProviderServer) -> None:
    e = entry("gpt-4o-mini")
    bill = 1_000 * e["input_cost_per_token"] + 100 * e["output_cost_per_token"]
    provider.openai_usage = openai_usage(1_000, cached=0, completion=100, reasoning=0, cost=bill * 1.005)
    agrees = call(provider, "openai/gpt-4o-mini")
    assert agrees.cost_usd == pytest.approx(bill, rel=REL)
    assert agrees.reported_cost_usd == pytest.approx(bill * 1.005)
    assert agrees.reported_cost_source.startswith("provider")
    assert agrees.price_notes == [], "within 1%: no warning"
    provider.openai_usage = openai_usage(1_000, cached=0, completion=100, reasoning=0, cost=bill * 1.02)
    differs = call(provider, "openai/gpt-4o-mini")
    assert differs.cost_usd == pytest.approx(bill, rel=REL), "harness's figure stands; the report sits beside it"
    assert len(differs.price_notes) == 1 and "openai/gpt-4o-mini" in differs.price_notes[0]
    assert "provider (usage.cost)" in differs.price_notes[0]


def test_audio_tokens_without_a_price_are_a_warning_never_free(provider: ProviderServer) -> None:
    provider.openai_usage = openai_usage(
        1_000, cached=0, completion=10, reasoning=0, prompt_details={"audio_tokens": 400}
    )
    done = call(provider, "openai/gpt-4o-mini")
    e = entry("gpt-4o-mini")
    assert done.usage.input_audio_tokens == 400
    assert done.cost_usd == pytest.approx(1_000 * e["input_cost_per_token"] + 10 * e["output_cost_per_token"], rel=REL)
    assert any("openai/gpt-4o-mini" in n and "input audio tokens" in n for n in done.price_notes)


def test_a_tier_the_map_does_not_price_is_a_warning(provider: ProviderServer) -> None:
    provider.openai_usage = openai_usage(1_000, cached=0, completion=10, reasoning=0)
    provider.openai_extra = {"service_tier": "flex"}
    try:
        done = call(provider, "openai/gpt-4o-mini", {"service_tier": "flex"})
    finally:
        provider.openai_extra = {}
    e = entry("gpt-4o-mini")
    assert e.get("input_cost_per_token_flex") is None
    assert done.cost_usd == pytest.approx(1_000 * e["input_cost_per_token"] + 10 * e["output_cost_per_token"], rel=REL)
    assert any("flex service tier" in n for n in done.price_notes)


# --- Anthropic: cache writes of both lifetimes ----------------------------------------------------------


@pytest.mark.parametrize("model", ["anthropic/claude-sonnet-4-5", "anthropic/claude-haiku-4-5"])
def test_anthropic_one_hour_and_five_minute_cache_writes(provider: ProviderServer, model: str) -> None:
    provider.anthropic_usage = {
        "input_tokens": 120,
        "output_tokens": 80,
        "cache_read_input_tokens": 5_000,
        "cache_creation_input_tokens": 3_000,
        "cache_creation": {"ephemeral_5m_input_tokens": 1_000, "ephemeral_1h_input_tokens": 2_000},
    }
    done = call(provider, model)
    e = entry(model)
    expected = (
        120 * e["input_cost_per_token"]
        + 5_000 * e["cache_read_input_token_cost"]
        + 1_000 * e["cache_creation_input_token_cost"]
        + 2_000 * e["cache_creation_input_token_cost_above_1hr"]
        + 80 * e["output_cost_per_token"]
    )
    assert done.usage.cache_creation_1h_input_tokens == 2_000
    assert done.cost_usd == pytest.approx(expected, rel=REL)
    assert done.reported_cost_usd == pytest.approx(expected, rel=1e-9), "litellm's own figure agrees"
    assert done.price_notes == []


def test_anthropic_writes_without_a_lifetime_split_are_five_minute_writes(provider: ProviderServer) -> None:
    provider.anthropic_usage = {"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 2_048}
    done = call(provider, "anthropic/claude-haiku-4-5")
    e = entry("anthropic/claude-haiku-4-5")
    writes = 2_048 * e["cache_creation_input_token_cost"]
    expected = 10 * e["input_cost_per_token"] + writes + 5 * e["output_cost_per_token"]
    assert done.cost_usd == pytest.approx(expected, rel=REL)


# --- Batch prices: known for every model that has them ---------------------------------------------------


@pytest.mark.parametrize("model", ["gpt-4o-mini", "anthropic/claude-haiku-4-5", "gemini/gemini-2.5-pro"])
def test_batch_prices_come_from_the_map(model: str) -> None:
    from harness.records import Usage

    price = resolve_price(ModelConfig(model=model), "exp.yaml")
    e = entry(model)
    assert "batch" in price.tiers()
    usage = Usage(input_tokens=10_000, cached_input_tokens=2_000, output_tokens=500)
    cached_rate = e.get("cache_read_input_token_cost_batches") or e["cache_read_input_token_cost"]
    expected = (
        8_000 * e["input_cost_per_token_batches"] + 2_000 * cached_rate + 500 * e["output_cost_per_token_batches"]
    )
    assert price.cost(usage, tier="batch") == pytest.approx(expected, rel=REL)


@pytest.mark.parametrize("cost", [-5.0, "lots", None])
def test_a_hostile_server_cannot_set_the_bill_or_flood_the_tier(provider: ProviderServer, cost: Any) -> None:
    """A nonsense reported cost is not kept (harness's figure stands); a huge tier name becomes one short word."""
    provider.openai_usage = openai_usage(1_000, cached=0, completion=10, reasoning=0, cost=cost)
    provider.openai_extra = {"service_tier": "x" * 5_000}
    try:
        done = call(provider, "openai/gpt-4o-mini")
    finally:
        provider.openai_extra = {}
    e = entry("gpt-4o-mini")
    assert done.cost_usd == pytest.approx(1_000 * e["input_cost_per_token"] + 10 * e["output_cost_per_token"], rel=REL)
    assert done.reported_cost_source != "provider (usage.cost)"
    assert done.usage.service_tier == "unrecognised"
    assert any("the unrecognised service tier" in n for n in done.price_notes)
    assert all(len(n) < 400 for n in done.price_notes)
