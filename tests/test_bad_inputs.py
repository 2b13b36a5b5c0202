"""The bad-input corpus: each file in tests/bad_inputs/ is one mistake a user makes.

Each must end in one clear line naming the file, the field and the fix, exit code 2, no traceback,
and nothing in MLflow that could look like a finished run. The first line of each case says what the
message must mention: `# expect: <field> | <problem>`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import REPO

CASES = sorted((REPO / "tests" / "bad_inputs").glob("*.yaml"))


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_bad_input_gives_one_clear_line(
    case: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """In-process through the CLI's `main` (each case fails before any call, so no subprocess is needed)."""
    from harness.cli import main

    expect = case.read_text(encoding="utf-8", errors="replace").splitlines()[0].removeprefix("# expect:")
    field, problem = (part.strip() for part in expect.split("|"))
    monkeypatch.chdir(tmp_path)
    code = main(["run", str(case), "--yes"])
    out, err = capsys.readouterr()
    assert code == 2, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err + out
    line = lines[0]
    assert line.startswith("error: ") and "Fix:" in line
    assert str(case.parent) in line
    assert field in line and problem in line, line
    store = Path(os.environ["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///"))
    assert not store.exists() or _no_runs(store)
    assert not (case.parent / "mlruns").exists()  # no response cache was opened, so no entry in one


def _no_runs(store: Path) -> bool:
    import sqlite3

    with sqlite3.connect(store) as db:
        return db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0


def test_the_corpus_covers_every_kind_of_mistake() -> None:
    assert len(CASES) >= 60


def test_truncation_in_the_template_makes_a_long_item_fit(tmp_path: Path) -> None:
    from harness.config import load_config
    from harness.preflight import prepare

    files = REPO / "tests" / "bad_inputs" / "files"
    (tmp_path / "short.j2").write_text(
        "{% block user %}<document>{{ document | truncate_tokens(200) }}</document>{% endblock %}"
    )
    (tmp_path / "exp.yaml").write_text(
        f"name: fits\ndataset: {{path: {files / 'too_long.jsonl'}, fields: {{id: id, reference: reference}}}}\n"
        "prompts: [short.j2]\nmodels: [local/smollm2-135m]\nscorers: [rouge]\n"
    )
    plan = prepare(load_config(tmp_path / "exp.yaml"))
    assert 200 <= plan.prompt_tokens[("local/smollm2-135m:short", "huge")] < 260
