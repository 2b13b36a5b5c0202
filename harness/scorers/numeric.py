"""numeric_match: the final number of the output against the reference's number (GSM8K style)."""

from __future__ import annotations

import math
import re

from harness.datasets import Item
from harness.scorers._registry import ScoreFn, scorer
from harness.scorers.text import references

_NUMBER = re.compile(r"-?\$?\s?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def final_number(text: str) -> float | None:
    """The last number in the text ("#### 1,234.5" and "$18." included), or None."""
    matches = _NUMBER.findall(text)
    if not matches:
        return None
    raw = matches[-1].replace(",", "").replace("$", "").replace(" ", "")
    try:
        return float(raw)
    except ValueError:
        return None


@scorer("numeric_match", kind="binary", needs_reference=True)
def numeric_match(rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> ScoreFn:
    """1 when the output's final number equals the reference's. Example: `numeric_match: {rel_tol: 0.01}`."""

    def score(output: str, item: Item) -> float:
        got = final_number(output)
        if got is None:
            return 0.0
        for ref in references(item):
            want = final_number(ref)
            if want is not None and math.isclose(got, want, rel_tol=rel_tol, abs_tol=abs_tol):
                return 1.0
        return 0.0

    return score
