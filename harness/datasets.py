"""Loading eval items: JSON files directly, CSV, Parquet and Hub ids through `datasets`; limits, seeds, hashes.

Everything is checked here, before any model call: the file exists and is UTF-8, it has items, the id
and reference columns exist, and ids are unique (two items with one id would overwrite each other's
records).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from harness.config import ConfigError, DatasetConfig, DatasetFields, Experiment
from harness.identity import dataset_fingerprint
from harness.logs import LogFacts, TraceReader, read_log
from harness.offline import apply_offline_defaults

_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


class Item(BaseModel):
    """One eval example: its id, every column (for templates), and what a good answer looks like."""

    id: str
    fields: dict[str, Any]
    """All dataset columns; each is a template variable."""
    reference: str | None = None
    references: list[str] = Field(default_factory=list)
    """Every acceptable reference; scorers take the best match."""
    weight: float = 1.0
    """How many production calls the item stands for (a sampled log call); 1 for an eval file's item."""
    segment: str | None = None
    """The log segment the item was sampled from."""


class EvalSet(BaseModel):
    """The selected items and a fingerprint of exactly what was selected."""

    items: list[Item]
    fingerprint: str
    """SHA-256 over the selected items' content: equal fingerprints mean the same eval."""
    source: str
    conventional: dict[str, str] = Field(default_factory=dict)
    """Roles taken by a column's conventional name because the config mapped none (role -> column)."""
    log: LogFacts | None = None
    """The production log the items were sampled from."""

    @property
    def weighted(self) -> bool:
        """Items stand for different numbers of calls, so aggregates weight them."""
        return len({item.weight for item in self.items}) > 1


def load_items(experiment: Experiment, traces: TraceReader | None = None) -> EvalSet:
    """Load, select and validate the experiment's items (`traces` reads an MLflow log source)."""
    cfg = experiment.dataset
    file = experiment.source_path
    if cfg.logs is not None:
        return _log_items(experiment, traces)
    rows, source = _load_rows(experiment, cfg)
    if not rows:
        raise ConfigError(file, "dataset", f"{source} has no items", "point dataset.path at a non-empty file")
    rows = _select(rows, cfg)
    conventional = conventional_roles(cfg.fields, rows[0])
    fields = cfg.fields.model_copy(update=conventional)
    items = [_to_item(row, index, fields, file, set(conventional)) for index, row in enumerate(rows)]
    _check_unique_ids(items, cfg, file)
    fingerprint = dataset_fingerprint(item.fields for item in items)
    return EvalSet(items=items, fingerprint=fingerprint, source=source, conventional=conventional)


CONVENTIONAL_COLUMNS = {
    "id": ("id",),
    "reference": ("reference", "answer", "target", "label"),
    "references": ("references",),
}
"""Column names that take a role without a mapping (an explicit `dataset.fields` mapping always wins)."""


def conventional_roles(fields: DatasetFields, first_row: dict[str, Any]) -> dict[str, str]:
    """The roles the config leaves unmapped that a conventionally named column fills (role -> column)."""
    if fields.reference is not None or fields.references is not None:
        roles: tuple[str, ...] = ("id",)
    else:
        roles = ("id", "reference", "references")
    out = {}
    for role in roles:
        if getattr(fields, role) is None:
            column = next((c for c in CONVENTIONAL_COLUMNS[role] if c in first_row), None)
            if column is not None:
                out[role] = column
    return out


PRODUCTION_OUTPUT = "production_output"
"""The item field holding the production answer (also the item's reference: "agrees with production")."""


def _log_items(experiment: Experiment, traces: TraceReader | None) -> EvalSet:
    """Each sampled call an item: its messages (for templates), the production answer (the reference),
    model, usage, latency, logged spend and tags, weighted by the calls it stands for."""
    logs = experiment.dataset.logs
    assert logs is not None
    path = experiment.project_file(logs.path, "dataset.logs.path") if logs.path else None
    sampled = read_log(logs, path, experiment.source_path, traces)
    items = []
    seen: set[str] = set()
    for number, call, segment, weight in sampled.calls:
        last_user = next((m["content"] for m in reversed(call.messages) if m["role"] == "user"), "")
        fields = {
            "messages": call.messages,
            "input": last_user,
            PRODUCTION_OUTPUT: call.output or "",
            "production_model": call.model,
            "production_usage": call.usage.model_dump(exclude_defaults=True),
            "production_latency_s": call.latency_s,
            "production_spend_usd": call.spend_usd,
            "timestamp": call.timestamp,
            "segment": segment,
            "tags": call.tags,
        }
        item_id = call.call_id or f"line-{number}"
        if item_id in seen:  # a log that repeats an id (a retry logged twice) still names each call once
            item_id = f"{item_id}@line-{number}"
        seen.add(item_id)
        reference = call.output or None
        items.append(
            Item(
                id=item_id,
                fields=fields,
                reference=reference,
                references=[reference] if reference else [],
                weight=weight,
                segment=segment,
            )
        )
    fingerprint = dataset_fingerprint(item.fields for item in items)
    source = str(logs.path) if logs.path else f"mlflow:{logs.mlflow.experiment if logs.mlflow else ''}"
    return EvalSet(items=items, fingerprint=fingerprint, source=source, log=sampled.facts(source))


def _datasets() -> Any:

    apply_offline_defaults()
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    # Its readers log a failed file at ERROR before raising: harness reports the error in one line itself.
    logger = logging.getLogger("datasets")
    logger.setLevel(logging.CRITICAL)
    logger.propagate = False
    return datasets


def _load_rows(experiment: Experiment, cfg: DatasetConfig) -> tuple[list[dict[str, Any]], str]:
    file = experiment.source_path
    if cfg.hub is not None:
        datasets = _datasets()
        try:
            ds = datasets.load_dataset(cfg.hub, cfg.subset, split=cfg.split)
        except Exception as exc:
            raise ConfigError(
                file,
                "dataset.hub",
                f"cannot load '{cfg.hub}' split '{cfg.split}': {exc}",
                "check the id and split, and that the Hub is reachable",
            ) from None
        return [dict(r) for r in ds], f"hub:{cfg.hub}"
    assert cfg.path is not None
    return read_rows(experiment.project_file(cfg.path, "dataset.path"), file, "dataset.path"), str(cfg.path)


def read_rows(path: Path, file: Path | str, field: str) -> list[dict[str, Any]]:
    """The rows of a local JSON Lines, JSON, CSV or Parquet file; errors name `file` and `field` (the
    config that points at it, or the command line for `init`)."""
    if not path.is_file():
        raise ConfigError(
            file,
            field,
            f"no such file {path}",
            "give a path relative to the project root (e.g. evals/scitldr/test.jsonl)",
        )
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(
            file, field, f"unsupported file type '{path.suffix}'", f"use one of {', '.join(sorted(_FORMATS))}"
        )
    if fmt != "parquet":
        _check_utf8(path, file)
        if not path.read_bytes().strip():
            return []
    if fmt == "json":
        return _json_rows(path, file)
    try:
        ds = _datasets().load_dataset(fmt, data_files=str(path), split="train")
    except Exception as exc:
        raise ConfigError(
            file, field, f"cannot read {path}: {_first_line(exc)}", "check the file is valid " + fmt.upper()
        ) from None
    return [dict(r) for r in ds]


def _json_rows(path: Path, config_file: Path | str) -> list[dict[str, Any]]:
    """Rows of a JSON Lines file or a JSON array of objects, read as they are.

    Read with the json module rather than `datasets`: importing `datasets` (pandas, pyarrow) costs about
    100 MB of memory per process and an Arrow cache on disk, for files that are a list of objects. CSV,
    Parquet and Hub datasets still go through `datasets`.
    """
    text = path.read_text(encoding="utf-8")
    fix = "check the file is valid JSON (one object per line for .jsonl)"
    rows: list[tuple[int, Any]] = []
    number = 0
    try:
        if path.suffix.lower() == ".jsonl":
            for number, line in enumerate(text.splitlines(), start=1):
                if line.strip():
                    rows.append((number, json.loads(line)))
        else:
            data = json.loads(text)
            rows = list(enumerate(data if isinstance(data, list) else [data], start=1))
    except json.JSONDecodeError as exc:
        jsonl = path.suffix.lower() == ".jsonl"
        where = f"line {number}, column {exc.colno}" if jsonl else f"line {exc.lineno} column {exc.colno}"
        raise ConfigError(config_file, "dataset.path", f"cannot read {path}: {where}: {exc.msg}", fix) from None
    except RecursionError:
        raise ConfigError(config_file, "dataset.path", f"{path}: nested too deeply to read", "flatten it") from None
    for number, row in rows:
        if not isinstance(row, dict):
            raise ConfigError(
                config_file, "dataset.path", f"cannot read {path}: item {number} is not a JSON object", fix
            )
    return [row for _, row in rows]


def _check_utf8(path: Path, config_file: Path | str) -> None:
    try:
        path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            config_file, "dataset.path", f"{path} is not UTF-8 (byte {exc.start})", "re-save the file as UTF-8"
        ) from None


def _select(rows: list[dict[str, Any]], cfg: DatasetConfig) -> list[dict[str, Any]]:
    if cfg.shuffle:
        import random

        rows = rows[:]
        random.Random(cfg.seed).shuffle(rows)
    return rows[: cfg.limit] if cfg.limit else rows


def _to_item(row: dict[str, Any], index: int, fields: DatasetFields, file: Path, conventional: set[str]) -> Item:
    for role in ("id", "reference", "references"):
        column = getattr(fields, role)
        if column is not None and column not in row and role not in conventional:
            raise ConfigError(
                file,
                f"dataset.fields.{role}",
                f"column '{column}' is not in the dataset",
                f"use one of: {', '.join(row)}",
            )
    raw_id = row.get(fields.id) if fields.id else None
    if isinstance(raw_id, dict | list | bool | float):
        raise ConfigError(
            file,
            f"dataset.fields.id (row {index + 1})",
            f"the id column '{fields.id}' holds a {type(raw_id).__name__}, not a name or a whole number",
            "give each item a text or integer id (ids key the cache and pair items across variants)",
        )
    item_id = str(raw_id) if raw_id is not None else str(index)
    references = _as_list(row.get(fields.references)) if fields.references else []
    reference = row.get(fields.reference) if fields.reference else None
    if isinstance(reference, list):
        references = references or [str(r) for r in reference]
        reference = references[0] if references else None
    if reference is not None and not references:
        references = [str(reference)]
    return Item(id=item_id, fields=row, reference=None if reference is None else str(reference), references=references)


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _check_unique_ids(items: list[Item], cfg: DatasetConfig, file: Path) -> None:
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise ConfigError(
                file,
                "dataset.fields.id",
                f"duplicate item id '{item.id}'",
                "make ids unique in the dataset, or map fields.id to a unique column",
            )
        seen.add(item.id)


def _first_line(exc: BaseException) -> str:
    """The first line of the root cause (`datasets` wraps a parser's error in a generic one)."""
    while (exc.__cause__ or exc.__context__) is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
