"""The removable units of a prompt template: its literal blocks, few-shot turns, paragraphs and sentences.

A prompt is shortened by deleting text a person wrote, never the Jinja that carries the item: a
`{{ variable }}` is kept, and so is every tag of the template's structure. What can go:

- a block whose body is literal text (`{% block system %}...{% endblock %}`): its whole body;
- a `{% for %}...{% endfor %}` loop (few-shot examples generated from data), whole;
- a few-shot pair written out, `{{ turn("user", ...) }}` followed by `{{ turn("assistant", ...) }}`;
- a paragraph (text between blank lines) of two sentences or more;
- a sentence: ended by `.`, `!` or `?` before a space or a line end (a line wrapped inside a sentence does
  not end it), of at least `MIN_WORDS` words and not a label ending in `:` (`TLDR:`, `Paper title:`).
  Markup such as `<document>` is never part of one: it frames an item's field, and is kept.

Text is literal both between tags and inside a tag's string literals (`turn("system", "You classify...")`),
where `\\n` escapes count as line ends. A unit is a span of the source that never cuts a tag or an escape,
so any set of units removed leaves a template that still parses; larger units contain smaller ones, and
`containers` says which, so a search does not try a sentence whose paragraph is gone.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

TAG = re.compile(r"{{.*?}}|{%.*?%}|{#.*?#}", re.S)
STRING = re.compile(r""""((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)'""", re.S)
ESCAPE = "\x00"
"""In a string literal's view, the backslash of a `\\n` escape (the `n` becomes a line end): never a space,
so no unit starts or ends between the two."""
PARAGRAPH = re.compile(r"(?:(?!\n[ \t\x00]*\n).)+", re.S)
SENTENCE = re.compile(r"[\s\x00]*(.+?(?:[.!?]+(?=[\s\x00])|[.!?]*(?=[\s\x00]*$)))[ \t]*", re.S)
BLOCK_OPEN = re.compile(r"{%-?\s*(block|for)\b")
BLOCK_CLOSE = re.compile(r"{%-?\s*end(block|for)\b")
MARKUP = re.compile(r"</?([A-Za-z][\w-]*)>")
"""`<document>...</document>`: the framing of an item's field, a boundary no unit crosses (kept whole); a
tag never closed (`"#### <number>"`) is text."""
TURN = re.compile(r"""{{-?\s*turn\(\s*["'](user|assistant)["']""")
MIN_WORDS = 2
"""Shorter fragments (a label such as `Summarise:` before a variable) are part of the item's framing."""


@dataclass(frozen=True)
class Unit:
    """One removable span of the template source: what it is, and its text as a person reads it."""

    index: int
    start: int
    end: int
    text: str
    kind: str = "sentence"
    """block, loop, turns, paragraph or sentence."""


def units(source: str) -> list[Unit]:
    """Every removable unit of the template, largest kinds first where two cover the same span, in the
    order of the source."""
    tags = list(TAG.finditer(source))
    found: dict[tuple[int, int], tuple[str, str]] = {}

    spans: set[tuple[int, int]] = set()

    def add(start: int, end: int, text: str, kind: str) -> None:
        same = (start, start + len(source[start:end].rstrip()))  # a block and its one paragraph: one unit
        if same not in spans:
            spans.add(same)
            found[(start, end)] = (" ".join(text.replace(ESCAPE, "").split()), kind)

    for start, end, kind, text in _structures(source, tags):
        add(start, end, text, kind)
    for view, offset, start, end in _regions(source, tags):
        for paragraph in PARAGRAPH.finditer(view, start, end):
            sentences = _sentences(view, paragraph.start(), paragraph.end())
            if len(sentences) > 1:
                first, last = sentences[0], sentences[-1]
                add(offset + first[0], offset + last[1], view[first[0] : last[1]], "paragraph")
            for s_start, s_end, text in sentences:
                add(offset + s_start, offset + s_end, text, "sentence")
    ordered = sorted(found.items(), key=lambda kv: (kv[0][0], -kv[0][1]))
    return [Unit(i, start, end, text, kind) for i, ((start, end), (text, kind)) in enumerate(ordered)]


def containers(found: list[Unit]) -> list[frozenset[int]]:
    """For each unit, the other units whose span holds it: once one of those is removed, so is it."""
    return [
        frozenset(o.index for o in found if o.index != u.index and o.start <= u.start and u.end <= o.end) for u in found
    ]


def without(source: str, found: list[Unit], removed: frozenset[int]) -> str:
    """The template source with the units numbered in `removed` deleted (the union of their spans), the
    spaces before a deletion that ended a line, and a line the deletions emptied."""
    spans = sorted((u.start, u.end) for u in found if u.index in removed)
    merged: list[list[int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    kept, at = [], 0
    for start, end in merged:
        before = source[at:start]
        if source[end : end + 1] in ("\n", ""):
            before = before.rstrip(" \t")
            if before.endswith("\n") and source[end : end + 1] == "\n":
                end += 1  # the line is gone whole: so is its line end
        kept.append(before)
        at = end
    kept.append(source[at:])
    return "".join(kept)


def _regions(source: str, tags: list[re.Match[str]]) -> Iterator[tuple[str, int, int, int]]:
    """(view, offset, start, end): each stretch of literal text as view[start:end], where `view[i]` stands
    for `source[offset + i]`: the source itself between tags, or a string literal's body inside one, its
    `\\n` escapes made line ends of the same length."""
    at = 0
    closed = {m.group(1) for m in MARKUP.finditer(source) if m.group(0).startswith("</")}
    view = _bounded(source, closed)
    for tag in [*tags, None]:
        yield view, 0, at, tag.start() if tag is not None else len(source)
        if tag is None:
            break
        for string in STRING.finditer(source, tag.start(), tag.end()):
            group = 1 if string.group(1) is not None else 2
            body = string.group(group)
            yield _bounded(body.replace("\\n", ESCAPE + "\n"), closed), string.start(group), 0, len(body)
        at = tag.end()


def _bounded(text: str, closed: set[str]) -> str:
    """The text with each markup tag of a closed element made blank lines of its length: a boundary."""
    return MARKUP.sub(lambda tag: "\n" * len(tag.group(0)) if tag.group(1) in closed else tag.group(0), text)


def _sentences(view: str, start: int, end: int) -> list[tuple[int, int, str]]:
    out = []
    for match in SENTENCE.finditer(view, start, end):
        text = match.group(1).strip()
        if len(re.findall(r"[A-Za-z]\w*", text)) >= MIN_WORDS and text.rstrip(ESCAPE)[-1:] != ":":
            out.append((match.start(1), match.end(), text))
    return out


def _structures(source: str, tags: list[re.Match[str]]) -> Iterator[tuple[int, int, str, str]]:
    """Literal-only block bodies, loops and written-out few-shot pairs: (start, end, kind, text)."""
    stack: list[tuple[str, re.Match[str], int]] = []
    for i, tag in enumerate(tags):
        opened, closed = BLOCK_OPEN.match(tag.group(0)), BLOCK_CLOSE.match(tag.group(0))
        if opened:
            stack.append((opened.group(1), tag, i))
        elif closed and stack:
            kind, start_tag, j = stack.pop()
            if kind == "for":
                yield start_tag.start(), tag.end(), "loop", source[start_tag.start() : tag.end()]
            elif i == j + 1:
                body = source[start_tag.end() : tag.start()]
                lead = len(body) - len(body.lstrip())
                text = body.strip()
                if len(_sentences(text, 0, len(text))) > 1:
                    yield start_tag.end() + lead, start_tag.end() + lead + len(text), "block", text
        user = TURN.match(tag.group(0))
        if user and user.group(1) == "user" and i + 1 < len(tags):
            after = tags[i + 1]
            reply = TURN.match(after.group(0))
            paired = reply is not None and reply.group(1) == "assistant"
            adjacent = not source[tag.end() : after.start()].strip()
            more = i + 2 < len(tags) and TURN.match(tags[i + 2].group(0)) is not None  # the item's turn follows
            if paired and adjacent and more:
                yield tag.start(), after.end(), "turns", source[tag.start() : after.end()]
