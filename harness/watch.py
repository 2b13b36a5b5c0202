"""`harness watch`: is each experiment's latest decision still true under today's prices and models?

A decision is made once, on the prices of that day; providers change prices and retire models monthly.
For each experiment with a stored run, `watch` re-prices the stored records under the current map (the
installed litellm's, a newer map file, or a price sheet) and re-decides from them with no model call,
then says what moved: the recommendation and its $/month, each model's prices against the map the run
was priced with, models in use past or near their `deprecation_date`, and cheaper models of the same
mode in the map worth evaluating, with the lines to add to the experiment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

from harness.api import analyze, load_run, reprice
from harness.config import PRICE_DIMENSIONS, ConfigError, Experiment, load_config
from harness.model_map import bundled_map, map_entry, map_provenance, provider_of
from harness.pricing import ModelPrice, litellm_version, map_price
from harness.rebuild import Rebuilt
from harness.records import Record
from harness.secrets import redact_url, scrub
from harness.tracking.read import StoredRun, estimate_errors, latest_run
from harness.tracking.store import tracking_uri

EXIT_UNCHANGED, EXIT_CHANGED = 0, 1
CHEAPER_SHOWN = 5
MIN_SAVING = 0.01
"""A model is shown as cheaper when it saves at least this share at the stored usage (not a rounding)."""


@dataclass(frozen=True)
class PriceChange:
    model: str
    dimension: str
    before: float
    after: float


@dataclass(frozen=True)
class Deprecation:
    model: str
    on: date
    days_left: int


@dataclass(frozen=True)
class Cheaper:
    """A model of the same mode whose price at the recommended variant's stored usage is lower."""

    model: str
    usd_per_item: float
    instead_of: str
    instead_usd_per_item: float


@dataclass
class Watched:
    """One experiment's latest decision, re-decided."""

    config: Path
    experiment: str
    run_id: str
    started: datetime
    priced_with: dict[str, str]
    prices_now: dict[str, str]
    before: Rebuilt
    after: Rebuilt
    after_records: list[Record] = field(default_factory=list)
    """The stored records repriced at today's prices."""
    price_changes: list[PriceChange] = field(default_factory=list)
    deprecations: list[Deprecation] = field(default_factory=list)
    cheaper: list[Cheaper] = field(default_factory=list)
    estimate_error: float | None = None
    """(spent - estimated) / estimated for the run, when it estimated a spend above $0."""
    estimate_errors: list[float] = field(default_factory=list)
    """The same over the experiment's recent runs, newest first: how far its estimates are to be trusted."""

    @property
    def recommended_before(self) -> str | None:
        rec = self.before.analysis.recommendation
        return rec.variant if rec else None

    @property
    def recommended_after(self) -> str | None:
        rec = self.after.analysis.recommendation
        return rec.variant if rec else None

    @property
    def decision_changed(self) -> bool:
        return self.recommended_before != self.recommended_after

    def monthly(self, rebuilt: Rebuilt, variant: str | None) -> float:
        found = next((s for s in rebuilt.summaries if s.variant == variant), None)
        return found.monthly_cost_usd if found is not None else math.nan

    def alarming(self, days: int) -> bool:
        """A changed decision, or a model in use retired within `days` (or already)."""
        return self.decision_changed or any(d.days_left <= days for d in self.deprecations)


def experiments_with_runs(paths: list[Path], root: Path) -> list[tuple[Path, Experiment]]:
    """The configs named, else every `experiments/*.yaml` under `root`; each loaded (a bad one is an error)."""
    configs = paths or sorted((root / "experiments").glob("*.yaml"))
    if not configs:
        raise ConfigError(str(root), "experiments", "no experiment configs found", "give EXPERIMENT paths")
    return [(path, load_config(path)) for path in configs]


@dataclass
class Watch:
    """What `watch` found: the decisions re-decided, the configs with no stored run, and the stores it
    could not read (a finding of its own: the job did not check those)."""

    watched: list[Watched]
    without: list[str]
    failed: list[str]


def watch(configs: list[tuple[Path, Experiment]], prices: Path | None, days: int, today: date | None = None) -> Watch:
    """Every experiment's latest run re-decided; the configs that have no stored run and the stores that
    could not be read, one line each."""
    today = today or datetime.now(UTC).date()
    watched: list[Watched] = []
    without: list[str] = []
    failed: list[str] = []
    for path, experiment in configs:
        uri = tracking_uri(experiment)
        if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
            without.append(f"{path}: no stored run (no store at {uri})")
            continue
        down = _unreachable(uri)
        if down:
            failed.append(f"{path}: cannot reach {redact_url(uri)} ({down})")
            continue
        try:
            latest = latest_run(uri, experiment.name)
        except Exception as exc:  # a server that is down: say so and watch the others
            failed.append(f"{path}: cannot read {redact_url(uri)}: {scrub(str(exc)).splitlines()[0][:200]}")
            continue
        if latest is None:
            without.append(f"{path}: no finished run of '{experiment.name}' in {uri}")
            continue
        stored = load_run(latest.run_id, uri)
        found = _watch_one(path, stored, latest.started_ms, prices, days, today)
        found.estimate_errors = estimate_errors(uri, experiment.name)
        watched.append(found)
    return Watch(watched, without, failed)


def _unreachable(uri: str) -> str:
    """Why a tracking server does not answer its health check within seconds ("" when it does, or for a
    database store): MLflow's own client retries a dead server for minutes, and a weekly job watching ten
    experiments should say so and go on to the others."""
    if not uri.startswith(("http://", "https://")):
        return ""
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=HEALTH_TIMEOUT_S):
            return ""
    except OSError as exc:
        return str(getattr(exc, "reason", exc))[:200]


HEALTH_TIMEOUT_S = 10


def _watch_one(path: Path, stored: StoredRun, started_ms: int, prices: Path | None, days: int, today: date) -> Watched:
    manifest = stored.manifest
    before = analyze(stored)
    repriced = reprice(stored, prices)
    after = repriced.rebuilt
    status = manifest.status
    error = None
    if status.estimated_usd:
        error = (status.spent_usd - status.estimated_usd) / status.estimated_usd
    watched = Watched(
        config=path,
        experiment=manifest.experiment,
        run_id=stored.run_id,
        started=datetime.fromtimestamp(started_ms / 1000, UTC),
        priced_with={"litellm": manifest.litellm_version, **manifest.price_map},
        prices_now={"litellm": litellm_version(), **map_provenance()},
        before=before,
        after=after,
        after_records=repriced.records,
        estimate_error=error,
    )
    used = sorted({r.model for r in stored.records})
    watched.price_changes = price_changes(manifest.prices, used)
    watched.deprecations = deprecations(used, today, days)
    watched.cheaper = cheaper_models(stored, watched.recommended_after or before.analysis.baseline or "", today)
    return watched


def price_changes(stored: dict[str, dict[str, object]], models: list[str]) -> list[PriceChange]:
    """Each per-token rate that differs between the price a run was billed at and the map's now, for the
    models the map priced (a config override or a local model is the config's own price)."""
    out = []
    for model in models:
        if model not in stored:
            continue
        was = ModelPrice.from_stored(stored[model])
        now = map_price(model)
        if now is None or "price map" not in was.source or "override" in was.source:
            continue
        for dimension in PRICE_DIMENSIONS:
            before, after = was.table.get(dimension), now.get(dimension)
            if isinstance(before, int | float) and isinstance(after, int | float) and not math.isclose(before, after):
                out.append(PriceChange(model, dimension, float(before), float(after)))
    return out


def deprecations(models: list[str], today: date, days: int) -> list[Deprecation]:
    """Models in use whose map entry has a `deprecation_date` at most `days` away (or past)."""
    out = []
    for model in models:
        found = map_entry(model)
        when = _date(found[1].get("deprecation_date")) if found else None
        if when is not None and (when - today).days <= days:
            out.append(Deprecation(model, when, (when - today).days))
    return out


def _date(value: object) -> date | None:
    try:
        return date.fromisoformat(str(value)[:10]) if value else None
    except ValueError:
        return None


def cheaper_models(stored: StoredRun, variant: str, today: date) -> list[Cheaper]:
    """Models of the recommended model's mode (chat, completion, ...) whose list price at its stored mean
    usage is below its own, not deprecated, from the providers the experiment already uses (a team has
    their keys and contracts); the recommended model's own provider first, then cheapest first."""
    records = [r for r in stored.records if r.variant == variant and r.error is None]
    if not records:
        return []
    model = records[0].model
    found = map_entry(model)
    if found is None:
        return []
    mode = found[1].get("mode")
    tokens_in = sum(r.usage.input_tokens for r in records) / len(records)
    tokens_out = sum(r.usage.output_tokens for r in records) / len(records)
    own = sum(r.cost_usd for r in records) / len(records)
    home = str(found[1].get("litellm_provider") or "")
    used = {provider_of(v.model) for v in stored.manifest.variants} | {provider_of(r.model) for r in stored.records}
    allowed = {p for p in used if p} | {home}
    out = []
    for key, entry in bundled_map().items():
        provider = str(entry.get("litellm_provider") or "")
        rate_in, rate_out = entry.get("input_cost_per_token"), entry.get("output_cost_per_token")
        if entry.get("mode") != mode or provider not in allowed or key == found[0]:
            continue
        if not isinstance(rate_in, int | float) or not isinstance(rate_out, int | float):
            continue
        retired = _date(entry.get("deprecation_date"))
        if retired is not None and retired <= today:
            continue
        usd = rate_in * tokens_in + rate_out * tokens_out
        if 0 < usd < own * (1 - MIN_SAVING):
            name = key if "/" in key or provider == "openai" else f"{provider}/{key}"
            out.append(Cheaper(name, usd, variant, own))
    out.sort(key=lambda c: (not c.model.startswith(home) and "/" in c.model, c.usd_per_item, len(c.model), c.model))
    shown: list[Cheaper] = []
    for c in out:  # a dated alias at the same price as a model already shown is the same offer
        if not any(math.isclose(c.usd_per_item, s.usd_per_item) and c.model.startswith(s.model) for s in shown):
            shown.append(c)
    return shown[:CHEAPER_SHOWN]


def watch_lines(w: Watched, days: int) -> list[str]:
    """What `watch` prints for one experiment (the markdown summary has the same lines)."""
    stamp = w.started.strftime("%Y-%m-%d %H:%M UTC")
    was, now = w.priced_with, w.prices_now
    lines = [
        f"{w.experiment} ({w.config}): run {w.run_id} of {stamp}, priced with litellm {was.get('litellm', '?')} "
        f"map {was.get('sha256', '')[:12] or '?'}; now litellm {now['litellm']} map {now['sha256'][:12]}"
        + ("" if now.get("source") == "bundled" else f" ({now.get('source')})")
    ]
    before, after = w.recommended_before, w.recommended_after
    month_before, month_after = w.monthly(w.before, before), w.monthly(w.after, after)
    money = ""
    if math.isfinite(month_before) and math.isfinite(month_after):
        money = f"; its $/month ${month_before:,.2f} -> ${month_after:,.2f} ({month_after - month_before:+,.2f})"
    if w.decision_changed:
        lines.append(f"  DECISION CHANGED: was {before}, now {after}{money}")
    else:
        lines.append(f"  decision unchanged: {after}{money}")
    for c in w.price_changes:
        change = (c.after - c.before) / c.before if c.before else math.inf
        lines.append(
            f"  price: {c.model} {c.dimension} ${c.before * 1e6:.4g} -> ${c.after * 1e6:.4g} per 1M ({change:+.0%})"
        )
    for d in w.deprecations:
        when = "was deprecated" if d.days_left < 0 else "is deprecated" if d.days_left == 0 else "deprecates"
        lines.append(f"  DEPRECATION: {d.model} {when} on {d.on} ({d.days_left:+d} days; watching {days})")
    if w.cheaper:
        lines.append(
            f"  cheaper at {w.cheaper[0].instead_of}'s stored usage (${w.cheaper[0].instead_usd_per_item:.6f}/item), "
            "worth evaluating:"
        )
        lines += [f"    {c.model}: ${c.usd_per_item:.6f}/item" for c in w.cheaper]
        lines.append("  to try them, add under models: in " + str(w.config) + ":")
        lines += [f"    - {c.model}" for c in w.cheaper]
    if w.estimate_error is not None:
        lines.append(f"  the run's estimate was {w.estimate_error:+.0%} off what it spent")
    if len(w.estimate_errors) > 1:
        errors = w.estimate_errors
        mean_abs = sum(abs(e) for e in errors) / len(errors)
        lines.append(
            f"  over its last {len(errors)} runs the estimate was off by {mean_abs:.0%} on average "
            f"(from {min(errors):+.0%} to {max(errors):+.0%})"
        )
    return lines


def markdown_summary(watched: list[Watched], without: list[str], days: int) -> str:
    """The `$GITHUB_STEP_SUMMARY` page: a table of decisions, then each experiment's lines."""
    rows = [
        "| experiment | decision | $/month then | $/month now | deprecations | cheaper to try |",
        "|---|---|---|---|---|---|",
    ]
    for w in watched:
        state = f"**changed**: {w.recommended_before} -> {w.recommended_after}" if w.decision_changed else "unchanged"
        then, now = w.monthly(w.before, w.recommended_before), w.monthly(w.after, w.recommended_after)
        rows.append(
            f"| {w.experiment} | {state} | {_money(then)} | {_money(now)} | "
            f"{', '.join(f'{d.model} ({d.on})' for d in w.deprecations) or '–'} | "
            f"{', '.join(c.model for c in w.cheaper) or '–'} |"
        )
    detail = ["", "```", *(line for w in watched for line in watch_lines(w, days)), *without, "```"]
    return "# harness watch\n\n" + "\n".join(rows + detail) + "\n"


def document(watched: list[Watched], days: int) -> dict[str, object]:
    """`watch --json FILE`: what a scheduled job acts on (which configs to gate, with which candidate)."""
    return {
        "schema": "harness.watch/1",
        "experiments": [
            {
                "experiment": w.experiment,
                "config": str(w.config),
                "run_id": w.run_id,
                "decided": w.started.isoformat(timespec="seconds"),
                "recommended_before": w.recommended_before,
                "recommended_now": w.recommended_after,
                "decision_changed": w.decision_changed,
                "alarming": w.alarming(days),
                "price_changes": [vars(c) for c in w.price_changes],
                "deprecations": [
                    {"model": d.model, "on": d.on.isoformat(), "days_left": d.days_left} for d in w.deprecations
                ],
                "cheaper": [{"model": c.model, "usd_per_item": c.usd_per_item} for c in w.cheaper],
                "estimate_error": w.estimate_error,
                "estimate_errors": w.estimate_errors,
            }
            for w in watched
        ],
    }


def _money(value: float) -> str:
    return f"${value:,.2f}" if math.isfinite(value) else "–"
