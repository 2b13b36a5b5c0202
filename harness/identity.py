"""Every identity harness derives: what makes two calls, two prompts, two datasets or two variants the same.

One module because each of these is a promise kept across processes, machines and months: the response
cache answers a call only if its key covers everything that changes the answer; `gate --against` and the
estimate's history find an earlier run of the same variant by its call hash; a stored record is reused
only if its prompt hash matches what would be sent now. A change here changes what is found again, so it
is made here once, for all of them, with the test of every field beside it (tests/test_identity.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from harness.secrets import redact

if TYPE_CHECKING:
    from harness.config import ModelConfig

HASH_CHARS = 16
"""Characters kept of a hash shown to people (records, MLflow params, manifests); the cache key keeps all."""


def digest(value: Any) -> str:
    """SHA-256 of a value's canonical JSON (sorted keys; anything else as its `str`)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def call_key(model: ModelConfig, messages: list[dict[str, str]], params: dict[str, Any], sample: int) -> str:
    """The response cache's key for one call: model, endpoint, messages, parameters and sample index.

    Secret values are left out (`secrets.redact`), so a rotated key still finds its answers and no key
    reaches the cache; the sample index is in, so repeated samples of one prompt are distinct calls."""
    return digest(
        {
            "model": model.model,
            "api_base": model.api_base,
            "messages": messages,
            "params": redact(params),
            "sample": sample,
        }
    )


def call_hash(
    model: ModelConfig, template_hash: str, params: dict[str, Any], variables: Mapping[str, Any] | None = None
) -> str:
    """What a variant sends, item aside: model, endpoint, template and parameters (secrets excluded), and
    an ablation's variables. Runs of the same variant share it, whatever the dataset."""
    identity: dict[str, Any] = {
        "model": model.model,
        "api_base": model.api_base,
        "template": template_hash,
        "params": redact(params),
    }
    if variables:
        identity["vars"] = dict(variables)
    return digest(identity)[:HASH_CHARS]


def messages_hash(messages: list[dict[str, Any]]) -> str:
    """The rendered messages: equal hashes mean the model saw the same text."""
    return digest(messages)[:HASH_CHARS]


def template_hash(source: str) -> str:
    """A prompt template's text: the prompt's identity across runs."""
    return hashlib.sha256(source.encode()).hexdigest()[:HASH_CHARS]


def dataset_fingerprint(rows: Iterable[Mapping[str, Any]]) -> str:
    """A dataset's items in order: two runs with equal fingerprints scored the same inputs."""
    combined = hashlib.sha256()
    for fields in rows:
        combined.update(json.dumps(fields, sort_keys=True, default=str).encode())
    return combined.hexdigest()[:HASH_CHARS]


def shard_rank(item_id: str) -> str:
    """Where an item falls among the shards: by its id, so a part is the same on every machine and run."""
    return hashlib.sha256(item_id.encode()).hexdigest()


def variant_name(display_name: str, prompt_name: str) -> str:
    """`<model display name>:<prompt name>`, the variant's id in tables, records and MLflow."""
    return f"{display_name}:{prompt_name}"


def prompt_variant_name(prompt: str, variables: Mapping[str, Any]) -> str:
    """`terse`, or `terse(doc_tokens=128)` for one combination of an ablation's vars."""
    if not variables:
        return prompt
    return f"{prompt}({','.join(f'{k}={v}' for k, v in variables.items())})"
