"""Everything checked before the first paid call: config references, data, templates, prices, keys.

The order follows the cost of a mistake: cheap structural checks first, then rendering every prompt
for every item (StrictUndefined finds missing variables here), then prices and credentials.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from harness.config import ConfigError, Experiment, check_tree_size, load_yaml
from harness.datasets import Item, load_items
from harness.endpoints import is_local_model
from harness.logs import TraceReader
from harness.model_map import map_entry, provider_of
from harness.offline import import_litellm
from harness.plan import Plan, Variant, baseline_name, expand_prompts, expand_variants, merged_params, prompt_names
from harness.pool import BATCH_PROVIDERS, can_batch
from harness.pricing import ModelPrice, resolve_price
from harness.prompts import BUILTINS, Messages, PromptTemplate, load_template, render_checked
from harness.providers.credentials import missing_credentials
from harness.providers.local import is_known_local, local_model_info
from harness.replay import PRODUCTION, as_logged_template, logged_models, production_model, production_prices
from harness.routing import check_routing
from harness.scorers import build_scorer
from harness.secrets import remember_tree
from harness.tokens import count_prompts


def prepare(experiment: Experiment, strict: bool = False, traces: TraceReader | None = None) -> Plan:
    """Validate the whole experiment and return the plan; raises ConfigError naming file, field and fix.

    `Plan.select` then keeps just the variants a command runs (the gate: the baseline and its candidates).
    """
    file = str(experiment.source_path)
    remember_tree(experiment.model_dump(mode="json"))
    _check_baseline(experiment, file)
    _check_models(experiment, file)
    _check_execution(experiment, file)
    _check_epochs(experiment, file)
    _check_variant_count(experiment, file)
    labels = experiment.scorer_labels()
    if experiment.gate.metric is not None and experiment.gate.metric not in labels:
        raise ConfigError(
            file,
            "gate.metric",
            f"'{experiment.gate.metric}' is not one of the scorers",
            f"use one of: {', '.join(labels)}",
        )
    scorers = [
        build_scorer(s, file, f"scorers[{i}]", labels[i], experiment.root) for i, s in enumerate(experiment.scorers)
    ]
    templates = {
        p.name: load_template(
            p.name, experiment.project_file(p.path, f"prompts[{i}].path"), experiment.source_path, f"prompts[{i}].path"
        )
        for i, p in enumerate(experiment.prompts)
    }
    constants = load_constants(experiment)
    eval_set = load_items(experiment, traces)
    _check_call_count(experiment, file, len(eval_set.items))
    _check_names(experiment, file, eval_set.items, constants)
    if any("truncate_tokens" in t.source for t in templates.values()):
        import_litellm()  # the filter's tokenizer, loaded before the render timer starts
    for i, sc in enumerate(scorers):
        if sc.needs_reference:
            _check_references(experiment, sc.label, f"scorers[{i}]", eval_set.items)
        if sc.check is not None:
            sc.check(eval_set.items)
    prompts = expand_prompts(experiment, templates)
    messages = {}
    for prompt in prompts:
        for item in eval_set.items:
            messages[(prompt.name, item.id)] = render_item(prompt, item, constants)
    prices: dict[str, ModelPrice] = {m.display_name: resolve_price(m, file) for m in experiment.models}
    skipped = _credential_check(experiment, file, strict)
    variants = expand_variants(experiment, prompts, prices, skipped)
    replay_prices: dict[str, ModelPrice] = {}
    if eval_set.log is not None:
        replay_prices = production_prices(experiment, eval_set)
        production = as_logged_template(experiment)
        for item in eval_set.items:
            messages[(production.name, item.id)] = render_checked(production, item.fields, item.id)
        model = production_model(eval_set)
        price = replay_prices[logged_models(eval_set)[0]]
        variants.insert(0, Variant(PRODUCTION, model, production, {}, price, replayed=True))
    pairs = [(v, item) for v in variants if v.skipped is None and not v.replayed for item in eval_set.items]
    counted = count_prompts([(v.model.model, messages[(v.prompt.name, item.id)]) for v, item in pairs])
    tokens = {(v.name, item.id): n for (v, item), n in zip(pairs, counted, strict=True)}
    plan = Plan(
        experiment=experiment,
        eval_set=eval_set,
        variants=variants,
        scorers=scorers,
        baseline=PRODUCTION
        if eval_set.log is not None and _production_is_baseline(experiment)
        else baseline_name(experiment),
        messages=messages,
        prompt_tokens=tokens,
        replay_prices=replay_prices,
    )
    _check_context(plan, file)
    if experiment.routing is not None:
        check_routing(experiment.routing, [v.name for v in variants], labels, file)
    return plan


def _check_execution(experiment: Experiment, file: str) -> None:
    """A model that says it is bought by batch can be: refused before any call, never found later."""
    for i, model in enumerate(experiment.models):
        if model.execution is not None and model.execution.mode == "batch" and not can_batch(model):
            raise ConfigError(
                file,
                f"models[{i}].execution.mode",
                f"{model.display_name} has no batch API harness can reach (batches go to the providers "
                f"{', '.join(BATCH_PROVIDERS)}, or a server speaking OpenAI's /v1/files and /v1/batches)",
                "set mode: direct for this model (a run-wide execution.mode: batch calls it directly)",
            )


REFERENCE_COLUMNS = ("reference", "references", "answer", "target", "label", "summary", "output")


def _check_references(experiment: Experiment, name: str, field: str, items: list[Item]) -> None:
    """A scorer that compares with a reference finds one on every item, or nothing is paid for."""
    missing = [item.id for item in items if not item.reference and not item.references]
    if not missing:
        return
    columns = sorted(items[0].fields) if items else []
    likely = [c for c in REFERENCE_COLUMNS if c in columns]
    hint = f"map the reference column: dataset: {{fields: {{reference: {likely[0] if likely else '<column>'}}}}}"
    raise ConfigError(
        experiment.source_path,
        field,
        f"scorer {name} compares each output with a reference, but {len(missing)} of {len(items)} items have none "
        f"(e.g. item {missing[0]}; columns: {', '.join(columns)})",
        hint,
    )


def _check_context(plan: Plan, file: str) -> None:
    """An item longer than the model's context window (litellm's model info) fails here, not mid-run."""
    for variant in plan.runnable:
        if variant.replayed:
            continue
        limit = context_limit(variant.model.model)
        if not limit:
            continue
        for item in plan.eval_set.items:
            tokens = plan.prompt_tokens[(variant.name, item.id)]
            if tokens > limit:
                raise ConfigError(
                    file,
                    f"dataset item {item.id}",
                    f"the prompt for {variant.name} has about {tokens:,} tokens, over the model's "
                    f"context window of {limit:,} input tokens",
                    "shorten or drop the item, or truncate the long field in the template "
                    "(e.g. {{ document | truncate_tokens(3000) }})",
                )


def context_limit(model: str) -> int | None:
    """The model's input window as litellm's model info gives it (the local models' included); None when
    unknown. Read from the bundled map where it has the model, so a cached re-run never imports litellm."""

    found = local_model_info().get(model) if is_local_model(model) else None
    if found is None:
        entry = map_entry(model)
        found = entry[1] if entry is not None else None
    if found is None and not is_local_model(model):
        try:
            found = dict(import_litellm().get_model_info(model))
        except Exception:
            return None
    limit = (found or {}).get("max_input_tokens")
    return int(limit) if limit else None


def _production_is_baseline(experiment: Experiment) -> bool:
    """Over logs, production is the baseline unless the config names another variant."""
    return experiment.baseline is None or experiment.baseline.model == PRODUCTION


def _check_baseline(experiment: Experiment, file: str) -> None:
    baseline = experiment.baseline
    if baseline is None or (experiment.dataset.logs is not None and baseline.model == PRODUCTION):
        return
    if experiment.model_by_ref(baseline.model) is None:
        names = ", ".join(m.display_name for m in experiment.models)
        raise ConfigError(
            file, "baseline.model", f"'{baseline.model}' is not one of the models", f"use one of: {names}"
        )
    if baseline.prompt not in prompt_names(experiment):
        names = ", ".join(prompt_names(experiment))
        raise ConfigError(
            file, "baseline.prompt", f"'{baseline.prompt}' is not one of the prompts", f"use one of: {names}"
        )


MAX_VARIANTS = 500
"""The most variants (models x prompts x vars combinations) one experiment may have."""

MAX_CALLS = 1_000_000
"""The most model calls (variants x items x epochs) one run may plan."""


def _variant_count(experiment: Experiment) -> int:
    """Models x prompts x vars combinations, counted, not expanded: `vars` with a million combinations
    would otherwise hang before saying so."""
    return len(experiment.models) * len(experiment.prompts) * math.prod(len(v) for v in experiment.vars.values())


def _check_variant_count(experiment: Experiment, file: str) -> None:
    count = _variant_count(experiment)
    if count > MAX_VARIANTS:
        raise ConfigError(
            file,
            "vars" if experiment.vars else "models",
            f"{count:,} variants (models x prompts x vars combinations), more than the limit of {MAX_VARIANTS:,}",
            "split the ablation into several experiments, or give vars fewer values",
        )


def _check_call_count(experiment: Experiment, file: str, items: int) -> None:
    count = _variant_count(experiment)
    calls = count * items * experiment.epochs
    if calls > MAX_CALLS:
        raise ConfigError(
            file,
            "dataset",
            f"{calls:,} calls ({count:,} variants x {items:,} items x {experiment.epochs} epochs), more than the limit "
            f"of {MAX_CALLS:,} per run",
            "run a sample first (dataset.limit or --limit), or fewer variants",
        )


def _check_names(experiment: Experiment, file: str, items: list[Item], constants: dict[str, Any]) -> None:
    """One name, one meaning in a template: a column, a constant and a var of the same name would hide one
    another silently (the later wins), and so would one named like a template builtin (`turn`, `range`)."""
    columns = sorted({name for item in items for name in item.fields})
    sources = [("dataset column", "dataset", columns), ("constant", "constants", list(constants))]
    sources.append(("var", "vars", list(experiment.vars)))
    seen: dict[str, str] = {}
    for kind, field, names in sources:
        for name in names:
            if name in BUILTINS:
                problem, fix = f"is named like the template builtin {name}, which would hide it", f"rename the {kind}"
            elif name in seen:
                problem = f"has the name of a {seen[name]}, so one would hide the other in templates"
                fix = f"rename the {kind} or the {seen[name]}"
            else:
                seen[name] = kind
                continue
            where = f"{field}.{name}" if field != "dataset" else "dataset"
            raise ConfigError(file, where, f"{kind} '{name}' {problem}", fix)


def _check_epochs(experiment: Experiment, file: str) -> None:
    """Repeated samples at temperature 0 would repeat one answer k times and fake a tighter interval."""
    if experiment.epochs == 1:
        return
    for model in experiment.models:
        temperature = merged_params(experiment, model).get("temperature")
        if temperature is None or float(temperature) <= 0:
            raise ConfigError(
                file,
                "epochs",
                f"epochs: {experiment.epochs} needs sampling, but {model.display_name} runs at temperature "
                f"{temperature if temperature is not None else 'unset'}",
                "set params.temperature above 0 (e.g. 0.7), or epochs: 1",
            )


def _check_models(experiment: Experiment, file: str) -> None:

    for i, model in enumerate(experiment.models):
        if is_local_model(model.model):
            if not is_known_local(model.model.split("/", 1)[1]):
                raise ConfigError(
                    file,
                    f"models[{i}].model",
                    f"unknown local model '{model.model}'",
                    "use local/smollm2-135m, local/lead or local/lead-N",
                )
            continue
        if provider_of(model.model) is not None:
            continue  # litellm's map names the provider: no need to import litellm to ask
        litellm = import_litellm()
        try:
            litellm.get_llm_provider(model=model.model, api_base=model.api_base)
        except Exception:
            raise ConfigError(
                file,
                f"models[{i}].model",
                f"litellm does not know the provider of '{model.model}'",
                "prefix the provider, e.g. openai/gpt-4o-mini, anthropic/claude-haiku-4-5",
            ) from None


def _credential_check(experiment: Experiment, file: str, strict: bool) -> dict[str, str]:
    skipped: dict[str, str] = {}
    for i, model in enumerate(experiment.models):
        missing = missing_credentials(model)
        if not missing:
            continue
        if strict:
            raise ConfigError(
                file,
                f"models[{i}]",
                f"'{model.model}' needs {' or '.join(missing)}, which is not set",
                "export the key, remove the model, or drop --strict to skip it",
            )
        skipped[model.display_name] = f"skipped: {' or '.join(missing)} not set"
    return skipped


def render_item(prompt: PromptTemplate, item: Item, constants: dict[str, Any]) -> Messages:
    """An item's messages under a prompt: its fields, then the config's constants, then the prompt's own
    `vars`, each overriding the one before (`_check_names` refuses a clash of the first two)."""
    return render_checked(prompt, {**item.fields, **constants, **prompt.variables}, item.id)


def load_constants(experiment: Experiment) -> dict[str, Any]:
    """The variables every item's prompt gets besides its own fields: the config's `constants`."""
    out: dict[str, Any] = {}
    for key, value in experiment.constants.items():
        if isinstance(value, dict) and set(value) == {"file"}:
            out[key] = _read_constant_file(experiment, key, str(value["file"]))
        else:
            out[key] = value
    return out


def _read_constant_file(experiment: Experiment, key: str, relative: str) -> Any:
    field = f"constants.{key}.file"
    path: Path = experiment.project_file(relative, field)
    if not path.is_file():
        raise ConfigError(
            experiment.source_path, field, f"no such file {path}", "give a path relative to the project root"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            experiment.source_path, field, f"{path} is not UTF-8 ({exc.reason} at byte {exc.start})", "save it as UTF-8"
        ) from None
    if path.suffix in {".yaml", ".yml"}:
        return load_yaml(text, path, field)
    if path.suffix != ".json":
        return text
    try:
        tree = json.loads(text)
    except ValueError as exc:
        raise ConfigError(experiment.source_path, field, f"cannot parse {path}: {exc}", "fix the JSON") from None
    except RecursionError:
        raise ConfigError(experiment.source_path, field, f"{path} is nested too deeply", "flatten it") from None
    check_tree_size(tree, path, field)
    return tree


def self_preference_warnings(plan: Plan) -> list[str]:
    """A judge that is also a candidate tends to favour its own outputs (self-preference bias)."""
    candidates = {v.model.model for v in plan.runnable}
    out = []
    for sc in plan.scorers:
        model = sc.options.get("model")
        name = model.get("model") if isinstance(model, dict) else model
        if sc.batch is not None and name in candidates:
            out.append(
                f"scorer {sc.label} uses {name}, which is also a candidate: judges tend to prefer their own "
                "outputs; use a judge from another model family for decisions"
            )
    return out
