"""String scorers: exact_match, contains, regex, json_valid; and reference-free checks of an answer's shape
(json_schema, length, one_of), which need no reference, so they score production logs as well."""

from __future__ import annotations

import json
import re
import string

import jsonschema

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
        try:
            json.loads(_json_text(output, allow_code_fence))
        except ValueError:
            return 0.0
        return 1.0

    return score


def _json_text(output: str, allow_code_fence: bool) -> str:
    fenced = _FENCE.match(output) if allow_code_fence else None
    return fenced.group(1) if fenced else output


@scorer("json_schema", kind="binary")
def json_schema(schema: dict, allow_code_fence: bool = True) -> ScoreFn:  # type: ignore[type-arg]
    """1 when the output is JSON valid under the JSON Schema `schema` (no reference needed).
    Example: `json_schema: {schema: {type: object, required: [intent]}}`."""
    try:
        validator = jsonschema.Draft202012Validator(schema)
        validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ValueError(f"schema is not a JSON Schema: {exc.message}") from None

    def score(output: str, item: Item) -> float:
        try:
            value = json.loads(_json_text(output, allow_code_fence))
        except ValueError:
            return 0.0
        return float(validator.is_valid(value))

    return score


@scorer("length", kind="binary")
def length(min_words: int = 0, max_words: int | None = None) -> ScoreFn:
    """1 when the output has between `min_words` and `max_words` words. Example: `length: {max_words: 40}`."""
    if min_words < 0 or (max_words is not None and max_words < min_words):
        raise ValueError("give 0 <= min_words <= max_words")

    def score(output: str, item: Item) -> float:
        words = len(output.split())
        return float(words >= min_words and (max_words is None or words <= max_words))

    return score


@scorer("one_of", kind="binary")
def one_of(labels: list[str], case_sensitive: bool = False, strip_punctuation: bool = True) -> ScoreFn:
    """1 when the output is one of `labels` after normalisation (no reference needed): a classifier's answer
    is at least a label. Example: `one_of: {labels: [refund, card_arrival]}`."""
    normalize = normalizer(case_sensitive, strip_punctuation)
    allowed = {normalize(str(label)) for label in labels}
    if not allowed:
        raise ValueError("labels is empty")

    def score(output: str, item: Item) -> float:
        return float(normalize(output) in allowed)

    return score
