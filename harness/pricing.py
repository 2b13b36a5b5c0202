"""Dollars from usage: litellm's bundled price map, config overrides, and every billing dimension it prices.

Cost is computed here from the recorded usage rather than taken from litellm's response, so that the
same function reprices stored records later (under another tier, another price sheet) and so that a test
can check cost == usage x price exactly. Where the provider or litellm reports a cost too, the pool
records it beside this figure and warns when the two differ.

Billing rules (as the providers bill; litellm normalises usage so one formula serves all three):
- OpenAI: `prompt_tokens` includes cached tokens, billed at `cache_read_input_token_cost`;
  `completion_tokens` includes reasoning tokens, billed at the output price.
- Anthropic: litellm folds cache reads and cache writes into `prompt_tokens`; reads are billed at
  `cache_read_input_token_cost`, five-minute writes at `cache_creation_input_token_cost`, one-hour writes
  at `cache_creation_input_token_cost_above_1hr`.
- Gemini: cached reads at `cache_read_input_token_cost`; thinking tokens at
  `output_cost_per_reasoning_token` where the map gives one, else the output price.
- Context tiers: a call whose prompt (cached tokens included) passes a threshold such as
  `*_above_200k_tokens` is billed at that tier's rates for the whole call; the highest threshold passed
  wins, and a dimension the tier does not price keeps the rate below it.
- Service tiers: `flex`, `priority` and `batch` rates (`*_flex`, `*_priority`, `*_batches`) where the map
  has them; a dimension a tier does not price is billed at the standard rate, as litellm does.
A dimension a response uses but no price covers (audio or image tokens, a tier the map lacks) is billed
at the nearest rate and named in `Bill.unpriced`, so it becomes a warning, never a silent $0.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from harness.config import PRICE_DIMENSIONS, PRICE_FIELD, ConfigError, ModelConfig, Price, load_yaml
from harness.endpoints import is_local_model, is_loopback
from harness.model_map import map_entry
from harness.offline import import_litellm
from harness.records import Record, Usage

TIERS = ("batch", "flex", "priority")
"""The service tiers harness can price, besides the standard one."""
TIER_SUFFIX = {"batch": "_batches", "flex": "_flex", "priority": "_priority"}
_STANDARD_TIER_NAMES = {"", "default", "standard", "auto", "on_demand"}
_TIER_ALIASES = {"fast": "priority", "batches": "batch"}

INCLUSIVE_THRESHOLD_PROVIDERS = {"xai"}
"""Providers that bill the higher context tier once the prompt *reaches* the threshold (litellm agrees)."""

_FALLBACK = {
    "cache_read_input_token_cost": "input_cost_per_token",
    "cache_creation_input_token_cost": "input_cost_per_token",
    "cache_creation_input_token_cost_above_1hr": "cache_creation_input_token_cost",
    "output_cost_per_reasoning_token": "output_cost_per_token",
    "input_cost_per_audio_token": "input_cost_per_token",
    "input_cost_per_image_token": "input_cost_per_token",
    "output_cost_per_audio_token": "output_cost_per_token",
    "output_cost_per_image_token": "output_cost_per_token",
}
"""Where an unpriced dimension is billed: a missing cache price is ordinary input, as the providers bill it."""
_MUST_BE_PRICED = {
    "input_cost_per_audio_token": "input audio tokens",
    "input_cost_per_image_token": "input image tokens",
    "output_cost_per_audio_token": "output audio tokens",
    "output_cost_per_image_token": "output image tokens",
}
"""Dimensions whose fallback is a guess rather than a billing rule: using them unpriced is a warning."""


def tier_name(value: object) -> str | None:
    """A tier as harness names it: None for standard, else batch, flex, priority or the provider's own word."""
    if value is None:
        return None
    name = str(value).strip().lower()
    if name in _STANDARD_TIER_NAMES:
        return None
    if not re.fullmatch(r"[a-z0-9_-]{1,32}", name):
        return "unrecognised"  # whatever a server sends, a record and a warning carry a short word
    return _TIER_ALIASES.get(name, name)


@dataclass(frozen=True)
class Bill:
    """One call's bill, by dimension, with what no price covered."""

    total: float
    lines: dict[str, float]
    """Price field to dollars (the base field name: `input_cost_per_token`, `cache_read_input_token_cost`...)."""
    unpriced: tuple[str, ...] = ()
    """Dimensions the call used that no price covers, each billed at the nearest rate (a warning)."""
    context_threshold: int | None = None
    """The context tier the call was billed at (tokens), or None below every threshold."""


@dataclass(frozen=True)
class ModelPrice:
    """Per-token prices in USD for one model, by litellm field name, and where they came from."""

    rates: tuple[tuple[str, float], ...] = ()
    """(field, USD per token), every field matching `config.PRICE_FIELD`; a tuple so the price pickles and hashes."""
    usd_per_hour: float = 0.0
    source: str = ""
    inclusive_thresholds: bool = False
    priced_as: str = ""
    """The model whose map entry gave these prices (itself, or the one `price.like` names); "" for a sheet."""

    @classmethod
    def of(cls, rates: Mapping[str, Any], **fields: Any) -> ModelPrice:
        """A price from a map entry or a price sheet: fields harness does not bill are left out."""
        kept = {k: float(v) for k, v in rates.items() if PRICE_FIELD.match(k) and _is_number(v)}
        return cls(rates=tuple(sorted(kept.items())), **fields)

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any]) -> ModelPrice:
        """A price as a manifest stored it (this version's form, or the five fixed fields of older runs)."""
        if "rates" in stored:
            return cls.of(
                stored["rates"],
                usd_per_hour=float(stored.get("usd_per_hour") or 0.0),
                source=str(stored.get("source", "")),
                inclusive_thresholds=bool(stored.get("inclusive_thresholds", False)),
                priced_as=str(stored.get("priced_as", "")),
            )
        legacy = {
            "input": "input_cost_per_token",
            "output": "output_cost_per_token",
            "cache_read": "cache_read_input_token_cost",
            "cache_creation": "cache_creation_input_token_cost",
            "reasoning": "output_cost_per_reasoning_token",
        }
        rates = {name: stored[old] for old, name in legacy.items() if stored.get(old) is not None}
        hourly = float(stored.get("usd_per_hour") or 0.0)
        return cls.of(rates, usd_per_hour=hourly, source=str(stored.get("source", "")))

    def stored(self) -> dict[str, Any]:
        """The form a manifest keeps."""
        return {
            "rates": dict(self.rates),
            "usd_per_hour": self.usd_per_hour,
            "source": self.source,
            "inclusive_thresholds": self.inclusive_thresholds,
            "priced_as": self.priced_as,
        }

    @functools.cached_property
    def table(self) -> dict[str, float]:
        """The rates as a dict (built once per price)."""
        return dict(self.rates)

    @property
    def input(self) -> float:
        """The standard input rate (what `estimate` and the spend question quote)."""
        return self.table.get("input_cost_per_token", 0.0)

    @property
    def output(self) -> float:
        return self.table.get("output_cost_per_token", 0.0)

    def for_litellm(self, model: str) -> dict[str, float]:
        """Per-call prices to hand litellm for `model` when its own map does not price it, else nothing.

        litellm prices every response it logs. For a model missing from its map, that is a search through
        the whole map for a near match on every call, and it ends with no figure. Given the
        standard rates in the call, it prices from them instead; what it then reports is harness's own
        price echoed, so `call_model` does not record it as litellm's figure.
        """

        standard = ("input_cost_per_token", "output_cost_per_token")
        if self.priced_as == model or any(name not in self.table for name in standard):
            return {}
        if map_entry(model) is not None:  # priced `like` another, but litellm's own figure still means something
            return {}
        return {name: self.table[name] for name in standard}

    def tiers(self) -> tuple[str, ...]:
        """The service tiers this model has input and output prices for."""
        return tuple(
            t
            for t in TIERS
            if f"input_cost_per_token{TIER_SUFFIX[t]}" in self.table
            and f"output_cost_per_token{TIER_SUFFIX[t]}" in self.table
        )

    def rates_at(self, prompt_tokens: int, tier: str | None = None) -> tuple[dict[str, float | None], int | None]:
        """Each dimension's rate for a call of this many prompt tokens under a tier (None: unpriced), and the
        context threshold applied."""
        suffix = TIER_SUFFIX.get(tier or "", "")
        table = self.table
        rates: dict[str, float | None] = {}
        for base in PRICE_DIMENSIONS:
            rate = table.get(base + suffix) if suffix else None
            rates[base] = table.get(base) if rate is None else rate
        applied = None
        for threshold, label in self._thresholds(suffix):
            passed = prompt_tokens >= threshold if self.inclusive_thresholds else prompt_tokens > threshold
            if not passed:
                break
            applied = threshold
            for base in PRICE_DIMENSIONS:
                at_tier = table.get(f"{base}_above_{label}_tokens{suffix}") if suffix else None
                if at_tier is None and suffix != "_batches":
                    at_tier = table.get(f"{base}_above_{label}_tokens")
                if at_tier is not None:
                    rates[base] = at_tier
        return rates, applied

    @functools.cached_property
    def _threshold_index(self) -> dict[str, list[tuple[int, str]]]:
        index: dict[str, set[tuple[int, str]]] = {}
        for key in self.table:
            match = PRICE_FIELD.match(key)
            if match is None or match["n"] is None:
                continue
            label = f"{match['n']}{match['k']}"
            tokens = int(float(match["n"]) * (1000 if match["k"] else 1))
            index.setdefault(match["tier"] or "", set()).add((tokens, label))
        return {suffix: sorted(found) for suffix, found in index.items()}

    def _thresholds(self, suffix: str) -> list[tuple[int, str]]:
        """Context thresholds that count under a tier: batch has its own; flex and priority add theirs to
        the standard ones."""
        index = self._threshold_index
        if suffix == "_batches":
            return index.get(suffix, [])
        return sorted(set(index.get("", [])) | set(index.get(suffix, []))) if suffix else index.get("", [])

    def bill(self, usage: Usage, latency_s: float = 0.0, tier: str | None = None) -> Bill:
        """The bill for one call, by dimension."""
        tier = tier_name(tier)
        rates, threshold = self.rates_at(usage.input_tokens, tier)
        unpriced: list[str] = []
        if tier is not None and tier not in self.tiers():
            unpriced.append(f"the {tier} service tier")

        def rate(base: str) -> float:
            seen = base
            while rates.get(seen) is None and seen in _FALLBACK:
                seen = _FALLBACK[seen]
            return rates.get(seen) or 0.0

        counts = token_counts(usage)
        lines = {base: n * rate(base) for base, n in counts.items() if n}
        unpriced += [name for base, name in _MUST_BE_PRICED.items() if counts[base] and rates.get(base) is None]
        hourly = latency_s / 3600.0 * self.usd_per_hour
        if hourly:
            lines["usd_per_hour"] = hourly
        return Bill(sum(lines.values()), lines, tuple(unpriced), threshold)

    def cost(self, usage: Usage, latency_s: float = 0.0, tier: str | None = None) -> float:
        """The bill for one call, in USD."""
        return self.bill(usage, latency_s, tier).total


def token_counts(usage: Usage) -> dict[str, int]:
    """A call's tokens by the price field that bills them, each token counted once (cached input is not
    also plain input; reasoning is not also plain output): what a bill and a FOCUS row are made of."""
    audio_in, image_in = usage.input_audio_tokens, usage.input_image_tokens
    audio_out, image_out = usage.output_audio_tokens, usage.output_image_tokens
    created_1h = min(usage.cache_creation_1h_input_tokens, usage.cache_creation_input_tokens)
    reasoning = min(usage.reasoning_tokens, usage.output_tokens)
    plain_in = usage.input_tokens - usage.cached_input_tokens - usage.cache_creation_input_tokens - audio_in - image_in
    return {
        "input_cost_per_token": max(plain_in, 0),
        "cache_read_input_token_cost": usage.cached_input_tokens,
        "cache_creation_input_token_cost": usage.cache_creation_input_tokens - created_1h,
        "cache_creation_input_token_cost_above_1hr": created_1h,
        "input_cost_per_audio_token": audio_in,
        "input_cost_per_image_token": image_in,
        "output_cost_per_token": max(usage.output_tokens - reasoning - audio_out - image_out, 0),
        "output_cost_per_reasoning_token": reasoning,
        "output_cost_per_audio_token": audio_out,
        "output_cost_per_image_token": image_out,
    }


REPORTED_COST_TOLERANCE = 0.01
"""A reported cost more than 1% away from harness's figure is a warning: one of the two prices is wrong."""


def price_notes(model: str, price: ModelPrice, bill: Bill, reported: float | None, reported_source: str) -> list[str]:
    """What a call's bill could not settle exactly, one line each, naming the model and the dimension."""
    notes = [
        f"{model}: {what} used but not priced (billed at the nearest standard rate); "
        "add the price under the model's price:"
        for what in bill.unpriced
    ]
    comparable = reported_source.startswith("provider") or price.source == f"litellm {litellm_version()} price map"
    if reported is not None and comparable and cost_differs(bill.total, reported):
        notes.append(
            f"{model}: {reported_source} reported ${reported:.6g} for a call harness bills at ${bill.total:.6g} "
            f"({price.source}); check the price"
        )
    return notes


def cost_differs(computed: float, reported: float) -> bool:
    """True when two figures for one bill differ by more than the tolerance."""
    return abs(computed - reported) > REPORTED_COST_TOLERANCE * max(abs(computed), abs(reported))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@functools.cache
def litellm_version() -> str:
    """The litellm release whose bundled map priced a run (recorded on every run). Read once: it is
    asked for on every record, and each read parses the package's metadata."""
    return version("litellm")


def map_price(model: str) -> dict[str, float | None] | None:
    """The model's entry in litellm's price map, or None when the map does not know it."""

    found = map_entry(model)  # the bundled file, read without importing litellm
    if found is not None:
        key, entry = found
        if entry.get("input_cost_per_token") is None or entry.get("output_cost_per_token") is None:
            return None
        return {**entry, "key": key}

    litellm = import_litellm()
    try:
        info = litellm.get_model_info(model)
    except Exception:
        return None
    if info.get("input_cost_per_token") is None or info.get("output_cost_per_token") is None:
        return None
    if info.get("key") not in litellm.model_cost:
        return None  # litellm makes up a $0 entry for unknown names that look like OpenAI's: never a price
    return dict(info)


def resolve_price(cfg: ModelConfig, config_file: str) -> ModelPrice:
    """The price a model is billed at; an unknown cloud price is an error before any call.

    A model the map knows is priced from the map even when served from this machine (a proxy on
    127.0.0.1 in front of a paid API bills like the API); a model only a loopback server knows is
    self-hosted and costs $0 unless priced.
    """
    override = cfg.price or Price()
    given: dict[str, Any] = override.rates()
    if override.usd_per_hour is not None:
        given["usd_per_hour"] = override.usd_per_hour
    field_name = f"models[{cfg.display_name}].price"
    if override.like is not None:
        base = map_price(override.like)
        if base is None:
            raise ConfigError(
                config_file,
                f"{field_name}.like",
                f"'{override.like}' is not in litellm {litellm_version()}'s bundled price map",
                "name a model the map prices, e.g. gpt-4o-mini or anthropic/claude-haiku-4-5",
            )
        source = f"litellm {litellm_version()} price map, as {override.like}"
        priced_as = override.like
    elif is_local_model(cfg.model):
        base, source, priced_as = {"input_cost_per_token": 0.0, "output_cost_per_token": 0.0}, "local model, $0", ""
    else:
        base = map_price(cfg.model) or {}
        source = f"litellm {litellm_version()} price map" if base else ""
        priced_as = cfg.model if base else ""
        if not base and is_loopback(cfg.api_base):
            base, source = {"input_cost_per_token": 0.0, "output_cost_per_token": 0.0}, "self-hosted on loopback, $0"
    merged = {**base, **given}
    has_tokens = merged.get("input_cost_per_token") is not None and merged.get("output_cost_per_token") is not None
    if not has_tokens and "usd_per_hour" not in merged:
        raise ConfigError(
            config_file,
            field_name,
            f"no price known for '{cfg.model}' (not in litellm {litellm_version()}'s bundled price map)",
            "add price: {input_cost_per_token: ..., output_cost_per_token: ...}, price: {usd_per_hour: ...} "
            "or price: {like: MODEL-THE-MAP-KNOWS}",
        )
    if given:
        source = f"{source} + config override ({', '.join(sorted(given))})" if source else "config override"
    provider = (override.like or cfg.model).split("/", 1)[0]
    return ModelPrice.of(
        {**base, **given},
        usd_per_hour=float(merged.get("usd_per_hour") or 0.0),
        source=source,
        inclusive_thresholds=provider in INCLUSIVE_THRESHOLD_PROVIDERS,
        priced_as=priced_as,
    )


def load_price_file(path: Path) -> dict[str, Price]:
    """A prices YAML (model string -> litellm-named price fields), validated like a config."""
    from pydantic import ValidationError

    if not path.is_file():
        raise ConfigError(path, "", "no such prices file", "give a YAML file mapping model strings to prices")
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as exc:
        raise ConfigError(path, "", f"cannot read the prices file ({exc})", "save it as UTF-8 text") from None
    raw = load_yaml(text, path) or {}
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
                "use litellm's price field names (input_cost_per_token, output_cost_per_token, "
                "cache_read_input_token_cost, input_cost_per_token_above_200k_tokens, output_cost_per_token_flex...), "
                "usd_per_hour or like",
            ) from None
    return prices


def repricing(
    models: set[str], overrides: dict[str, Price], source: str, stored: dict[str, ModelPrice] | None = None
) -> dict[str, ModelPrice]:
    """The price each model is repriced at: given prices first, then the current map, then as stored
    (a config override or a local model's price is kept: the map never knew it)."""
    stored = stored or {}
    prices: dict[str, ModelPrice] = {}
    for model in models:
        if model in overrides:
            prices[model] = resolve_price(ModelConfig(model=model, price=overrides[model]), source)
        elif model in stored and ("config override" in stored[model].source or is_local_model(model)):
            prices[model] = stored[model]
        elif map_price(model) is not None:
            prices[model] = resolve_price(ModelConfig(model=model), source)
        elif model in stored:
            prices[model] = stored[model]
    return prices


def reprice_records(records: list[Record], prices: dict[str, ModelPrice], tier: str | None = None) -> list[Record]:
    """Records with costs recomputed from their usage, under `tier` when given (else the tier each call
    was served at); a record whose model has no price is kept as it was."""
    out = []
    for r in records:
        price = prices.get(r.model)
        if price is None:
            out.append(r)
            continue
        billed_tier = tier_name(tier) if tier else r.usage.service_tier
        source = f"{price.source}, {billed_tier} tier" if tier else price.source
        usage = r.usage.model_copy(update={"service_tier": billed_tier})
        cost = price.cost(usage, r.latency_s, billed_tier)
        out.append(r.model_copy(update={"cost_usd": cost, "price_source": source, "usage": usage}))
    return out
