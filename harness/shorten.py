"""A shorter prompt, found under a non-inferiority bound and confirmed on items the search never saw.

The items are split once, by the experiment's seed, into a search half and a confirmation half. The
search deletes the template's sentences (`prompt_units`) greedily, longest first: each deletion goes
through the decision engine's sequential looks over the search items (`SEARCH_DESIGN`), so one that is
clearly worse, or out of reach, is dropped at the first look for the price of that stage's calls, and only
what survives is called on more items; it is kept once shown non-inferior, or at the last look unless it
is worse or loses more than half the margin on average. Whatever survives is judged once, against the
original, on the confirmation items only, by `decision.decide` at the gate's margin and confidence: that
verdict and its interval are the only ones reported. The search's own figures are chosen by the search,
so they are never evidence (the winner's curse); the confirmation's are.

A deletion is not tried when it makes a call dearer: cutting into the fixed text every prompt starts with
can take that prefix under the provider's minimum cacheable length, and then the cache's discount on the
rest of it is lost. Such a deletion is skipped unpriced, so the prefix a prompt cache serves stays, and
the report gives the prefix and the cost per call with the cache before and after.

Every call goes through one model pool (cache, budget, retries), so a deletion tried twice, or a re-run
of the whole search, pays once; the budget caps the search and the confirmation together.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from harness.caches import open_cache
from harness.config import ConfigError, Experiment
from harness.datasets import Item
from harness.decision import CandidateDecision, PairedScores, SequentialDesign, decide, look, score_range_of
from harness.identity import digest
from harness.levers import cold_share, input_usd, min_cacheable_tokens
from harness.plan import Plan, Variant, item_order
from harness.planner import load_constants, prepare, render_item
from harness.pool import ModelPool
from harness.prompt_units import Unit, containers, units, without
from harness.prompts import PromptTemplate, shared_prefix, template_from_source
from harness.runner import run_plan
from harness.scorers import Scorer, score_records
from harness.sequential import boundaries, schedule
from harness.spending import confirm_spend_usd
from harness.summary import DAYS_PER_MONTH
from harness.tokens import count_text_tokens, count_tokens
from harness.tracking.write import log_finding

MIN_ITEMS = 10
"""Fewer cannot search on one half and confirm on the other with more than a handful of pairs each."""
SEARCH_DESIGN = SequentialDesign(looks=3, spending="pocock", futility=0.1)
"""How each deletion is screened: the gate's sequential looks over the search items, so a deletion that is
clearly worse costs the first stage's calls and no more."""

Evaluate = Callable[[frozenset[int], list[str]], np.ndarray]
"""Scores per item (NaN where none) of the template with these units removed, on these items."""
GONE = "gone with a larger unit"
Bills = dict[frozenset[int], dict[str, list[float]]]
"""Dollars per call of each template tried, by item, as billed (input, output, compute by the hour)."""
CallCost = Callable[[frozenset[int]], float]
"""Expected input dollars per call of the template with these units removed, prompt cache included."""


@dataclass(frozen=True)
class Trial:
    """One deletion the search tried."""

    unit: int
    diff: float | None
    """Mean difference on the search items it was looked at on (None: never called)."""
    items: int
    """Search items it was called on: a deletion dropped at an early look paid for those alone."""
    kept: bool
    reason: str


@dataclass
class Search:
    """What the search found and what the confirmation said of it."""

    removed: frozenset[int]
    trials: list[Trial]
    confirmation: CandidateDecision | None
    """The shortened template against the original on the confirmation items (None: nothing removed)."""


@dataclass
class Shortening:
    """The outcome of `harness shorten`: the prompt, the verdict, the savings and the cost of finding them."""

    prompt: str
    variant: str
    template_path: Path
    """The original template's file: the shortened one goes beside it."""
    search: Search
    units: list[Unit]
    search_items: list[str]
    confirm_items: list[str]
    source: str
    shortened: str
    tokens_before: float
    tokens_after: float
    prefix_before: int
    prefix_after: int
    cache_minimum: int | None
    """The provider's shortest cacheable prefix (None: the price has no cached-input rate)."""
    usd_per_call_before: float
    """Billed per call on the confirmation items, with the prompt cache's effect at traffic added."""
    usd_per_call_after: float
    monthly_saving_usd: float | None
    calls_made: int
    spent_usd: float
    cache_usd_before: float = 0.0
    """What the provider's prompt cache takes off each call (0: the prefix is too short or not priced)."""
    cache_usd_after: float = 0.0
    path: Path | None = None
    report: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def usd_per_call_saved(self) -> float:
        return self.usd_per_call_before - self.usd_per_call_after

    @property
    def verdict(self) -> str:
        return "no shorter prompt" if self.search.confirmation is None else self.search.confirmation.status


def split_items(ids: list[str], seed: int) -> tuple[list[str], list[str]]:
    """Search and confirmation items: disjoint halves of the items in the experiment's seeded order."""
    ordered = item_order(ids, seed)
    half = len(ordered) // 2
    return ordered[:half], ordered[half:]


def search(
    unit_sizes: list[int],
    evaluate: Evaluate,
    search_ids: list[str],
    confirm_ids: list[str],
    margin: float,
    confidence: float,
    kind: str = "continuous",
    design: SequentialDesign = SEARCH_DESIGN,
    cost: CallCost | None = None,
    on_trial: Callable[[Trial], None] | None = None,
    inside: Sequence[frozenset[int]] | None = None,
) -> Search:
    """Greedy deletion, longest unit first, then the one confirmation (see the module's docstring). Only
    `confirm_ids` judge the result; `evaluate` sees them for the original and the winner alone. A unit
    `inside` one already removed is gone with it and not tried."""
    kept: frozenset[int] = frozenset()
    base = evaluate(kept, search_ids)
    stops = schedule(len(search_ids), design.looks)
    bounds = boundaries(tuple(stop / len(search_ids) for stop in stops), 1 - confidence, design.spending)
    trials: list[Trial] = []
    for unit in sorted(range(len(unit_sizes)), key=lambda u: -unit_sizes[u]):
        trying = kept | {unit}
        if inside is not None and inside[unit] & kept:
            if on_trial is not None:
                on_trial(Trial(unit, None, 0, True, GONE))
            continue
        if cost is not None and cost(trying) > cost(kept):
            trial = Trial(unit, None, 0, False, "dearer: it would take the cached prefix under the provider's minimum")
        else:
            trial = _trial(unit, evaluate, trying, search_ids, base, stops, bounds, kind, margin, confidence, design)
        trials.append(trial)
        if on_trial is not None:
            on_trial(trial)
        if trial.kept:
            kept = trying
    if not kept:
        return Search(kept, trials, None)
    original, shortened = evaluate(frozenset(), confirm_ids), evaluate(kept, confirm_ids)
    judged = decide(
        original, {"short": shortened}, kind=kind, margin=margin, confidence=confidence, multiplicity="none"
    ).candidates["short"]
    seen = {float(v) for v in np.concatenate([original, shortened]) if not np.isnan(v)}
    if len(seen) == 1:  # the verdict's own rule (analysis.floor_or_ceiling): a metric that cannot tell them apart
        reason = f"every confirmation item scores {seen.pop():g} with either prompt: the metric cannot tell them apart"
        judged = dataclasses.replace(judged, status="undecided", better=False, reason=reason)
    return Search(kept, trials, judged)


def _trial(
    unit: int,
    evaluate: Evaluate,
    trying: frozenset[int],
    search_ids: list[str],
    base: np.ndarray,
    stops: list[int],
    bounds: tuple[float, ...],
    kind: str,
    margin: float,
    confidence: float,
    design: SequentialDesign,
) -> Trial:
    """One deletion through the sequential looks on the search items, stopped at the first look that
    decides it (paying only for the items so far): dropped when shown worse, kept when shown non-inferior,
    and when out of reach (futile) or undecided at the last look, kept unless it loses more than half the
    margin on average. Selection only: a wrong keep costs the confirmation, never its error rate."""
    for index, stop in enumerate(stops):
        scores = evaluate(trying, search_ids[:stop])
        column, paired = scores, base[:stop]
        spread = score_range_of(kind, [paired, column])  # type: ignore[arg-type]
        looked = look(
            PairedScores(paired, {"short": column}, kind == "binary", spread, margin, confidence),
            index,
            bounds,
            design.futility,
        )["short"]
        where = f"{looked.mean_diff:+.3f} on {looked.n_pairs} search items, look {index + 1} of {len(stops)}"
        if looked.status == "continue":
            continue
        keep = looked.status == "pass" or (looked.status != "fail" and looked.mean_diff >= -margin / 2)
        return Trial(unit, looked.mean_diff, stop, keep, f"{looked.status}: {where}")
    raise AssertionError("the last look always decides")


def shorten(
    experiment: Experiment,
    prompt: str,
    model: str | None = None,
    console: Console | None = None,
    max_usd: float | None = None,
    assume_yes: bool = False,
) -> Shortening:
    """Search for the shortest prompt non-inferior to `prompt` on the experiment's gate metric, with the
    baseline's model (or `model`), write it beside the original and report on it."""
    console = console or Console(stderr=True, emoji=False)
    plan = prepare(experiment)  # models without keys are skipped: the search calls one
    variant = _variant(plan, prompt, model)
    metric = experiment.gate.metric or experiment.scorer_labels()[0]
    scorer = next(s for s in plan.scorers if s.label == metric)
    constants = load_constants(experiment)
    found = _renderable(constants, variant.prompt, units(variant.prompt.source), plan.eval_set.items[:3])
    if not found:
        raise ConfigError(
            experiment.source_path,
            "prompts",
            f"{prompt} has no text of its own that could go (sentences, literal blocks, few-shot turns)",
            "shorten a prompt with instructions written in the template",
        )
    search_ids, confirm_ids = split_items([i.id for i in plan.eval_set.items], experiment.analysis.seed)
    if len(search_ids) < MIN_ITEMS // 2:
        raise ConfigError(
            experiment.source_path,
            "dataset",
            f"{len(search_ids) + len(confirm_ids)} items: too few to search on half and confirm on the other",
            f"give at least {MIN_ITEMS} items (dataset.limit or --limit)",
        )
    cache = open_cache(experiment)
    pool = ModelPool.for_experiment(experiment, cache, max_usd=max_usd or experiment.budget.max_usd)
    worst = _worst_usd(plan, variant, pool, len(found), scorer)
    console.print(
        f"shorten {variant.name}: {len(found)} units to try on {len(search_ids)} search items, confirmed on "
        f"{len(confirm_ids)} others; at most ${worst:.4f} (every deletion tried on every search item)"
    )
    confirm_spend_usd(experiment, worst, assume_yes)
    templates: dict[frozenset[int], PromptTemplate] = {}
    items = {i.id: i for i in plan.eval_set.items}

    def template(removed: frozenset[int]) -> PromptTemplate:
        if removed not in templates:
            source = without(variant.prompt.source, found, removed)
            name = variant.prompt.name if not removed else f"{variant.prompt.name}~{digest(sorted(removed))[:8]}"
            templates[removed] = template_from_source(name, variant.prompt.path, source, variant.prompt.variables)
        return templates[removed]

    bills: Bills = {}
    scored: dict[frozenset[int], dict[str, float]] = {}

    def evaluate(removed: frozenset[int], ids: list[str]) -> np.ndarray:
        """Item means of the metric; an item already run for this template (an earlier look's) is not run
        again, so nothing is paid twice even without a response cache."""
        chosen = template(removed)
        known = scored.setdefault(removed, {})
        new = [i for i in ids if i not in known]
        if new:
            trial = dataclasses.replace(variant, name=f"{variant.model.display_name}:{chosen.name}", prompt=chosen)
            messages = {(chosen.name, i): render_item(chosen, items[i], constants) for i in new}
            part = dataclasses.replace(plan.with_items(new), variants=[trial], messages=messages, baseline=None)
            records = run_plan(part, console=Console(quiet=True), pool=pool).records
            score_records(records, items, [scorer], pool, Console(quiet=True))
            sums: dict[str, list[float]] = {}
            for record in records:
                if record.error is None:
                    bills.setdefault(removed, {}).setdefault(record.item_id, []).append(record.cost_usd or 0.0)
                value = record.scores.get(metric)
                if value is not None:
                    sums.setdefault(record.item_id, []).append(float(value))
            known.update({i: float(np.mean(sums[i])) if i in sums else math.nan for i in new})
        return np.array([known[i] for i in ids])

    pricing = _Pricing(plan, variant, pool, constants)
    costs: dict[frozenset[int], float] = {}

    def cost(removed: frozenset[int]) -> float:
        if removed not in costs:
            costs[removed] = pricing.per_call(template(removed)).input_usd
        return costs[removed]

    kind = "binary" if scorer.kind == "binary" and experiment.epochs == 1 else "continuous"
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task("units tried", total=len(found))

        def tried(trial: Trial) -> None:
            progress.advance(task)
            if trial.reason == GONE:
                return
            text = " ".join(found[trial.unit].text.split())
            short = text if len(text) <= 60 else text[:57] + "..."
            verdict = "removed" if trial.kept else "kept"
            progress.console.print(escape(f'{verdict} {found[trial.unit].kind}: "{short}" ({trial.reason})'))

        result = search(
            [len(u.text) for u in found],
            evaluate,
            search_ids,
            confirm_ids,
            experiment.gate.margin,
            experiment.gate.confidence,
            kind,
            cost=cost,
            on_trial=tried,
            inside=containers(found),
        )
    if cache is not None:
        cache.close()
    before, after = pricing.per_call(template(frozenset())), pricing.per_call(template(result.removed))
    billed_before = _mean_bill(bills, frozenset(), confirm_ids)
    billed_after = _mean_bill(bills, result.removed, confirm_ids) if result.removed else billed_before
    per_call = (billed_before - before.cache_usd, billed_after - after.cache_usd)
    traffic = experiment.traffic
    monthly = None if traffic is None else (per_call[0] - per_call[1]) * traffic.requests_per_day * DAYS_PER_MONTH
    return Shortening(
        prompt=variant.prompt.name,
        variant=variant.name,
        template_path=variant.prompt.path,
        search=result,
        units=found,
        search_items=search_ids,
        confirm_items=confirm_ids,
        source=template(frozenset()).source,
        shortened=template(result.removed).source,
        tokens_before=before.tokens,
        tokens_after=after.tokens,
        prefix_before=before.prefix,
        prefix_after=after.prefix,
        cache_minimum=pricing.minimum,
        usd_per_call_before=per_call[0],
        usd_per_call_after=per_call[1],
        monthly_saving_usd=monthly,
        calls_made=pool.counts.calls_made,
        spent_usd=pool.budget.spent,
        cache_usd_before=before.cache_usd,
        cache_usd_after=after.cache_usd,
        notes=[_budget_note(pool)] if pool.budget.exhausted else [],
    )


def _mean_bill(bills: Bills, removed: frozenset[int], ids: list[str]) -> float:
    """Mean billed dollars of the template's calls on these items (the confirmation's: both prompts saw
    them), so a shorter prompt whose answers grow longer, or slower on an hourly price, shows it."""
    seen = [usd for i in ids for usd in bills.get(removed, {}).get(i, [])]
    return float(np.mean(seen)) if seen else 0.0


def _renderable(constants: dict[str, Any], prompt: PromptTemplate, found: list[Unit], items: list[Item]) -> list[Unit]:
    """The units whose removal alone still renders these items' prompts (a loop that makes the whole
    conversation cannot go), numbered again."""
    kept = []
    for unit in found:
        source = without(prompt.source, found, frozenset({unit.index}))
        try:
            shorter = template_from_source(prompt.name, prompt.path, source, prompt.variables)
            if all(render_item(shorter, item, constants) for item in items):
                kept.append(unit)
        except (ConfigError, jinja2.TemplateError):
            continue
    return [dataclasses.replace(unit, index=i) for i, unit in enumerate(kept)]


def _budget_note(pool: ModelPool) -> str:
    return (
        f"the budget (${pool.budget.max_usd:g}) ran out: calls it could not cover were not made, so the search "
        "and the confirmation read fewer items (raise budget.max_usd or --max-usd and run again: paid calls "
        "are cached)"
    )


class _Pricing:
    """A template's input tokens, cached prefix and input dollars per call over the experiment's items, at
    the tier the run buys (batch under `--batch`) and the cache's cold share at the experiment's traffic."""

    def __init__(self, plan: Plan, variant: Variant, pool: ModelPool, constants: dict[str, Any]) -> None:
        self.experiment, self.variant, self.items = plan.experiment, variant, plan.eval_set.items
        self.constants = constants
        self.tier = pool.tier(plan.call(variant, self.items[0]))
        price = variant.price
        cached = "cache_read_input_token_cost" in price.table
        self.minimum = min_cacheable_tokens(price.priced_as or variant.model.model) if cached else None
        traffic = self.experiment.traffic
        self.cold = cold_share(None if traffic is None else traffic.requests_per_day, len(self.items))

    def per_call(self, template: PromptTemplate) -> PromptCost:
        """The template's input over the items, with its prefix read from the provider's cache when it is
        long enough to be cached."""
        model = self.variant.model.model
        rendered = [render_item(template, item, self.constants) for item in self.items]
        tokens = [count_tokens(model, messages) for messages in rendered]
        prefix_text = shared_prefix(rendered) if len(rendered) > 1 else ""
        prefix = count_text_tokens(model, prefix_text) if prefix_text else 0
        cached = prefix if self.minimum is not None and prefix >= self.minimum else 0
        usd = [input_usd(self.variant.price, n, cached, self.tier, self.cold) for n in tokens]
        plain = [input_usd(self.variant.price, n, 0, self.tier, self.cold) for n in tokens]
        return PromptCost(float(np.mean(tokens)), prefix, float(np.mean(usd)), float(np.mean(plain) - np.mean(usd)))


@dataclass(frozen=True)
class PromptCost:
    """One template's input side per call, averaged over the experiment's items."""

    tokens: float
    prefix: int
    """Tokens every rendered prompt starts with."""
    input_usd: float
    """Input dollars with the prompt cache where it applies: what a deletion must lower."""
    cache_usd: float
    """What the cache takes off the input dollars (0 under the provider's minimum)."""


def write_shortening(outcome: Shortening, original: Path, reports: Path) -> None:
    """The report whenever something was removed, and the shortened template beside the original (never
    over a file) only when the confirmation shows it non-inferior: a prompt not shown as good is not
    offered as a file to point a config at (its diff is in the report)."""
    judged = outcome.search.confirmation
    if judged is None:
        return
    if judged.status == "pass":
        n = 1
        while True:
            path = original.with_name(f"{original.stem}.short{'' if n == 1 else f'-{n}'}{original.suffix}")
            try:
                with path.open("x", encoding="utf-8") as out:  # "x": a file that exists is never written over
                    out.write(outcome.shortened)
                break
            except FileExistsError:
                n += 1
        outcome.path = path
    reports.mkdir(parents=True, exist_ok=True)
    outcome.report = reports / f"shorten-{original.stem}.md"
    outcome.report.write_text(report_markdown(outcome), encoding="utf-8")


def log_shortening(experiment: Experiment, outcome: Shortening) -> str:
    """The search as an MLflow run of its own (`harness.kind` shorten) beside the experiment's runs: what
    was searched, the verdict on the unseen items, the savings, the search's cost, the report and the
    shortened template; returns its run id."""
    judged = outcome.search.confirmation
    params = {
        "prompt": outcome.prompt,
        "variant": outcome.variant,
        "units": len(outcome.units),
        "units_removed": len(outcome.search.removed),
        "search_items": len(outcome.search_items),
        "confirm_items": len(outcome.confirm_items),
        "verdict": outcome.verdict,
        "margin": experiment.gate.margin,
        "confidence": experiment.gate.confidence,
    }
    metrics = {
        "input_tokens_before": outcome.tokens_before,
        "input_tokens_after": outcome.tokens_after,
        "prefix_tokens_before": float(outcome.prefix_before),
        "prefix_tokens_after": float(outcome.prefix_after),
        "usd_per_call_before": outcome.usd_per_call_before,
        "usd_per_call_after": outcome.usd_per_call_after,
        "search_calls": float(outcome.calls_made),
        "search_usd": outcome.spent_usd,
    }
    if outcome.monthly_saving_usd is not None:
        metrics["monthly_saving_usd"] = outcome.monthly_saving_usd
    if judged is not None:
        metrics |= {"diff": judged.mean_diff, "diff_ci_low": judged.ci_low, "diff_ci_high": judged.ci_high}
    texts = {"shorten-report.md": report_markdown(outcome)}
    if outcome.path is not None:
        texts[outcome.path.name] = outcome.shortened
    return log_finding(experiment, "shorten", f"shorten {outcome.variant}", params, metrics, texts)


def diff_text(outcome: Shortening) -> str:
    lines = difflib.unified_diff(
        outcome.source.splitlines(keepends=True),
        outcome.shortened.splitlines(keepends=True),
        fromfile=outcome.prompt,
        tofile=f"{outcome.prompt} (shortened)",
    )
    return "".join(lines)


def summary_lines(outcome: Shortening) -> list[str]:
    """What a person reads: the verdict on unseen items, the tokens and dollars saved, the search's cost."""
    judged = outcome.search.confirmation
    removed = len(outcome.search.removed)
    lines = [
        f"{removed} of {len(outcome.units)} units removed: {outcome.tokens_before:.0f} -> "
        f"{outcome.tokens_after:.0f} input tokens per call"
    ]
    if judged is None:
        lines.append(
            "no sentence could go: each was worse on the search items, out of reach, or would have made calls "
            "dearer by losing the cached prefix; the prompt stays"
        )
    else:
        lines.append(
            f"confirmed on {judged.n_pairs} items the search never saw: {judged.status} "
            f"(difference {judged.mean_diff:+.3f} [{judged.ci_low:+.3f}, {judged.ci_high:+.3f}], margin "
            f"{judged.noninferior.threshold:+.3f})"
        )
        lines.append(_dollars_line(outcome))
        lines.append(_cache_line(outcome))
    lines.append(f"the search made {outcome.calls_made} calls and spent ${outcome.spent_usd:.4f}")
    lines.extend(outcome.notes)
    return lines


def _dollars_line(outcome: Shortening) -> str:
    saved = outcome.usd_per_call_saved
    month = outcome.monthly_saving_usd
    at_traffic = "" if month is None else f", ${abs(month):,.2f} a month at traffic"
    change = (
        f"saves ${saved:.6f} per call{at_traffic}"
        if saved >= 0
        else (f"costs ${-saved:.6f} more per call{at_traffic} more: its answers are longer or slower")
    )
    return (
        f"${outcome.usd_per_call_before:.6f} -> ${outcome.usd_per_call_after:.6f} per call, as billed on the "
        f"confirmation items (input, output and compute) with the prompt cache at traffic: {change}"
    )


def _cache_line(outcome: Shortening) -> str:
    before, after = outcome.prefix_before, outcome.prefix_after
    shared = f"prompt cache: every prompt starts with the same {before} tokens before, {after} after"
    if outcome.cache_minimum is None:
        return f"{shared}; the price has no cached-input rate, so no cache discount either way"
    minimum = outcome.cache_minimum
    state = {True: "cached", False: "not cached"}
    return (
        f"{shared} (the provider caches {minimum} or more): {state[outcome.prefix_before >= minimum]} before, "
        f"{state[outcome.prefix_after >= minimum]} after, taking ${outcome.cache_usd_before:.6f} and "
        f"${outcome.cache_usd_after:.6f} off each call"
    )


def report_markdown(outcome: Shortening) -> str:
    body = "\n".join(f"- {line}" for line in summary_lines(outcome))
    removed = "\n".join(f"- {u.text}" for u in outcome.units if u.index in outcome.search.removed)
    return (
        f"# Shortened prompt: {outcome.prompt}\n\n{body}\n\n## Removed\n\n{removed}\n\n"
        f"## Diff\n\n```diff\n{diff_text(outcome)}```\n"
    )


def _variant(plan: Plan, prompt: str, model: str | None) -> Variant:
    baseline = plan.variant(plan.baseline) if plan.baseline else None
    wanted = model or (baseline.model.display_name if baseline is not None else plan.runnable[0].model.display_name)
    for variant in plan.runnable:
        if variant.prompt.name == prompt and wanted in (variant.model.display_name, variant.model.model):
            return variant
    prompts = sorted({v.prompt.name for v in plan.runnable})
    models = sorted({v.model.display_name for v in plan.runnable})
    if prompt not in prompts:
        raise ConfigError("command line", "--prompt", f"no prompt {prompt}", f"give one of {', '.join(prompts)}")
    raise ConfigError(
        "command line",
        "--model",
        f"{wanted} cannot run here (not configured, or its API key is not set)",
        f"set its key or pass --model with one of {', '.join(models)}",
    )


def _worst_usd(plan: Plan, variant: Variant, pool: ModelPool, unit_count: int, scorer: Scorer) -> float:
    """Every template the search can try, each on every item, with the metric's judge where it has one:
    above what the search can make (each deletion on the search half, two templates on the other)."""
    items, epochs = plan.eval_set.items, plan.experiment.epochs
    per_call = max(pool.worst_case_usd(plan.call(variant, item)) for item in items)
    judged = 0.0
    if scorer.worst_case is not None:
        judged = scorer.worst_case(items, [variant.limits.output_tokens or 0] * epochs, pool)[1]
    return (unit_count + 1) * (per_call * len(items) * epochs + judged)
