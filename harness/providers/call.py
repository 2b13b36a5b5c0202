"""One model call through `litellm.acompletion`, with bounded retries, backoff and a timeout.

harness retries itself (litellm's own retries are turned off) so that every attempt is counted on the
record, Retry-After is honoured, and backoff has jitter so many concurrent calls do not retry in step.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.config import ModelConfig
from harness.endpoints import LOCAL_PROVIDER, is_loopback
from harness.offline import import_litellm
from harness.pricing import litellm_version, tier_name
from harness.records import RecordError, Usage
from harness.secrets import scrub

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
RETRY_AFTER_CAP_S = 120.0


@dataclass
class CallResult:
    """What one (possibly retried) call produced."""

    output: str | None = None
    usage: Usage = field(default_factory=Usage)
    usage_reported: bool = True
    latency_s: float = 0.0
    attempts: int = 0
    error: RecordError | None = None
    reported_cost_usd: float | None = None
    reported_cost_source: str = ""


async def call_model(
    cfg: ModelConfig,
    messages: list[dict[str, str]],
    params: dict[str, Any],
    timeout_s: float,
    max_retries: int,
    prices: Mapping[str, float] | None = None,
    max_retry_after_s: float = RETRY_AFTER_CAP_S,
) -> CallResult:
    """Call the model, retrying 429/5xx/timeouts with exponential backoff and jitter.

    `prices` (`ModelPrice.for_litellm`) go to litellm with the call: for a model its map does not know,
    they spare it a failed search of the map on every response. litellm's cost is then harness's price
    echoed, not a second figure, and is not recorded."""

    litellm = import_litellm()
    kwargs = {**params, **endpoint_kwargs(cfg), "messages": messages, "timeout": timeout_s, "num_retries": 0}
    kwargs["max_retries"] = 0
    kwargs.update(prices or {})
    result = CallResult()
    response = await with_retries(
        lambda: litellm.acompletion(**kwargs), result, timeout_s, max_retries, max_retry_after_s
    )
    if response is not None:
        fill_from_response(result, response, params.get("service_tier"), echoed=bool(prices))
    return result


@dataclass
class EmbeddingResult:
    """Vectors for a list of texts from one (possibly retried) embedding call."""

    vectors: list[list[float]] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    latency_s: float = 0.0
    attempts: int = 0
    error: RecordError | None = None


async def call_embedding(
    cfg: ModelConfig, texts: list[str], timeout_s: float, max_retries: int, max_retry_after_s: float = RETRY_AFTER_CAP_S
) -> EmbeddingResult:
    """Embed texts through `litellm.aembedding`, with the same retries as a completion."""

    litellm = import_litellm()
    kwargs = {**cfg.params, **endpoint_kwargs(cfg), "input": texts, "timeout": timeout_s, "num_retries": 0}
    result = CallResult()
    response = await with_retries(
        lambda: litellm.aembedding(**kwargs), result, timeout_s, max_retries, max_retry_after_s
    )
    out = EmbeddingResult(latency_s=result.latency_s, attempts=result.attempts, error=result.error)
    if response is not None:
        data = sorted(response.data, key=lambda d: d["index"] if isinstance(d, dict) else d.index)
        out.vectors = [list(d["embedding"] if isinstance(d, dict) else d.embedding) for d in data]
        usage = getattr(response, "usage", None)
        out.usage = Usage(input_tokens=int(getattr(usage, "prompt_tokens", 0) or 0))
        if len(out.vectors) != len(texts):
            out.error = RecordError(type="EmptyResponse", message=f"{len(out.vectors)} vectors for {len(texts)} texts")
    return out


def endpoint_kwargs(cfg: ModelConfig) -> dict[str, Any]:
    """Model, api_base and key arguments for litellm."""
    kwargs: dict[str, Any] = {"model": cfg.model}
    if cfg.api_base:
        kwargs["api_base"] = cfg.api_base
    if cfg.api_key_env:
        kwargs["api_key"] = os.environ.get(cfg.api_key_env)
    elif is_loopback(cfg.api_base) and not cfg.model.startswith(f"{LOCAL_PROVIDER}/"):
        # A server on this machine usually needs no key, but the OpenAI client refuses to start without one.
        kwargs["api_key"] = os.environ.get("OPENAI_API_KEY") or "unused-local-key"
    return kwargs


async def with_retries(
    make_call: Callable[[], Awaitable[Any]],
    result: CallResult,
    timeout_s: float,
    max_retries: int,
    max_retry_after_s: float = RETRY_AFTER_CAP_S,
) -> Any:
    """The response, or None with `result.error` set; `result` counts attempts and the last latency."""
    for attempt in range(max_retries + 1):
        result.attempts = attempt + 1
        start = time.perf_counter()
        try:
            response = await asyncio.wait_for(make_call(), timeout=timeout_s + 1.0)
        except Exception as exc:  # every failure is classified, recorded or retried
            result.latency_s = time.perf_counter() - start
            result.error = _as_error(exc, timeout_s)
            delay = _retry_delay(exc, attempt, max_retry_after_s)
            if delay is None or attempt == max_retries:
                return None
            await asyncio.sleep(delay)
            continue
        result.latency_s = time.perf_counter() - start
        result.error = None
        return response
    return None


def fill_from_response(result: CallResult, response: Any, requested_tier: object = None, echoed: bool = False) -> None:
    choices = getattr(response, "choices", None) or []
    content = choices[0].message.content if choices else None
    if content is None:
        result.error = RecordError(type="EmptyResponse", message="the response had no choices or no content")
    else:
        result.output = content
    usage = getattr(response, "usage", None)
    if usage is None or not getattr(usage, "prompt_tokens", None):
        result.usage_reported = False
        return
    try:
        result.usage = _usage_from(usage, getattr(response, "service_tier", None) or requested_tier)
    except (TypeError, ValueError, OverflowError):
        result.usage = Usage()
        result.error = RecordError(type="ImplausibleUsage", message="the provider reported usage that is not a count")
        return
    result.reported_cost_usd, result.reported_cost_source = _reported_cost(response, usage, echoed)
    problem = implausible_usage(result.usage)
    if problem is not None:
        result.error = RecordError(type="ImplausibleUsage", message=f"the provider reported {problem}")


def _usage_from(usage: Any, tier: object) -> Usage:
    """litellm's normalised usage as harness bills it, every dimension the response reports."""
    prompt = getattr(usage, "prompt_tokens_details", None)
    completion = getattr(usage, "completion_tokens_details", None)
    writes = getattr(prompt, "cache_creation_token_details", None)

    def count(source: Any, name: str) -> int:
        return int(getattr(source, name, 0) or 0)

    return Usage(
        input_tokens=int(usage.prompt_tokens or 0),
        output_tokens=int(usage.completion_tokens or 0),
        cached_input_tokens=count(prompt, "cached_tokens"),
        cache_creation_input_tokens=(
            count(prompt, "cache_creation_tokens") or count(usage, "cache_creation_input_tokens")
        ),
        cache_creation_1h_input_tokens=count(writes, "ephemeral_1h_input_tokens"),
        reasoning_tokens=count(completion, "reasoning_tokens"),
        input_audio_tokens=count(prompt, "audio_tokens"),
        input_image_tokens=count(prompt, "image_tokens"),
        output_audio_tokens=count(completion, "audio_tokens"),
        output_image_tokens=count(completion, "image_tokens"),
        service_tier=tier_name(tier),
    )


def _reported_cost(response: Any, usage: Any, echoed: bool = False) -> tuple[float | None, str]:
    """The provider's own figure (OpenRouter's `usage.cost`) first, else litellm's `response_cost`, unless
    litellm only `echoed` the prices harness gave it."""
    litellm_cost = None if echoed else (getattr(response, "_hidden_params", None) or {}).get("response_cost")
    for value, source in (
        (getattr(usage, "cost", None), "provider (usage.cost)"),
        (litellm_cost, f"litellm {litellm_version()}"),
    ):
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
            return float(value), source
    return None, ""


MAX_TOKENS_PER_CALL = 10_000_000
"""More tokens than any model's context in one call: a count above it is a provider bug, not a bill."""


def implausible_usage(usage: Usage) -> str | None:
    """Why reported usage cannot be trusted to price a call (or to let the budget admit more), or None."""
    counts = usage.model_dump(exclude={"service_tier"})
    negative = [k for k, v in counts.items() if v < 0]
    if negative:
        return f"negative token counts ({', '.join(f'{k}={counts[k]}' for k in negative)})"
    huge = [k for k, v in counts.items() if v > MAX_TOKENS_PER_CALL]
    if huge:
        return f"absurd token counts ({', '.join(f'{k}={counts[k]:,}' for k in huge)})"
    if usage.cached_input_tokens + usage.cache_creation_input_tokens > usage.input_tokens:
        return "more cached than input tokens"
    if usage.reasoning_tokens > usage.output_tokens:
        return "more reasoning than output tokens"
    if usage.cache_creation_1h_input_tokens > usage.cache_creation_input_tokens:
        return "more one-hour cache writes than cache writes"
    return None


def _as_error(exc: BaseException, timeout_s: float) -> RecordError:
    if isinstance(exc, asyncio.TimeoutError | TimeoutError) or type(exc).__name__ == "Timeout":
        return RecordError(type="Timeout", message=f"no response within {timeout_s:g} s")
    if _connection_refused(exc):
        return RecordError(type="ConnectionRefused", message="nothing is listening at the model's address")
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return RecordError(type=type(exc).__name__, message=scrub(message)[:500])


def _connection_refused(exc: BaseException) -> bool:
    """litellm wraps a refused connection in InternalServerError or APIConnectionError; find the cause."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, ConnectionRefusedError) or "connection refused" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _retry_delay(exc: BaseException, attempt: int, max_retry_after_s: float = RETRY_AFTER_CAP_S) -> float | None:
    """Seconds to wait before retrying, or None when the error is not worth retrying. A provider's
    Retry-After is obeyed up to `max_retry_after_s` (the config's `max_retry_after_s`): a hostile or broken
    one asking for a day would otherwise stall the run."""
    name = type(exc).__name__
    status = getattr(exc, "status_code", None)
    transient = (
        isinstance(exc, asyncio.TimeoutError | TimeoutError)
        or name
        in {
            "Timeout",
            "APIConnectionError",
            "ServiceUnavailableError",
            "InternalServerError",
            "BadGatewayError",
            "RateLimitError",
        }
        or status in RETRYABLE_STATUS
        or _connection_refused(exc)
    )
    if not transient:
        return None
    retry_after = _retry_after_s(exc)
    if retry_after is not None:
        return min(retry_after, max_retry_after_s)
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt)
    return random.uniform(ceiling / 2, ceiling)


def _retry_after_s(exc: BaseException) -> float | None:
    """Retry-After (seconds or HTTP date) from wherever litellm kept the provider's headers."""
    sources = [
        getattr(getattr(exc, "response", None), "headers", None),
        getattr(exc, "litellm_response_headers", None),
        getattr(exc, "headers", None),
    ]
    for headers in sources:
        if not headers:
            continue
        try:
            value = headers.get("retry-after") or headers.get("Retry-After")
        except Exception:  # headers of an unexpected shape: fall back to backoff
            return None
        if value is None:
            continue
        return _parse_retry_after(str(value))
    return None


def _parse_retry_after(value: str) -> float | None:
    """Seconds from a Retry-After value (a number or an HTTP date); None for anything else ('soon')."""
    try:
        seconds = float(value)
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if parsed is None or parsed.tzinfo is None:
            return None
        seconds = parsed.timestamp() - time.time()
    return max(seconds, 0.0) if math.isfinite(seconds) else None
