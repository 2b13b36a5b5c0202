"""A user-defined scorer, loaded by `module:function` in the tests."""

from harness.datasets import Item
from harness.scorers import ScoreFn, ScorerParts, scorer


def length_under(max_chars: int = 100) -> ScoreFn:
    """1 when the output is at most `max_chars` characters long."""

    def score(output: str, item: Item) -> float:
        return float(len(output) <= max_chars)

    return score


length_under.kind = "binary"  # pass/fail: the analysis uses Wilson intervals and McNemar's test


def judged_brevity(api_base: str, input_cost_per_token: float, output_cost_per_token: float):
    """A tiny judge: asks a model (the test server) whether the output is brief; returns its cost too."""
    import litellm

    from harness.pricing import ModelPrice
    from harness.records import Usage
    from harness.scorers import Scored

    rates = {"input_cost_per_token": input_cost_per_token, "output_cost_per_token": output_cost_per_token}
    price = ModelPrice.of(rates)

    def score(output: str, item: Item) -> Scored:
        response = litellm.completion(
            model="openai/judge",
            api_base=api_base,
            api_key="unused",
            max_retries=0,
            messages=[{"role": "user", "content": f"Is this brief? Answer 1 or 0.\n{output}"}],
        )
        usage = Usage(input_tokens=response.usage.prompt_tokens, output_tokens=response.usage.completion_tokens)
        verdict = (response.choices[0].message.content or "").strip()
        value = float(verdict) if verdict in {"0", "1"} else None
        return Scored(value, price.cost(usage), "" if value is not None else f"unparseable verdict {verdict!r}")

    return score


@scorer("test_non_empty", kind="binary")
def non_empty() -> ScoreFn:
    """Pass when the output has any text: declared pass/fail through the decorator."""

    def score(output: str, item: Item) -> float:
        return float(bool(output.strip()))

    return score


def always_fails() -> ScoreFn:
    """A scorer that can never score (a broken user scorer): every value is missing."""

    def score(output: str, item: Item) -> float:
        raise ValueError("this scorer always fails")

    return score


def crashing_batch() -> ScorerParts:
    """A user's batch scorer with a bug: it raises instead of returning scores (an internal failure)."""

    def score(output: str, item: Item) -> float:
        return 1.0

    def batch(pairs: list, pool: object, advance: object) -> list:
        raise RuntimeError("bug in a user's batch scorer")

    return ScorerParts(score, batch=batch)
