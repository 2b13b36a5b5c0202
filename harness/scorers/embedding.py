"""embedding_similarity: cosine similarity of the output's and the reference's embeddings.

Any litellm embedding model works (`openai/text-embedding-3-small`, a self-hosted endpoint); the default,
`local/all-minilm-l6-v2`, runs offline at $0 (see harness/providers/minilm.py). Each distinct text is
embedded once per run (references are shared by every variant) and cached, so re-scoring is free.
The cost of an embedding request is shared equally by the texts in it, and each text's cost is counted
on the first record that needs it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.datasets import Item
from harness.pool import CallSpec, ModelPool
from harness.scorers._model import ScorerModel
from harness.scorers._registry import Scored, ScorerParts, scorer
from harness.scorers.text import references
from harness.tokens import count_tokens

DEFAULT_MODEL = "local/all-minilm-l6-v2"


@scorer("embedding_similarity", needs_reference=True)
def embedding_similarity(
    model: str | dict[str, Any] = DEFAULT_MODEL, batch_size: int = 32, concurrency: int | None = None
) -> ScorerParts:
    """Cosine similarity with the closest reference (-1..1; near 1 means the same meaning).

    Example: `embedding_similarity: {model: openai/text-embedding-3-small}`.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    embedder = ScorerModel.from_option(model, {}, concurrency)

    def batch(pairs: list[tuple[str, Item]], pool: ModelPool | None, advance: Any) -> list[Scored]:
        texts = [t for output, item in pairs for t in (output, *references(item))]
        vectors, costs, errors = embedder.embed(texts, pool, batch_size)
        results = []
        charged: set[str] = set()
        for output, item in pairs:
            refs = references(item)
            failed = [errors[t] for t in (output, *refs) if t in errors]
            cost = sum(costs.get(t, 0.0) for t in {output, *refs} - charged)
            charged.update((output, *refs))
            if failed:
                results.append(Scored(None, cost, failed[0]))
            else:
                value = max(float(np.dot(vectors[output], vectors[r])) for r in refs)
                results.append(Scored(value, cost))
            advance()
        return results

    def score(output: str, item: Item) -> Scored:
        return batch([(output, item)], None, lambda: None)[0]

    def worst_case(items: list[Item], output_limits: list[int], pool: ModelPool) -> tuple[int, float]:

        refs = {r for item in items for r in references(item)}
        texts = len(refs) + len(items) * len(output_limits)
        tokens = sum(count_tokens(embedder.cfg.model, [{"role": "user", "content": r}]) for r in refs)
        tokens += len(items) * sum(output_limits)
        spec = CallSpec(embedder.cfg, embedder.price, [], {"max_tokens": 0}, input_tokens=tokens)
        calls = -(-texts // batch_size)
        return calls, pool.worst_case_usd(spec) + calls * 16 * embedder.price.input

    return ScorerParts(score, batch=batch, worst_case=worst_case)
