"""The model a scorer calls (a judge or an embedder): a configured model with its price, nothing more.

A scorer owns no cache, semaphore or budget: it asks the run's model pool (`harness.pool.ModelPool`),
which serves candidates the same way, so judge and embedding calls are cached, shared, limited per
model, priced (estimated locally when a provider reports no usage) and counted against `max_usd`. Their
cost is reported per record as `eval_cost_usd`, apart from the candidate's own cost, because it is the
price of measuring, not of serving.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.config import ConfigError, ModelConfig
from harness.pool import CallSpec, ModelPool, can_batch
from harness.pricing import ModelPrice, resolve_price
from harness.providers.credentials import missing_credentials
from harness.tokens import count_tokens


@dataclass(frozen=True)
class Reply:
    """One scorer call's outcome."""

    text: str | None
    cost_usd: float
    error: str = ""


@dataclass(frozen=True)
class ScorerModel:
    """A configured model for a scorer, with its price and parameters."""

    cfg: ModelConfig
    price: ModelPrice
    params: dict[str, Any]

    @classmethod
    def from_option(
        cls, model: str | dict[str, Any], params: dict[str, Any], concurrency: int | None = None
    ) -> ScorerModel:
        """From a scorer's `model` option: a litellm model string, or a mapping like a config's models entry.

        Raises ValueError (which the registry turns into a config error) for an unknown price or a
        missing key, so neither is found after the candidates were paid for.
        """
        cfg = ModelConfig.model_validate({"model": model} if isinstance(model, str) else model)
        if concurrency is not None and cfg.concurrency is None:
            cfg = cfg.model_copy(update={"concurrency": concurrency})
        if cfg.execution is not None and cfg.execution.mode == "batch" and not can_batch(cfg):
            raise ValueError(f"the scorer's model '{cfg.model}' has no batch API harness can reach; set mode: direct")
        missing = missing_credentials(cfg)
        if missing:
            raise ValueError(f"the scorer's model '{cfg.model}' needs {' or '.join(missing)}, which is not set")
        try:
            price = resolve_price(cfg, "scorer options")
        except ConfigError as exc:
            raise ValueError(f"{exc.problem}; {exc.fix}") from None
        return cls(cfg, price, {**params, **cfg.params})

    def run(
        self, requests: list[list[dict[str, str]]], pool: ModelPool | None, advance: Callable[[], None]
    ) -> list[Reply]:
        """Every request's reply through the pool (a private one when scoring outside a run)."""
        pool = pool or ModelPool()
        specs = [CallSpec(self.cfg, self.price, messages, self.params) for messages in requests]
        outcomes = asyncio.run(pool.complete_many(specs, advance))
        replies = []
        for outcome in outcomes:
            if outcome.not_run:
                replies.append(Reply(None, 0.0, "not scored: the budget ran out"))
            elif outcome.error is not None or outcome.output is None:
                message = f"{outcome.error.type}: {outcome.error.message}" if outcome.error else "no output"
                replies.append(Reply(None, outcome.cost_usd, f"the scorer's call failed ({message})"))
            else:
                replies.append(Reply(outcome.output, outcome.cost_usd))
        return replies

    def worst_case(
        self, rendered: list[list[dict[str, str]]], output_limits: list[int], pool: ModelPool, asks: int = 1
    ) -> tuple[int, float]:
        """(calls, dollars) at most for `asks` calls per rendered prompt and output: each prompt's own tokens
        plus the longest output it will be shown, priced as the pool prices a candidate's worst case."""
        usd = 0.0
        for messages in rendered:
            base = count_tokens(self.cfg.model, messages)
            for limit in output_limits:
                spec = CallSpec(self.cfg, self.price, messages, self.params, input_tokens=base + limit)
                usd += asks * pool.worst_case_usd(spec)
        return asks * len(rendered) * len(output_limits), usd

    def embed(
        self, texts: list[str], pool: ModelPool | None, batch_size: int = 32
    ) -> tuple[dict[str, np.ndarray], dict[str, float], dict[str, str]]:
        """Unit vectors by text (each distinct text embedded once, cache first), cost by text, errors by text."""
        pool = pool or ModelPool()
        vectors, costs, errors = asyncio.run(pool.embed(self.cfg, self.price, texts, batch_size))
        return {t: _unit(v) for t, v in vectors.items()}, costs, errors


def _unit(vector: list[float]) -> np.ndarray:
    array = np.asarray(vector, dtype=np.float64)
    return array / max(float(np.linalg.norm(array)), 1e-12)
