"""The one place harness writes MLflow's tables itself: many traces per transaction on a SQL store.

Why: MLflow's public `start_trace` commits one transaction and runs a dozen queries per trace, so a large
eval's traces took most of its logging time (benchmarks/README.md has the figures). On a SQL store the
rows `start_trace` and `log_spans` would write are inserted here in a few transactions, with MLflow's own
row models, promoted keys and analytics helpers.

Those are MLflow's private names, so the fast path is taken only when it can be trusted:
- the private names import (they move between MLflow minors);
- the store's actual tables (read from the database, not from MLflow's models) have every column the
  rows name, and every column that needs a value is among them (`schema_problem`, once per store; each
  chunk's rows are checked against the same columns before they are written);
- `HARNESS_MLFLOW_BULK_TRACES` is not `off`.
Otherwise `writer` returns None (or a chunk is declined) and the caller logs through MLflow's public
client, which writes the same traces (tests/test_traces.py compares both paths on a real store).
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable
from typing import Any

OFF_SWITCH = "HARNESS_MLFLOW_BULK_TRACES"
"""`off`: always log traces through MLflow's public client."""

Built = list[tuple[Any, dict[str, Any]]]
"""(TraceInfo with its assessments, the dict of its one span) per trace."""

TRACE_INFO_COLUMNS = {
    "request_id",
    "experiment_id",
    "timestamp_ms",
    "execution_time_ms",
    "status",
    "request_preview",
    "response_preview",
    "trace_name",
    "db_payload_generation",
}
KEY_VALUE_COLUMNS = {"request_id", "key", "value"}
SPAN_COLUMNS = {
    "trace_id",
    "experiment_id",
    "span_id",
    "parent_span_id",
    "name",
    "type",
    "status",
    "start_time_unix_nano",
    "end_time_unix_nano",
    "content",
    "input_cost",
    "output_cost",
    "total_cost",
    "model_name",
    "model_provider",
}
ASSESSMENT_COLUMNS = {
    "assessment_id",
    "trace_id",
    "name",
    "assessment_type",
    "value",
    "error",
    "created_timestamp",
    "last_updated_timestamp",
    "source_type",
    "source_id",
    "run_id",
    "span_id",
    "rationale",
    "overrides",
    "valid",
    "assessment_metadata",
    "experiment_id",
    "trace_timestamp_ms",
    "aggregate_value",
    "is_numeric_value",
}

_CHECKED: dict[str, tuple[str | None, dict[str, set[str]]]] = {}
"""Per database URL, once per process: the schema check's answer and each table's columns."""


def current_store(mlflow: Any) -> Any | None:
    """The store MLflow's client writes to (a private attribute: None where it has moved)."""
    return getattr(getattr(mlflow.MlflowClient(), "_tracking_client", None), "store", None)


def writer(store: Any) -> Callable[[str, Built], bool] | None:
    """The bulk writer for this tracking store, or None: use MLflow's public client. The writer returns
    False, having written nothing, for a chunk whose rows would not fit the tables."""
    if os.environ.get(OFF_SWITCH, "").strip().lower() in ("off", "0", "false", "no"):
        return None
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        if not isinstance(store, SqlAlchemyStore):
            return None
        tables = _tables()
    except (ImportError, AttributeError):
        return None
    url = str(store.engine.url)
    if url not in _CHECKED:
        _CHECKED[url] = schema_problem(store.engine, tables)
    problem, columns = _CHECKED[url]
    if problem is not None:
        return None
    return lambda experiment_id, built: _bulk_insert(store, experiment_id, built, tables, columns)


def _tables() -> dict[str, tuple[Any, set[str]]]:
    """MLflow's row models for the tables written, each with the columns its rows name."""
    from mlflow.store.tracking.dbmodels.models import (
        SqlAssessments,
        SqlSpan,
        SqlTraceInfo,
        SqlTraceMetadata,
        SqlTraceTag,
    )
    from mlflow.store.tracking.sqlalchemy_store import PROMOTED_TRACE_METADATA_KEYS  # noqa: F401 - present in this MLflow, or no fast path
    from mlflow.store.tracking.utils.trace_analytics import (  # noqa: F401 - present in this MLflow, or no fast path
        analytics_columns_from_metadata,
        assessment_aggregate,
    )
    from mlflow.tracing.utils import generate_assessment_id  # noqa: F401 - present in this MLflow, or no fast path

    return {
        "info": (SqlTraceInfo, TRACE_INFO_COLUMNS),
        "tags": (SqlTraceTag, KEY_VALUE_COLUMNS),
        "metadata": (SqlTraceMetadata, KEY_VALUE_COLUMNS),
        "assessments": (SqlAssessments, ASSESSMENT_COLUMNS),
        "spans": (SqlSpan, SPAN_COLUMNS),
    }


def schema_problem(engine: Any, tables: dict[str, tuple[Any, set[str]]]) -> tuple[str | None, dict[str, set[str]]]:
    """What keeps the rows from fitting the database's tables as they are (None when they fit: no column
    the rows always name is missing, and no column the table needs is left out), with each table's
    columns as the database has them."""
    import sqlalchemy

    inspector = sqlalchemy.inspect(engine)
    found: dict[str, set[str]] = {}
    for part, (model, written) in tables.items():
        name = model.__tablename__
        try:
            columns = {c["name"]: c for c in inspector.get_columns(name)}
        except sqlalchemy.exc.NoSuchTableError:
            return f"no table {name}", found
        found[part] = set(columns)
        missing = written - set(columns)
        if missing:
            return f"{name} has no column {', '.join(sorted(missing))}", found
        needed = {
            c
            for c, info in columns.items()
            if not info.get("nullable", True) and info.get("default") is None and not info.get("autoincrement")
        }
        unfilled = needed - written
        if unfilled:
            return f"{name} needs {', '.join(sorted(unfilled))}", found
    return None, found


def _bulk_insert(
    store: Any,
    experiment_id: str,
    built: Built,
    tables: dict[str, tuple[Any, set[str]]],
    columns: dict[str, set[str]],
) -> bool:
    """The rows MLflow's `start_trace` then `log_spans` would write, for many traces in one transaction."""
    from mlflow.store.tracking.sqlalchemy_store import PROMOTED_TRACE_METADATA_KEYS
    from mlflow.store.tracking.utils.trace_analytics import analytics_columns_from_metadata
    from mlflow.tracing.constant import TraceMetadataKey, TraceTagKey
    from sqlalchemy import insert

    experiment = store.get_experiment(experiment_id)
    infos, tags, metadata, assessments, spans = [], [], [], [], []
    for info, span in built:
        trace_id = info.trace_id
        meta = dict(info.trace_metadata)
        infos.append(
            {
                "request_id": trace_id,
                "experiment_id": int(experiment_id),
                "timestamp_ms": info.request_time,
                "execution_time_ms": info.execution_duration,
                "status": info.state.value,
                "request_preview": info.request_preview,
                "response_preview": info.response_preview,
                "trace_name": info.tags[TraceTagKey.TRACE_NAME],
                "db_payload_generation": 1,
                **analytics_columns_from_metadata(meta),
            }
        )
        for key in PROMOTED_TRACE_METADATA_KEYS:
            meta.pop(key, None)
        meta[TraceMetadataKey.TRACE_INFO_FINALIZED] = "true"
        metadata.extend({"request_id": trace_id, "key": k, "value": v} for k, v in meta.items())
        location = store._get_trace_artifact_location_tag(experiment, trace_id)
        row_tags = {k: v for k, v in info.tags.items() if k != TraceTagKey.TRACE_NAME}
        row_tags[location.key] = location.value
        row_tags[TraceTagKey.SPANS_LOCATION] = "TRACKING_STORE"
        tags.extend({"request_id": trace_id, "key": k, "value": v} for k, v in row_tags.items())
        assessments.extend(_assessment_row(a, int(experiment_id), info.request_time) for a in info.assessments)
        attributes = span["attributes"]
        cost = json.loads(attributes.get("mlflow.llm.cost", "{}"))
        spans.append(
            {
                "trace_id": trace_id,
                "experiment_id": int(experiment_id),
                "span_id": base64.b64decode(span["span_id"]).hex(),
                "parent_span_id": None,
                "name": span["name"],
                "type": "LLM",
                "status": span["status"]["code"].removeprefix("STATUS_CODE_"),
                "start_time_unix_nano": span["start_time_unix_nano"],
                "end_time_unix_nano": span["end_time_unix_nano"],
                "content": json.dumps(span, ensure_ascii=False),
                "input_cost": None,
                "output_cost": None,
                "total_cost": cost.get("total_cost"),
                "model_name": json.loads(attributes["mlflow.llm.model"])[:500],
                "model_provider": json.loads(attributes["mlflow.llm.provider"])[:500],
            }
        )
    rows = {"info": infos, "tags": tags, "metadata": metadata, "assessments": assessments, "spans": spans}
    if any(not set().union(*(row.keys() for row in chunk)) <= columns[part] for part, chunk in rows.items() if chunk):
        return False  # a column this MLflow's helpers fill that the database lacks: the public client writes them
    with store.ManagedSessionMaker(read_only=False) as session:
        for part, chunk in rows.items():
            if chunk:
                session.execute(insert(tables[part][0].__table__), chunk)
    return True


def _assessment_row(assessment: Any, experiment_id: int, trace_time_ms: int) -> dict[str, Any]:
    """The row `SqlAssessments.from_mlflow_entity` builds, as a plain dict (no ORM object per score)."""
    from mlflow.store.tracking.utils.trace_analytics import assessment_aggregate
    from mlflow.tracing.utils import generate_assessment_id

    feedback = assessment.feedback
    value = feedback.value if feedback is not None else assessment.expectation.value
    error = feedback.error if feedback is not None else None
    aggregate, numeric = assessment_aggregate(value)
    now = int(time.time() * 1000)
    return {
        "assessment_id": generate_assessment_id(),
        "trace_id": assessment.trace_id,
        "name": assessment.name,
        "assessment_type": "feedback" if feedback is not None else "expectation",
        "value": json.dumps(value),
        "error": json.dumps(error.to_dictionary()) if error else None,
        "created_timestamp": now,
        "last_updated_timestamp": now,
        "source_type": assessment.source.source_type,
        "source_id": assessment.source.source_id,
        "run_id": assessment.run_id,
        "span_id": None,
        "rationale": assessment.rationale,
        "overrides": None,
        "valid": True,
        "assessment_metadata": None,
        "experiment_id": experiment_id,
        "trace_timestamp_ms": trace_time_ms,
        "aggregate_value": aggregate,
        "is_numeric_value": numeric,
    }
