"""Provider Batch APIs: litellm's file and batch client for OpenAI's, our own client for Anthropic's.

A batch is a JSONL file of requests uploaded with `litellm.acreate_file`, submitted with
`litellm.acreate_batch`, looked at with `litellm.aretrieve_batch` and read back with
`litellm.afile_content` (the output file and the error file). Any server speaking OpenAI's `/v1/files`
and `/v1/batches` works this way, whatever litellm calls its provider (`openai`, `azure`,
`hosted_vllm`). Each request's answer is parsed as a direct call's would be (`call.fill_from_response`),
then marked as billed at the batch tier, so a batch record and a direct one differ only in price.

Anthropic's Message Batches have no file and litellm cannot create them, so this module speaks them itself
(`/v1/messages/batches`: the requests inline, `processing_status`, a results URL). They carry no metadata:
a batch whose id was never stored is found among the provider's batches made since the submission began
with the same number of requests and no id in the ledger, and only when exactly one matches.

Every step is retried like a call (`call.with_retries`): a 429 on an upload must not lose a submission.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.config import ModelConfig
from harness.endpoints import LOCAL_PROVIDER
from harness.offline import import_litellm
from harness.providers.call import RETRYABLE_STATUS, CallResult, endpoint_kwargs, fill_from_response, with_retries
from harness.records import RecordError, Usage

OPENAI_STYLE = ("openai", "azure", "hosted_vllm")
"""litellm providers whose batches go through OpenAI's file and batch endpoints."""
ANTHROPIC = "anthropic"
BATCH_PROVIDERS = (*OPENAI_STYLE, ANTHROPIC)
ANTHROPIC_VERSION = "2023-06-01"
INLINE = "inline"
"""The ledger's file id for a provider that takes its requests inline: the create request may have gone."""
ENDPOINT = "/v1/chat/completions"
DONE = ("completed", "expired", "failed", "cancelled")
"""A batch in one of these states will change no more: its files are final."""
# litellm's afile_content makes its coroutine in an executor thread and awaits it afterwards; a look that is
# cancelled in between (Ctrl-C, a timeout) drops it unawaited, which Python reports at exit. Nothing is lost.
warnings.filterwarnings("ignore", message="coroutine 'OpenAIFilesAPI.afile_content' was never awaited")

SUBMISSION_TAG = "harness_submission"
"""The metadata key that finds a batch again when its id was never stored (the process died in between)."""


@dataclass(frozen=True)
class BatchStatus:
    """A batch as the provider reports it."""

    id: str
    status: str
    total: int = 0
    completed: int = 0
    failed: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.status in DONE


@dataclass
class BatchAnswer:
    """One request's outcome inside a batch: an answer, or an error and whether a retry may help."""

    result: CallResult
    retry: bool = False
    """The request failed for a passing reason (a 429 or 5xx inside the batch, or the batch expired
    before it ran): it goes to the retry path, not to the record as a failure."""


class StatusError(Exception):
    """An HTTP error from a batch endpoint, shaped as the retry path reads errors (status and headers)."""

    def __init__(self, response: Any) -> None:
        self.status_code = response.status_code
        self.response = response
        super().__init__(f"status {response.status_code}: {response.text[:200]}")


class BatchError(Exception):
    """A step of the batch API failed after its retries (the message is safe to print)."""


def batch_provider(cfg: ModelConfig) -> str | None:
    """The litellm provider that takes this model's batches, or None when it has no batch API here."""
    if cfg.model.startswith(f"{LOCAL_PROVIDER}/"):
        return None
    try:
        _, provider, _, _ = import_litellm().get_llm_provider(model=cfg.model, api_base=cfg.api_base)
    except Exception:  # litellm raises BadRequestError for a model string it cannot place
        return None
    return provider if provider in BATCH_PROVIDERS else None


def request_line(cfg: ModelConfig, custom_id: str, messages: list[dict[str, str]], params: dict[str, Any]) -> bytes:
    """One line of a batch input file: the request a direct call would send, under the provider's own
    model name (litellm's prefix removed)."""
    model, _, _, _ = import_litellm().get_llm_provider(model=cfg.model, api_base=cfg.api_base)
    body = {**params, "model": model, "messages": messages}
    line = {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}
    return (json.dumps(line, separators=(",", ":")) + "\n").encode()


async def upload(cfg: ModelConfig, content: bytes, timeout_s: float, retries: int) -> str:
    """Upload a batch input file; its id (`INLINE` where the requests go with the batch itself)."""
    if batch_provider(cfg) == ANTHROPIC:
        return INLINE
    litellm = import_litellm()
    created = await _step(
        "upload the batch file",
        lambda: litellm.acreate_file(file=("batch.jsonl", content), purpose="batch", **_client(cfg, timeout_s)),
        timeout_s,
        retries,
    )
    return str(created.id)


async def submit(
    cfg: ModelConfig, file_id: str, token: str, timeout_s: float, retries: int, content: bytes = b""
) -> BatchStatus:
    """Create a batch over an uploaded file (or over `content`, the request lines, where they go inline),
    tagged with `token` so it can be found again by `find`."""
    if batch_provider(cfg) == ANTHROPIC:
        requests = [_anthropic_request(json.loads(line)) for line in content.splitlines() if line.strip()]
        created = await _anthropic(cfg, "POST", "", timeout_s, retries, {"requests": requests})
        return _anthropic_status(created)
    litellm = import_litellm()
    created = await _step(
        "create the batch",
        lambda: litellm.acreate_batch(
            completion_window="24h",
            endpoint=ENDPOINT,
            input_file_id=file_id,
            metadata={SUBMISSION_TAG: token},
            **_client(cfg, timeout_s),
        ),
        timeout_s,
        retries,
    )
    return _status(created)


async def find(
    cfg: ModelConfig,
    token: str,
    timeout_s: float,
    retries: int,
    since: float = 0.0,
    size: int = 0,
    known: frozenset[str] = frozenset(),
) -> BatchStatus | None:
    """The batch created with `token`, if the provider has one: a submission whose reply was lost. Where
    batches carry no tag, the one batch made since `since` with `size` requests and not `known`; raises
    BatchError when several could be it (which one to keep is then the user's call)."""
    if batch_provider(cfg) == ANTHROPIC:
        listed = await _anthropic(cfg, "GET", "?limit=100", timeout_s, retries)
        found = [
            _anthropic_status(b)
            for b in listed.get("data", [])
            if _epoch(b.get("created_at")) >= since - 60 and b.get("id") not in known
        ]
        found = [b for b in found if b.total == size]
        if len(found) > 1:
            ids = ", ".join(b.id for b in found)
            raise BatchError(f"several batches ({ids}) could be the one whose id was lost; cancel the extra ones")
        return found[0] if found else None
    litellm = import_litellm()
    listed = await _step(
        "list batches", lambda: litellm.alist_batches(limit=100, **_client(cfg, timeout_s)), timeout_s, retries
    )
    data = listed.get("data", []) if isinstance(listed, Mapping) else getattr(listed, "data", [])
    for batch in data or []:
        status = _status(batch)
        if status.metadata.get(SUBMISSION_TAG) == token:
            return status
    return None


async def status(cfg: ModelConfig, batch_id: str, timeout_s: float, retries: int) -> BatchStatus:
    """The batch's state and counts now."""
    if batch_provider(cfg) == ANTHROPIC:
        return _anthropic_status(await _anthropic(cfg, "GET", f"/{batch_id}", timeout_s, retries))
    litellm = import_litellm()
    found = await _step(
        "look at the batch",
        lambda: litellm.aretrieve_batch(batch_id=batch_id, **_client(cfg, timeout_s)),
        timeout_s,
        retries,
    )
    return _status(found)


async def answers(cfg: ModelConfig, batch: BatchStatus, timeout_s: float, retries: int) -> dict[str, BatchAnswer]:
    """Every request's outcome by custom id, from the output file and the error file of a finished batch.
    Requests in neither file (a failed or cancelled batch) are left out: the caller retries them."""
    out: dict[str, BatchAnswer] = {}
    for file_id in (batch.output_file_id, batch.error_file_id):
        if not file_id:
            continue
        for line in (await _content(cfg, file_id, timeout_s, retries)).splitlines():
            parsed = _line(line)
            if parsed is not None:
                custom_id, answer = _answer(parsed)
                out.setdefault(custom_id, answer)  # a repeated id: the first answer is the one kept
    return out


def _line(text: str) -> Mapping[str, Any] | None:
    """One line of a results file, or None for one that is not a JSON object (a blank, a truncated or a
    garbled line): its request, if it was ours, is then missing and goes to the retry path."""
    if not text.strip():
        return None
    try:
        parsed = json.loads(text)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


async def _content(cfg: ModelConfig, file_id: str, timeout_s: float, retries: int) -> str:
    if batch_provider(cfg) == ANTHROPIC:  # the file id is the batch's results URL
        return str(await _anthropic(cfg, "GET", file_id, timeout_s, retries, text=True))
    litellm = import_litellm()
    response = await _step(
        "read the batch's results",
        lambda: litellm.afile_content(file_id=file_id, **_client(cfg, timeout_s)),
        timeout_s,
        retries,
    )
    content = getattr(response, "content", response)
    return content.decode() if isinstance(content, bytes) else str(content)


def _answer(line: Mapping[str, Any]) -> tuple[str, BatchAnswer]:
    """One line of an output or error file as the pool records it."""
    custom_id = str(line.get("custom_id", ""))
    result = CallResult(attempts=1)
    if "result" in line:
        return custom_id, _anthropic_answer(line["result"] or {}, result)
    response = line.get("response") or {}
    error = line.get("error") or {}
    code = int(response.get("status_code") or 0)
    if code == 200:
        try:
            fill_from_response(result, import_litellm().ModelResponse(**response["body"]), "batch")
        except Exception as exc:  # a body that is not a chat completion; the provider billed it: not bought again
            result = CallResult(attempts=1)
            message = f"the batch answered with a body that is not a chat completion: {type(exc).__name__}"
            result.error = RecordError(type="BatchResultError", message=message)
            return custom_id, BatchAnswer(result)
        result.usage = result.usage.model_copy(update={"service_tier": "batch"})
        return custom_id, BatchAnswer(result)
    if error:
        kind = str(error.get("code") or "BatchError")
        result.error = RecordError(type=kind, message=str(error.get("message", ""))[:500])
        return custom_id, BatchAnswer(result, retry=kind == "batch_expired")
    body_error = (response.get("body") or {}).get("error") or {}
    message = str(body_error.get("message") or f"status {code}")[:500]
    result.error = RecordError(type=f"HTTP{code}", message=message)
    return custom_id, BatchAnswer(result, retry=code in RETRYABLE_STATUS)


def _status(batch: Any) -> BatchStatus:
    get = batch.get if isinstance(batch, Mapping) else lambda name, default=None: getattr(batch, name, default)
    counts = get("request_counts") or {}
    count = counts.get if isinstance(counts, Mapping) else lambda name, default=0: getattr(counts, name, default)
    return BatchStatus(
        id=str(get("id")),
        status=str(get("status") or "unknown"),
        total=int(count("total", 0) or 0),
        completed=int(count("completed", 0) or 0),
        failed=int(count("failed", 0) or 0),
        output_file_id=get("output_file_id"),
        error_file_id=get("error_file_id"),
        metadata=dict(get("metadata") or {}),
    )


def _client(cfg: ModelConfig, timeout_s: float) -> dict[str, Any]:
    """Where the batch API lives and the key for it, as litellm's file and batch functions take them."""
    kwargs = endpoint_kwargs(cfg)
    del kwargs["model"]
    return {**kwargs, "custom_llm_provider": batch_provider(cfg) or "openai", "timeout": timeout_s, "max_retries": 0}


def _anthropic_request(line: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenAI-style request line as a Message Batches request: system turns in `system`, `stop` as
    `stop_sequences`, only the parameters the Messages API takes."""
    body = line["body"]
    system = "\n\n".join(str(m["content"]) for m in body["messages"] if m["role"] == "system")
    params: dict[str, Any] = {
        "model": body["model"],
        "max_tokens": int(body.get("max_tokens") or body.get("max_completion_tokens") or 4096),
        "messages": [m for m in body["messages"] if m["role"] != "system"],
    }
    if system:
        params["system"] = system
    for name in ("temperature", "top_p", "top_k"):
        if body.get(name) is not None:
            params[name] = body[name]
    if body.get("stop"):
        params["stop_sequences"] = [body["stop"]] if isinstance(body["stop"], str) else list(body["stop"])
    return {"custom_id": line["custom_id"], "params": params}


def _anthropic_status(batch: Mapping[str, Any]) -> BatchStatus:
    counts = {k: int(v or 0) for k, v in (batch.get("request_counts") or {}).items()}
    ended = batch.get("processing_status") == "ended"
    state = ("expired" if counts.get("expired") else "completed") if ended else str(batch.get("processing_status"))
    return BatchStatus(
        id=str(batch.get("id")),
        status=state,
        total=sum(counts.values()),
        completed=counts.get("succeeded", 0),
        failed=counts.get("errored", 0) + counts.get("expired", 0) + counts.get("canceled", 0),
        output_file_id=batch.get("results_url"),
    )


def _anthropic_answer(outcome: Mapping[str, Any], result: CallResult) -> BatchAnswer:
    """One Message Batches result: a message billed at the batch tier, or an error and whether to retry."""
    kind = str(outcome.get("type"))
    if kind == "succeeded":
        message = outcome.get("message") or {}
        text = "".join(str(b.get("text", "")) for b in message.get("content") or [] if b.get("type") == "text")
        usage = message.get("usage") or {}
        reads, writes = (
            int(usage.get("cache_read_input_tokens") or 0),
            int(usage.get("cache_creation_input_tokens") or 0),
        )
        result.output = text
        result.usage = Usage(
            input_tokens=int(usage.get("input_tokens") or 0) + reads + writes,  # as litellm counts a prompt
            output_tokens=int(usage.get("output_tokens") or 0),
            cached_input_tokens=reads,
            cache_creation_input_tokens=writes,
            service_tier="batch",
        )
        return BatchAnswer(result)
    if kind == "expired":
        result.error = RecordError(type="batch_expired", message="the batch ended before this request ran")
        return BatchAnswer(result, retry=True)
    error = ((outcome.get("error") or {}).get("error")) or {}
    name = str(error.get("type") or kind)
    result.error = RecordError(type=name, message=str(error.get("message", kind))[:500])
    return BatchAnswer(
        result, retry=kind == "canceled" or name in ("overloaded_error", "api_error", "rate_limit_error")
    )


async def _anthropic(
    cfg: ModelConfig, method: str, path: str, timeout_s: float, retries: int, body: Any = None, text: bool = False
) -> Any:
    """One request to the Message Batches API (`path` under it, or a full results URL)."""
    import httpx

    base = (cfg.api_base or "https://api.anthropic.com").rstrip("/").removesuffix("/messages").removesuffix("/v1")
    url = path if path.startswith("http") else f"{base}/v1/messages/batches{path}"
    key = os.environ.get(cfg.api_key_env or "ANTHROPIC_API_KEY") or "unused-local-key"
    headers = {"x-api-key": key, "anthropic-version": ANTHROPIC_VERSION}

    async def send() -> Any:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            response = await client.request(method, url, json=body, headers=headers)
            if response.status_code >= 400:
                raise StatusError(response)
            return response.text if text else response.json()

    what = {"POST": "create the batch", "GET": "read the batch"}[method]
    return await _step(what, send, timeout_s, retries)


def _epoch(value: object) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


async def _step(what: str, make: Any, timeout_s: float, retries: int) -> Any:
    result = CallResult()
    started = time.perf_counter()
    response = await with_retries(make, result, timeout_s, retries)
    if response is None:
        assert result.error is not None
        waited = time.perf_counter() - started
        raise BatchError(f"could not {what} ({result.error.type}: {result.error.message}; {waited:.0f} s)")
    return response
