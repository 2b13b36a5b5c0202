"""MLflow tracking, split by concern: `store` (where and how to open it), `write` (logging a run), `read`
(loading a stored run and what earlier runs measured). Imported only where MLflow work happens (the
tracking process and the stored-run commands), never by the core."""

from harness.tracking.read import StoredRun, load_records, read_run, variant_history
from harness.tracking.store import default_uri, find_project_root, open_store, stored_run_uri, tracking_uri
from harness.tracking.write import (
    RECORDS_ARTIFACT,
    TABLE_ARTIFACT,
    add_artifacts,
    add_policy_runs,
    log_analysis,
    log_run,
)

__all__ = [
    "RECORDS_ARTIFACT",
    "TABLE_ARTIFACT",
    "StoredRun",
    "add_artifacts",
    "add_policy_runs",
    "default_uri",
    "find_project_root",
    "load_records",
    "log_analysis",
    "log_run",
    "open_store",
    "read_run",
    "stored_run_uri",
    "tracking_uri",
    "variant_history",
]
