"""Dollars from usage: litellm's bundled price map, config overrides, cached and reasoning tokens.

Cost is computed here from the recorded usage rather than taken from litellm's response, so that the
same function reprices stored records later and so that a test can check cost == usage x price exactly.

Billing rules (as the providers bill; litellm normalises usage so one formula serves all three):
- OpenAI: `prompt_tokens` includes cached tokens, billed at `cache_read_input_token_cost`;
  `completion_tokens` includes reasoning tokens, billed at the output price.
- Anthropic: litellm folds cache reads and cache writes into `prompt_tokens`; reads are billed at
  `cache_read_input_token_cost`, writes at `cache_creation_input_token_cost`.
- Gemini: cached reads at `cache_read_input_token_cost`; thinking tokens at
  `output_cost_per_reasoning_token` where the map gives one, else the output price.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from urllib.parse import urlparse

from harness.config import ConfigError, ModelConfig, Price
from harness.records import Record, Usage

LOCAL_PROVIDER = "local"


@dataclass(frozen=True)
class ModelPrice:
    """Per-token prices in USD for one model, and where they came from."""

    input: float
    output: float
    cache_read: float | None = None
    cache_creation: float | None = None
    reasoning: float | None = None
    usd_per_hour: float = 0.0
    source: str = ""

    def cost(self, usage: Usage, latency_s: float = 0.0) -> float:
        """The bill for one call."""
        cached = usage.cached_input_tokens
        created = usage.cache_creation_input_tokens
        uncached = max(usage.input_tokens - cached - created, 0)
        reasoning = min(usage.reasoning_tokens, usage.output_tokens)
        visible_output = usage.output_tokens - reasoning
        return (
            uncached * self.input
            + cached * _or(self.cache_read, self.input)
            + created * _or(self.cache_creation, self.input)
            + visible_output * self.output
            + reasoning * _or(self.reasoning, self.output)
            + latency_s / 3600.0 * self.usd_per_hour
        )


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def litellm_version() -> str:
    """The litellm release whose bundled map priced a run (recorded on every run)."""
    return version("litellm")


def is_local_model(model: str) -> bool:
    """True for harness's in-process offline models."""
    return model.split("/", 1)[0] == LOCAL_PROVIDER


def is_loopback(api_base: str | None) -> bool:
    """True when the model is served from this machine (a self-hosted server, a test server)."""
    if not api_base:
        return False
    host = urlparse(api_base).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def map_price(model: str) -> dict[str, float | None] | None:
    """The model's entry in litellm's price map, or None when the map does not know it."""
    from harness.offline import import_litellm

    litellm = import_litellm()
    try:
        info = litellm.get_model_info(model)
    except Exception:
        return None
    if info.get("input_cost_per_token") is None or info.get("output_cost_per_token") is None:
        return None
    return dict(info)


def resolve_price(cfg: ModelConfig, config_file: str) -> ModelPrice:
    """The price a model is billed at; an unknown cloud price is an error before any call."""
    override = cfg.price or Price()
    given = override.model_dump(exclude_none=True)
    if is_local_model(cfg.model) or (not given and is_loopback(cfg.api_base)):
        base: dict[str, float | None] = {"input_cost_per_token": 0.0, "output_cost_per_token": 0.0}
        source = "local model, $0" if is_local_model(cfg.model) else "self-hosted on loopback, $0"
    else:
        base = map_price(cfg.model) or {}
        source = f"litellm {litellm_version()} price map" if base else ""
    merged = {**base, **given}
    has_tokens = merged.get("input_cost_per_token") is not None and merged.get("output_cost_per_token") is not None
    if not has_tokens and "usd_per_hour" not in merged:
        raise ConfigError(
            config_file,
            f"models[{cfg.display_name}].price",
            f"no price known for '{cfg.model}' (not in litellm {litellm_version()}'s bundled price map)",
            "add price: {input_cost_per_token: ..., output_cost_per_token: ...} or price: {usd_per_hour: ...}",
        )
    if given:
        source = f"{source} + config override ({', '.join(sorted(given))})" if source else "config override"
    return ModelPrice(
        input=float(merged.get("input_cost_per_token") or 0.0),
        output=float(merged.get("output_cost_per_token") or 0.0),
        cache_read=_maybe(merged.get("cache_read_input_token_cost")),
        cache_creation=_maybe(merged.get("cache_creation_input_token_cost")),
        reasoning=_maybe(merged.get("output_cost_per_reasoning_token")),
        usd_per_hour=float(merged.get("usd_per_hour") or 0.0),
        source=source,
    )


def _maybe(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def load_price_file(path: Path) -> dict[str, Price]:
    """A prices YAML (model string -> litellm-named price fields), validated like a config."""
    import yaml
    from pydantic import ValidationError

    if not path.is_file():
        raise ConfigError(path, "", "no such prices file", "give a YAML file mapping model strings to prices")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        raise ConfigError(
            path,
            "",
            "the prices file must map model strings to price fields",
            "e.g. openai/gpt-4o-mini: {input_cost_per_token: 1.5e-7, output_cost_per_token: 6e-7}",
        )
    prices = {}
    for model, fields in raw.items():
        try:
            prices[str(model)] = Price.model_validate(fields)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise ConfigError(
                path,
                f"{model}.{where}" if where else str(model),
                err["msg"],
                "use input_cost_per_token, output_cost_per_token, cache_read_input_token_cost, "
                "cache_creation_input_token_cost, output_cost_per_reasoning_token or usd_per_hour",
            ) from None
    return prices


def reprice_records(
    records: list[Record], overrides: dict[str, Price], source: str, stored: dict[str, ModelPrice] | None = None
) -> list[Record]:
    """Records with costs recomputed from their usage: given prices first, then the current map, then as stored."""
    stored = stored or {}
    prices: dict[str, ModelPrice] = {}
    for model in {r.model for r in records}:
        if model in overrides:
            prices[model] = resolve_price(ModelConfig(model=model, price=overrides[model]), source)
        elif model in stored and ("config override" in stored[model].source or is_local_model(model)):
            prices[model] = stored[model]
        elif map_price(model) is not None:
            prices[model] = resolve_price(ModelConfig(model=model), source)
        elif model in stored:
            prices[model] = stored[model]
    out = []
    for r in records:
        price = prices.get(r.model)
        if price is None:
            out.append(r)
            continue
        out.append(r.model_copy(update={"cost_usd": price.cost(r.usage, r.latency_s), "price_source": price.source}))
    return out
