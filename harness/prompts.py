"""Prompt templates: Jinja2 with StrictUndefined, rendered into chat messages, hashed and counted.

Template format (documented in docs/config.md): a Jinja2 file with up to two blocks,

    {% block system %}You are a careful summariser.{% endblock %}
    {% block user %}Summarise: {{ document }}{% endblock %}

A file with no blocks is the user message as a whole. Multi-turn prompts (few-shot examples as
user/assistant pairs) use a `messages` block and call `turn(role, text)` for each message:

    {% block messages %}
    {{ turn("system", "Label the sentiment.") }}
    {% for ex in examples[:shots] %}{{ turn("user", ex.text) }}{{ turn("assistant", ex.label) }}{% endfor %}
    {{ turn("user", text) }}
    {% endblock %}

Turns are collected as values, never parsed out of rendered text, so an item containing "assistant:" or
a role marker cannot forge a turn. StrictUndefined turns a variable missing from the
dataset into an error at render time, and every item is rendered before the first model call, so the
mistake costs nothing. Templates render in Jinja2's immutable sandbox: a template that reaches for Python
internals (`cycler.__init__.__globals__`) is a config error, not a shell command in a CI job holding keys.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import jinja2.runtime
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from harness.config import ConfigError
from harness.identity import template_hash
from harness.tokens import Messages, truncate_tokens


@dataclass(frozen=True)
class PromptTemplate:
    """A parsed template file and its identity."""

    name: str
    path: Path
    source: str
    template: jinja2.Template
    variables: dict[str, Any] = field(default_factory=dict)
    """The ablation's values (from the config's `vars`) rendered into this prompt variant."""

    @property
    def base_name(self) -> str:
        """The config's name for the template, without the ablation's `(var=value)` suffix."""
        return self.name.rpartition("(")[0] if self.variables else self.name

    @property
    def template_hash(self) -> str:
        """SHA-256 of the template text: the prompt's identity across runs."""
        return template_hash(self.source)

    def __reduce__(self) -> tuple[Any, ...]:
        # A compiled Jinja2 template cannot be pickled; the tracking process rebuilds it from the source.
        return (template_from_source, (self.name, self.path, self.source, self.variables))

    def render(self, variables: dict[str, Any]) -> Messages:
        """Chat messages for one item; raises jinja2 errors on undefined variables."""
        blocks = self.template.blocks
        if "messages" in blocks:
            return self._turns(variables)
        if "system" not in blocks and "user" not in blocks:
            text = self.template.render(variables).strip()
            return [{"role": "user", "content": text}] if text else []
        context = self.template.new_context(variables)
        messages: Messages = []
        for role in ("system", "user"):
            if role in blocks:
                text = "".join(blocks[role](context)).strip()
                if text:
                    messages.append({"role": role, "content": text})
        return messages

    def _turns(self, variables: dict[str, Any]) -> Messages:
        """The `messages` block's turns, in the order `turn()` was called, checked as chat APIs want them."""
        blocks = self.template.blocks
        if "system" in blocks or "user" in blocks:
            raise TurnError("a template with a messages block has no system or user block; use turn() for both")
        turns: Messages = []

        def turn(role: str, content: Any) -> str:
            if role not in ROLES:
                raise TurnError(f"turn role {role!r} is not one of {', '.join(ROLES)}")
            text = str(content).strip()
            if not text:
                raise TurnError(f"a {role} turn is empty")
            turns.append({"role": role, "content": text})
            return ""

        context = self.template.new_context({**variables, "turn": turn})
        stray = "".join(blocks["messages"](context)).strip()
        if stray:
            raise TurnError(f"text outside turn() in the messages block: {stray[:60]!r}")
        if not turns:
            return turns
        if any(t["role"] == "system" for t in turns[1:]):
            raise TurnError("a system turn may only come first")
        if turns[-1]["role"] != "user":
            raise TurnError(f"the last turn is {turns[-1]['role']}; the model answers a user turn")
        return turns


ROLES = ("system", "user", "assistant")


class TurnError(jinja2.TemplateRuntimeError):
    """A `messages` block whose turns no chat API would accept."""


def template_from_source(name: str, path: Path, source: str, variables: dict[str, Any]) -> PromptTemplate:
    """A template made from text rather than read from `path` (a pickled one, a shortened prompt),
    resolving includes from `path`'s folder as the file there would."""
    return PromptTemplate(name, path, source, make_environment(path.parent).from_string(source), variables)


class ConfinedLoader(jinja2.FileSystemLoader):
    """`{% include %}` and `{% import %}` inside the template's folder only: a name that resolves (through a
    symlink, say) to a file outside it is refused, so a template cannot read the system's files."""

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str, Any]:
        source, filename, uptodate = super().get_source(environment, template)
        roots = [os.path.realpath(p) for p in self.searchpath]
        real = os.path.realpath(filename)
        if not any(os.path.commonpath([real, root]) == root for root in roots):
            raise jinja2.TemplateNotFound(f"{template} (it resolves outside the prompts folder)")
        return source, filename, uptodate


MAX_PROMPT_CHARS = 10_000_000
"""The most characters one rendered prompt may hold (about 2.5M tokens, past every context window): a
template that makes more (`{{ 'x' * 10**9 }}`) is a config error before it fills the memory."""

MAX_RENDER_S = 10.0
"""The longest one item's prompt may take to render (a loop over a loop, say): then it is a config error."""

MAX_POWER = 10_000
"""The largest exponent `**` takes in a template, and a power's result is held to 100 x that many bits
(`10 ** 10 ** 10` would compute for hours, where no timer can stop it)."""

BUILTINS = frozenset({"turn", "range", "dict", "lipsum", "cycler", "joiner", "namespace", "loop", "self", "super"})
"""Names a template already means something by: a dataset column, constant or var named so is refused."""


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, with the sizes a template can ask for bounded: repeating a text or a
    list past MAX_PROMPT_CHARS and exponents past MAX_POWER are refused (the sandbox bounds `range`, not
    these), and `lipsum` (a million paragraphs on request) is gone."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(times, int)
                    and len(seq) * times > MAX_PROMPT_CHARS
                ):
                    raise SecurityError(f"repeating {len(seq):,} characters {times:,} times is past the prompt limit")
        if operator == "**" and isinstance(right, int) and not isinstance(right, bool):
            bits = abs(left).bit_length() if isinstance(left, int) else 1
            if abs(right) > MAX_POWER or (right > 0 and bits > 1 and right * bits > 100 * MAX_POWER):
                raise SecurityError(f"a power of {right:,} is past the template limit")
        return super().call_binop(context, operator, left, right)


def make_environment(search_path: Path) -> jinja2.Environment:
    """The one Jinja2 environment: sandboxed (a template from a pull request must not run code where API
    keys live), bounded in size, strict about undefined names, no HTML escaping (prompts are text),
    includes confined."""
    env = BoundedSandbox(
        loader=ConfinedLoader(str(search_path)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
    )
    env.globals.pop("lipsum", None)
    env.filters["truncate_tokens"] = truncate_tokens
    return env


class RenderTimeout(Exception):
    """A template took longer than MAX_RENDER_S to render one item."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise RenderTimeout in the block after `seconds` (the main thread only: a signal timer is the one
    way to stop a Jinja2 loop from outside; elsewhere the size limits alone apply)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise RenderTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def load_template(name: str, path: Path, config_file: Path, field: str) -> PromptTemplate:
    """Parse a template file, turning syntax errors into a ConfigError naming file and line."""
    if not path.is_file():
        raise ConfigError(
            config_file,
            field,
            f"no such template file {path}",
            "give a path relative to the project root (e.g. prompts/summarize/terse.j2)",
        )
    real = os.path.realpath(path)
    if os.path.commonpath([real, os.path.realpath(path.parent)]) != os.path.realpath(path.parent):
        raise ConfigError(
            config_file,
            field,
            f"{path} is a link to {real}, outside its folder",
            "copy the template into the prompts folder instead of linking to it",
        )
    try:
        source = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(config_file, field, f"{path} is not UTF-8", "re-save the template as UTF-8") from None
    env = make_environment(path.parent)
    try:
        template = env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(
            f"{path}",
            f"line {exc.lineno}",
            f"template syntax error: {exc.message}",
            "fix the Jinja2 syntax ({{ var }}, {% block user %}...{% endblock %})",
        ) from None
    return PromptTemplate(name=name, path=path, source=source, template=template)


def render_checked(template: PromptTemplate, variables: dict[str, Any], item_id: str) -> Messages:
    """Render for one item, turning an undefined variable into a ConfigError that says which."""
    try:
        with time_limit(MAX_RENDER_S):
            messages = template.render(variables)
    except RenderTimeout:
        raise ConfigError(
            str(template.path),
            f"item {item_id}",
            f"rendering took more than {MAX_RENDER_S:g} s",
            "simplify the template's loops",
        ) from None
    except MemoryError:
        raise ConfigError(
            str(template.path), f"item {item_id}", "rendering ran out of memory", "make the template smaller"
        ) from None
    except jinja2.UndefinedError as exc:
        available = ", ".join(sorted(variables))
        raise ConfigError(
            str(template.path),
            f"item {item_id}",
            f"template variable {exc.message}",
            f"use one of the dataset columns or constants: {available}",
        ) from None
    except TurnError as exc:
        raise ConfigError(
            str(template.path),
            f"item {item_id}",
            f"chat turns: {exc.message}",
            'write each message as {{ turn("user", text) }} (system first, user last, assistant between)',
        ) from None
    except SecurityError as exc:
        raise ConfigError(
            str(template.path),
            f"item {item_id}",
            f"the template reaches for Python internals, which the sandbox refuses ({exc})",
            "use only the dataset's columns, constants and vars",
        ) from None
    except jinja2.TemplateError as exc:
        raise ConfigError(str(template.path), f"item {item_id}", f"template error: {exc}", "fix the template") from None
    except RecursionError:
        raise ConfigError(
            str(template.path), f"item {item_id}", "the template includes itself", "remove the circular include"
        ) from None
    except Exception as exc:  # {{ 1 // 0 }}, a filter given the wrong type: the template's fault, before any call
        raise ConfigError(
            str(template.path), f"item {item_id}", f"template error: {type(exc).__name__}: {exc}", "fix the template"
        ) from None
    if not messages:
        raise ConfigError(
            str(template.path),
            f"item {item_id}",
            "template rendered no text (an empty prompt would still be paid for)",
            "put the prompt in a {% block user %}, in the file body, or in turn() calls",
        )
    size = sum(len(m["content"]) for m in messages)
    if size > MAX_PROMPT_CHARS:
        raise ConfigError(
            str(template.path),
            f"item {item_id}",
            f"the prompt is {size:,} characters, past the limit of {MAX_PROMPT_CHARS:,}",
            "cut long fields with {{ document | truncate_tokens(3000) }}",
        )
    return messages


def shared_prefix(rendered: list[Messages]) -> str:
    """The text every rendered prompt starts with, in the order a provider reads it (role, then content,
    message by message): the part a prompt cache can serve."""
    flat = ["".join(f"<{m['role']}>\n{m['content']}\n" for m in messages) for messages in rendered]
    if not flat:
        return ""
    first, last = min(flat), max(flat)  # the sorted extremes differ first where any two do
    end = next((i for i, (a, b) in enumerate(zip(first, last, strict=False)) if a != b), len(first))
    return first[:end]
