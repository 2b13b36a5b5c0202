"""Each record as an MLflow trace of its variant's run, each score as an assessment on it.

Why traces: MLflow 3's experiment pages (Overview, Traces, Evaluation runs and their item-by-item
compare view) read traces, not run artifacts. A trace here is one LLM span: the rendered messages in,
the output out, model and provider, token usage and cost in the span attributes MLflow aggregates,
latency as its duration, attempts and errors; the trace's `mlflow.sourceRun` is the variant's run, so
the run is an evaluation run in the UI. Scores are `Feedback` (a judge's reply as the rationale), the
reference an `Expectation`.

Two writers: MLflow's public client (`start_trace`, `log_spans`), several traces at a time, for a tracking
server and wherever the fast path declines; and on a SQL store (sqlite, PostgreSQL) the same rows in a
few transactions (`harness.tracking.sql_traces`, the one module that touches MLflow's tables, behind a
schema check).
"""

from __future__ import annotations

import base64
import json
import math
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from harness.datasets import Item
from harness.plan import Plan, Variant
from harness.records import Record
from harness.secrets import scrubber
from harness.tracking import sql_traces

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
    items = {item.id: item for item in plan.eval_set.items}
    scrub = scrubber()
    bulk = sql_traces.writer(sql_traces.current_store(mlflow))
    for start in range(0, len(chosen), CHUNK):  # built a chunk at a time: memory stays flat at any size
        chunk = [
            _build(plan, variant, record, items, experiment_id, run_id, start_ms, scrub)
            for record in chosen[start : start + CHUNK]
        ]
        if bulk is None or not bulk(experiment_id, chunk):
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
    # what this call spent and consumed, which the Overview's charts sum over every run of the experiment:
    # a re-run served from the cache (or an answer replayed from a production log) adds no dollars and no
    # tokens there; its tokens stay in `harness.usage`
    cost = {"total_cost": record.cost_usd if record.paid_now else 0.0}
    billed = usage if record.paid_now else dict.fromkeys(usage, 0)
    duration_ms = max(1, round(record.latency_s * 1000))
    name = record.item_id if plan.experiment.epochs == 1 else f"{record.item_id}#{record.sample}"
    name, item_id, variant_name = name[:NAME_CHARS], record.item_id[:NAME_CHARS], variant.name[:NAME_CHARS]
    model = variant.model.model
    attributes = {
        SpanAttributeKey.REQUEST_ID: trace_id,
        SpanAttributeKey.SPAN_TYPE: "LLM",
        SpanAttributeKey.INPUTS: inputs,
        SpanAttributeKey.OUTPUTS: output,
        SpanAttributeKey.CHAT_USAGE: billed,
        SpanAttributeKey.LLM_COST: cost,
        SpanAttributeKey.MODEL: model,
        SpanAttributeKey.MODEL_PROVIDER: model.split("/", 1)[0] if "/" in model else "openai",
        "harness.variant": variant.name,
        "harness.item_id": record.item_id,
        "harness.sample": record.sample,
        "harness.attempts": record.attempts,
        "harness.cache_hit": record.cache_hit,
        "harness.cost_usd": record.cost_usd,  # the call's price, cached or not (what the analysis uses)
        "harness.usage": usage,  # the call's tokens, cached or not
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
            TraceMetadataKey.TOKEN_USAGE: json.dumps(billed),
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


def _through_client(experiment_id: str, built: list[tuple[Any, dict[str, Any]]]) -> None:
    """A tracking server: MLflow's own client calls, eight traces at a time, spans in one request."""
    from mlflow.entities.span import Span
    from mlflow.tracing.client import TracingClient

    client = TracingClient()
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(client.start_trace, [info for info, _ in built]))
    client.log_spans(experiment_id, [Span.from_dict(span) for _, span in built])
