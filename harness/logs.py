"""Production logs as an eval: read OpenAI-format JSONL, litellm spend logs or MLflow traces, one call at a
time, and keep a stratified random sample of them.

A month of logs is millions of lines, so nothing here holds the log: lines are parsed one by one and each
segment keeps a reservoir (Vitter's algorithm R) of at most `sample` calls, with a count of every call it
saw. The sample is then split across segments in proportion to their calls (at least one each), and each
sampled call carries the weight of the calls it stands for (the segment's calls over its sampled ones),
which every aggregate over the sample uses.

Logged messages are the users' data: `redact` masks e-mail addresses, phone numbers and key-like strings
before anything is sent to a model, cached or stored, and the masks are counted for the report.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from harness.config import ConfigError, LogsConfig, parse_time
from harness.records import Usage

MAX_SEGMENTS = 1000
"""More segments than this is a tag that names each call (a user id), not a feature: refused."""

NO_SEGMENT = "(none)"
"""The segment of a call without the `segment_by` tag."""


@dataclass
class LoggedCall:
    """One production call as a log recorded it."""

    messages: list[dict[str, Any]]
    output: str | None
    model: str
    usage: Usage
    tags: dict[str, str] = field(default_factory=dict)
    timestamp: float | None = None
    """Epoch seconds."""
    spend_usd: float | None = None
    """What the log says the call cost (litellm's `spend`), kept to reconcile with today's price."""
    latency_s: float = 0.0
    call_id: str = ""


class BadLine(ValueError):
    """A log line that is not a call: counted and skipped, the first one named in the report."""


@dataclass
class Segment:
    """One segment's calls in the window and its reservoir."""

    name: str
    calls: int = 0
    kept: list[tuple[int, LoggedCall]] = field(default_factory=list)
    """(line number, call), at most the sample size."""


@dataclass
class SampledLog:
    """The sampled calls with their weights, and what the whole log held."""

    calls: list[tuple[int, LoggedCall, str, float]]
    """(line number, call, segment, weight) in line order."""
    segments: dict[str, int]
    """Segment to the number of calls it had in the window."""
    lines: int
    skipped: int
    first_skip: str
    outside_window: int
    window_s: tuple[float, float] | None
    """The first and last call's time (or the config's since/until), None when the log has no times."""
    redacted: dict[str, int] = field(default_factory=dict)

    def facts(self, source: str) -> LogFacts:
        """What the eval set keeps of the log (the calls become items)."""
        days = None
        if self.window_s is not None and self.window_s[1] > self.window_s[0]:
            days = (self.window_s[1] - self.window_s[0]) / 86400
        return LogFacts(
            source=source,
            segments=self.segments,
            sampled={name: sum(1 for c in self.calls if c[2] == name) for name in self.segments},
            lines=self.lines,
            skipped=self.skipped,
            first_skip=self.first_skip,
            outside_window=self.outside_window,
            window_s=self.window_s,
            days=days,
            redacted=self.redacted,
        )


class LogFacts(BaseModel):
    """The log behind an eval set: what it held, what was sampled, over what time (stored with the run)."""

    source: str
    segments: dict[str, int]
    """Segment to its calls in the window (all of them, not only the sampled)."""
    sampled: dict[str, int]
    lines: int
    skipped: int = 0
    first_skip: str = ""
    outside_window: int = 0
    window_s: tuple[float, float] | None = None
    days: float | None = None
    """The window in days; None without times (then `traffic` gives the rate)."""
    redacted: dict[str, int] = Field(default_factory=dict)

    def per_day(self, segment: str) -> float | None:
        """The segment's calls per day over the window."""
        return self.segments[segment] / self.days if self.days else None


def read_log(cfg: LogsConfig, path: Path | None, config_file: Path | str, traces: TraceReader | None) -> SampledLog:
    """Read, filter by time, sample and (with `redact`) mask the configured log; ConfigError when it has
    no usable call."""
    since = parse_time(cfg.since) if cfg.since else None
    until = parse_time(cfg.until) if cfg.until else None
    if cfg.mlflow is not None:
        if traces is None:
            raise ConfigError(config_file, "dataset.logs.mlflow", "MLflow traces are read by run and gate", "")
        numbered: Iterable[tuple[int, Any]] = enumerate(traces(cfg, since, until), start=1)
        parse: Callable[[Any], LoggedCall] = lambda call: call  # noqa: E731 - the reader made calls already
        where = f"{cfg.mlflow.tracking_uri} experiment {cfg.mlflow.experiment}"
    else:
        assert path is not None
        lines = _lines(path, config_file)
        fmt = cfg.format or sniff(path, config_file)
        parse = PARSERS[fmt]
        numbered = lines
        where = str(cfg.path)
    sampled = _sample(numbered, parse, cfg, since, until, config_file)
    if not sampled.calls:
        why = f"; {sampled.skipped} lines were not calls (first: {sampled.first_skip})" if sampled.skipped else ""
        window = f", {sampled.outside_window} outside since/until" if sampled.outside_window else ""
        raise ConfigError(config_file, "dataset.logs", f"{where} has no call to replay{why}{window}", _FIX)
    if cfg.redact:
        sampled.redacted = _redact_all(sampled.calls)
    return sampled


_FIX = "point dataset.logs at OpenAI-format lines ({request, response}) or litellm spend-log rows (docs/replay.md)"

TraceReader = Callable[[LogsConfig, float | None, float | None], Iterator[LoggedCall]]
"""Reads MLflow traces as calls (`harness.tracking.production.read_traces`; the tracking wing owns MLflow)."""


def _lines(path: Path, config_file: Path | str) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON) one line at a time; a .json file holding an array is read whole."""
    if not path.is_file():
        raise ConfigError(config_file, "dataset.logs.path", f"no such file {path}", "give a path inside the project")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(config_file, "dataset.logs.path", f"cannot read {path}: {exc}", _FIX) from None
        rows = data if isinstance(data, list) else [data]
        return iter(list(enumerate(rows, start=1)))
    return _jsonl(path)


def _jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                yield number, json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
                yield number, BadLine(f"not JSON ({type(exc).__name__})")


def sniff(path: Path, config_file: Path | str) -> str:
    """The file's format from its first line that is an object."""
    for _, row in _lines(path, config_file):
        if isinstance(row, dict):
            if "request" in row and "response" in row:
                return "openai"
            if {"spend", "startTime"} & set(row) or "request_id" in row:
                return "litellm_spend"
            break
    raise ConfigError(
        config_file,
        "dataset.logs.format",
        f"cannot tell how {path} is written from its first line",
        "say format: openai (lines of {request, response}) or format: litellm_spend (LiteLLM_SpendLogs rows)",
    )


def _sample(
    numbered: Iterable[tuple[int, Any]],
    parse: Callable[[Any], LoggedCall],
    cfg: LogsConfig,
    since: float | None,
    until: float | None,
    config_file: Path | str,
) -> SampledLog:
    rng = random.Random(cfg.seed)
    segments: dict[str, Segment] = {}
    lines = skipped = outside = 0
    first_skip = ""
    first_time, last_time = math.inf, -math.inf
    for number, row in numbered:
        lines += 1
        try:
            if isinstance(row, BadLine):
                raise row
            call = parse(row)
        except (BadLine, KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            skipped += 1
            first_skip = first_skip or f"line {number}: {str(exc)[:120] or type(exc).__name__}"
            continue
        if call.timestamp is not None:
            if (since is not None and call.timestamp < since) or (until is not None and call.timestamp >= until):
                outside += 1
                continue
            first_time, last_time = min(first_time, call.timestamp), max(last_time, call.timestamp)
        name = segment_of(call, cfg.segment_by)
        segment = segments.get(name)
        if segment is None:
            if len(segments) >= MAX_SEGMENTS:
                raise ConfigError(
                    config_file,
                    "dataset.logs.segment_by",
                    f"'{cfg.segment_by}' has more than {MAX_SEGMENTS} values",
                    "segment by a coarser tag (a feature or a team, not a user or a request id)",
                )
            segment = segments[name] = Segment(name)
        segment.calls += 1
        if len(segment.kept) < cfg.sample:
            segment.kept.append((number, call))
        else:
            slot = rng.randrange(segment.calls)
            if slot < cfg.sample:
                segment.kept[slot] = (number, call)
    if len(segments) > cfg.sample:
        raise ConfigError(
            config_file,
            "dataset.logs.sample",
            f"{len(segments)} segments need at least one call each, more than sample: {cfg.sample}",
            f"raise sample to {len(segments)} or more, or segment by a coarser tag",
        )
    chosen: list[tuple[int, LoggedCall, str, float]] = []
    for name, take in allocate({n: s.calls for n, s in segments.items()}, cfg.sample).items():
        kept = segments[name].kept
        picked = kept if take >= len(kept) else rng.sample(kept, take)
        weight = segments[name].calls / len(picked)
        chosen.extend((number, call, name, weight) for number, call in picked)
    chosen.sort(key=lambda entry: entry[0])
    window = _window(since, until, first_time, last_time)
    return SampledLog(chosen, {n: s.calls for n, s in segments.items()}, lines, skipped, first_skip, outside, window)


def _window(since: float | None, until: float | None, first: float, last: float) -> tuple[float, float] | None:
    """The time the calls span: the config's since/until where given, else the first and last call."""
    if not math.isfinite(first):
        return None
    return (since if since is not None else first, until if until is not None else last)


def allocate(counts: dict[str, int], sample: int) -> dict[str, int]:
    """Sampled calls per segment: in proportion to its calls (largest remainder), at least one each, never
    more than it has; all of them when the log has no more than `sample` calls."""
    total = sum(counts.values())
    if total <= sample:
        return dict(counts)
    share = {name: max(1.0, sample * n / total) for name, n in counts.items()}
    take = {name: min(counts[name], int(value)) for name, value in share.items()}
    left = sample - sum(take.values())
    by_remainder = sorted(counts, key=lambda name: (share[name] - int(share[name]), counts[name]), reverse=True)
    for name in by_remainder:
        if left <= 0:
            break
        if take[name] < counts[name]:
            take[name] += 1
            left -= 1
    return take


def segment_of(call: LoggedCall, segment_by: str | None) -> str:
    """The call's value of the segment tag, or `(none)`."""
    if segment_by is None:
        return NO_SEGMENT
    value = call.tags.get(segment_by)
    return str(value) if value not in (None, "") else NO_SEGMENT


# --- the formats ---


def _text(content: Any) -> str | None:
    """A message's content as text: a string, or the text parts of a list of content parts."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content)


def _messages(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        value = json.loads(value)
    if isinstance(value, dict) and "messages" in value:
        value = value["messages"]
    if not isinstance(value, list) or not value:
        raise BadLine(
            "no messages (litellm's proxy stores them only with general_settings: {store_prompts_in_spend_logs: true})"
        )
    out = []
    for m in value:
        if not isinstance(m, dict) or "role" not in m:
            raise BadLine("a message without a role")
        out.append({"role": str(m["role"]), "content": _text(m.get("content")) or ""})
    return out


def _usage(usage: Any) -> Usage:
    usage = usage if isinstance(usage, dict) else {}
    prompt = usage.get("prompt_tokens_details") or {}
    completion = usage.get("completion_tokens_details") or {}
    return Usage(
        input_tokens=int(usage.get("prompt_tokens") or usage.get("input_tokens") or 0),
        output_tokens=int(usage.get("completion_tokens") or usage.get("output_tokens") or 0),
        cached_input_tokens=int((prompt.get("cached_tokens") if isinstance(prompt, dict) else 0) or 0),
        reasoning_tokens=int((completion.get("reasoning_tokens") if isinstance(completion, dict) else 0) or 0),
    )


def _answer(response: Any) -> str | None:
    if isinstance(response, str):
        response = json.loads(response) if response.strip().startswith("{") else {"text": response}
    if not isinstance(response, dict):
        return None
    choices = response.get("choices") or []
    if choices and isinstance(choices[0], dict):
        message = choices[0].get("message") or {}
        return _text(message.get("content")) if isinstance(message, dict) else None
    return response.get("text")


def _flat(tags: Any) -> dict[str, str]:
    if isinstance(tags, str):
        tags = json.loads(tags) if tags.strip().startswith(("{", "[")) else {}
    if isinstance(tags, dict):
        return {str(k): str(v) for k, v in tags.items() if not isinstance(v, dict | list)}
    if isinstance(tags, list):  # litellm's request_tags: "feature:summarize", or a bare "beta"
        return dict((t.split(":", 1) if ":" in str(t) else (str(t), "true")) for t in tags)
    return {}


def parse_openai(row: Any) -> LoggedCall:
    """`{request, response, timestamp?, metadata?}`: a Chat Completions request body and its response."""
    if not isinstance(row, dict) or not isinstance(row.get("request"), dict):
        raise BadLine("no request object")
    request, response = row["request"], row.get("response")
    messages = _messages(request.get("messages"))
    usage = _usage(response.get("usage") if isinstance(response, dict) else None)
    model = str(request.get("model") or (response or {}).get("model") or "")
    when = row.get("timestamp")
    output = _answer(response)
    if output is None:
        raise BadLine("no answer to compare with (a tool call, an error, or no response)")
    return LoggedCall(
        messages=messages,
        output=output,
        model=model,
        usage=usage,
        tags=_flat(row.get("metadata") or request.get("metadata") or {}),
        timestamp=epoch(when),
        latency_s=float(row.get("latency_s") or 0.0),
        call_id=str((response or {}).get("id") or "") if isinstance(response, dict) else "",
    )


def parse_spend_log(row: Any) -> LoggedCall:
    """A `LiteLLM_SpendLogs` row (litellm/proxy/schema.prisma) as JSON."""
    if not isinstance(row, dict):
        raise BadLine("not a spend-log row")
    tags = _flat(row.get("metadata") or {})
    tags.update(_flat(row.get("request_tags") or []))
    for column in ("end_user", "team_id", "user", "model_group", "api_key"):
        if row.get(column):
            tags.setdefault(column, str(row[column]))
    start, end = epoch(row.get("startTime")), epoch(row.get("endTime"))
    output = _answer(row.get("response"))
    if output is None:
        raise BadLine("no answer to compare with (a tool call, an error, or no response)")
    duration = row.get("request_duration_ms")
    latency = float(duration) / 1000 if duration else (end - start if start is not None and end is not None else 0.0)
    spend = row.get("spend")
    return LoggedCall(
        messages=_messages(row.get("messages")),
        output=output,
        model=str(row.get("model") or ""),
        usage=Usage(
            input_tokens=int(row.get("prompt_tokens") or 0), output_tokens=int(row.get("completion_tokens") or 0)
        ),
        tags=tags,
        timestamp=start,
        spend_usd=float(spend) if spend is not None else None,
        latency_s=max(0.0, latency),
        call_id=str(row.get("request_id") or ""),
    )


def epoch(value: Any) -> float | None:
    """A log's time in epoch seconds: ISO 8601 text, epoch seconds, or epoch milliseconds (a number past
    the year 5138 in seconds is read as milliseconds)."""
    if value is None:
        return None
    seconds = parse_time(value)
    if seconds is None:
        raise BadLine(f"a time that is neither ISO 8601 nor epoch seconds: {str(value)[:40]!r}")
    return seconds / 1000 if seconds > 1e11 else seconds


PARSERS: dict[str, Callable[[Any], LoggedCall]] = {"openai": parse_openai, "litellm_spend": parse_spend_log}


# --- redaction ---

REDACTIONS = {
    "email": re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"),
    "key": re.compile(r"\b(?:sk|pk|rk|ghp|gho|xox[bpas]|AKIA)[-_A-Za-z0-9]{12,}\b|\b[A-Fa-f0-9]{32,}\b"),
    "phone": re.compile(r"(?<![\w.])\+?\d[\d ().-]{7,}\d(?![\w.])"),
}
"""What `redact` masks, in this order (a key is masked before its digits could look like a phone number)."""

PHONE_DIGITS = range(9, 16)
"""A phone number has 9 to 15 digits (E.164): a date (8) or an order total is left alone."""


def redact_text(text: str, counts: dict[str, int]) -> str:
    """`text` with every match masked as `[email]`, `[key]`, `[phone]`; counts added to `counts`."""
    for kind, pattern in REDACTIONS.items():
        found = 0

        def mask(match: re.Match[str], kind: str = kind) -> str:
            nonlocal found
            if kind == "phone" and sum(c.isdigit() for c in match.group()) not in PHONE_DIGITS:
                return match.group()
            found += 1
            return f"[{kind}]"

        text = pattern.sub(mask, text)
        if found:
            counts[kind] = counts.get(kind, 0) + found
    return text


def _redact_all(calls: list[tuple[int, LoggedCall, str, float]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, call, _, _ in calls:
        call.messages = [{**m, "content": redact_text(str(m["content"]), counts)} for m in call.messages]
        if call.output is not None:
            call.output = redact_text(call.output, counts)
    return counts
