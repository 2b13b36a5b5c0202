"""Each record as an MLflow trace of its variant's run, each score as an assessment on it.

Why traces: MLflow 3's experiment pages (Overview, Traces, Evaluation runs and their item-by-item
compare view) read traces, not run artifacts. A trace here is one LLM span: the rendered messages in,
the output out, model and provider, token usage and cost in the span attributes MLflow aggregates,
latency as its duration, attempts and errors; the trace's `mlflow.sourceRun` is the variant's run, so
the run is an evaluation run in the UI. Scores are `Feedback` (a judge's reply as the rationale), the
reference an `Expectation`.

Why two writers: MLflow's per-trace `start_trace` costs about 7 ms on sqlite (one transaction and a
dozen queries per trace), which at 10,000 items x 2 variants is minutes. On a SQL store (sqlite,
PostgreSQL) the same rows `start_trace` and `log_spans` write are inserted by `_bulk_insert` in a few
transactions, with MLflow's own models and converters (pinned MLflow version). On a tracking server the
public client calls are used, several at a time.
"""

from __future__ import annotations

import base64
import json
import math
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from harness.datasets import Item
from harness.plan import Plan, Variant
from harness.records import Record
from harness.secrets import scrubber

CHUNK = 1000
"""Traces per transaction on a SQL store (and per `log_spans` request on a server)."""
PREVIEW_CHARS = 1000
NAME_CHARS = 1000
"""Item ids and variant names in trace tags and metadata (MLflow's columns hold 4,000 to 8,000)."""


def traced_records(plan: Plan, records: list[Record]) -> list[Record]:
    """The records that become traces under the config's `traces` switch: all, none, or the first N items."""
    setting = plan.experiment.traces
    if setting is True:
        return records
    if setting is False or setting == 0:
        return []
    keep = {item.id for item in plan.eval_set.items[: int(setting)]}
    return [r for r in records if r.item_id in keep]


def log_traces(
    mlflow: Any, experiment_id: str, run_id: str, plan: Plan, variant: Variant, records: list[Record], start_ms: int
) -> int:
    """Write the variant's traced records as traces of `run_id`; returns how many were written."""
    chosen = traced_records(plan, records)
    if not chosen:
        return 0
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    items = {item.id: item for item in plan.eval_set.items}
    scrub = scrubber()
    store = mlflow.MlflowClient()._tracking_client.store
    for start in range(0, len(chosen), CHUNK):  # built a chunk at a time: memory stays flat at any size
        chunk = [
            _build(plan, variant, record, items, experiment_id, run_id, start_ms, scrub)
            for record in chosen[start : start + CHUNK]
        ]
        if isinstance(store, SqlAlchemyStore):
            _bulk_insert(store, experiment_id, chunk)
        else:
            _through_client(experiment_id, chunk)
    return len(chosen)


def _build(
    plan: Plan,
    variant: Variant,
    record: Record,
    items: dict[str, Item],
    experiment_id: str,
    run_id: str,
    start_ms: int,
    scrub: Callable[[str], str],
) -> tuple[Any, dict[str, Any]]:
    """A record as MLflow's `TraceInfo` (with its assessments) and the dict of its one span."""
    from mlflow.entities import AssessmentSource, Expectation, Feedback, TraceInfo, TraceLocation, TraceState
    from mlflow.tracing.constant import TRACE_SCHEMA_VERSION_KEY, SpanAttributeKey, TraceMetadataKey, TraceTagKey

    hex_id = uuid.uuid4().hex
    trace_id = f"tr-{hex_id}"
    messages = plan.messages.get((variant.prompt.name, record.item_id), [])
    inputs = {"messages": [{"role": m["role"], "content": scrub(str(m["content"]))} for m in messages]}
    output = None if record.output is None else scrub(record.output)
    usage = _usage(record)
    cost = {"total_cost": 0.0 if record.cache_hit else record.cost_usd}  # what this call spent: charts sum it
    duration_ms = max(1, round(record.latency_s * 1000))
    name = record.item_id if plan.experiment.epochs == 1 else f"{record.item_id}#{record.sample}"
    name, item_id, variant_name = name[:NAME_CHARS], record.item_id[:NAME_CHARS], variant.name[:NAME_CHARS]
    model = variant.model.model
    attributes = {
        SpanAttributeKey.REQUEST_ID: trace_id,
        SpanAttributeKey.SPAN_TYPE: "LLM",
        SpanAttributeKey.INPUTS: inputs,
        SpanAttributeKey.OUTPUTS: output,
        SpanAttributeKey.CHAT_USAGE: usage,
        SpanAttributeKey.LLM_COST: cost,
        SpanAttributeKey.MODEL: model,
        SpanAttributeKey.MODEL_PROVIDER: model.split("/", 1)[0] if "/" in model else "openai",
        "harness.variant": variant.name,
        "harness.item_id": record.item_id,
        "harness.sample": record.sample,
        "harness.attempts": record.attempts,
        "harness.cache_hit": record.cache_hit,
        "harness.cost_usd": record.cost_usd,  # the call's price, cached or not (what the analysis uses)
        "harness.eval_cost_usd": record.eval_cost_usd,
        "harness.price_source": record.price_source,
    }
    if record.error is not None:
        attributes["harness.error"] = scrub(f"{record.error.type}: {record.error.message}")
    start_ns = start_ms * 1_000_000
    span = {
        "trace_id": _b64(bytes.fromhex(hex_id)),
        "span_id": _b64(uuid.uuid4().bytes[:8]),
        "parent_span_id": None,
        "name": variant.model.display_name,
        "start_time_unix_nano": start_ns,
        "end_time_unix_nano": start_ns + duration_ms * 1_000_000,
        "events": [],
        "status": {
            "code": "STATUS_CODE_ERROR" if record.error else "STATUS_CODE_OK",
            "message": attributes.get("harness.error", ""),
        },
        "attributes": {k: json.dumps(v, default=str) for k, v in attributes.items()},
    }
    source = AssessmentSource(source_type="CODE", source_id="harness")
    assessments: list[Any] = []
    for scorer, value in record.scores.items():
        error = record.score_errors.get(scorer)
        if value is not None and not math.isfinite(value):  # a custom scorer's NaN: no valid JSON value
            value, error = None, f"not a finite number: {value}"
        if value is None and not error:
            continue  # the call failed: nothing was graded
        kind = "LLM_JUDGE" if scorer in record.rationales else "CODE"
        assessments.append(
            Feedback(
                name=scorer,
                value=value,
                error=error if value is None else None,
                source=AssessmentSource(source_type=kind, source_id=f"harness:{scorer}"),
                rationale=scrub(record.rationales[scorer]) if scorer in record.rationales else None,
                trace_id=trace_id,
            )
        )
    item = items.get(record.item_id)
    if item is not None and (item.reference or item.references):
        value: Any = item.references if len(item.references) > 1 else (item.reference or item.references[0])
        assessments.append(Expectation(name="expected_response", value=value, source=source, trace_id=trace_id))
    for assessment in assessments:
        assessment.run_id = run_id
    last_user = next((m["content"] for m in reversed(inputs["messages"]) if m["role"] == "user"), "")
    info = TraceInfo(
        trace_id=trace_id,
        trace_location=TraceLocation.from_experiment_id(experiment_id),
        request_time=start_ms,
        state=TraceState.ERROR if record.error else TraceState.OK,
        request_preview=last_user[:PREVIEW_CHARS],
        response_preview=(output or attributes.get("harness.error", ""))[:PREVIEW_CHARS],
        execution_duration=duration_ms,
        trace_metadata={
            TraceMetadataKey.SOURCE_RUN: run_id,
            TRACE_SCHEMA_VERSION_KEY: "3",
            TraceMetadataKey.TOKEN_USAGE: json.dumps(usage),
            TraceMetadataKey.COST: json.dumps(cost),
            "harness.variant": variant_name,
            "harness.item_id": item_id,
        },
        tags={TraceTagKey.TRACE_NAME: name, "harness.variant": variant_name},
        assessments=assessments,
    )
    return info, span


def _usage(record: Record) -> dict[str, int]:
    """Token usage under the keys MLflow sums into the Overview's token charts."""
    u = record.usage
    usage = {
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "total_tokens": u.input_tokens + u.output_tokens,
    }
    if u.cached_input_tokens:
        usage["cache_read_input_tokens"] = u.cached_input_tokens
    if u.cache_creation_input_tokens:
        usage["cache_creation_input_tokens"] = u.cache_creation_input_tokens
    return usage


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _bulk_insert(store: Any, experiment_id: str, built: list[tuple[Any, dict[str, Any]]]) -> None:
    """The rows MLflow's `start_trace` then `log_spans` would write, for many traces in one transaction."""
    from mlflow.store.tracking.dbmodels.models import (
        SqlAssessments,
        SqlSpan,
        SqlTraceInfo,
        SqlTraceMetadata,
        SqlTraceTag,
    )
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
    with store.ManagedSessionMaker(read_only=False) as session:
        session.execute(insert(SqlTraceInfo.__table__), infos)
        session.execute(insert(SqlTraceTag.__table__), tags)
        session.execute(insert(SqlTraceMetadata.__table__), metadata)
        if assessments:
            session.execute(insert(SqlAssessments.__table__), assessments)
        session.execute(insert(SqlSpan.__table__), spans)


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


def _through_client(experiment_id: str, built: list[tuple[Any, dict[str, Any]]]) -> None:
    """A tracking server: MLflow's own client calls, eight traces at a time, spans in one request."""
    from mlflow.entities.span import Span
    from mlflow.tracing.client import TracingClient

    client = TracingClient()
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(client.start_trace, [info for info, _ in built]))
    client.log_spans(experiment_id, [Span.from_dict(span) for _, span in built])
