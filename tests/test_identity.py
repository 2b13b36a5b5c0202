"""Identities are promises kept across versions: a cache, a stored run or a history written before must be
found again, and no secret may be part of what is stored."""

from __future__ import annotations

import random
import string

import pytest

from harness import identity
from harness.config import ModelConfig

MODEL = ModelConfig(model="openai/gpt-4o-mini", api_base="http://127.0.0.1:9/v1")
MESSAGES = [{"role": "user", "content": "Summarise: é ü"}]
PARAMS = {
    "temperature": 0.7,
    "max_tokens": 16,
    "api_key": "sk-secret-123456",
    "extra_headers": {"X-Api-Key": "abcdefgh"},
}


def test_identities_are_what_the_previous_version_wrote() -> None:
    """Computed by the code before the identities moved here (cache.call_key, tracking.write.call_hash,
    prompts.messages_hash, PromptTemplate.template_hash, the dataset loader's fingerprint): a change
    here would make every existing response cache and stored run unfindable."""
    template = identity.template_hash("Summarise {{ document }}")
    assert identity.call_key(MODEL, MESSAGES, PARAMS, 2) == (
        "7020458ffbcb04c3fbb64096622f4ba3371ed27b0be81a99899df80e3d496a55"
    )
    assert identity.call_hash(MODEL, template, PARAMS, {"n": 3}) == "c6fa91d243302ded"
    assert identity.messages_hash(MESSAGES) == "bcb42e61301d59e4"
    assert template == "28c00e48eed0037a"
    assert identity.dataset_fingerprint([{"a": 1}, {"b": "x"}]) == "10c8af6e6c666d47"


def _secret(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(rng.randint(8, 40)))


@pytest.mark.parametrize("seed", range(20))
def test_a_secret_never_changes_an_identity_and_everything_else_does(seed: int) -> None:
    rng = random.Random(seed)
    header = rng.choice(["X-Api-Key", "x_api_key", "Authorization", "api-key", "X-Auth-Token"])
    one = {"temperature": 0.5, "api_key": _secret(rng), "extra_headers": {header: _secret(rng)}}
    other = {**one, "api_key": _secret(rng), "extra_headers": {header: _secret(rng)}}
    assert identity.call_key(MODEL, MESSAGES, one, 0) == identity.call_key(MODEL, MESSAGES, other, 0)
    assert identity.call_hash(MODEL, "t", one) == identity.call_hash(MODEL, "t", other)
    base = identity.call_key(MODEL, MESSAGES, one, 0)
    changed = [
        identity.call_key(ModelConfig(model="openai/other", api_base=MODEL.api_base), MESSAGES, one, 0),
        identity.call_key(ModelConfig(model=MODEL.model, api_base="http://127.0.0.1:8/v1"), MESSAGES, one, 0),
        identity.call_key(MODEL, [{"role": "user", "content": MESSAGES[0]["content"] + " "}], one, 0),
        identity.call_key(MODEL, MESSAGES, {**one, "temperature": rng.random()}, 0),
        identity.call_key(MODEL, MESSAGES, one, rng.randint(1, 9)),
    ]
    assert base not in changed and len(set(changed)) == len(changed)
    assert identity.call_hash(MODEL, "t", one, {"n": 1}) != identity.call_hash(MODEL, "t", one, {"n": 2})


def test_variant_names_match_what_configs_refer_to() -> None:
    assert identity.variant_name("gpt-4o-mini", "terse") == "gpt-4o-mini:terse"
    assert identity.prompt_variant_name("terse", {}) == "terse"
    assert identity.prompt_variant_name("terse", {"doc_tokens": 128, "style": "a"}) == "terse(doc_tokens=128,style=a)"
