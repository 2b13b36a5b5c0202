"""Billing against litellm's bundled price map, computed by hand for OpenAI, Anthropic and Gemini."""

from __future__ import annotations

import pytest

from harness.config import ConfigError, ModelConfig, Price
from harness.offline import import_litellm
from harness.pricing import resolve_price
from harness.records import Usage


def map_entry(model: str) -> dict:
    return dict(import_litellm().get_model_info(model))


def test_openai_cached_input_at_cache_read_price() -> None:
    price = resolve_price(ModelConfig(model="openai/gpt-4o-mini"), "exp.yaml")
    entry = map_entry("openai/gpt-4o-mini")
    usage = Usage(input_tokens=2000, cached_input_tokens=1500, output_tokens=300)
    expected = (
        500 * entry["input_cost_per_token"]
        + 1500 * entry["cache_read_input_token_cost"]
        + 300 * entry["output_cost_per_token"]
    )
    assert price.cost(usage) == pytest.approx(expected, rel=1e-12)
    assert price.source.startswith("litellm ") and "price map" in price.source


def test_anthropic_cache_writes_and_reads() -> None:
    price = resolve_price(ModelConfig(model="anthropic/claude-haiku-4-5"), "exp.yaml")
    entry = map_entry("anthropic/claude-haiku-4-5")
    usage = Usage(input_tokens=3000, cached_input_tokens=1000, cache_creation_input_tokens=1500, output_tokens=100)
    expected = (
        500 * entry["input_cost_per_token"]
        + 1000 * entry["cache_read_input_token_cost"]
        + 1500 * entry["cache_creation_input_token_cost"]
        + 100 * entry["output_cost_per_token"]
    )
    assert price.cost(usage) == pytest.approx(expected, rel=1e-12)


def test_gemini_reasoning_tokens_at_reasoning_price() -> None:
    price = resolve_price(ModelConfig(model="gemini/gemini-2.5-flash"), "exp.yaml")
    entry = map_entry("gemini/gemini-2.5-flash")
    usage = Usage(input_tokens=1000, output_tokens=800, reasoning_tokens=600)
    expected = (
        1000 * entry["input_cost_per_token"]
        + 200 * entry["output_cost_per_token"]
        + 600 * entry["output_cost_per_reasoning_token"]
    )
    assert price.cost(usage) == pytest.approx(expected, rel=1e-12)


def test_partial_override_keeps_the_rest_of_the_map() -> None:
    cfg = ModelConfig(model="openai/gpt-4o-mini", price=Price(output_cost_per_token=1e-6))
    price = resolve_price(cfg, "exp.yaml")
    assert price.output == 1e-6
    assert price.input == map_entry("openai/gpt-4o-mini")["input_cost_per_token"]
    assert "config override (output_cost_per_token)" in price.source


def test_local_models_are_free_unless_priced() -> None:
    assert resolve_price(ModelConfig(model="local/lead"), "exp.yaml").cost(Usage(input_tokens=9, output_tokens=9)) == 0
    hourly = resolve_price(ModelConfig(model="local/smollm2-135m", price=Price(usd_per_hour=0.36)), "exp.yaml")
    assert hourly.cost(Usage(), latency_s=10.0) == pytest.approx(0.001)


def test_unknown_cloud_model_needs_a_price() -> None:
    with pytest.raises(ConfigError, match="no price known"):
        resolve_price(ModelConfig(model="anthropic/claude-3-5-haiku-20241022"), "exp.yaml")


def test_a_price_stored_by_an_older_run_reads_back() -> None:
    from harness.pricing import ModelPrice

    legacy = {"input": 1e-6, "output": 2e-6, "cache_read": 5e-7, "cache_creation": None, "usd_per_hour": 0.0}
    price = ModelPrice.from_stored({**legacy, "source": "config override"})
    usage = Usage(input_tokens=100, cached_input_tokens=40, output_tokens=10)
    assert price.cost(usage) == pytest.approx(60 * 1e-6 + 40 * 5e-7 + 10 * 2e-6, rel=1e-12)
    assert ModelPrice.from_stored(price.stored()) == price


def test_a_served_tier_is_a_short_word_whatever_the_server_sends() -> None:
    from harness.pricing import tier_name

    assert tier_name("Default") is None and tier_name("FLEX") == "flex" and tier_name("fast") == "priority"
    assert tier_name("x" * 10_000) == "unrecognised" and tier_name({"a": 1}) == "unrecognised"


def test_a_made_up_openai_looking_name_is_not_priced_at_zero() -> None:
    """litellm answers an unknown `gpt-*` name with a synthetic $0 entry; that is no price."""
    with pytest.raises(ConfigError, match="no price known for 'openai/gpt-9-imaginary'"):
        resolve_price(ModelConfig(model="openai/gpt-9-imaginary"), "exp.yaml")
