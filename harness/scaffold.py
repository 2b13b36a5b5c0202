"""`harness init DATASET`: a first experiment proposed from what a dataset's columns hold.

A newcomer has a file, not a config. This reads it, decides which column is the input and which the
reference (conventional names first, as `run` itself does), picks scorers from what the references look
like (a few labels: accuracy with the label list; numbers: numeric match; free text: ROUGE and embedding
similarity), and writes a config and a prompt that run at once on the offline models. It never
overwrites a file: a second `init` under the same name is an error naming the file.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from harness.config import ConfigError
from harness.datasets import CONVENTIONAL_COLUMNS, read_rows
from harness.logs import PARSERS, BadLine, sniff

Kind = Literal["labels", "numbers", "text"]
FIELD = "DATASET"
MAX_LABELS = 50
"""More distinct short references than this are free text, not a label set."""
NUMBER = re.compile(r"^\s*-?[\d,]*\.?\d+\s*$")


@dataclass
class Proposal:
    """What `init` proposes for a dataset: the columns' roles, the kind of task and its scorers."""

    columns: list[str]
    input: str
    reference: str
    id: str | None
    kind: Kind
    labels: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def scorers(self) -> list[Any]:
        if self.kind == "labels":
            return [{"accuracy": {"labels": list(self.labels)}}]
        if self.kind == "numbers":
            return ["numeric_match"]
        return [{"rouge": {"variant": "rougeL"}}, "embedding_similarity"]


def propose(path: Path, reference: str | None = None, input_column: str | None = None) -> Proposal:
    """Read the dataset and propose roles and scorers; raises ConfigError naming the flag to set when a
    role cannot be told from the columns."""
    rows = read_rows(path, "command line", FIELD)
    if not rows:
        raise ConfigError("command line", FIELD, f"{path} has no rows", "give a file with at least one row")
    columns = list(rows[0])
    texts = [c for c in columns if all(isinstance(r.get(c), str | int | float) for r in rows)]
    id_column = "id" if "id" in columns else None
    ref = reference or next((c for c in CONVENTIONAL_COLUMNS["reference"] if c in columns), None)
    for flag, name in (("--reference", reference), ("--input", input_column)):
        if name is not None and name not in columns:
            fix = f"use one of: {', '.join(columns)}"
            raise ConfigError("command line", flag, f"no column '{name}' in {path}", fix)
    if ref is None:
        raise ConfigError(
            "command line",
            "--reference",
            f"no column of {path} is named like a reference ({', '.join(CONVENTIONAL_COLUMNS['reference'])})",
            f"name the column holding the expected output: --reference one of {', '.join(columns)}",
        )
    candidates = [c for c in texts if c not in (ref, id_column)]
    chosen = input_column or max(candidates, key=lambda c: _mean_length(rows, c), default=None)
    if chosen is None:
        raise ConfigError(
            "command line", "--input", f"no column of {path} besides '{ref}' holds text", "add the input column"
        )
    if not chosen.isidentifier():
        raise ConfigError(
            "command line",
            "--input",
            f"column '{chosen}' cannot be a template variable (not a Python-style name)",
            "rename the column (letters, digits, underscores), or choose another with --input",
        )
    values = [str(r.get(ref, "")).strip() for r in rows]
    distinct = sorted(set(values))
    if all(NUMBER.match(v) for v in values if v):
        kind: Kind = "numbers"
    elif len(distinct) <= MAX_LABELS and len(distinct) < max(2, len(values)) and _mean_words(values) <= 4:
        kind = "labels"
    else:
        kind = "text"
    return Proposal(columns, chosen, ref, id_column, kind, distinct if kind == "labels" else [], rows)


def write_experiment(proposal: Proposal, dataset: Path, name: str, root: Path) -> tuple[Path, Path]:
    """`experiments/NAME.yaml` and `prompts/NAME.j2` under `root`; refuses to overwrite either."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ConfigError("command line", "--name", f"'{name}' is not a file name", "use letters, digits, - _ .")
    config_path = root / "experiments" / f"{name}.yaml"
    prompt_path = root / "prompts" / f"{name}.j2"
    for path in (config_path, prompt_path):
        if path.exists():
            raise ConfigError(str(path), "", "already exists; init never overwrites a file", "pick another --name")
    config_path.parent.mkdir(parents=True, exist_ok=True)
    prompt_path.parent.mkdir(parents=True, exist_ok=True)
    prompt_path.write_text(_prompt(proposal), encoding="utf-8")
    config_path.write_text(_config(proposal, dataset, name, root), encoding="utf-8")
    return config_path, prompt_path


def _config(proposal: Proposal, dataset: Path, name: str, root: Path) -> str:
    resolved = dataset.resolve()
    try:
        shown = str(resolved.relative_to(root.resolve()))
    except ValueError:
        shown = str(resolved)
    fields = {"reference": proposal.reference, **({"id": proposal.id} if proposal.id else {})}
    models = ["local/smollm2-135m"] + (["local/lead"] if proposal.kind == "text" else [])
    config: dict[str, Any] = {
        "name": name,
        "description": f"Written by harness init from {dataset.name}: {proposal.input} -> {proposal.reference}.",
        "dataset": {"path": shown, "fields": fields, "limit": 20},
        "prompts": [f"prompts/{name}.j2"],
        "models": models,
        "params": {"temperature": 0, "max_tokens": 16 if proposal.kind != "text" else 64},
        "scorers": proposal.scorers,
        "baseline": {"model": "local/smollm2-135m", "prompt": name},
        "concurrency": 2,
    }
    if proposal.kind == "labels":
        config["constants"] = {"labels": list(proposal.labels)}  # a copy: no YAML anchor in the file
    header = (
        f"# Written by `harness init`. Roles: input <- column '{proposal.input}', reference <- column "
        f"'{proposal.reference}' ({proposal.kind}).\n"
        "# Next: add cloud models (e.g. openai/gpt-4o-mini), a second prompt, and remove dataset.limit.\n"
    )
    return header + yaml.safe_dump(config, sort_keys=False, allow_unicode=True, width=100)


def _prompt(proposal: Proposal) -> str:
    field_ = "{{ " + proposal.input + " }}"
    if proposal.kind == "labels":
        return (
            "{% block system %}\nClassify the input into exactly one label. Reply with the label only, exactly as "
            "written, nothing else.\n\nLabels:\n{% for label in labels %}- {{ label }}\n{% endfor %}{% endblock %}\n"
            f"{{% block user %}}\n{field_}\n{{% endblock %}}\n"
        )
    if proposal.kind == "numbers":
        return (
            "{% block system %}Solve the problem. End your answer with the final number.{% endblock %}\n"
            f"{{% block user %}}\n{field_}\n{{% endblock %}}\n"
        )
    return (
        "{% block system %}Write the expected output for the input, briefly.{% endblock %}\n"
        f"{{% block user %}}\n{field_}\n{{% endblock %}}\n"
    )


def _mean_length(rows: list[dict[str, Any]], column: str) -> float:
    return sum(len(str(r.get(column, ""))) for r in rows) / max(len(rows), 1)


def _mean_words(values: list[str]) -> float:
    return sum(len(v.split()) for v in values) / max(len(values), 1)


def preview(proposal: Proposal, n: int = 3) -> list[list[str]]:
    """The first rows, each value cut short, for the table `init` prints."""
    return [[_short(row.get(c)) for c in proposal.columns] for row in proposal.rows[:n]]


def _short(value: Any, width: int = 40) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


LOG_SCAN = 10_000
"""Lines `init --from-logs` reads to propose a config (the run reads the whole log)."""

AS_LOGGED_PROMPT = (
    "{# The production call's messages exactly as logged. #}\n"
    "{% block messages %}{% for m in messages %}{{ turn(m.role, m.content) }}{% endfor %}{% endblock %}\n"
)
SHORT_SYSTEM_PROMPT = (
    "{# The logged conversation with a shorter system prompt: edit it, then compare. #}\n"
    '{% block messages %}{{ turn("system", "Answer briefly.") }}'
    '{% for m in messages if m.role != "system" %}{{ turn(m.role, m.content) }}{% endfor %}{% endblock %}\n'
)


@dataclass
class LogProposal:
    """What `init --from-logs` found in the first lines of a log."""

    format: str
    calls: int
    models: dict[str, int]
    segment_by: str | None
    segments: dict[str, int]


def propose_logs(path: Path) -> LogProposal:
    """The log's format, models and the tag that splits it into a few segments (2 to 20 values, the one
    with the fewest values seen on most calls; `feature` first when it qualifies)."""
    fmt = sniff(path, "command line")
    parse = PARSERS[fmt]
    calls, models, tags = 0, {}, {}
    with path.open("rb") as handle:
        for number, raw in enumerate(handle):
            if number >= LOG_SCAN:
                break
            try:
                call = parse(json.loads(raw))
            except (BadLine, ValueError, KeyError, TypeError, AttributeError, IndexError):
                continue
            calls += 1
            models[call.model] = models.get(call.model, 0) + 1
            for key, value in call.tags.items():
                tags.setdefault(key, {}).setdefault(value, 0)
                tags[key][value] += 1
    if not calls:
        raise ConfigError("command line", "--from-logs", f"{path} has no call in its first lines", "see docs/replay.md")
    fit = {k: v for k, v in tags.items() if 2 <= len(v) <= 20 and sum(v.values()) >= calls / 2}
    choice = "feature" if "feature" in fit else (min(fit, key=lambda k: (len(fit[k]), k)) if fit else None)
    return LogProposal(fmt, calls, models, choice, fit.get(choice, {}) if choice else {})


def write_log_experiment(proposal: LogProposal, log: Path, name: str, root: Path) -> tuple[Path, list[Path]]:
    """`experiments/NAME.yaml` and its two templates under `prompts/NAME/`; refuses to overwrite any."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ConfigError("command line", "--name", f"'{name}' is not a file name", "use letters, digits, - _ .")
    config_path = root / "experiments" / f"{name}.yaml"
    prompts = {root / "prompts" / name / "as_logged.j2": AS_LOGGED_PROMPT}
    prompts[root / "prompts" / name / "short_system.j2"] = SHORT_SYSTEM_PROMPT
    for path in (config_path, *prompts):
        if path.exists():
            raise ConfigError(str(path), "", "already exists; init never overwrites a file", "pick another --name")
    try:
        shown = str(log.resolve().relative_to(root.resolve()))
    except ValueError:
        raise ConfigError(
            "command line", "--from-logs", f"{log} is outside the project {root}", "copy the log into evals/"
        ) from None
    logs: dict[str, Any] = {"path": shown, "format": proposal.format, "sample": 200, "redact": True}
    if proposal.segment_by:
        logs["segment_by"] = proposal.segment_by
    top = max(proposal.models, key=lambda m: proposal.models[m]) or "the production model"
    config: dict[str, Any] = {
        "name": name,
        "description": f"Written by harness init from {log.name}: can a cheaper model or prompt serve {top}'s calls?",
        "dataset": {"logs": logs},
        "prompts": [f"prompts/{name}/as_logged.j2", f"prompts/{name}/short_system.j2"],
        "models": ["local/lead", {"model": "local/smollm2-135m", "concurrency": 1}],
        "params": {"temperature": 0, "max_tokens": 128},
        "scorers": ["rouge", {"pairwise": {"model": "local/smollm2-135m", "params": {"max_tokens": 64}}}],
        "gate": {"metric": "pairwise", "margin": 0.1},
        "budget": {"max_usd": 5},
        "concurrency": 2,
    }
    segments = ", ".join(f"{k} ({v})" for k, v in sorted(proposal.segments.items())) or "none"
    models = ", ".join(f"{m or '?'} ({n})" for m, n in proposal.models.items())
    header = (
        f"# Written by `harness init --from-logs`: {proposal.calls} calls read ({proposal.format}); models "
        f"{models}; segments: {segments}.\n"
        "# Production is the baseline and is never called. Next: add the candidates you would pay for\n"
        "# (e.g. openai/gpt-4.1-nano) and a judge from another model family than production's.\n"
    )
    config_path.parent.mkdir(parents=True, exist_ok=True)
    for path, text in prompts.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    config_path.write_text(header + yaml.safe_dump(config, sort_keys=False, allow_unicode=True, width=100), "utf-8")
    return config_path, list(prompts)
