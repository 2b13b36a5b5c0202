"""The removable units of a prompt template: the sentences of its literal text.

A prompt is shortened by deleting text a person wrote, never Jinja: a `{{ variable }}` carries the item,
a `{% block %}` or `{% for %}` the template's structure, so both are kept whole and only the literal text
between them is split into paragraphs (at blank lines) and those into sentences (ended by `.`, `!` or `?`
before a space or a line end; a line wrapped inside a sentence does not end it). Few-shot turns written out
in the template are sentences like any other; turns generated from data are not the template's to drop.
A unit is a span of the source, so any set of units removed leaves a template that still parses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TAG = re.compile(r"{{.*?}}|{%.*?%}|{#.*?#}", re.S)
PARAGRAPH = re.compile(r"(?:(?!\n[ \t]*\n).)+", re.S)
SENTENCE = re.compile(r"\s*(.+?(?:[.!?]+(?=\s)|[.!?]+$|$))[ \t]*", re.S)
MIN_WORDS = 2
"""Shorter fragments (a label such as `Summarise:` before a variable) are part of the item's framing."""


@dataclass(frozen=True)
class Unit:
    """One removable sentence: its span in the template source and its text."""

    index: int
    start: int
    end: int
    text: str


def units(source: str) -> list[Unit]:
    """Every sentence of literal text in the template, in order (at least `MIN_WORDS` words each)."""
    out: list[Unit] = []
    literal_start = 0
    for tag in [*TAG.finditer(source), None]:
        literal_end = tag.start() if tag is not None else len(source)
        for paragraph in PARAGRAPH.finditer(source, literal_start, literal_end):
            for match in SENTENCE.finditer(source, paragraph.start(), paragraph.end()):
                text = match.group(1).strip()
                if len(re.findall(r"[A-Za-z]\w*", text)) >= MIN_WORDS and text[-1:] != ":":
                    out.append(Unit(len(out), match.start(1), match.end(), text))
        if tag is not None:
            literal_start = tag.end()
    return out


def without(source: str, found: list[Unit], removed: frozenset[int]) -> str:
    """The template source with the units numbered in `removed` deleted (their trailing spaces too, and
    the spaces before them when they ended a line)."""
    kept, at = [], 0
    for unit in found:
        if unit.index in removed:
            before = source[at : unit.start]
            kept.append(before.rstrip(" \t") if source[unit.end : unit.end + 1] in ("\n", "") else before)
            at = unit.end
    kept.append(source[at:])
    return "".join(kept)
