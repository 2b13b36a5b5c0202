"""A user-defined scorer, loaded by `module:function` in the tests."""

from harness.datasets import Item
from harness.scorers import ScoreFn


def length_under(max_chars: int = 100) -> ScoreFn:
    """1 when the output is at most `max_chars` characters long."""

    def score(output: str, item: Item) -> float:
        return float(len(output) <= max_chars)

    return score
