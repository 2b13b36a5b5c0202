"""A production app's MLflow traces as logged calls (`dataset: {logs: {mlflow: ...}}`).

An app instrumented with `mlflow.openai.autolog()`, `mlflow.litellm.autolog()` or its own LLM spans leaves
one trace per request; each chat span (span type CHAT_MODEL or LLM) holds the request (`messages`,
`model`) as its inputs, the Chat Completions response as its outputs and the token usage as
`mlflow.chat.tokenUsage`. Traces are read page by page, oldest first, through a client of their own
store, so harness's own tracking URI is never changed by reading someone else's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.config import ConfigError, LogsConfig, inside_project
from harness.logs import BadLine, LoggedCall, parse_openai
from harness.offline import apply_offline_defaults

PAGE = 200
CHAT_SPANS = ("CHAT_MODEL", "LLM")


def store_uri(uri: str, root: Path, config_file: Path | str) -> str:
    """The source's URI; a SQLite file is resolved against the project and must lie inside it."""
    if uri.startswith("sqlite:///"):
        path = inside_project(uri.removeprefix("sqlite:///"), root, config_file, "dataset.logs.mlflow.tracking_uri")
        if not path.is_file():
            raise ConfigError(
                config_file, "dataset.logs.mlflow.tracking_uri", f"no such store {path}", "point it at the app's store"
            )
        return f"sqlite:///{path}"
    return uri


def trace_reader(root: Path, config_file: Path | str) -> Any:
    """The reader `datasets.load_items` calls for an MLflow source, bound to the project."""

    def read(cfg: LogsConfig, since: float | None, until: float | None) -> Iterator[LoggedCall]:
        return read_traces(cfg, since, until, root, config_file)

    return read


def read_traces(
    cfg: LogsConfig, since: float | None, until: float | None, root: Path, config_file: Path | str
) -> Iterator[LoggedCall]:
    """Each chat span of each matching trace as a call (a trace with several is several calls)."""
    assert cfg.mlflow is not None
    source = cfg.mlflow
    apply_offline_defaults()
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=store_uri(source.tracking_uri, root, config_file))
    try:
        experiment = client.get_experiment_by_name(source.experiment)
    except Exception as exc:  # an unreachable server, a store of another kind
        raise ConfigError(config_file, "dataset.logs.mlflow", f"cannot read {source.tracking_uri}: {exc}", "") from None
    if experiment is None:
        raise ConfigError(
            config_file,
            "dataset.logs.mlflow.experiment",
            f"no experiment '{source.experiment}' in {source.tracking_uri}",
            "name the experiment the app's traces are in",
        )
    clauses = [source.filter] if source.filter else []
    if since is not None:
        clauses.append(f"trace.timestamp_ms >= {int(since * 1000)}")
    if until is not None:
        clauses.append(f"trace.timestamp_ms < {int(until * 1000)}")
    token = None
    while True:
        try:
            page = client.search_traces(
                locations=[experiment.experiment_id],
                filter_string=" AND ".join(clauses) or None,
                max_results=PAGE,
                order_by=["timestamp_ms ASC"],
                page_token=token,
            )
        except Exception as exc:
            raise ConfigError(
                config_file, "dataset.logs.mlflow.filter", f"MLflow refused the search: {exc}", "fix the filter"
            ) from None
        for trace in page:
            yield from _calls(trace)
        token = page.token
        if not token:
            return


def _calls(trace: Any) -> Iterator[LoggedCall]:
    info = trace.info
    tags = {k: str(v) for k, v in (info.tags or {}).items() if not k.startswith("mlflow.")}
    tags.update({k: str(v) for k, v in (info.trace_metadata or {}).items() if not k.startswith("mlflow.")})
    for span in trace.data.spans:
        if str(span.span_type) not in CHAT_SPANS:
            continue
        inputs = span.inputs if isinstance(span.inputs, dict) else {}
        outputs = span.outputs
        if isinstance(outputs, str):
            try:
                outputs = json.loads(outputs)
            except json.JSONDecodeError:
                outputs = {"choices": [{"message": {"content": outputs}}]}
        if hasattr(outputs, "model_dump"):
            outputs = outputs.model_dump()
        usage = span.get_attribute("mlflow.chat.tokenUsage") or {}
        response = dict(outputs) if isinstance(outputs, dict) else {}
        if usage and not response.get("usage"):
            response["usage"] = usage
        try:
            call = parse_openai(
                {
                    "request": inputs,
                    "response": response,
                    "timestamp": span.start_time_ns / 1e9,
                    "metadata": tags,
                }
            )
        except BadLine:
            continue
        call.latency_s = max(0.0, (span.end_time_ns - span.start_time_ns) / 1e9)
        call.model = call.model or str(span.get_attribute("mlflow.llm.model") or "")
        call.call_id = f"{info.trace_id}:{span.span_id}"
        yield call
