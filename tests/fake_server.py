"""A real OpenAI-compatible HTTP server on 127.0.0.1 that the tests own.

It fakes the *model* (scripted answers and usage, injectable faults and delays); litellm talks to it
over real HTTP exactly as it would to a provider.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Fault:
    """One scripted failure, consumed by the next request."""

    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    body: dict[str, Any] | None = None


@dataclass
class Usage:
    """The usage block the server reports."""

    prompt_tokens: int = 10
    completion_tokens: int = 5
    cached_tokens: int = 0
    reasoning_tokens: int = 0


class FakeModelServer:
    """Serves /v1/chat/completions; records every request it receives."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.faults: list[Fault] = []
        self.answer: Callable[[dict[str, Any]], str] = lambda request: "a fake answer."
        self.usage = Usage()
        self.delay_s = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The api_base to give litellm."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> FakeModelServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def fail_next(self, *faults: Fault) -> None:
        """Queue faults for the next requests, in order."""
        with self.lock:
            self.faults.extend(faults)

    def _next_fault(self) -> Fault | None:
        with self.lock:
            return self.faults.pop(0) if self.faults else None

    def _completion(self, request: dict[str, Any]) -> dict[str, Any]:
        u = self.usage
        return {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", "fake"),
            "choices": [
                {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": self.answer(request)}}
            ],
            "usage": {
                "prompt_tokens": u.prompt_tokens,
                "completion_tokens": u.completion_tokens,
                "total_tokens": u.prompt_tokens + u.completion_tokens,
                "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
                "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
            },
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                request = json.loads(self.rfile.read(length) or b"{}")
                with server.lock:
                    server.requests.append(request)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self._respond(request)
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def _respond(self, request: dict[str, Any]) -> None:
                fault = server._next_fault()
                if fault is not None:
                    time.sleep(fault.delay_s)
                    if fault.status == 200:
                        self._send(200, server._completion(request), fault.headers)
                    else:
                        body = fault.body or {"error": {"message": f"injected {fault.status}", "type": "fault"}}
                        self._send(fault.status, body, fault.headers)
                    return
                if server.delay_s:
                    time.sleep(server.delay_s)
                self._send(200, server._completion(request), {})

            def _send(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
                payload = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler
