"""From a stored run back to evidence, without a model call: scorers, aggregates, analysis, comparability.

`report`, `route`, `reprice` and `gate --against` all come through here. Scorers are rebuilt from the
manifest's specs so that aggregates such as macro-F1 come back exactly as `run` showed them, and records
compared with a new eval must have been made on the same items with the same prompts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.analysis import Analysis, MetricInfo
from harness.config import ConfigError, GateConfig, RoutingConfig
from harness.evidence import analyze_run
from harness.manifest import RunManifest, VariantSpec
from harness.plan import Plan, Variant
from harness.pricing import ModelPrice
from harness.records import Record
from harness.scorers import Scorer, build_scorer
from harness.summary import VariantSummary, item_weights, projected_rate, summarize_records


@dataclass
class Rebuilt:
    """Summaries and analysis rebuilt from stored records."""

    summaries: list[VariantSummary]
    analysis: Analysis
    notes: list[str]
    """What could not be rebuilt (an aggregate whose scorer cannot be built here), said once."""


def rebuild_scorers(manifest: RunManifest) -> tuple[list[Scorer], list[str]]:
    """The run's scorers that aggregate across items, built from their specs; notes for the rest."""
    root = Path(manifest.project_root) if manifest.project_root and Path(manifest.project_root).is_dir() else None
    scorers, notes = [], []
    for spec in manifest.scorers:
        try:
            scorer = build_scorer(spec.config(), f"run {manifest.experiment}", f"scorer {spec.label}", spec.label, root)
        except ConfigError as exc:
            notes.append(f"scorer {spec.label} cannot be rebuilt here ({exc.problem}); its aggregates are left out")
            continue
        if scorer.aggregate is not None:
            scorers.append(scorer)
    return scorers, notes


def analyze_stored(
    manifest: RunManifest,
    records: list[Record],
    items: list | None = None,
    gate: GateConfig | None = None,
    routing: RoutingConfig | None = None,
    prices: dict[str, ModelPrice] | None = None,
) -> Rebuilt:
    """Rebuild summaries and analysis from a stored run's manifest, items and records (no model call).

    Aggregates need the items (kept with every run); routing policies come from `routing`, else from the
    run's own config.
    """
    metrics = [MetricInfo(label, kind) for label, kind in manifest.metrics]
    scorers, notes = rebuild_scorers(manifest) if items else ([], [])
    by_id = {i.id: i for i in items or []}
    rpd = projected_rate(manifest.traffic, manifest.log)
    variants = [v.info() for v in manifest.variants]
    weights = item_weights(items) if items else None
    summaries = summarize_records(variants, records, [m.name for m in metrics], scorers, by_id or None, rpd, weights)
    analysis = analyze_run(
        summaries,
        records,
        metrics,
        manifest.baseline,
        gate or manifest.gate,
        manifest.analysis,
        manifest.decision,
        routing or manifest.routing,
        f"run {manifest.experiment}",
        {v.name: price for v in manifest.variants if (price := _variant_price(manifest, v, prices)) is not None},
        {v.name: v.shared_prefix_tokens for v in manifest.variants},
        rpd,
        items=items or None,
        log=manifest.log,
    )
    if manifest.status.sequential:
        notes.append(
            "this run was a sequential gate, stopped by its looks (see 'as run'); the verdicts here are the fixed "
            "design's on the items it used, not the gate's decision"
        )
    return Rebuilt(summaries, analysis, notes)


def _variant_price(
    manifest: RunManifest, variant: VariantSpec, prices: dict[str, ModelPrice] | None
) -> ModelPrice | None:
    """The price a stored variant is analysed at: a repricing's price for its model, else what it was billed."""
    if prices and variant.model in prices:
        return prices[variant.model]
    stored = variant.price or manifest.prices.get(variant.model)
    return ModelPrice.from_stored(stored) if stored else None


def comparable_records(
    manifest: RunManifest, records: list[Record], plan: Plan, variant: Variant, run_id: str
) -> list[Record]:
    """The stored records of `variant`, checked to answer the same questions as `plan` would ask.

    Raises ConfigError (one line: which run, what differs, what to do) when the run was made on another
    eval, with another prompt, with other samples, or lacks some of the items.
    """
    file = plan.experiment.source_path
    fix = "run the baseline on this eval (gate without --against), or give a run made on it"
    if manifest.dataset_fingerprint != plan.eval_set.fingerprint:
        raise ConfigError(
            file,
            "--against",
            f"run {run_id} was made on another eval (dataset fingerprint {manifest.dataset_fingerprint or 'unknown'}, "
            f"this eval {plan.eval_set.fingerprint})",
            fix,
        )
    mine = [r for r in records if r.variant == variant.name]
    if not mine:
        raise ConfigError(file, "--against", f"run {run_id} has no records for the baseline {variant.name}", fix)
    stored = {(r.item_id, r.sample): r for r in mine}
    wanted = [(item.id, k) for item in plan.eval_set.items for k in plan.samples]
    missing = [key for key in wanted if key not in stored]
    if missing:
        shown = ", ".join(f"{i}#{k}" if plan.experiment.epochs > 1 else i for i, k in missing[:5])
        raise ConfigError(
            file,
            "--against",
            f"run {run_id} lacks {len(missing)} of the eval's {len(wanted)} calls (e.g. {shown})",
            fix,
        )

    changed = [i for i, k in wanted if stored[(i, k)].prompt_hash != plan.prompt_hash(variant.prompt.name, i)]
    if changed:
        raise ConfigError(
            file,
            "--against",
            f"the baseline's prompts differ from run {run_id} on {len(changed)} items (e.g. {changed[0]}): the "
            "template, its variables or the items changed",
            fix,
        )
    return [stored[key] for key in wanted]
