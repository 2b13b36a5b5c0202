"""String scorers: exact_match, contains, regex, json_valid."""

from __future__ import annotations

import json
import re
import string

from harness.datasets import Item
from harness.scorers._registry import ScoreFn, scorer

_FENCE = re.compile(r"^\s*```[a-zA-Z0-9_-]*\s*\n?(.*?)\n?```\s*$", re.DOTALL)


def normalizer(case_sensitive: bool = False, strip_punctuation: bool = False, collapse_whitespace: bool = True):
    """A text normaliser built from the usual options, shared by the string and label scorers."""
    table = str.maketrans("", "", string.punctuation)

    def normalize(text: str) -> str:
        text = text.strip()
        if not case_sensitive:
            text = text.lower()
        if strip_punctuation:
            text = text.translate(table)
        if collapse_whitespace:
            text = " ".join(text.split())
        return text

    return normalize


def references(item: Item) -> list[str]:
    """Every acceptable answer of an item; an item with none cannot be scored against a reference."""
    refs = item.references or ([item.reference] if item.reference is not None else [])
    if not refs:
        raise ValueError(f"item {item.id} has no reference (map dataset.fields.reference)")
    return refs


@scorer("exact_match", kind="binary", needs_reference=True)
def exact_match(
    case_sensitive: bool = False, strip_punctuation: bool = False, collapse_whitespace: bool = True
) -> ScoreFn:
    """1 when the output equals a reference after normalisation. Example: `exact_match: {strip_punctuation: true}`."""
    normalize = normalizer(case_sensitive, strip_punctuation, collapse_whitespace)

    def score(output: str, item: Item) -> float:
        return float(any(normalize(output) == normalize(ref) for ref in references(item)))

    return score


@scorer("contains", kind="binary")
def contains(value: str | None = None, case_sensitive: bool = False) -> ScoreFn:
    """1 when the output contains `value` (else any reference). Example: `contains: {value: Paris}`."""
    normalize = normalizer(case_sensitive)

    def score(output: str, item: Item) -> float:
        needles = [value] if value is not None else references(item)
        return float(any(normalize(n) in normalize(output) for n in needles))

    return score


@scorer("regex", kind="binary")
def regex(pattern: str, flags: str = "") -> ScoreFn:
    """1 when the pattern is found in the output. Example: `regex: {pattern: '^\\d+$', flags: 'm'}`."""
    flag_bits = 0
    for letter in flags:
        flag_bits |= {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL}[letter]
    compiled = re.compile(pattern, flag_bits)

    def score(output: str, item: Item) -> float:
        return float(compiled.search(output) is not None)

    return score


@scorer("json_valid", kind="binary")
def json_valid(allow_code_fence: bool = True) -> ScoreFn:
    """1 when the output parses as JSON (optionally inside a ```json fence). Example: `json_valid`."""

    def score(output: str, item: Item) -> float:
        text = output
        if allow_code_fence:
            fenced = _FENCE.match(text)
            text = fenced.group(1) if fenced else text
        try:
            json.loads(text)
        except ValueError:
            return 0.0
        return 1.0

    return score
