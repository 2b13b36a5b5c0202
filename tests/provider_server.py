"""A real HTTP server on 127.0.0.1 that answers in three providers' own wire formats.

Anthropic Messages (`POST /v1/messages`), Gemini (`POST .../models/NAME:generateContent`) and OpenAI chat
completions (`POST .../chat/completions`). litellm's real provider adapters talk to it, so the usage a
test scripts here reaches harness exactly as a provider's would: cache reads and writes of both
lifetimes, reasoning tokens, the service tier served, and a cost the provider reports itself.
It fakes the *model* (a fixed answer and scripted usage), never litellm.
"""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fake_server import LocalServer


class ProviderServer(LocalServer):
    """Answers every request with `answer` and the next scripted usage block for its wire format."""

    def __init__(self) -> None:
        self.answer = "A short answer."
        self.anthropic_usage: dict[str, Any] = {"input_tokens": 10, "output_tokens": 5}
        self.gemini_usage: dict[str, Any] = {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15}
        self.openai_usage: dict[str, Any] = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        self.openai_extra: dict[str, Any] = {}
        """Top-level fields added to OpenAI answers, e.g. {"service_tier": "flex"}."""
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._serve(self._handler())

    @property
    def url(self) -> str:
        """The api_base to give litellm (each provider adds its own path)."""
        return self.origin

    def _anthropic(self, request: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": "msg_test",
            "type": "message",
            "role": "assistant",
            "model": request.get("model", "claude"),
            "content": [{"type": "text", "text": self.answer}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": self.anthropic_usage,
        }

    def _gemini(self) -> dict[str, Any]:
        return {
            "candidates": [
                {"content": {"role": "model", "parts": [{"text": self.answer}]}, "finishReason": "STOP", "index": 0}
            ],
            "usageMetadata": self.gemini_usage,
            "modelVersion": "gemini-test",
        }

    def _openai(self, request: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 1,
            "model": request.get("model", "gpt"),
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": self.answer}, "finish_reason": "stop"}
            ],
            "usage": self.openai_usage,
            **self.openai_extra,
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                request = json.loads(self.rfile.read(length) or b"{}")
                path = self.path.split("?", 1)[0]
                with server.lock:
                    server.requests.append((path, request))
                if path.endswith("/messages"):
                    body = server._anthropic(request)
                elif path.endswith(":generateContent"):
                    body = server._gemini()
                elif path.endswith("/chat/completions"):
                    body = server._openai(request)
                else:
                    self._send(404, {"error": {"message": f"no route {path}"}})
                    return
                self._send(200, body)

            def _send(self, status: int, body: dict[str, Any]) -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler
