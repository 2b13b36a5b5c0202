"""Reading MLflow back: a stored run (manifest, items, records) and what earlier runs measured.

One loader, `read_run`, for every command that works from a stored run; the manifest is parsed by
`RunManifest.read` and nothing else.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.datasets import Item
from harness.estimate import History
from harness.manifest import ITEMS_ARTIFACT, MANIFEST_ARTIFACT, RunManifest
from harness.plan import Plan
from harness.records import Record
from harness.tracking.store import open_store, tracking_uri
from harness.tracking.write import RECORDS_ARTIFACT

if TYPE_CHECKING:
    from harness.estimate import History


def variant_history(plan: Plan) -> dict[str, History]:
    """Output length and latency measured by the newest earlier run of each variant (same calls)."""

    uri = tracking_uri(plan.experiment)
    mlflow = open_store(uri)
    found = mlflow.get_experiment_by_name(plan.experiment.name)
    if found is None:
        return {}
    client = mlflow.MlflowClient()
    out = {}
    for variant in plan.runnable:
        query = f"params.call_hash = '{variant.call_hash}' and tags.`harness.status` = 'finished'"
        runs = client.search_runs(
            [found.experiment_id], filter_string=query, order_by=["attributes.start_time DESC"], max_results=1
        )
        metrics = runs[0].data.metrics if runs else {}
        if "mean_output_tokens" in metrics and "latency_p50_s" in metrics:
            out[variant.name] = History(metrics["mean_output_tokens"], metrics["latency_p50_s"])
    return out


def load_records(run_id: str, uri: str) -> list[Record]:
    """Records of one variant run, read back from its artifact (no model call)."""
    mlflow = open_store(uri)
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=RECORDS_ARTIFACT, dst_path=tmp)
        lines = Path(local).read_text(encoding="utf-8").splitlines()
    return [Record.model_validate_json(line) for line in lines if line.strip()]


def _has_records(client: Any, run_id: str) -> bool:
    """Whether a variant run logged its records (runs stored before a capped variant with no call logged
    an empty file have none)."""
    return any(f.path == RECORDS_ARTIFACT for f in client.list_artifacts(run_id))


@dataclass
class StoredRun:
    """A finished run read back from MLflow: enough to rebuild the analysis without a model call."""

    run_id: str
    manifest: RunManifest
    records: list[Record]
    child_runs: dict[str, str]
    """Variant name to child run id."""
    items: list[Item] = field(default_factory=list)
    """The eval items the run used (empty for runs stored before items were kept)."""
    uri: str = ""


def read_run(run_id: str, uri: str) -> StoredRun:
    """The parent run's manifest and every variant's records."""
    mlflow = open_store(uri)
    client = mlflow.MlflowClient()
    parent = client.get_run(run_id)
    if parent.data.tags.get("harness.kind") == "variant":
        parent_id = parent.data.tags.get("mlflow.parentRunId", run_id)
        parent = client.get_run(parent_id)
    manifest = RunManifest.read(_artifact_text(mlflow, parent.info.run_id, MANIFEST_ARTIFACT))
    try:
        lines = _artifact_text(mlflow, parent.info.run_id, ITEMS_ARTIFACT).splitlines()
        items = [Item.model_validate_json(line) for line in lines if line.strip()]
    except OSError:
        items = []
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    child_runs = {c.info.run_name: c.info.run_id for c in children}
    records: list[Record] = []
    for child in children:
        if child.data.tags.get("harness.status") == "finished" and _has_records(client, child.info.run_id):
            records += load_records(child.info.run_id, uri)
    return StoredRun(parent.info.run_id, manifest, records, child_runs, items, uri)


def _artifact_text(mlflow: Any, run_id: str, name: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=name, dst_path=tmp)
        return Path(path).read_text(encoding="utf-8")


def pilot_run(plan: Plan, baseline: str | None, candidates: set[str]) -> str | None:
    """The newest finished run of this experiment that has records of the baseline and of a candidate
    (with no baseline: of two candidates): the pilot `estimate` sizes the decision from (among the 20
    newest runs)."""
    uri = tracking_uri(plan.experiment)
    mlflow = open_store(uri)
    found = mlflow.get_experiment_by_name(plan.experiment.name)
    if found is None:
        return None
    client = mlflow.MlflowClient()
    parents = client.search_runs(
        [found.experiment_id],
        filter_string="tags.`harness.kind` = 'experiment'",
        order_by=["attributes.start_time DESC"],
        max_results=20,
    )
    for parent in parents:
        children = client.search_runs(
            [found.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}' and tags.`harness.status` = 'finished'",
        )
        names = {c.info.run_name for c in children}
        if (baseline in names and names & candidates) or (baseline is None and len(names & candidates) >= 2):
            return parent.info.run_id
    return None


@dataclass(frozen=True)
class LatestRun:
    """An experiment's newest finished run in a store."""

    run_id: str
    started_ms: int


def latest_run(uri: str, experiment: str) -> LatestRun | None:
    """The newest parent run of `experiment` in the store that finished its calls (a budget-capped or
    interrupted one decides nothing), or None when it has none."""
    client = open_store(uri).MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs(
        [found.experiment_id],
        filter_string="tags.`harness.kind` = 'experiment' and tags.`harness.status` = 'finished'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return LatestRun(runs[0].info.run_id, int(runs[0].info.start_time)) if runs else None


def estimate_errors(uri: str, experiment: str, runs: int = 20) -> list[float]:
    """(spent - estimated) / estimated over the experiment's newest `runs` runs that estimated a spend
    above $0 (their parent runs' tags; runs logged before estimates were kept have none)."""
    client = open_store(uri).MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    out = []
    for run in client.search_runs(
        [found.experiment_id],
        filter_string="tags.`harness.kind` = 'experiment'",
        order_by=["attributes.start_time DESC"],
        max_results=runs,
    ):
        tags = run.data.tags
        try:
            estimated, spent = float(tags["harness.estimated_usd"]), float(tags["harness.spent_usd"])
        except (KeyError, ValueError):
            continue
        if estimated > 0:
            out.append((spent - estimated) / estimated)
    return out


def run_times(uri: str, run_id: str) -> tuple[int, int]:
    """A run's start and end (epoch ms; the end is the start for a run that never ended)."""
    info = open_store(uri).MlflowClient().get_run(run_id).info
    return int(info.start_time), int(info.end_time or info.start_time)
