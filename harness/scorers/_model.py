"""The model a scorer calls (a judge or an embedder): one litellm path, priced, cached, concurrent.

Scorer calls go through the same `call_model` as the candidates (retries, timeouts, scrubbed errors) and
the same response cache, so re-scoring a run pays nothing twice. Their cost is reported per record as
`eval_cost_usd`, apart from the candidate's own cost, because it is the price of measuring, not of
serving.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.cache import ResponseCache, cache_key
from harness.config import ConfigError, ModelConfig
from harness.pricing import ModelPrice, resolve_price
from harness.providers.credentials import missing_credentials
from harness.providers.local import local_slots
from harness.records import Usage


@dataclass(frozen=True)
class Reply:
    """One scorer call's outcome."""

    text: str | None
    cost_usd: float
    error: str = ""


@dataclass
class ScorerModel:
    """A configured model for a scorer, with its price, parameters and concurrency."""

    cfg: ModelConfig
    price: ModelPrice
    params: dict[str, Any]
    concurrency: int
    timeout_s: float = 60.0
    max_retries: int = 4

    @classmethod
    def from_option(
        cls, model: str | dict[str, Any], params: dict[str, Any], concurrency: int | None = None
    ) -> ScorerModel:
        """From a scorer's `model` option: a litellm model string, or a mapping like a config's models entry.

        Raises ValueError (which the registry turns into a config error) for an unknown price or a
        missing key, so neither is found after the candidates were paid for.
        """
        cfg = ModelConfig.model_validate({"model": model} if isinstance(model, str) else model)
        missing = missing_credentials(cfg)
        if missing:
            raise ValueError(f"the scorer's model '{cfg.model}' needs {' or '.join(missing)}, which is not set")
        try:
            price = resolve_price(cfg, "scorer options")
        except ConfigError as exc:
            raise ValueError(f"{exc.problem}; {exc.fix}") from None
        slots = cfg.concurrency or local_slots(cfg.model) or concurrency or 4
        return cls(cfg, price, {**params, **cfg.params}, slots)

    def run(self, requests: list[list[dict[str, str]]], cache: ResponseCache | None, advance: Any) -> list[Reply]:
        """Every request's reply, concurrently within the model's limit, cache first."""
        from harness.providers.local import register_local_provider

        register_local_provider()
        return asyncio.run(self._run_all(requests, cache, advance))

    async def _run_all(
        self, requests: list[list[dict[str, str]]], cache: ResponseCache | None, advance: Any
    ) -> list[Reply]:
        keys = [cache_key(self.cfg, messages, self.params, 0) for messages in requests]
        hits = cache.get_many(keys) if cache is not None else {}
        limit = asyncio.Semaphore(self.concurrency)

        async def one(messages: list[dict[str, str]], key: str) -> Reply:
            if key in hits:
                hit = hits[key]
                advance()
                return Reply(hit.output, self.price.cost(hit.usage, hit.latency_s))
            from harness.providers import call_model

            async with limit:
                result = await call_model(self.cfg, messages, self.params, self.timeout_s, self.max_retries)
            usage = result.usage if result.usage_reported else Usage()
            cost = self.price.cost(usage, result.latency_s)
            advance()
            if result.error is not None or result.output is None:
                message = f"{result.error.type}: {result.error.message}" if result.error else "no output"
                return Reply(None, cost, f"the scorer's call failed ({message})")
            if cache is not None:
                cache.put(key, self.cfg.model, result.output, usage, result.latency_s)
            return Reply(result.output, cost)

        return await asyncio.gather(*(one(m, k) for m, k in zip(requests, keys, strict=True)))

    def embed(
        self, texts: list[str], cache: ResponseCache | None, batch_size: int = 32
    ) -> tuple[dict[str, np.ndarray], dict[str, float], dict[str, str]]:
        """Unit vectors by text (each distinct text embedded once, cache first), cost by text, errors by text."""
        from harness.providers.local import register_local_provider

        register_local_provider()
        return asyncio.run(self._embed_all(list(dict.fromkeys(texts)), cache, batch_size))

    async def _embed_all(
        self, texts: list[str], cache: ResponseCache | None, batch_size: int
    ) -> tuple[dict[str, np.ndarray], dict[str, float], dict[str, str]]:
        from harness.providers.call import call_embedding

        keys = {t: cache_key(self.cfg, [{"role": "embed", "content": t}], self.params, 0) for t in texts}
        hits = cache.get_many(list(keys.values())) if cache is not None else {}
        vectors: dict[str, np.ndarray] = {}
        costs: dict[str, float] = {}
        errors: dict[str, str] = {}
        for text, key in keys.items():
            if key in hits:
                vectors[text] = _unit(json.loads(hits[key].output))
                costs[text] = self.price.cost(hits[key].usage)
        missing = [t for t in texts if t not in vectors]
        limit = asyncio.Semaphore(self.concurrency)

        async def one(chunk: list[str]) -> None:
            async with limit:
                result = await call_embedding(self.cfg, chunk, self.timeout_s, self.max_retries)
            share = self.price.cost(result.usage) / len(chunk)
            for i, text in enumerate(chunk):
                costs[text] = share
                if result.error is not None:
                    errors[text] = f"the embedding call failed ({result.error.type}: {result.error.message})"
                    continue
                vectors[text] = _unit(result.vectors[i])
                if cache is not None:
                    usage = result.usage.model_copy(update={"input_tokens": result.usage.input_tokens // len(chunk)})
                    cache.put(keys[text], self.cfg.model, json.dumps(result.vectors[i]), usage, result.latency_s)

        await asyncio.gather(*(one(missing[i : i + batch_size]) for i in range(0, len(missing), batch_size)))
        return vectors, costs, errors


def _unit(vector: list[float]) -> np.ndarray:
    array = np.asarray(vector, dtype=np.float64)
    return array / max(float(np.linalg.norm(array)), 1e-12)
