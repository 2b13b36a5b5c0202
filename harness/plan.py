"""Expanding models x prompts x vars into variants, naming them, and the calls they make. Pure: no I/O.

The plan is built once (by `harness.planner.prepare`) and then only read: `Plan.variant` is the one way
anything (the CLI, the gate, routing, a stored run) turns `MODEL[:PROMPT]` into a variant, and
`Plan.call` is the one place a (variant, item, sample) becomes a call with its cache key.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.config import ConfigError, Experiment, ModelConfig
from harness.datasets import EvalSet, Item
from harness.identity import call_hash, messages_hash, prompt_variant_name, shard_rank, variant_name
from harness.pool import CallLimits, CallSpec
from harness.pricing import ModelPrice
from harness.prompts import Messages, PromptTemplate, shared_prefix
from harness.scorers import Scorer
from harness.tokens import count_text_tokens


@dataclass(frozen=True)
class Variant:
    """One model with one prompt and its merged call parameters."""

    name: str
    model: ModelConfig
    prompt: PromptTemplate
    params: dict[str, Any]
    price: ModelPrice
    skipped: str | None = None
    """Why the variant will not run (a missing API key), shown in the table and in MLflow."""
    replayed: bool = False
    """The production variant of an experiment over logs: its records come from the log, never a call."""

    @functools.cached_property
    def limits(self) -> CallLimits:
        """Every call's output limit and tier, settled once for the variant."""
        return CallLimits.of(self.model, self.params)

    @property
    def call_hash(self) -> str:
        """What this variant sends, item aside (`identity.call_hash`): runs of it share the hash."""
        return call_hash(self.model, self.prompt.template_hash, self.params, self.prompt.variables)


@dataclass(frozen=True)
class Plan:
    """Everything a run needs, checked: items, variants, rendered prompts, scorers. Read-only once built."""

    experiment: Experiment
    eval_set: EvalSet
    variants: list[Variant]
    scorers: list[Scorer]
    baseline: str | None
    messages: dict[tuple[str, str], Messages] = field(default_factory=dict)
    """(prompt name, item id) to rendered chat messages."""
    prompt_tokens: dict[tuple[str, str], int] = field(default_factory=dict)
    """(variant name, item id) to the rendered prompt's token count."""
    replay_prices: dict[str, ModelPrice] = field(default_factory=dict)
    """Today's price of each model a log's calls were made with (the production variant's records)."""

    @property
    def runnable(self) -> list[Variant]:
        """Variants that will be called."""
        return [v for v in self.variants if v.skipped is None]

    @property
    def called(self) -> list[Variant]:
        """Variants whose calls are made (the production variant of a log replays its answers instead)."""
        return [v for v in self.runnable if not v.replayed]

    @property
    def samples(self) -> range:
        """Sample indices per item (`epochs`)."""
        return range(self.experiment.epochs)

    def call(self, variant: Variant, item: Item, sample: int = 0) -> CallSpec:
        """The call one (variant, item, sample) makes: what the runner sends and the estimate prices."""
        return CallSpec(
            model=variant.model,
            price=variant.price,
            messages=self.messages[(variant.prompt.name, item.id)],
            params=variant.params,
            sample=sample,
            input_tokens=self.prompt_tokens.get((variant.name, item.id)),
            limits=variant.limits,
        )

    def shared_prefix_tokens(self, variant: Variant) -> int | None:
        """Tokens at the start of every rendered prompt of the variant (what a provider's prompt cache could
        serve); None with fewer than two items, where a prefix means nothing."""
        return self._prefix_tokens[variant.name]

    @functools.cached_property
    def _prefix_tokens(self) -> dict[str, int | None]:
        """Counted once per plan: the levers and the manifest both ask."""

        out: dict[str, int | None] = {}
        for variant in self.variants:
            rendered = [self.messages[(variant.prompt.name, item.id)] for item in self.eval_set.items]
            if len(rendered) < 2:
                out[variant.name] = None
                continue
            prefix = shared_prefix(rendered)
            out[variant.name] = count_text_tokens(variant.model.model, prefix) if prefix else 0
        return out

    def jobs(self, variants: list[Variant] | None = None) -> list[tuple[Variant, Item, int]]:
        """Every (variant, item, sample) to run, epochs included, always: item by item in the seeded order
        the sequential gate uses (`item_order`), every variant of an item before the next item. A budget
        cap then stops every variant at about the same item, so what it allowed is paired across variants
        instead of the first variant's items alone."""
        chosen = [v for v in (self.runnable if variants is None else variants) if not v.replayed]
        by_id = {item.id: item for item in self.eval_set.items}
        order = item_order(list(by_id), self.experiment.analysis.seed)
        return [(v, by_id[i], k) for i in order for v in chosen for k in self.samples]

    def variant(self, ref: str, field_name: str = "variant") -> Variant:
        """The variant `ref` names: `MODEL:PROMPT` (model by display name or model string, the prompt
        variant after `vars` expansion), or `MODEL` alone when the baseline's prompt (or the only one)
        is meant. A prompt's base name is enough when it has one expansion. Raises ConfigError listing
        the variants when `ref` names none, or more than one."""
        exact = [v for v in self.variants if ref in (v.name, f"{v.model.model}:{v.prompt.name}")]
        if len(exact) == 1:
            return exact[0]
        matches = [v for v in self.variants if _matches(v, ref, self._default_prompt())]
        if len(matches) == 1:
            return matches[0]
        names = ", ".join(v.name for v in (matches or self.variants))
        problem = f"'{ref}' names {'several variants' if matches else 'no variant'}"
        raise ConfigError(self.experiment.source_path, field_name, problem, f"use one of: {names}")

    def select(self, names: set[str], strict: bool = False) -> Plan:
        """The plan restricted to the named variants (the gate runs the baseline and its candidates).

        With `strict`, a chosen variant whose model lacks its API key is an error: the check covers the
        variants that will run, never the rest of the config.
        """
        chosen = [v for v in self.variants if v.name in names]
        if strict:
            for v in chosen:
                if v.skipped is not None:
                    raise ConfigError(
                        self.experiment.source_path,
                        f"models ({v.model.display_name})",
                        f"{v.name} cannot run: {v.skipped.removeprefix('skipped: ')}",
                        "export the key, or name another variant",
                    )
        return dataclasses.replace(self, variants=chosen)

    def with_items(self, ids: list[str]) -> Plan:
        """The plan on the named items only, in that order (a sequential gate's stage)."""
        by_id = {item.id: item for item in self.eval_set.items}
        eval_set = self.eval_set.model_copy(update={"items": [by_id[i] for i in ids]})
        return dataclasses.replace(self, eval_set=eval_set)

    def prompt_hash(self, prompt_name: str, item_id: str) -> str:
        """The rendered prompt's hash for one item (`identity.messages_hash`)."""
        return messages_hash(self.messages[(prompt_name, item_id)])

    def shard(self, index: int, count: int) -> Plan:
        """The `index`-th (1-based) of `count` disjoint parts of the items, together all of them.

        Items are ranked by a hash of their id, not by position, so a part is the same on every machine and
        every run of the same dataset, and parts differ in size by one item at most. All samples of an item
        (epochs) stay in one part.
        """
        ranked = sorted(self.eval_set.items, key=lambda item: shard_rank(item.id))
        chosen = {item.id for item in ranked[index - 1 :: count]}
        return self.with_items([item.id for item in self.eval_set.items if item.id in chosen])

    def _default_prompt(self) -> str | None:
        if self.experiment.baseline is not None:
            return self.experiment.baseline.prompt
        prompts = {v.prompt.name for v in self.variants}
        return next(iter(prompts)) if len(prompts) == 1 else None


def _matches(variant: Variant, ref: str, default_prompt: str | None) -> bool:
    """`ref` as MODEL (with the default prompt), or MODEL:BASE where BASE is the template's own name."""
    models = (variant.model.display_name, variant.model.model)
    if ref in models:
        return variant.prompt.name == default_prompt
    for model in models:
        prefix = f"{model}:"
        if ref.startswith(prefix) and ref[len(prefix) :] in (variant.prompt.name, variant.prompt.base_name):
            return True
    return False


def merged_params(experiment: Experiment, model: ModelConfig) -> dict[str, Any]:
    """Shared params overridden by the model's own."""
    return {**experiment.params, **model.params}


def expand_prompts(experiment: Experiment, templates: dict[str, PromptTemplate]) -> list[PromptTemplate]:
    """Every template with every combination of the config's `vars` (the ablation), in config order."""
    return [
        dataclasses.replace(templates[p.name], name=prompt_variant_name(p.name, combo), variables=combo)
        for p in experiment.prompts
        for combo in var_combinations(experiment)
    ]


def var_combinations(experiment: Experiment) -> list[dict[str, Any]]:
    """Each combination of the `vars` values ([{}] without vars), first variable outermost."""
    return [dict(zip(experiment.vars, values, strict=True)) for values in itertools.product(*experiment.vars.values())]


def prompt_names(experiment: Experiment) -> list[str]:
    """The names of every prompt variant, for checking references such as `baseline.prompt`."""
    return [prompt_variant_name(p.name, combo) for p in experiment.prompts for combo in var_combinations(experiment)]


def expand_variants(
    experiment: Experiment,
    prompts: list[PromptTemplate],
    prices: dict[str, ModelPrice],
    skipped: dict[str, str],
) -> list[Variant]:
    """Every model with every prompt variant, in config order (models outer, prompts inner)."""
    return [
        Variant(
            name=variant_name(model.display_name, prompt.name),
            model=model,
            prompt=prompt,
            params=merged_params(experiment, model),
            price=prices[model.display_name],
            skipped=skipped.get(model.display_name),
        )
        for model in experiment.models
        for prompt in prompts
    ]


def baseline_name(experiment: Experiment) -> str | None:
    """The baseline's variant name, or None when the config names none."""
    if experiment.baseline is None:
        return None
    model = experiment.model_by_ref(experiment.baseline.model)
    return None if model is None else variant_name(model.display_name, experiment.baseline.prompt)


def item_order(item_ids: list[str], seed: int) -> list[str]:
    """The seeded random order items are taken in: stages are random samples of the eval, not its head
    (an eval sorted by difficulty would otherwise decide on its easy items), and the same seed gives the
    same stages, so a re-run is served from the cache."""
    rng = np.random.default_rng(seed)
    return [item_ids[i] for i in rng.permutation(len(item_ids))]
