"""A real OpenAI-compatible HTTP server on 127.0.0.1 that the tests own.

It fakes the *model* (scripted answers and usage, injectable faults and delays); litellm talks to it
over real HTTP exactly as it would to a provider.
"""

from __future__ import annotations

import json
import random
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


@dataclass
class Fault:
    """One scripted failure, consumed by the next request.

    `kind` other than "status": "reset" drops the connection, "malformed" sends broken JSON,
    "no_usage" and "empty_choices" send a 200 without usage or without choices, "slow" answers late.
    """

    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    body: dict[str, Any] | None = None
    kind: str = "status"


FAULT_KINDS: dict[str, Fault] = {
    "429_retry_after": Fault(status=429, headers={"Retry-After": "0.05"}),
    "429": Fault(status=429),
    "500": Fault(status=500),
    "503": Fault(status=503),
    "reset": Fault(kind="reset"),
    "slow": Fault(kind="slow", delay_s=1.5),
    "malformed": Fault(kind="malformed"),
    "no_usage": Fault(kind="no_usage"),
    "empty_choices": Fault(kind="empty_choices"),
    "429_retry_after_soon": Fault(status=429, headers={"Retry-After": "soon"}),
}


@dataclass
class Usage:
    """The usage block the server reports."""

    prompt_tokens: int = 10
    completion_tokens: int = 5
    cached_tokens: int = 0
    reasoning_tokens: int = 0


def letter_counts(text: str) -> list[float]:
    """A 26-dimensional bag of letters: texts with the same letters point the same way."""
    return [float(text.lower().count(c)) for c in "abcdefghijklmnopqrstuvwxyz"]


class LocalServer:
    """A threaded HTTP server on 127.0.0.1 (an ephemeral port) that a test starts and stops."""

    def _serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class FakeModelServer(LocalServer):
    """Serves /v1/chat/completions and /v1/embeddings; records every request it receives."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.faults: list[Fault] = []
        self.answer: Callable[[dict[str, Any]], str] = lambda request: "a fake answer."
        self.embed: Callable[[str], list[float]] = letter_counts
        """The fake embedding model: letter counts unless a test sets another."""
        self.usage: Usage | Callable[[dict[str, Any]], Usage] = Usage()
        """The usage block to report, or a function of the request giving it."""
        self.delay_s = 0.0
        self.hold_until_in_flight = 0
        """If set, no answer leaves until this many requests were in flight at once (or 60 s passed): a test
        of two clients uses it to know both were calling, whatever their start-up times."""
        self._held = threading.Event()
        self.in_flight = 0
        self.max_in_flight = 0
        self.fault_rate = 0.0
        self.fault_kinds: list[str] = []
        self.faults_injected: dict[str, int] = {}
        self.billable: dict[str, int] = {}
        """Valid completions sent per prompt text: what a provider would bill."""
        self._rng = random.Random(0)
        self._serve(self._handler())

    @property
    def url(self) -> str:
        """The api_base to give litellm."""
        return f"{self.origin}/v1"

    def fail_next(self, *faults: Fault) -> None:
        """Queue faults for the next requests, in order."""
        with self.lock:
            self.faults.extend(faults)

    def inject_faults(self, rate: float, kinds: list[str], seed: int = 0) -> None:
        """From now on, each request fails with probability `rate`, by a kind drawn from `kinds`."""
        with self.lock:
            self.fault_rate, self.fault_kinds, self._rng = rate, kinds, random.Random(seed)

    def _next_fault(self) -> Fault | None:
        with self.lock:
            if self.faults:
                return self.faults.pop(0)
            if self.fault_rate and self._rng.random() < self.fault_rate:
                kind = self._rng.choice(self.fault_kinds)
                self.faults_injected[kind] = self.faults_injected.get(kind, 0) + 1
                return FAULT_KINDS[kind]
            return None

    def _embeddings(self, request: dict[str, Any]) -> dict[str, Any]:
        texts = request["input"] if isinstance(request["input"], list) else [request["input"]]
        tokens = sum(len(str(t).split()) for t in texts)
        return {
            "object": "list",
            "model": request.get("model", "fake"),
            "data": [{"object": "embedding", "index": i, "embedding": self.embed(str(t))} for i, t in enumerate(texts)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    def _completion(self, request: dict[str, Any]) -> dict[str, Any]:
        u = self.usage(request) if callable(self.usage) else self.usage
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
                    if server.in_flight >= server.hold_until_in_flight:
                        server._held.set()
                self._in_flight = True
                if server.hold_until_in_flight:
                    server._held.wait(timeout=60)
                try:
                    self._respond(request)
                finally:
                    self._answered()

            def _answered(self) -> None:
                """The request leaves `in_flight` as its answer starts out, not once it is written: a client
                that got the answer may send its next request before this thread runs again, and would
                otherwise count as two requests at once."""
                if self._in_flight:
                    self._in_flight = False
                    with server.lock:
                        server.in_flight -= 1

            def _respond(self, request: dict[str, Any]) -> None:
                fault = server._next_fault()
                if self.path.endswith("/embeddings") and fault is None:
                    self._send(200, server._embeddings(request), {})
                    return
                if fault is not None and fault.kind != "status":
                    self._misbehave(fault, request)
                    return
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
                key = json.dumps(request.get("messages"), sort_keys=True)
                with server.lock:
                    server.billable[key] = server.billable.get(key, 0) + 1
                self._send(200, server._completion(request), {})

            def _misbehave(self, fault: Fault, request: dict[str, Any]) -> None:
                if fault.kind == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                    return
                if fault.kind == "echo_headers":  # a provider whose 401 repeats what it was sent, key included
                    sent = "; ".join(f"{k}: {v}" for k, v in self.headers.items())
                    self._send(401, {"error": {"message": f"invalid credentials in {sent}", "type": "auth"}}, {})
                    return
                if fault.kind == "slow":
                    time.sleep(fault.delay_s)
                    self._send(200, server._completion(request), {})
                    return
                body = server._completion(request)
                if fault.kind == "no_usage":
                    del body["usage"]
                elif fault.kind == "empty_choices":
                    body["choices"] = []
                elif fault.kind == "malformed":
                    raw = b'{"id": "broken", "choices": [{"message": '
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                    return
                self._send(200, body, {})

            def _send(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
                payload = json.dumps(body).encode()
                self._answered()
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
