"""The model pool: the one place a run calls models, for candidates, judges and embedders alike.

Every fact about spending a call lives here and nowhere else:
- the response cache (read before a call, written the moment a call succeeds);
- sharing of identical calls in flight (two variants that render the same prompt pay once);
- per-model concurrency (a one-slot local model is one slot whether a candidate or a judge asks) under
  the run's global limit;
- the budget guard, which reserves a call's worst case before it starts, so `max_usd` covers judge and
  embedding calls exactly as it covers candidate calls;
- pricing, including an estimate from local token counts when a provider reports no usage (a call is
  never $0 because its usage went missing);
- retries and timeouts (through `harness.providers`).
Scorers ask the pool for completions or embeddings (as Inspect's graders call `get_model().generate()`);
they own no cache, semaphore or price.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.batch_ledger import BatchLedger, Submission
from harness.cache import CachedResponse, ResponseCache, SqliteCache
from harness.config import ExecutionConfig, ModelConfig
from harness.endpoints import is_local_model
from harness.identity import call_key
from harness.pricing import ModelPrice, map_price, price_notes, tier_name
from harness.providers import batch as batch_api
from harness.providers.call import CallResult, call_embedding, call_model, implausible_usage
from harness.providers.local import local_slots, register_local_provider
from harness.records import RecordError, Usage
from harness.secrets import redact_url, scrub
from harness.tokens import count_tokens

INPUT_TOKEN_SAFETY = 1.25
"""Local token counts can differ from a provider's tokenizer; the budget reserves this much more."""
ESTIMATED_USAGE = " (usage estimated locally: the provider reported none)"


@dataclass(frozen=True)
class CallLimits:
    """What bounds a call's bill besides its input: the most output it may bill and the service tier it
    asks for. Settled once per model and parameters (the plan does it per variant), so the pool reads them
    from the call instead of asking the price map on every call."""

    output_tokens: int | None
    """`max_tokens`, else the model's limit from litellm's map; None: unbounded (refused under a cap)."""
    tier: str | None
    """The service tier asked for in the params (None: standard)."""

    @classmethod
    def of(cls, model: ModelConfig, params: dict[str, Any]) -> CallLimits:
        return cls(max_output_tokens(model, params), requested_tier(params))


@dataclass(frozen=True)
class CallSpec:
    """One call as the pool sees it: who, what, what it costs, and the limits its bill is held to."""

    model: ModelConfig
    price: ModelPrice
    messages: list[dict[str, str]]
    params: dict[str, Any]
    sample: int = 0
    input_tokens: int | None = None
    """The rendered prompt's token count, when the caller counted it already (else counted here)."""
    limits: CallLimits | None = None
    """The call's output limit and tier; left out, settled from `model` and `params` here."""

    def __post_init__(self) -> None:
        if self.limits is None:
            object.__setattr__(self, "limits", CallLimits.of(self.model, self.params))

    @property
    def bounds(self) -> CallLimits:
        """`limits`, always set once the spec exists."""
        assert self.limits is not None
        return self.limits

    @functools.cached_property
    def key(self) -> str:
        """The call's identity in the cache and among calls in flight (hashed once per call)."""
        return call_key(self.model, self.messages, self.params, self.sample)


@dataclass
class Completion:
    """What the pool produced for one call: an answer, an error, or nothing because the budget ran out."""

    output: str | None = None
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    price_source: str = ""
    latency_s: float = 0.0
    attempts: int = 0
    error: RecordError | None = None
    cache_hit: bool = False
    not_run: bool = False
    """The budget would not cover the call's worst case, so it was never started."""
    reported_cost_usd: float | None = None
    reported_cost_source: str = ""
    price_notes: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, result: CallResult, **settled: Any) -> Completion:
        """A paid call's completion: what the provider returned, as returned (the fields are named alike),
        with what the pool settled (usage, cost, price notes) over it."""
        carried = {name: getattr(result, name) for name in _CARRIED if name not in settled}
        return cls(**carried, **settled)

    def record_fields(self) -> dict[str, Any]:
        """The fields a `Record` of this call takes as they are (a Record names them alike)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "not_run"}


_CARRIED = tuple(
    f.name for f in dataclasses.fields(Completion) if f.name in {g.name for g in dataclasses.fields(CallResult)}
)
"""What a paid call's completion takes from the provider's result unchanged."""


@dataclass
class Budget:
    """Reserves each call's worst-case cost before it starts; refuses once the cap would be passed.

    Plain (not async) on purpose: reserve and settle never await, so on one event loop they are atomic,
    and the same budget spans the candidates' loop and the scorers' later one.
    """

    max_usd: float | None
    spent: float = 0.0
    reserved: float = 0.0
    in_flight: int = 0
    """Calls holding a reservation: counted, since a float sum of reservations drifts off zero."""
    exhausted: bool = False

    def reserve(self, worst_usd: float) -> bool | None:
        """True when the call may start; None when it may fit once calls in flight settle (their worst case
        is usually far above what they cost); False (and stays False) once the cap would be exceeded with
        nothing in flight."""
        if self.exhausted:
            return False
        if self.max_usd is not None and self.spent + self.reserved + worst_usd > self.max_usd:
            if self.in_flight > 0:
                return None
            self.exhausted = True
            return False
        self.reserved += worst_usd
        self.in_flight += 1
        return True

    def commit(self, worst_usd: float) -> None:
        """Hold a reservation the cap cannot refuse: a call already submitted (an earlier run's batch)."""
        self.reserved += worst_usd
        self.in_flight += 1

    def settle(self, worst_usd: float, actual_usd: float) -> None:
        """Replace a call's reservation with what it really cost."""
        self.in_flight -= 1
        self.reserved = self.reserved - worst_usd if self.in_flight else 0.0
        self.spent += actual_usd


@dataclass
class PoolCounts:
    """What the pool did, for the run's summary lines and MLflow."""

    calls_made: int = 0
    cache_hits: int = 0
    not_run: int = 0
    errors: int = 0


@dataclass
class _LoopState:
    """Async primitives belong to one event loop; the pool keeps a set per loop it serves."""

    loop: asyncio.AbstractEventLoop
    limit: asyncio.Semaphore
    per_model: dict[str, asyncio.Semaphore] = field(default_factory=dict)
    inflight: dict[str, asyncio.Future[Completion]] = field(default_factory=dict)
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    """Set (and replaced) whenever a call settles, waking calls waiting for room in the budget."""


class ModelPool:
    """Cache, sharing, concurrency, budget, pricing and retries for every model call of one run."""

    def __init__(
        self,
        cache: ResponseCache | None = None,
        *,
        read_cache: bool = True,
        max_usd: float | None = None,
        concurrency: int = 4,
        timeout_s: float = 60.0,
        max_retries: int = 4,
        max_response_chars: int = 1_000_000,
        max_retry_after_s: float = 120.0,
        execution: ExecutionConfig | None = None,
        ledger_path: Path | None = None,
    ) -> None:
        self.cache = cache
        self.execution = execution or ExecutionConfig()
        self.ledger_path = ledger_path
        """Where submitted batches are kept (beside the cache); None: a private file per pool."""
        self._ledger: BatchLedger | None = None
        self._batchable: dict[str, bool] = {}
        self.batch_notes: list[str] = []
        """What happened to batches that did not simply complete, for the run to print."""
        self.on_batch: Callable[[BatchProgress], None] | None = None
        """Told each time a batch is looked at (the runner draws a progress line per batch)."""
        self.max_response_chars = max_response_chars
        self.read_cache = read_cache
        self.budget = Budget(max_usd)
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.max_retry_after_s = max_retry_after_s
        self.counts = PoolCounts()
        self._hits: dict[str, CachedResponse] = {}
        self._limits: dict[str, int] = {}
        self._state: _LoopState | None = None
        self._newer_than = None if read_cache else time.time()
        """Under --refresh, only answers stored after this pool began are reused (another process's)."""
        self.distrusted: dict[str, str] = {}
        """Models that reported usage they cannot have had, and what: called no more this run, since their
        bills cannot be bounded (the cap reserves a call's worst case from the limits it was given)."""

    @classmethod
    def for_experiment(
        cls, experiment: Any, cache: ResponseCache | None = None, read_cache: bool = True, max_usd: float | None = None
    ) -> ModelPool:
        """A pool with the experiment's concurrency, timeout and retries."""
        return cls(
            cache,
            read_cache=read_cache,
            max_usd=max_usd,
            concurrency=experiment.concurrency,
            timeout_s=experiment.timeout_s,
            max_retries=experiment.max_retries,
            max_response_chars=experiment.max_response_chars,
            max_retry_after_s=experiment.max_retry_after_s,
            execution=experiment.execution,
            ledger_path=ledger_path(experiment, cache),
        )

    def prefetch(self, keys: list[str]) -> set[str]:
        """Look every key up in the cache in one pass; returns the keys that will be served from it."""
        if self.cache is None or not self.read_cache:
            return set()
        self._hits.update(self.cache.get_many(keys))
        return {k for k in keys if k in self._hits}

    def model_slots(self, model: ModelConfig) -> int | None:
        """The model's own concurrency limit, if it has one. A limit belongs to the endpoint: once a
        candidate declares one, a judge on the same model and endpoint is held to it too."""
        name = _endpoint_name(model)
        own = declared_slots(model)
        if own is not None:
            self._limits.setdefault(name, own)
        return self._limits.get(name)

    async def complete(self, spec: CallSpec) -> Completion:
        """One call: from the cache, shared with an identical call in flight, or made within the budget."""
        key = spec.key
        state = self._loop_state()
        if key in self._hits:
            return self._served(spec, self._hits[key])
        if key in state.inflight:
            first = await state.inflight[key]
            if first.error is not None or first.output is None:
                return dataclasses.replace(first, cost_usd=0.0, attempts=0)
            return self._served(spec, CachedResponse(first.output, first.usage, first.latency_s))
        future: asyncio.Future[Completion] = state.loop.create_future()
        state.inflight[key] = future
        try:
            outcome = await self._call(spec, state)
        except BaseException:
            future.set_result(Completion(error=RecordError(type="Cancelled", message="the call was interrupted")))
            raise
        future.set_result(outcome)
        return outcome

    async def complete_many(self, specs: list[CallSpec], advance: Callable[[], None] | None = None) -> list[Completion]:
        """Many calls at once (a judge grading every output), cache first, each ticking `advance`."""
        self.prefetch([s.key for s in specs])
        out: list[Completion | None] = [None] * len(specs)

        def done(index: int, outcome: Completion) -> None:
            out[index] = outcome
            if advance is not None:
                advance()

        async def one(index: int) -> None:
            done(index, await self.complete(specs[index]))

        batched = [i for i, s in enumerate(specs) if self.batched(s.model)]
        direct = sorted(set(range(len(specs))) - set(batched))
        await asyncio.gather(
            *(one(i) for i in direct),
            self.complete_batched([specs[i] for i in batched], lambda j, outcome: done(batched[j], outcome)),
        )
        return [o if o is not None else Completion(not_run=True) for o in out]

    async def complete_batched(self, specs: list[CallSpec], on_done: Callable[[int, Completion], None]) -> None:
        """Calls bought through their providers' Batch APIs, one group of batches per endpoint; each outcome
        goes to `on_done(index, outcome)` as its batch's results arrive."""
        groups: dict[str, list[int]] = {}
        for index, spec in enumerate(specs):
            groups.setdefault(_endpoint_name(spec.model), []).append(index)
        await asyncio.gather(*(_BatchGroup(self, specs, indices, on_done).run() for indices in groups.values()))

    def ledger(self) -> BatchLedger:
        """The ledger of submitted batches, opened on the first batch."""
        if self._ledger is None:
            path = self.ledger_path or Path(tempfile.mkdtemp(prefix="harness-batches-")) / "batches.sqlite"
            self._ledger = BatchLedger(path)
        return self._ledger

    def take_batch_notes(self) -> list[str]:
        notes, self.batch_notes = self.batch_notes, []
        return notes

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None

    async def embed(
        self, model: ModelConfig, price: ModelPrice, texts: list[str], batch_size: int = 32
    ) -> tuple[dict[str, list[float]], dict[str, float], dict[str, str]]:
        """Vectors by text (each distinct text once, cache first), cost by text, errors by text."""
        texts = list(dict.fromkeys(texts))
        keys = {t: call_key(model, [{"role": "embed", "content": t}], model.params, 0) for t in texts}
        self.prefetch(list(keys.values()))
        vectors: dict[str, list[float]] = {}
        costs: dict[str, float] = {}
        errors: dict[str, str] = {}

        def serve(text: str, hit: CachedResponse) -> None:
            vectors[text] = json.loads(hit.output)
            costs[text] = price.cost(hit.usage)
            self.counts.cache_hits += 1

        for text, key in keys.items():
            if key in self._hits:
                serve(text, self._hits[key])
        missing = [t for t in texts if t not in vectors]
        state = self._loop_state()

        async def one(chunk: list[str]) -> None:
            try:
                await call(chunk)
            finally:
                if self.cache is not None:
                    for text in chunk:
                        self.cache.release(keys[text])  # no-op for the texts stored

        async def call(chunk: list[str]) -> None:

            estimate = sum(count_tokens(model.model, [{"role": "user", "content": t}]) for t in chunk)
            worst = price.cost(Usage(input_tokens=math.ceil(estimate * INPUT_TOKEN_SAFETY) + 16))
            async with self._slots(model, state):
                if not await self._reserve(worst, state):
                    self.counts.not_run += len(chunk)
                    errors.update({t: "not embedded: the budget ran out" for t in chunk})
                    return

                register_local_provider()

                cost = worst
                try:
                    result = await call_embedding(
                        model, chunk, self.timeout_s, self.max_retries, self.max_retry_after_s
                    )
                    usage = result.usage if result.usage.input_tokens > 0 else Usage(input_tokens=estimate)
                    cost = price.cost(usage) if result.error is None or result.usage.input_tokens else 0.0
                    if implausible_usage(result.usage) is not None:
                        usage, cost = Usage(input_tokens=estimate), worst  # never trusted by the budget
                finally:
                    self._settle(worst, cost, state)
            self.counts.calls_made += 1
            for i, text in enumerate(chunk):
                costs[text] = cost / len(chunk)
                if result.error is not None:
                    errors[text] = f"the embedding call failed ({result.error.type}: {result.error.message})"
                    continue
                vectors[text] = result.vectors[i]
                if self.cache is not None:
                    share = usage.model_copy(update={"input_tokens": usage.input_tokens // len(chunk)})
                    self.cache.put(keys[text], model.model, json.dumps(result.vectors[i]), share, result.latency_s)

        while missing:  # texts another process is embedding are waited for, then any it left undone
            mine, theirs = self._claim_texts(missing, keys, serve)
            await asyncio.gather(*(one(mine[i : i + batch_size]) for i in range(0, len(mine), batch_size)))
            if not theirs or self.cache is None:
                break
            by_key = {keys[t]: t for t in theirs}
            answers, orphaned = await self.cache.wait_for(list(by_key), self._newer_than)
            for key, answer in answers.items():
                serve(by_key[key], answer)
            missing = [by_key[key] for key in orphaned]
        return vectors, costs, errors

    def _claim_texts(
        self, texts: list[str], keys: dict[str, str], serve: Callable[[str, CachedResponse], None]
    ) -> tuple[list[str], list[str]]:
        """Texts to embed here (claimed), and texts another process is embedding; answers stored
        meanwhile are served at once."""
        if self.cache is None:
            return texts, []
        mine, theirs = [], []
        for text in texts:
            taken = self.cache.claim_or_answer(keys[text], self._newer_than)
            if isinstance(taken, CachedResponse):
                serve(text, taken)
            else:
                (mine if taken else theirs).append(text)
        return mine, theirs

    def worst_case_usd(self, spec: CallSpec) -> float:
        """The most one call can cost: known input (with a safety margin), output up to its limit, all retries."""
        usage = Usage(
            input_tokens=math.ceil(self._input_tokens(spec) * INPUT_TOKEN_SAFETY) + 16,
            output_tokens=spec.bounds.output_tokens or 0,
        )
        latency = self.timeout_s * (self.max_retries + 1)
        tier = self.tier(spec)
        if tier == "batch":  # a batch is billed at batch prices or not at all
            return spec.price.cost(usage, latency, tier)
        # A provider may serve a requested tier at another (flex falls back to standard): the dearer counts.
        return max(spec.price.cost(usage, latency, tier) for tier in {None, tier})

    def batched(self, model: ModelConfig) -> bool:
        """True when the model's calls go through its provider's Batch API: its `execution` (else the
        run's) says batch and its provider has one (a local model has none, and is called directly)."""
        if (model.execution or self.execution).mode != "batch":
            return False
        name = _endpoint_name(model)
        if name not in self._batchable:
            self._batchable[name] = can_batch(model)
        return self._batchable[name]

    def tier(self, spec: CallSpec) -> str | None:
        """The service tier the call is bought at: batch for a batched model, else what its params ask."""
        return "batch" if self.batched(spec.model) else spec.bounds.tier

    @staticmethod
    def _over_limit(spec: CallSpec, usage: Usage) -> str | None:
        """What is wrong when a response bills more output tokens than the call allowed (None if nothing).
        harness's own offline models count words for tokens and bill nothing, so they are not held to it."""
        limit = spec.bounds.output_tokens
        if limit is None or usage.output_tokens <= limit or is_local_model(spec.model.model):
            return None
        return f"{usage.output_tokens:,} output tokens for a limit of {limit:,}"

    def _served(self, spec: CallSpec, hit: CachedResponse) -> Completion:
        self.counts.cache_hits += 1
        return Completion(
            output=hit.output,
            usage=hit.usage,
            cost_usd=spec.price.cost(hit.usage, hit.latency_s, hit.usage.service_tier),
            price_source=spec.price.source,
            latency_s=hit.latency_s,
            attempts=0,
            cache_hit=True,
        )

    async def _call(self, spec: CallSpec, state: _LoopState) -> Completion:
        """Claim the call in the cache, then pay for it; when another process holds the claim, wait for
        its answer (outside any slot) instead of paying twice."""
        while True:
            # The model's own limit is taken first, so a call queued behind a one-slot local model neither
            # holds a global slot nor counts its wait as latency (or as a timeout).
            async with self._slots(spec.model, state):
                taken = True if self.cache is None else self.cache.claim_or_answer(spec.key, self._newer_than)
                if isinstance(taken, CachedResponse):
                    return self._served(spec, taken)
                if taken:
                    try:
                        return await self._paid_call(spec, state)
                    finally:
                        if self.cache is not None:
                            self.cache.release(spec.key)  # no-op once the answer is stored
            assert self.cache is not None
            answers, _ = await self.cache.wait_for([spec.key], self._newer_than)
            if spec.key in answers:
                return self._served(spec, answers[spec.key])

    async def _paid_call(self, spec: CallSpec, state: _LoopState) -> Completion:

        register_local_provider()  # here, not before: a run served from the cache never imports litellm
        if spec.model.model in self.distrusted:
            message = f"not called: {self.distrusted[spec.model.model]} earlier in this run"
            return Completion(error=RecordError(type="ImplausibleUsage", message=message))
        worst = self.worst_case_usd(spec)
        if not await self._reserve(worst, state):
            self.counts.not_run += 1
            return Completion(not_run=True)
        cost = worst  # what an interrupted call counts as: it may have been billed
        try:
            params = sample_params(spec.model, spec.params, spec.sample)
            prices = spec.price.for_litellm(spec.model.model)
            result = await call_model(
                spec.model, spec.messages, params, self.timeout_s, self.max_retries, prices, self.max_retry_after_s
            )
            outcome = self.billed(spec, result, worst)
            cost = outcome.cost_usd
        finally:
            self._settle(worst, cost, state)
        self._keep(spec, outcome)
        return outcome

    def billed(self, spec: CallSpec, result: CallResult, worst: float) -> Completion:
        """A paid call's completion from what the provider returned, directly or inside a batch: its usage
        (estimated when none was reported), its bill at the tier it was bought at, and the checks that
        keep a provider's word from passing the cap (usage it cannot have had, output over the limit)."""
        self._check_size(result)
        usage, source = result.usage, spec.price.source
        if result.output is not None and not result.usage_reported:
            usage = self._estimated_usage(spec, result.output)
            source += ESTIMATED_USAGE
        if not result.usage_reported:
            usage = usage.model_copy(update={"service_tier": self.tier(spec)})
        bill = spec.price.bill(usage, result.latency_s, usage.service_tier)
        cost = bill.total
        if result.error is not None and result.error.type == "ImplausibleUsage":
            # Reported usage that cannot be true is never trusted: the call counts at its worst case.
            cost, source = worst, source + " (usage implausible: counted at the call's worst case)"
            self.distrusted[spec.model.model] = (
                f"{spec.model.display_name} {result.error.message.removeprefix('the provider ')}"
            )
        elif result.usage_reported and self._over_limit(spec, usage) is not None:
            # More output than the call allowed: the money is spent (billed as reported), but the
            # cap's reservation assumed the limit, so the model is called no more this run.
            problem = self._over_limit(spec, usage)
            result.error = RecordError(type="ImplausibleUsage", message=f"the provider reported {problem}")
            self.distrusted[spec.model.model] = f"{spec.model.display_name}: it reported {problem}"
        return Completion.of(
            result,
            usage=usage,
            cost_usd=cost,
            price_source=source,
            price_notes=price_notes(
                spec.model.model, spec.price, bill, result.reported_cost_usd, result.reported_cost_source
            ),
        )

    def _keep(self, spec: CallSpec, outcome: Completion) -> None:
        """Count a paid call and store its answer, the moment it is known."""
        self.counts.calls_made += 1
        self.counts.errors += outcome.error is not None
        if self.cache is not None and outcome.error is None and outcome.output is not None:
            self.cache.put(spec.key, spec.model.model, outcome.output, outcome.usage, outcome.latency_s)

    async def _reserve(self, worst: float, state: _LoopState) -> bool:
        """Reserve a call's worst case, waiting while calls in flight may still free room: the budget is
        declared exhausted only when the call cannot fit with nothing else in flight."""
        while True:
            admitted = self.budget.reserve(worst)
            if admitted is not None:
                return admitted
            await state.settled.wait()

    def _settle(self, worst: float, cost: float, state: _LoopState) -> None:
        self.budget.settle(worst, cost)
        state.settled.set()
        state.settled = asyncio.Event()

    def _check_size(self, result: Any) -> None:
        """An answer larger than `max_response_chars` is an error on its record, not text to score."""
        if result.output is None:
            return
        if len(result.output) > self.max_response_chars:
            size = len(result.output)
            result.output = None
            result.error = RecordError(
                type="ResponseTooLarge",
                message=f"the answer has {size:,} characters, over max_response_chars {self.max_response_chars:,}",
            )
            return
        result.output = scrub(result.output)  # an endpoint that echoes the key back keeps it to itself

    def _estimated_usage(self, spec: CallSpec, output: str) -> Usage:

        answer = count_tokens(spec.model.model, [{"role": "assistant", "content": output}])
        return Usage(input_tokens=self._input_tokens(spec), output_tokens=answer)

    def _input_tokens(self, spec: CallSpec) -> int:
        if spec.input_tokens is not None:
            return spec.input_tokens

        return count_tokens(spec.model.model, spec.messages)

    def _slots(self, model: ModelConfig, state: _LoopState) -> _Slots:
        own = self.model_slots(model)
        semaphores = []
        if own is not None:
            semaphores.append(state.per_model.setdefault(_endpoint_name(model), asyncio.Semaphore(own)))
        return _Slots([*semaphores, state.limit])

    def _loop_state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        if self._state is None or self._state.loop is not loop:
            self._state = _LoopState(loop, asyncio.Semaphore(self.concurrency))
        return self._state


@dataclass(frozen=True)
class BatchProgress:
    """One batch as last looked at, for a progress line."""

    batch_id: str
    model: str
    status: str
    done: int
    total: int
    spent_usd: float


class _BatchGroup:
    """One endpoint's batched calls through to their outcomes: adopt open submissions, claim and reserve
    the rest, submit in batches within the provider's limits, poll, collect, and send what failed for a
    passing reason to the retry path (an expired request to the next batch, a 429 or 5xx to a direct call)."""

    def __init__(
        self, pool: ModelPool, specs: list[CallSpec], indices: list[int], on_done: Callable[[int, Completion], None]
    ) -> None:
        self.pool = pool
        self.model = specs[indices[0]].model
        self.execution = self.model.execution or pool.execution
        self.endpoint = f"{self.model.model}@{redact_url(self.model.api_base or '')}"
        """The ledger's name for where the batches go (a password in api_base never reaches the file)."""
        self.specs: dict[str, CallSpec] = {}
        self.waiting: dict[str, list[int]] = {}
        """Each call key still without an outcome, and the indices asking for it (two variants may share)."""
        for index in indices:
            self.specs.setdefault(specs[index].key, specs[index])
            self.waiting.setdefault(specs[index].key, []).append(index)
        self.on_done = on_done
        self.worst: dict[str, float] = {}
        """Reservations held, by key."""
        self.direct: list[str] = []
        self.round = 1

    async def run(self) -> None:
        pool, state = self.pool, self.pool._loop_state()
        for key in [k for k in self.waiting if k in pool._hits]:
            self.finish(key, pool._served(self.specs[key], pool._hits[key]))
        adopted = pool.ledger().open_for(self.endpoint, list(self.waiting))
        for sub in adopted:
            for key in sub.keys:
                if key in self.waiting and key not in self.worst:
                    self.worst[key] = pool.worst_case_usd(self.specs[key])
                    pool.budget.commit(self.worst[key])  # submitted by an earlier run: it is billed, cap or not
        fresh = [k for k in self.waiting if k not in self.worst]
        mine, theirs = self.claim(fresh)
        submissions = [s for s in [await self.resume(sub) for sub in adopted] if s is not None]
        pending = mine
        while pending or submissions:
            admitted, deferred = self.reserve(pending)
            if deferred and not admitted and not submissions:
                await state.settled.wait()  # room in the budget comes as other calls settle
            submissions += await self.submit(admitted)
            expired = await self.poll(submissions)
            submissions = []
            self.round += 1
            retry = [k for k in expired if self.round <= pool.max_retries + 1]
            for key in set(expired) - set(retry):
                self.finish(key, Completion(error=_error("BatchExpired", "the batch expired before this request ran")))
            pending = retry + deferred
        await asyncio.gather(*(self.by_direct_call(k, state) for k in [*self.direct, *theirs]))

    def finish(self, key: str, outcome: Completion) -> None:
        """The call's outcome to each index that asked for it: the first gets what was paid, the others
        what a call in flight shared gives (served, at no cost)."""
        for n, index in enumerate(self.waiting.pop(key, [])):
            if n == 0:
                self.on_done(index, outcome)
            elif outcome.error is None and outcome.output is not None:
                hit = CachedResponse(outcome.output, outcome.usage, outcome.latency_s)
                self.on_done(index, self.pool._served(self.specs[key], hit))
            else:
                self.on_done(index, dataclasses.replace(outcome, cost_usd=0.0, attempts=0))

    def claim(self, keys: list[str]) -> tuple[list[str], list[str]]:
        """Keys to submit here (claimed in the cache), and keys another process is calling (waited for)."""
        cache = self.pool.cache
        if cache is None:
            return keys, []
        mine, theirs = [], []
        for key in keys:
            taken = cache.claim_or_answer(key, self.pool._newer_than)
            if isinstance(taken, CachedResponse):
                self.finish(key, self.pool._served(self.specs[key], taken))
            else:
                (mine if taken else theirs).append(key)
        return mine, theirs

    def reserve(self, keys: list[str]) -> tuple[list[str], list[str]]:
        """Keys whose worst case the budget holds now, and keys that may fit once the batches in flight
        settle; the rest are not run (the cap would be passed)."""
        admitted, deferred = [], []
        for key in keys:
            worst = self.pool.worst_case_usd(self.specs[key])
            answer = self.pool.budget.reserve(worst)
            if answer:
                self.worst[key] = worst
                admitted.append(key)
            elif answer is None:
                deferred.append(key)
            else:
                self.release(key)
                self.pool.counts.not_run += 1
                self.finish(key, Completion(not_run=True))
        return admitted, deferred

    async def submit(self, keys: list[str]) -> list[Submission]:
        """The keys in batches within the provider's limits: each recorded in the ledger before its file is
        uploaded, its file id before the batch is created, the batch id the moment it is known."""
        ledger, out = self.pool.ledger(), []
        for chunk in self.chunks(keys):
            token = ledger.begin(self.endpoint, [k for k, _ in chunk])
            sub = Submission(token, self.endpoint, tuple(k for k, _ in chunk), None, None, time.time())
            file_id = None
            try:
                content = b"".join(line for _, line in chunk)
                file_id = await batch_api.upload(self.model, content, *self.patience)
                ledger.uploaded(token, file_id)
                created = await batch_api.submit(self.model, file_id, token, *self.patience, content)
            except batch_api.BatchError as exc:
                if file_id is None:
                    ledger.dropped(token)  # nothing reached the provider
                for key in sub.keys:
                    self.fail(key, "BatchError", f"{exc}; run again: a batch that was created is found and kept")
                continue
            ledger.submitted(token, created.id)
            out.append(dataclasses.replace(sub, file_id=file_id, batch_id=created.id))
        return out

    def chunks(self, keys: list[str]) -> list[list[tuple[str, bytes]]]:
        """(key, request line) groups of at most `max_requests` lines and `max_bytes` bytes each."""
        out: list[list[tuple[str, bytes]]] = []
        size = 0
        for key in keys:
            line = self.line(key)
            if not out or len(out[-1]) >= self.execution.max_requests or size + len(line) > self.execution.max_bytes:
                out.append([])
                size = 0
            out[-1].append((key, line))
            size += len(line)
        return out

    def line(self, key: str) -> bytes:
        """The call's request line, as a direct call would send it."""
        spec = self.specs[key]
        return batch_api.request_line(
            spec.model, key, spec.messages, sample_params(spec.model, spec.params, spec.sample)
        )

    async def resume(self, sub: Submission) -> Submission | None:
        """An open submission of an earlier run, ready to poll: found again by its token when its batch id
        was never stored, created from its stored file only when the provider has no such batch."""
        ledger = self.pool.ledger()
        if sub.batch_id is not None:
            return sub
        if sub.file_id is None:
            ledger.dropped(sub.token)
            for key in sub.keys:
                if key in self.worst:
                    self.pool._settle(self.worst.pop(key), 0.0, self.pool._loop_state())
            return None
        try:
            known = frozenset(ledger.batch_ids(self.endpoint))
            found = await batch_api.find(self.model, sub.token, *self.patience, sub.created, len(sub.keys), known)
            if found is None:  # never created: create it now (inline requests are made again from the calls)
                lines = [self.line(k) for k in sub.keys if k in self.specs]
                found = await batch_api.submit(self.model, sub.file_id, sub.token, *self.patience, b"".join(lines))
        except batch_api.BatchError as exc:
            for key in sub.keys:
                self.fail(key, "BatchError", str(exc))
            return None
        ledger.submitted(sub.token, found.id)
        return dataclasses.replace(sub, batch_id=found.id)

    async def poll(self, submissions: list[Submission]) -> list[str]:
        """Look at each batch every `poll_s` until it is done, collecting each as it finishes; the keys
        whose requests expired unrun. A batch still running after `max_wait_h` stays in the ledger for
        the next run, and its calls are recorded as pending."""
        expired: list[str] = []
        spent = {s.token: 0.0 for s in submissions}
        deadline = time.monotonic() + self.execution.max_wait_h * 3600
        while submissions:
            still = []
            for sub in submissions:
                assert sub.batch_id is not None
                try:
                    found = await batch_api.status(self.model, sub.batch_id, *self.patience)
                except batch_api.BatchError:
                    still.append(sub)  # looking failed: the batch is still there, look again
                    continue
                if found.done:
                    spent[sub.token], lost = await self.collect(sub, found)
                    expired += lost
                else:
                    still.append(sub)
                self.tell(sub, found, spent[sub.token])
            submissions = still
            if submissions and time.monotonic() > deadline:
                for sub in submissions:
                    self.pool.batch_notes.append(
                        f"batch {sub.batch_id} ({self.model.display_name}) still running after "
                        f"{self.execution.max_wait_h:g} h (execution.max_wait_h): run the same command again to "
                        "collect it; nothing is submitted twice"
                    )
                    for key in sub.keys:
                        message = f"batch {sub.batch_id} is still running: run the same command again to collect it"
                        self.fail(key, "BatchPending", message)
                break
            if submissions:
                await asyncio.sleep(self.execution.poll_s)
        return expired

    async def collect(self, sub: Submission, found: batch_api.BatchStatus) -> tuple[float, list[str]]:
        """A finished batch's answers into the cache and to their calls: (dollars, keys that expired)."""
        assert sub.batch_id is not None
        pool = self.pool
        try:
            answers = await batch_api.answers(self.model, found, *self.patience)
        except batch_api.BatchError as exc:
            for key in sub.keys:
                self.fail(key, "BatchError", f"{exc}; run again to read batch {sub.batch_id}")
            return 0.0, []
        spent, expired = 0.0, []
        waited = time.time() - sub.created
        for key in sub.keys:
            answer = answers.get(key)
            spec = self.specs.get(key)
            if answer is not None and answer.result.error is None:
                answer.result.latency_s = waited
                answer.result.attempts = self.round
                if spec is None:  # a call of an earlier run's batch this run does not need: kept, and paid
                    self.keep_unasked(key, answer.result)
                    continue
                outcome = pool.billed(spec, answer.result, self.worst.get(key, 0.0))
                self.settle(key, outcome.cost_usd)
                pool._keep(spec, outcome)
                spent += outcome.cost_usd
                self.finish(key, outcome)
            elif spec is None:
                continue
            elif answer is not None and answer.retry and answer.result.error is not None:
                self.settle(key, 0.0)
                (expired if answer.result.error.type == "batch_expired" else self.direct).append(key)
            elif answer is not None:
                self.settle(key, 0.0)
                pool.counts.calls_made += 1
                pool.counts.errors += 1
                self.release(key)
                self.finish(key, dataclasses.replace(Completion.of(answer.result), attempts=self.round))
            else:  # in neither file (a batch that failed or was cancelled): the direct path retries it
                self.settle(key, 0.0)
                self.direct.append(key)
        pool.ledger().collected(sub.token)
        if found.status != "completed":
            unrun = len(expired) + sum(1 for k in sub.keys if k in self.waiting and k in self.direct)
            pool.batch_notes.append(
                f"batch {sub.batch_id} ({self.model.display_name}) ended {found.status} with "
                f"{unrun} of {len(sub.keys)} requests not run: they were retried"
            )
        return spent, expired

    def keep_unasked(self, key: str, result: CallResult) -> None:
        """An answer paid for by an earlier run's batch and not asked for now: stored, and counted."""
        spec = next(iter(self.specs.values()))
        cost = spec.price.cost(result.usage, result.latency_s, "batch")
        self.pool.budget.spent += cost
        if self.pool.cache is not None and result.output is not None:
            self.pool.cache.put(key, self.model.model, scrub(result.output), result.usage, result.latency_s)

    async def by_direct_call(self, key: str, state: _LoopState) -> None:
        """The normal path, retries and all, for a request that failed in its batch for a passing reason
        (or that another process was calling when the batch was made)."""
        if key not in self.waiting:
            return
        self.release(key)
        spec = self.specs[key]
        direct = spec.model.model_copy(update={"execution": ExecutionConfig()})  # the same key, bought directly
        self.finish(key, await self.pool.complete(dataclasses.replace(spec, model=direct)))

    def fail(self, key: str, kind: str, message: str) -> None:
        """A call the batch could not settle: recorded as an error; its reservation counted as spent, since
        the provider may still bill it (the ledger keeps the batch for the next run)."""
        if key not in self.waiting:
            return
        self.settle(key, self.worst.get(key, 0.0))
        self.release(key)
        self.finish(key, Completion(error=_error(kind, message)))

    def settle(self, key: str, cost: float) -> None:
        if key in self.worst:
            self.pool._settle(self.worst.pop(key), cost, self.pool._loop_state())

    def release(self, key: str) -> None:
        if self.pool.cache is not None:
            self.pool.cache.release(key)

    def tell(self, sub: Submission, found: batch_api.BatchStatus, spent: float) -> None:
        if self.pool.on_batch is not None:
            done, total = found.completed + found.failed, found.total or len(sub.keys)
            self.pool.on_batch(BatchProgress(found.id, self.model.display_name, found.status, done, total, spent))

    @property
    def patience(self) -> tuple[float, int]:
        """Timeout and retries for each step of the batch API, as for a call."""
        return self.pool.timeout_s, self.pool.max_retries


def _error(kind: str, message: str) -> RecordError:
    return RecordError(type=kind, message=message)


def can_batch(model: ModelConfig) -> bool:
    """Whether harness can buy the model's calls through a Batch API (OpenAI's file and batch endpoints,
    at OpenAI, Azure or any server speaking them)."""
    return batch_api.batch_provider(model) is not None


BATCH_PROVIDERS = batch_api.BATCH_PROVIDERS


def ledger_path(experiment: Any, cache: ResponseCache | None) -> Path:
    """The batch ledger's file: beside a SQLite cache, else in the project's mlruns/."""
    if isinstance(cache, SqliteCache):
        return cache.path.with_name("batches.sqlite")
    return Path(experiment.root) / "mlruns" / "batches.sqlite"


class _Slots:
    """Acquire the model's own semaphore, then the global one; release in reverse."""

    def __init__(self, semaphores: list[asyncio.Semaphore]) -> None:
        self._semaphores = semaphores

    async def __aenter__(self) -> None:
        taken: list[asyncio.Semaphore] = []
        try:
            for semaphore in self._semaphores:
                await semaphore.acquire()
                taken.append(semaphore)
        except BaseException:
            for semaphore in reversed(taken):
                semaphore.release()
            raise

    async def __aexit__(self, *exc: object) -> None:
        for semaphore in reversed(self._semaphores):
            semaphore.release()


def declared_slots(model: ModelConfig) -> int | None:
    """The concurrency a model's config declares (`concurrency`, or a local model's slot count)."""
    return model.concurrency or local_slots(model.model)


def _endpoint_name(model: ModelConfig) -> str:
    return f"{model.model}@{model.api_base or ''}"


def max_output_tokens(model: ModelConfig, params: dict[str, Any]) -> int | None:
    """The most output a call can bill: `max_tokens`, else the model's limit from litellm's map."""
    for key in ("max_tokens", "max_completion_tokens"):
        if params.get(key) is not None:
            return int(params[key])
    value = (map_price(model.model) or {}).get("max_output_tokens")
    return None if value is None else int(value)


def requested_tier(params: dict[str, Any]) -> str | None:
    """The service tier a call asks for in its params (None: standard)."""
    return tier_name(params.get("service_tier"))


def sample_params(model: ModelConfig, params: dict[str, Any], sample: int) -> dict[str, Any]:
    """The call's parameters for one sample: each repeated sample of a seeded model gets its own seed."""
    if sample == 0:
        return params
    if "seed" in params or is_local_model(model.model):
        return {**params, "seed": int(params.get("seed", 0)) + sample}
    return params


def distrust_lines(pool: ModelPool, max_usd: float | None) -> list[str]:
    """One line per model that billed usage it was not allowed, and what that did to the cap."""
    lines = [
        f"stopped calling {what}; its answers are recorded as ImplausibleUsage" for what in pool.distrusted.values()
    ]
    if max_usd is not None and pool.budget.spent > max_usd:
        over = pool.budget.spent - max_usd
        lines.append(
            f"spent ${pool.budget.spent:.4f}, ${over:.4f} over the cap of ${max_usd:g}: a provider billed more than "
            "the limits the cap reserved for (docs/reliability.md, what the cap guarantees)"
        )
    return lines
