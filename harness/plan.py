"""Expanding models x prompts x vars into variants, and naming the baseline. Pure: no I/O, no model calls."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Any

from harness.config import Experiment, ModelConfig
from harness.datasets import EvalSet
from harness.pricing import ModelPrice
from harness.prompts import Messages, PromptTemplate
from harness.scorers import Scorer


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


@dataclass
class Plan:
    """Everything a run needs, checked: items, variants, rendered prompts, scorers."""

    experiment: Experiment
    eval_set: EvalSet
    variants: list[Variant]
    scorers: list[Scorer]
    baseline: str | None
    messages: dict[tuple[str, str], Messages] = field(default_factory=dict)
    """(prompt name, item id) to rendered chat messages."""
    prompt_tokens: dict[tuple[str, str], int] = field(default_factory=dict)
    """(variant name, item id) to the rendered prompt's token count."""

    @property
    def runnable(self) -> list[Variant]:
        """Variants that will be called."""
        return [v for v in self.variants if v.skipped is None]


def variant_name(model: ModelConfig, prompt_name: str) -> str:
    """`<model display name>:<prompt name>`, the id used in tables, records and MLflow."""
    return f"{model.display_name}:{prompt_name}"


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


def prompt_variant_name(prompt: str, variables: dict[str, Any]) -> str:
    """`terse`, or `terse(doc_tokens=128)` for one combination of an ablation's vars."""
    if not variables:
        return prompt
    return f"{prompt}({','.join(f'{k}={v}' for k, v in variables.items())})"


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
            name=variant_name(model, prompt.name),
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
    return None if model is None else variant_name(model, experiment.baseline.prompt)
