"""embedding_similarity through litellm embeddings: the test server's endpoint and the offline MiniLM."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from harness.api import run as harness_run
from harness.config import ConfigError, load_config
from harness.planner import prepare
from harness.providers.minilm import minilm
from harness.workflow import RunOptions
from tests.conftest import base_config, fake_model, write_project
from tests.fake_server import FakeModelServer, letter_counts

EMBED_PRICE = {"input_cost_per_token": 1e-7, "output_cost_per_token": 0.0}


def run(path: Path) -> Any:
    return harness_run(load_config(path), RunOptions(tracking=False), Console(file=io.StringIO(), width=200))


def cosine(a: list[float], b: list[float]) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_minilm_in_numpy_reproduces_the_published_similarities() -> None:
    # The sentence-transformers README's example for all-MiniLM-L6-v2: similarities 0.6660, 0.1046, 0.1411.
    vectors, tokens = minilm().encode(
        ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
    )
    sims = vectors @ vectors.T
    assert sims[0, 1] == pytest.approx(0.6660, abs=5e-4)
    assert sims[0, 2] == pytest.approx(0.1046, abs=5e-4)
    assert sims[1, 2] == pytest.approx(0.1411, abs=5e-4)
    assert np.linalg.norm(vectors, axis=1) == pytest.approx([1.0, 1.0, 1.0])
    assert tokens == 25


def test_similarity_through_a_provider_endpoint_is_costed_and_cached(
    tmp_path: Path, model_server: FakeModelServer
) -> None:
    model_server.answer = lambda request: "cats purr" if "Cats" in request["messages"][-1]["content"] else "zebra"
    embedder = fake_model(model_server, "embedder", price=EMBED_PRICE)
    config = base_config(
        [fake_model(model_server)],
        scorers=[{"embedding_similarity": {"model": embedder}}],
        cache={"path": str(tmp_path / "cache.sqlite")},
    )
    path = write_project(tmp_path, config)
    first = run(path)
    by_item = {r.item_id: r for r in first.records}
    assert by_item["a"].scores["embedding_similarity"] == pytest.approx(1.0)
    expected = cosine(letter_counts("zebra"), letter_counts("dogs bark"))
    assert by_item["b"].scores["embedding_similarity"] == pytest.approx(expected)
    embed_requests = [r for r in model_server.requests if r.get("model") == "embedder"]
    texts = [t for r in embed_requests for t in r["input"]]
    assert sorted(texts) == sorted({"cats purr", "zebra", "dogs bark", "birds sing"}), "each distinct text once"
    words = sum(len(t.split()) for t in texts)
    assert sum(r.eval_cost_usd for r in first.records) == pytest.approx(words * 1e-7)
    calls = len(model_server.requests)
    again = run(path)
    assert len(model_server.requests) == calls, "neither candidates nor embeddings are requested again"
    assert [r.scores for r in again.records] == [r.scores for r in first.records]


def test_offline_default_ranks_a_paraphrase_above_an_unrelated_answer(
    tmp_path: Path, model_server: FakeModelServer
) -> None:
    replies = {"Cats": "Felines make a purring sound", "Dogs": "The stock market fell sharply"}
    model_server.answer = lambda request: next(v for k, v in replies.items() if k in request["messages"][-1]["content"])
    items = [
        {"id": "a", "document": "Cats purr.", "reference": "cats purr"},
        {"id": "b", "document": "Dogs bark.", "reference": "dogs bark"},
    ]
    config = base_config([fake_model(model_server)], scorers=["embedding_similarity"], cache={"enabled": False})
    outcome = run(write_project(tmp_path, config, items=items))
    by_item = {r.item_id: r.scores["embedding_similarity"] for r in outcome.records}
    assert by_item["a"] > 0.5 > by_item["b"]
    assert all(r.eval_cost_usd == 0.0 for r in outcome.records)


def test_embedding_model_without_a_price_fails_before_any_call(tmp_path: Path, model_server: FakeModelServer) -> None:
    config = base_config(
        [fake_model(model_server)], scorers=[{"embedding_similarity": {"model": "openai/no-such-embedder"}}]
    )
    path = write_project(tmp_path, config)
    with pytest.raises(ConfigError, match=r"scorers\[0\]\.options: .*(OPENAI_API_KEY|no price)"):
        prepare(load_config(path))
    assert model_server.requests == []
