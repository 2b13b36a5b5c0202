"""A local server speaking OpenAI's file and batch endpoints, on top of the fake model server.

`/v1/files` takes a JSONL upload (multipart, as the OpenAI SDK sends it) and serves file contents;
`/v1/batches` creates, lists, retrieves and cancels batches. A batch moves from `validating` to
`in_progress` to `completed` as it is looked at (one step per retrieve, unless `hold` keeps it in
progress); its requests are answered by the same fake model as `/v1/chat/completions`, into an output
file and an error file. A test can make lines fail (`line_status`) or let a batch expire part-way.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fake_server import FakeModelServer


@dataclass
class FakeBatch:
    """One batch as the server keeps it."""

    id: str
    input_file_id: str
    endpoint: str
    metadata: dict[str, str]
    created_at: int
    status: str = "validating"
    looks: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"total": 0, "completed": 0, "failed": 0})

    def body(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": None,
            "input_file_id": self.input_file_id,
            "completion_window": "24h",
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "in_progress_at": self.created_at if self.status != "validating" else None,
            "expires_at": self.created_at + 86_400,
            "completed_at": int(time.time()) if self.status == "completed" else None,
            "expired_at": int(time.time()) if self.status == "expired" else None,
            "request_counts": dict(self.counts),
            "metadata": self.metadata,
        }


class BatchServer(FakeModelServer):
    """The fake model server, plus OpenAI's `/v1/files` and `/v1/batches`."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, FakeBatch] = {}
        self.hold = threading.Event()
        """While set, a batch stays `in_progress` however often it is looked at."""
        self.expire_after: int | None = None
        """If set, a batch expires after answering this many of its requests (the rest are not run)."""
        self.expire_once = False
        """With `expire_after`: only the next batch to finish expires."""
        self.line_status: Callable[[dict[str, Any]], int] = lambda body: 200
        """The HTTP status of one request inside a batch (a function of its body): 200 answers it."""
        self.batch_answered: dict[str, int] = {}
        """Requests answered inside batches, per prompt text: what the provider bills at batch prices."""
        self.mangle: Callable[[list[dict[str, Any]]], list[Any]] | None = None
        """If set, rewrites a finished batch's output lines (dicts, or raw text for a line that is not
        JSON): a provider, or something between, returning what no client should trust."""
        self.created_batch = threading.Event()
        self.anthropic_params: list[dict[str, Any]] = []
        """The Messages API parameters of each request answered in a Message Batch."""
        super().__init__()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        base = super()._handler()
        server = self

        class Handler(base):  # type: ignore[valid-type,misc]
            def do_POST(self) -> None:
                if "/files" in self.path or "/batches" in self.path:
                    self._batch_api("POST")
                    return
                super().do_POST()

            def do_GET(self) -> None:
                self._batch_api("GET")

            def _batch_api(self, method: str) -> None:
                self._in_flight = False  # not a model request: never counted in flight
                path = self.path.split("?")[0].removeprefix("/v1")
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length) if length else b""
                with server.lock:
                    status, body, payload = server._route(method, path, raw, self.headers.get("Content-Type", ""))
                if payload is not None:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                self._send(status, body, {})

        return Handler

    def _route(self, method: str, path: str, raw: bytes, content_type: str) -> tuple[int, dict[str, Any], bytes | None]:
        if path.startswith("/messages/batches"):
            return self._messages_route(method, path.removeprefix("/messages/batches"), raw)
        if method == "POST" and path == "/files":
            return 200, self._upload(raw, content_type), None
        if match := re.fullmatch(r"/files/([\w-]+)/content", path):
            if match[1] not in self.files:
                return 404, {"error": {"message": "no such file"}}, None
            return 200, {}, self.files[match[1]]
        if match := re.fullmatch(r"/files/([\w-]+)", path):
            size = len(self.files.get(match[1], b""))
            return (
                200,
                {
                    "id": match[1],
                    "object": "file",
                    "bytes": size,
                    "purpose": "batch",
                    "created_at": 0,
                    "filename": "f",
                    "status": "processed",
                },
                None,
            )
        if method == "POST" and path == "/batches":
            request = json.loads(raw)
            batch = FakeBatch(
                id=f"batch_{len(self.batches) + 1}",
                input_file_id=request["input_file_id"],
                endpoint=request["endpoint"],
                metadata=request.get("metadata") or {},
                created_at=int(time.time()),
            )
            batch.counts["total"] = len(self.files[batch.input_file_id].splitlines())
            self.batches[batch.id] = batch
            self.created_batch.set()
            return 200, batch.body(), None
        if method == "GET" and path == "/batches":
            listed = [b.body() for b in reversed(self.batches.values())]
            return 200, {"object": "list", "data": listed, "has_more": False}, None
        if match := re.fullmatch(r"/batches/([\w-]+)(/cancel)?", path):
            batch = self.batches.get(match[1])
            if batch is None:
                return 404, {"error": {"message": "no such batch"}}, None
            if match[2]:
                batch.status = "cancelled"
            else:
                self._advance(batch)
            return 200, batch.body(), None
        return 404, {"error": {"message": f"{method} {path} is not served here"}}, None

    def _upload(self, raw: bytes, content_type: str) -> dict[str, Any]:
        message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
        content = next(
            part.get_payload(decode=True)
            for part in message.iter_parts()
            if part.get_param("name", header="content-disposition") == "file"
        )
        file_id = f"file-{len(self.files) + 1}"
        self.files[file_id] = content
        return {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "purpose": "batch",
            "created_at": int(time.time()),
            "filename": "batch.jsonl",
            "status": "processed",
        }

    def _advance(self, batch: FakeBatch) -> None:
        """One step on each look: validating, then in progress, then done (unless held)."""
        batch.looks += 1
        if batch.status == "validating":
            batch.status = "in_progress"
        elif batch.status == "in_progress" and not self.hold.is_set():
            self._finish(batch)

    def _finish(self, batch: FakeBatch) -> None:
        out, errors = [], []
        lines = [json.loads(line) for line in self.files[batch.input_file_id].splitlines() if line.strip()]
        for n, line in enumerate(lines):
            if self.expire_after is not None and n >= self.expire_after:
                error = {
                    "code": "batch_expired",
                    "message": "This request could not be executed before the batch expired.",
                }
                errors.append({"id": f"req_{n}", "custom_id": line["custom_id"], "response": None, "error": error})
                continue
            status = self.line_status(line["body"])
            if status != 200:
                body = {"error": {"message": f"injected {status}", "type": "fault"}}
                response = {"status_code": status, "request_id": f"r{n}", "body": body}
                errors.append({"id": f"req_{n}", "custom_id": line["custom_id"], "response": response, "error": None})
                batch.counts["failed"] += 1
                continue
            key = json.dumps(line["body"].get("messages"), sort_keys=True)
            self.batch_answered[key] = self.batch_answered.get(key, 0) + 1
            response = {"status_code": 200, "request_id": f"r{n}", "body": self._completion(line["body"])}
            out.append({"id": f"req_{n}", "custom_id": line["custom_id"], "response": response, "error": None})
            batch.counts["completed"] += 1
        if self.mangle is not None:
            out = self.mangle(out)
        for name, rows in (("output_file_id", out), ("error_file_id", errors)):
            if rows:
                file_id = f"file-{len(self.files) + 1}"
                text = (r if isinstance(r, str) else json.dumps(r) for r in rows)
                self.files[file_id] = "".join(t + "\n" for t in text).encode()
                setattr(batch, name, file_id)
        batch.status = "expired" if self.expire_after is not None and self.expire_after < len(lines) else "completed"
        if self.expire_once:
            self.expire_after = None

    # Anthropic's Message Batches: the requests inline, `processing_status`, results at `results_url`.

    def _messages_route(self, method: str, path: str, raw: bytes) -> tuple[int, dict[str, Any], bytes | None]:
        if method == "POST" and path == "":
            requests = json.loads(raw)["requests"]
            file_id = f"file-{len(self.files) + 1}"
            self.files[file_id] = "".join(json.dumps(r) + "\n" for r in requests).encode()
            batch = FakeBatch(f"msgbatch_{len(self.batches) + 1}", file_id, "messages", {}, int(time.time()))
            batch.counts["total"] = len(requests)
            self.batches[batch.id] = batch
            self.created_batch.set()
            return 200, self._message_batch(batch), None
        if method == "GET" and path == "":
            return 200, {"data": [self._message_batch(b) for b in reversed(self.batches.values())]}, None
        if match := re.fullmatch(r"/([\w-]+)/results", path):
            return 200, {}, self.files[self.batches[match[1]].output_file_id or ""]
        if match := re.fullmatch(r"/([\w-]+)", path):
            batch = self.batches[match[1]]
            batch.looks += 1
            if batch.status == "validating":
                batch.status = "in_progress"
            elif batch.status == "in_progress" and not self.hold.is_set():
                self._finish_messages(batch)
            return 200, self._message_batch(batch), None
        return 404, {"error": {"message": f"{method} {path} is not served here"}}, None

    def _message_batch(self, batch: FakeBatch) -> dict[str, Any]:
        ended = batch.status in ("completed", "expired")
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(batch.created_at))
        total, done = batch.counts["total"], batch.counts["completed"]
        expired = batch.counts["failed"] if batch.status == "expired" else 0
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": "ended" if ended else "in_progress",
            "request_counts": {
                "processing": 0 if ended else total,
                "succeeded": done,
                "errored": batch.counts["failed"] - expired,
                "canceled": 0,
                "expired": expired,
            },
            "created_at": created,
            "results_url": f"{self.origin}/v1/messages/batches/{batch.id}/results" if ended else None,
        }

    def _finish_messages(self, batch: FakeBatch) -> None:
        rows = []
        for n, line in enumerate(json.loads(r) for r in self.files[batch.input_file_id].splitlines()):
            params = line["params"]
            if self.expire_after is not None and n >= self.expire_after:
                rows.append({"custom_id": line["custom_id"], "result": {"type": "expired"}})
                batch.counts["failed"] += 1
                continue
            messages = [{"role": "system", "content": params.get("system", "")}, *params["messages"]]
            request = {"model": params["model"], "messages": messages, "max_tokens": params["max_tokens"]}
            key = json.dumps(messages, sort_keys=True)
            self.batch_answered[key] = self.batch_answered.get(key, 0) + 1
            self.anthropic_params.append(params)
            u = self.usage(request) if callable(self.usage) else self.usage
            message = {
                "id": f"msg_{n}",
                "type": "message",
                "role": "assistant",
                "model": params["model"],
                "content": [{"type": "text", "text": self.answer(request)}],
                "stop_reason": "end_turn",
                "usage": {
                    "input_tokens": u.prompt_tokens - u.cached_tokens,
                    "output_tokens": u.completion_tokens,
                    "cache_read_input_tokens": u.cached_tokens,
                    "cache_creation_input_tokens": 0,
                },
            }
            rows.append({"custom_id": line["custom_id"], "result": {"type": "succeeded", "message": message}})
            batch.counts["completed"] += 1
        file_id = f"file-{len(self.files) + 1}"
        self.files[file_id] = "".join(json.dumps(r) + "\n" for r in rows).encode()
        batch.output_file_id = file_id
        batch.status = "expired" if batch.counts["failed"] else "completed"
        if self.expire_once:
            self.expire_after = None
