"""Writing to MLflow: one parent run per invocation, one child run per variant, records as artifacts.

Everything is logged in batches (one call per dict), which is several times faster than one call per
metric. A config built in Python (no YAML file) is logged as the YAML of its validated model.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.analysis import Analysis
from harness.config import Experiment
from harness.manifest import ITEMS_ARTIFACT, MANIFEST_ARTIFACT, RunManifest, RunStatus
from harness.plan import Plan, Variant
from harness.pricing import litellm_version
from harness.records import Record
from harness.report import IMAGE_LINK, projection_lines
from harness.results import markdown_table, recommendation_line
from harness.secrets import redact, redact_tree, redact_url, remember_tree, scrub, scrubber
from harness.summary import VariantSummary
from harness.tracking.store import open_store, store_lock, tracking_uri
from harness.tracking.traces import log_traces

RECORDS_ARTIFACT = "records.jsonl"
TABLE_ARTIFACT = "records_table.json"


def ensure_experiment(experiment: Experiment, uri: str) -> str:
    """The MLflow experiment id named after the config, created with a local artifact root if new."""
    mlflow = open_store(uri)
    with store_lock(uri):
        found = mlflow.get_experiment_by_name(experiment.name)
        if found is not None:
            return found.experiment_id
        return _create_experiment(mlflow, experiment, uri)


def _create_experiment(mlflow: Any, experiment: Experiment, uri: str) -> str:
    artifact_location = None
    if uri.startswith("sqlite:///"):
        root = Path(uri.removeprefix("sqlite:///")).parent / "artifacts"
        artifact_location = root.resolve().as_uri()
    return mlflow.create_experiment(experiment.name, artifact_location=artifact_location)


def _log_config(mlflow: Any, experiment: Experiment) -> None:
    """The config as an artifact: the file verbatim, unless it holds a secret, then a masked copy; a config
    built in Python (no file) as the YAML of its validated model."""
    import yaml

    path = experiment.source_path
    if path.is_file():
        tree, masked = redact_tree(yaml.safe_load(path.read_text(encoding="utf-8")))
        name = path.name
    else:
        tree, masked = redact_tree(experiment.model_dump(mode="json", exclude_defaults=True))
        name, masked = f"{experiment.name}.yaml", True
    if not masked:
        mlflow.log_artifact(str(path), artifact_path="config")
        return
    header = "# secrets masked by harness\n" if path.is_file() else "# built in Python; secrets masked by harness\n"
    mlflow.log_text(header + yaml.safe_dump(tree, sort_keys=False), f"config/{name}")


def log_run(
    plan: Plan,
    records: list[Record],
    summaries: list[VariantSummary],
    started_at: float | None = None,
    analysis: Analysis | None = None,
    artifacts: list[Path] | None = None,
    run_status: RunStatus | None = None,
    status: str = "finished",
) -> str:
    """Log the invocation and every variant, with the analysis and its report; returns the parent run id.

    Runs are created with the time the experiment started (`started_at`, epoch seconds), so MLflow's
    duration column shows how long the calls took, not how long logging took.
    """
    experiment = plan.experiment
    remember_tree(experiment.model_dump(mode="json"))  # this process scrubs what the calling process does
    uri = tracking_uri(experiment)
    mlflow = open_store(uri)
    experiment_id = ensure_experiment(experiment, uri)
    start_ms = int((started_at or time.time()) * 1000)
    with store_lock(uri):
        return _log_run_locked(
            mlflow, experiment_id, plan, records, summaries, start_ms, analysis, artifacts, run_status, status
        )


def _log_run_locked(
    mlflow: Any,
    experiment_id: str,
    plan: Plan,
    records: list[Record],
    summaries: list[VariantSummary],
    start_ms: int,
    analysis: Analysis | None,
    artifacts: list[Path] | None,
    run_status: RunStatus | None,
    status: str,
) -> str:
    experiment = plan.experiment
    by_variant: dict[str, list[Record]] = {}
    for record in records:
        by_variant.setdefault(record.variant, []).append(record)
    client = mlflow.MlflowClient()
    parent_id = client.create_run(experiment_id, start_time=start_ms, run_name=experiment.name).info.run_id
    with mlflow.start_run(run_id=parent_id) as parent:
        mlflow.log_params(_scrubbed(_parent_params(plan)))
        mlflow.set_tags(
            {
                "harness.kind": "experiment",
                "harness.status": status,
                "harness.dataset_fingerprint": plan.eval_set.fingerprint,
            }
        )
        mlflow.set_tags(_scrubbed(_run_counters(plan, summaries, analysis, run_status)))
        note = _description(experiment.description, analysis, summaries)
        if note:
            mlflow.set_tag("mlflow.note.content", note)
        _log_config(mlflow, experiment)
        mlflow.log_text(scrub(RunManifest.of(plan, run_status).model_dump_json(indent=1)), MANIFEST_ARTIFACT)
        mlflow.log_text(scrub("".join(i.model_dump_json() + "\n" for i in plan.eval_set.items)), ITEMS_ARTIFACT)
        _log_outputs(mlflow, artifacts or [])
        for variant, summary in zip(plan.variants, summaries, strict=True):
            child = client.create_run(
                experiment_id,
                start_time=start_ms,
                run_name=variant.name,
                tags={"mlflow.parentRunId": parent_id, **_variant_tags(plan, variant)},
            )
            variant_records = by_variant.get(variant.name, [])
            try:
                _log_variant(client, child.info.run_id, variant, summary, variant_records)
                if not variant.skipped:
                    log_traces(mlflow, experiment_id, child.info.run_id, plan, variant, variant_records, start_ms)
                if analysis is not None:
                    log_analysis(client, child.info.run_id, variant.name, analysis, summaries)
            except BaseException:
                client.set_terminated(child.info.run_id, status="FAILED")
                raise
            # a variant that did not run is not shown as a green "Finished" beside those that did
            client.set_terminated(child.info.run_id, status="KILLED" if variant.skipped else "FINISHED")
        if analysis is not None:
            log_policies(client, experiment_id, parent_id, analysis)
        return parent.info.run_id


def log_finding(
    experiment: Experiment,
    kind: str,
    run_name: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    texts: dict[str, str],
) -> str:
    """A run that is not an experiment's run (a prompt search): tagged `harness.kind` = `kind`, so the
    readers of experiment runs (`latest_run`, `watch`, `gate --against`) never take it for one; params,
    finite metrics and text artifacts, every secret masked. Returns its run id."""
    from mlflow.entities import Metric, Param

    uri = tracking_uri(experiment)
    mlflow = open_store(uri)
    experiment_id = ensure_experiment(experiment, uri)
    with store_lock(uri):
        client = mlflow.MlflowClient()
        tags = {"harness.kind": kind, "harness.status": "finished"}
        run_id = client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id
        now = int(time.time() * 1000)
        client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items() if math.isfinite(v)],
            params=[Param(k, v[:6000]) for k, v in _scrubbed(params).items()],
        )
        for name, text in texts.items():
            client.log_text(run_id, scrub(text), name)
        client.set_terminated(run_id)
        return run_id


def _description(description: str, analysis: Analysis | None, summaries: list[VariantSummary]) -> str:
    """The parent run's description, which MLflow shows on the run's page: the recommendation, the results
    table the terminal printed (markdown), then the config's description."""

    lines = (
        [f"**{recommendation_line(analysis)}**", markdown_table(summaries, analysis)] if analysis is not None else []
    )
    if analysis is not None and analysis.projection is not None:
        lines.append("\n".join(f"- {line.strip()}" for line in projection_lines(analysis.projection)))
    if description:
        lines.append(description.strip())
    return scrub("\n\n".join(lines))


def _log_outputs(mlflow: Any, paths: list[Path]) -> None:
    """The report, its HTML page and its plot. MLflow's markdown viewer shows no images, so the report's
    copy in MLflow points at `report.html`, where the viewer shows the plot inside the report."""

    for path in paths:
        if path.suffix == ".md":
            text = IMAGE_LINK.sub(
                r"*\1: the plot is inside report.html (beside this file) and in \2.*",
                path.read_text(encoding="utf-8"),
            )
            mlflow.log_text(text, path.name)
        else:
            mlflow.log_artifact(str(path))


def _scrubbed(values: dict[str, Any]) -> dict[str, str]:
    """Params and tags as MLflow stores them (text), with every known secret masked."""
    return {k: scrub(str(v)) for k, v in values.items()}


def _run_counters(
    plan: Plan, summaries: list[VariantSummary], analysis: Analysis | None, status: RunStatus | None
) -> dict[str, Any]:
    """The invocation's own figures, as tags of the parent run rather than metrics: MLflow's Evaluation runs
    page makes a column of every metric any listed run has, so parent metrics would lead the variants'
    columns with figures that are not about any one variant. Exact values (text), for scripts that read them."""
    counters: dict[str, Any] = {
        "harness.cost_total_usd": sum(s.cost_total_usd for s in summaries),
        "harness.eval_cost_total_usd": sum(s.eval_cost_usd for s in summaries),
        "harness.variants_run": len(plan.runnable),
        "harness.variants_skipped": len(plan.variants) - len(plan.runnable),
    }
    if status is not None:
        counters.update(
            {
                "harness.spent_usd": status.spent_usd,
                "harness.calls_made": status.calls_made,
                "harness.cache_hits": status.cache_hits,
                "harness.calls_not_run": status.calls_not_run,
            }
        )
        if status.estimated_usd is not None:
            counters["harness.estimated_usd"] = status.estimated_usd
    if analysis is not None:
        counters.update({f"harness.agreement.{a.first}.{a.second}": a.rho for a in analysis.agreement})
        if analysis.sequential is not None:
            counters["harness.sequential"] = analysis.sequential.summary()
            counters.update({f"harness.{k}": v for k, v in analysis.sequential.counters().items()})
    return counters


def log_policies(client: Any, experiment_id: str, parent_id: str, analysis: Analysis) -> None:
    """Each simulated routing policy as a child run of kind `policy`, beside the variants in the UI."""
    from mlflow.entities import Metric, Param

    routing = analysis.routing
    if routing is None:
        return
    now = int(time.time() * 1000)
    for result, policy in zip(analysis.policies, routing.policies, strict=True):
        tags = {
            "mlflow.parentRunId": parent_id,
            "harness.kind": "policy",
            "harness.policy_kind": result.kind,
            "harness.weak": routing.weak,
            "harness.strong": routing.strong,
        }
        run = client.create_run(experiment_id, run_name=f"policy: {result.name}", tags=tags)
        values = {
            "cost_per_item_usd": result.cost_per_item,
            "cost_per_item_ci_low": result.cost_ci[0],
            "cost_per_item_ci_high": result.cost_ci[1],
            f"{routing.metric}/mean": result.quality,
            f"{routing.metric}/ci_low": result.quality_ci[0],
            f"{routing.metric}/ci_high": result.quality_ci[1],
            "strong_share": result.strong_share,
            "pgr": result.pgr,
            "apgr": result.apgr,
            "cpt50": result.cpt50,
            "cpt80": result.cpt80,
        }
        params = {"policy": json.dumps(policy.model_dump(exclude_none=True))[:6000], "metric": routing.metric}
        client.log_batch(
            run.info.run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in values.items() if math.isfinite(v)],
            params=[Param(k, v) for k, v in params.items()],
        )
        client.set_terminated(run.info.run_id)


def add_policy_runs(run_id: str, uri: str, analysis: Analysis) -> None:
    """Log a stored run's simulated policies as new child runs of it (`harness route`)."""
    mlflow = open_store(uri)
    client = mlflow.MlflowClient()
    parent = client.get_run(run_id)
    with store_lock(uri):
        log_policies(client, parent.info.experiment_id, parent.info.run_id, analysis)


def log_analysis(
    client: Any, run_id: str, variant: str, analysis: Analysis, summaries: list[VariantSummary] | None = None
) -> None:
    """Tags the UI can filter on (pareto, recommended, verdict), CI and paired-test metrics, monthly savings."""
    from mlflow.entities import Metric, RunTag

    tags = {
        "harness.pareto": str(variant in analysis.pareto).lower(),
        "harness.recommended": str(
            bool(analysis.recommendation and analysis.recommendation.variant == variant)
        ).lower(),
    }
    if variant in analysis.verdicts:
        tags["harness.verdict"] = analysis.verdicts[variant].status
    values: dict[str, float] = {}
    for metric, estimates in analysis.estimates.items():
        if variant in estimates:
            values[f"{metric}/ci_low"] = estimates[variant].ci_low
            values[f"{metric}/ci_high"] = estimates[variant].ci_high
        paired = analysis.paired.get(metric, {}).get(variant)
        if paired is not None and variant != analysis.baseline:
            values[f"{metric}/diff_vs_baseline"] = paired.mean_diff
            values[f"{metric}/p_value"] = paired.p_value
            values[f"{metric}/mdd"] = paired.mdd
    if variant in analysis.levers:
        values.update(analysis.levers[variant].metrics())
    if analysis.sequential is not None and variant in analysis.sequential.decided_at:
        values["sequential.decided_at_look"] = float(analysis.sequential.decided_at[variant])
        values["sequential.pairs_used"] = float(analysis.sequential.decisions[variant].n_pairs)
    monthly = {s.variant: s.monthly_cost_usd for s in summaries or []}
    if analysis.baseline in monthly and variant in monthly:
        values["monthly_savings_vs_baseline_usd"] = monthly[analysis.baseline] - monthly[variant]
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, 0) for k, v in values.items() if math.isfinite(v)]
    client.log_batch(run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()])


def _parent_params(plan: Plan) -> dict[str, Any]:
    experiment = plan.experiment
    return {
        "experiment": experiment.name,
        "dataset": plan.eval_set.source,
        "dataset_fingerprint": plan.eval_set.fingerprint,
        "n_items": len(plan.eval_set.items),
        "models": ", ".join(m.display_name for m in experiment.models)[:6000],
        "prompts": ", ".join(p.name for p in experiment.prompts),
        "scorers": ", ".join(s.label for s in plan.scorers),
        "baseline": plan.baseline or "",
        "litellm_version": litellm_version(),
        "price_sources": json.dumps({v.model.display_name: v.price.source for v in plan.variants})[:6000],
        "concurrency": experiment.concurrency,
        "timeout_s": experiment.timeout_s,
        "max_retries": experiment.max_retries,
        "epochs": experiment.epochs,
        "vars": json.dumps(experiment.vars)[:6000],
    }


def _variant_tags(plan: Plan, variant: Variant) -> dict[str, str]:
    """Given when the child run is created, so the variant costs no call of its own for them."""
    tags = {
        "harness.dataset_fingerprint": plan.eval_set.fingerprint,
        "harness.kind": "variant",
        "harness.status": "skipped" if variant.skipped else "finished",
        "harness.baseline": str(variant.name == plan.baseline).lower(),
        "mlflow.runType": "genai_evaluate",  # listed on the experiment's Evaluation runs page
    }
    if variant.skipped:
        tags["harness.skip_reason"] = variant.skipped
    return _scrubbed(tags)


def _log_variant(client: Any, run_id: str, variant: Variant, summary: VariantSummary, records: list[Record]) -> None:
    """Params and metrics in one batch, then the records. Through the client, by run id: each fluent
    `start_run`/`end_run` pair read the run back from the store twice more."""
    from mlflow.entities import Metric, Param

    params = {
        "variant": variant.name,
        "model": variant.model.model,
        "model_name": variant.model.display_name,
        "prompt": variant.prompt.name,
        "template_path": str(variant.prompt.path),
        "template_hash": variant.prompt.template_hash,
        "price_source": variant.price.source,
        "api_base": redact_url(variant.model.api_base or ""),
        "call_hash": variant.call_hash,
    }
    params.update({f"param.{k}": v for k, v in redact(variant.params).items()})
    params.update({f"var.{k}": v for k, v in variant.prompt.variables.items()})
    values = {} if variant.skipped else summary.metrics()
    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in values.items()],
        params=[Param(k, v) for k, v in _scrubbed(params).items()],
    )
    if not variant.skipped:  # an empty file too: a variant the budget cap never reached reads back as no records
        _log_records(client, run_id, records)


def _log_records(client: Any, run_id: str, records: list[Record]) -> None:
    """Records twice: exact JSONL for later commands, and a table the MLflow UI can show."""
    scrub = scrubber()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / RECORDS_ARTIFACT
        path.write_text(scrub("".join(r.model_dump_json() + "\n" for r in records)), encoding="utf-8")
        client.log_artifact(run_id, str(path))
    columns: dict[str, list[Any]] = {
        "item_id": [],
        "output": [],
        "error": [],
        "cost_usd": [],
        "input_tokens": [],
        "output_tokens": [],
        "cached_input_tokens": [],
        "reasoning_tokens": [],
        "latency_s": [],
        "attempts": [],
    }
    score_names = sorted({k for r in records for k in r.scores})
    for name in score_names:
        columns[f"score.{name}"] = []
    for r in records:
        columns["item_id"].append(r.item_id)
        columns["output"].append(None if r.output is None else scrub(r.output))
        columns["error"].append(scrub(f"{r.error.type}: {r.error.message}") if r.error else None)
        columns["cost_usd"].append(r.cost_usd)
        columns["input_tokens"].append(r.usage.input_tokens)
        columns["output_tokens"].append(r.usage.output_tokens)
        columns["cached_input_tokens"].append(r.usage.cached_input_tokens)
        columns["reasoning_tokens"].append(r.usage.reasoning_tokens)
        columns["latency_s"].append(round(r.latency_s, 4))
        columns["attempts"].append(r.attempts)
        for name in score_names:
            columns[f"score.{name}"].append(r.scores.get(name))
    client.log_table(run_id, data=columns, artifact_file=TABLE_ARTIFACT)


def add_artifacts(run_id: str, uri: str, files: list[Path], folder: str | None = None) -> None:
    """Attach files to an existing run, under `folder` (a rebuilt report never replaces the run's own)."""
    client = open_store(uri).MlflowClient()
    for path in files:
        client.log_artifact(run_id, str(path), folder)
