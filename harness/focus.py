"""Stored runs as FinOps FOCUS 1.2 rows, so an eval's spend and its projected month sit beside a cloud
bill in the tools finance already uses.

One row per (run, variant, segment, model, token type) for the calls the run made: tokens are the
consumed unit (`ConsumedQuantity` tokens, `PricingQuantity` in millions at the `1M Tokens` unit),
`ListCost` what the calls cost at list price, `BilledCost` and `EffectiveCost` what this run paid (a call
the response cache served paid nothing). Scoring (judge) calls are a row of their own per variant. Then
one row per variant for its projected month (`ChargeDescription` says so; `BilledCost` and
`EffectiveCost` 0, `ListCost` the month), tagged `harness-kind: projection`, so a sum of `BilledCost` is
what the runs spent and never includes a projection.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from harness.manifest import RunManifest
from harness.pricing import ModelPrice, token_counts
from harness.records import Record
from harness.summary import DAYS_PER_MONTH, VariantSummary

COLUMNS = (
    "BilledCost",
    "EffectiveCost",
    "ListCost",
    "BillingCurrency",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ChargeCategory",
    "ChargeDescription",
    "ServiceCategory",
    "ServiceName",
    "ProviderName",
    "SkuId",
    "ConsumedQuantity",
    "ConsumedUnit",
    "PricingQuantity",
    "PricingUnit",
    "Tags",
)
"""The FOCUS 1.2 columns written, in this order."""

TOKEN_TYPES = {
    "input_cost_per_token": "input",
    "cache_read_input_token_cost": "cached-input",
    "cache_creation_input_token_cost": "cache-write",
    "cache_creation_input_token_cost_above_1hr": "cache-write-1h",
    "input_cost_per_audio_token": "audio-input",
    "input_cost_per_image_token": "image-input",
    "output_cost_per_token": "output",
    "output_cost_per_reasoning_token": "reasoning-output",
    "output_cost_per_audio_token": "audio-output",
    "output_cost_per_image_token": "image-output",
    "unattributed": "calls",
}
PROVIDERS = {
    "openai": "OpenAI",
    "anthropic": "Anthropic",
    "gemini": "Google",
    "vertex_ai": "Google",
    "local": "self-hosted",
}


def focus_rows(
    run_id: str,
    manifest: RunManifest,
    records: list[Record],
    summaries: list[VariantSummary],
    started: datetime,
    ended: datetime,
    segments: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The run's rows: its calls by model and token type, its scoring, and each variant's projected month.
    `segments` maps item id to the log segment it was sampled from (the `feature` tag), when there is one."""
    prices = {m: ModelPrice.from_stored(p) for m, p in manifest.prices.items()}
    for v in manifest.variants:
        if v.price is not None:
            prices.setdefault(v.model, ModelPrice.from_stored(v.price))
    groups: dict[tuple[str, str, str, str], dict[str, float]] = {}
    scoring: dict[tuple[str, str], dict[str, float]] = {}
    for r in records:
        feature = (segments or {}).get(r.item_id) or manifest.experiment
        price = prices.get(r.model)
        lines = price.bill(r.usage, r.latency_s, r.usage.service_tier).lines if price is not None else {}
        total = sum(lines.values())
        scale = r.cost_usd / total if total else 0.0
        if r.cost_usd and not total:  # a cost no price line explains (a reported cost): kept whole
            lines, scale = {"unattributed": r.cost_usd}, 1.0
        counts: dict[str, float] = dict(token_counts(r.usage))
        if "unattributed" in lines:
            counts = {"unattributed": 1}
        for field, tokens in counts.items():
            if not tokens:
                continue
            row = groups.setdefault((r.variant, feature, r.model, field), {"tokens": 0, "list": 0.0, "billed": 0.0})
            usd = lines.get(field, 0.0) * scale  # the record's cost, split as its bill splits
            row["tokens"] += tokens
            row["list"] += usd
            row["billed"] += 0.0 if not r.paid_now else usd
        if "usd_per_hour" in lines:  # a self-hosted model priced by the hour: its compute, in hours
            row = groups.setdefault(
                (r.variant, feature, r.model, "usd_per_hour"), {"tokens": 0, "list": 0.0, "billed": 0.0}
            )
            row["tokens"] += r.latency_s / 3600
            row["list"] += lines["usd_per_hour"] * scale
            row["billed"] += 0.0 if not r.paid_now else lines["usd_per_hour"] * scale
        if r.eval_cost_usd:
            row = scoring.setdefault((r.variant, feature), {"list": 0.0, "billed": 0.0})
            row["list"] += r.eval_cost_usd
            row["billed"] += 0.0 if not r.paid_now else r.eval_cost_usd
    period = (_iso(started), _iso(ended))
    out = []
    for (variant, feature, model, field), row in sorted(groups.items()):
        hourly = field == "usd_per_hour"
        kind = "compute-hours" if hourly else TOKEN_TYPES.get(field, field)
        out.append(
            _row(
                row["billed"],
                row["list"],
                period,
                f"harness eval run {run_id}: {variant}, {kind}",
                model,
                f"{model}:{kind}",
                row["tokens"],
                "Hours" if hourly else "Tokens",
                row["tokens"] if hourly else row["tokens"] / 1e6,
                "Hours" if hourly else "1M Tokens",
                {"experiment": manifest.experiment, "variant": variant, "feature": feature, "run": run_id},
            )
        )
    for (variant, feature), row in sorted(scoring.items()):
        out.append(
            _row(
                row["billed"],
                row["list"],
                period,
                f"harness eval run {run_id}: scoring {variant}'s outputs (judge calls)",
                "scoring",
                "scoring",
                row["list"],
                "USD",
                row["list"],
                "USD",
                {"experiment": manifest.experiment, "variant": variant, "feature": feature, "run": run_id},
            )
        )
    month = (_iso(started), _iso(started + timedelta(days=DAYS_PER_MONTH)))
    models = {v.name: v.model for v in manifest.variants}
    for s in summaries:
        if s.skipped or not s.n_items or s.monthly_cost_usd != s.monthly_cost_usd:  # NaN: no traffic known
            continue
        out.append(
            _row(
                0.0,
                s.monthly_cost_usd,
                month,
                f"harness projection from run {run_id}: {s.variant} for a month of traffic (not billed)",
                models.get(s.variant, s.model),
                f"{models.get(s.variant, s.model)}:projected-month",
                1,
                "Month",
                1,
                "Month",
                {"experiment": manifest.experiment, "variant": s.variant, "run": run_id, "harness-kind": "projection"},
            )
        )
    return out


def _row(
    billed: float,
    listed: float,
    period: tuple[str, str],
    description: str,
    model: str,
    sku: str,
    consumed: float,
    consumed_unit: str,
    pricing: float,
    pricing_unit: str,
    tags: dict[str, str],
) -> dict[str, Any]:
    provider = model.split("/", 1)[0] if "/" in model else "openai" if model.startswith(("gpt", "o1", "o3")) else ""
    name = PROVIDERS.get(provider, provider or "harness")
    return {
        "BilledCost": billed,
        "EffectiveCost": billed,
        "ListCost": listed,
        "BillingCurrency": "USD",
        "ChargePeriodStart": period[0],
        "ChargePeriodEnd": period[1],
        "ChargeCategory": "Usage",
        "ChargeDescription": description,
        "ServiceCategory": "AI and Machine Learning",
        "ServiceName": f"{name} API" if name not in ("harness", "self-hosted") else name,
        "ProviderName": name,
        "SkuId": sku,
        "ConsumedQuantity": consumed,
        "ConsumedUnit": consumed_unit,
        "PricingQuantity": pricing,
        "PricingUnit": pricing_unit,
        "Tags": json.dumps(tags, sort_keys=True),
    }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def focus_csv(rows: Iterable[dict[str, Any]]) -> str:
    """The rows as CSV with FOCUS's column names; numbers unformatted, so nothing is rounded away."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
    return buffer.getvalue()
