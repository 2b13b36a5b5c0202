"""The offline models: the lead baseline's extraction, and the real SmolLM2 through litellm."""

from __future__ import annotations

import asyncio

from harness.config import ModelConfig
from harness.providers.call import call_model
from harness.providers.local import lead, register_local_provider


def test_lead_takes_first_sentences_of_the_document() -> None:
    text = "Summarise this. Be brief.\n<document>First one. Second, with 3.5 units! Third?</document>"
    assert lead(text, 1) == "First one."
    assert lead(text, 2) == "First one. Second, with 3.5 units!"
    assert lead("No tags here. Second.", 1) == "No tags here."


def test_smollm2_answers_through_litellm() -> None:
    register_local_provider()
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    result = asyncio.run(call_model(ModelConfig(model="local/smollm2-135m"), messages, {"max_tokens": 8}, 60, 0))
    assert result.error is None, result.error
    assert result.output and result.output.strip()
    assert result.usage.input_tokens > 0 and 0 < result.usage.output_tokens <= 8
