"""The bad-input corpus: each file in tests/bad_inputs/ is one mistake a user makes.

Each must end in one clear line naming the file, the field and the fix, exit code 2, no traceback,
and nothing in MLflow that could look like a finished run. The first line of each case says what the
message must mention: `# expect: <field> | <problem>`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO, no_runs

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
    assert no_runs(store)
    assert not (case.parent / "mlruns").exists()  # no response cache was opened, so no entry in one


def test_the_corpus_covers_every_kind_of_mistake() -> None:
    assert len(CASES) >= 60


def test_truncation_in_the_template_makes_a_long_item_fit(tmp_path: Path) -> None:
    from harness.config import load_config
    from harness.planner import prepare

    shutil.copy(REPO / "tests" / "bad_inputs" / "files" / "too_long.jsonl", tmp_path / "too_long.jsonl")
    (tmp_path / "short.j2").write_text(
        "{% block user %}<document>{{ document | truncate_tokens(200) }}</document>{% endblock %}"
    )
    (tmp_path / "exp.yaml").write_text(
        "name: fits\ndataset: {path: too_long.jsonl, fields: {id: id, reference: reference}}\n"
        "prompts: [short.j2]\nmodels: [local/smollm2-135m]\nscorers: [rouge]\n"
    )
    plan = prepare(load_config(tmp_path / "exp.yaml"))
    assert 200 <= plan.prompt_tokens[("local/smollm2-135m:short", "huge")] < 260


def _main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from harness.cli import main

    code = main(args)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, err


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["run", "CASE", "--max-usd", "nan"], "--max-usd"),
        (["run", "CASE", "--max-usd", "inf"], "--max-usd"),
        (["run", "CASE", "--max-usd", "-1"], "--max-usd"),
        (["run", "CASE", "--limit", "0"], "--limit"),
        (["gate", "CASE", "--limit", "-2"], "--limit"),
        (["ui", "--port", "99999"], "--port"),
        (["report", "0123456789abcdef0123456789abcdef"], "cannot read run"),
        (["route", "0123456789abcdef0123456789abcdef"], "cannot read run"),
        (["reprice", "0123456789abcdef0123456789abcdef"], "cannot read run"),
        (["reprice", "0123456789abcdef0123456789abcdef", "--prices", "PRICES_BAD_YAML"], "invalid YAML"),
        (["levers", "0123456789abcdef0123456789abcdef", "--prices", "PRICES_BAD_FIELD"], "input_cost_per_tokn"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else v,
)
def test_bad_command_lines_give_one_clear_line(
    args: list[str], expect: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    case = str(REPO / "tests" / "bad_inputs" / "files" / "good.yaml")  # a valid config, wrong flags
    files = {
        "CASE": case,
        "PRICES_BAD_YAML": tmp_path / "bad.yaml",
        "PRICES_BAD_FIELD": tmp_path / "field.yaml",
    }
    files["PRICES_BAD_YAML"].write_text("openai/gpt-4o-mini: {input_cost_per_token: 1e-7\n")  # unclosed
    files["PRICES_BAD_FIELD"].write_text("openai/gpt-4o-mini: {input_cost_per_tokn: 1e-7}\n")
    code, err = _main([str(files.get(a, a)) for a in args], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and expect in err, err


@pytest.mark.parametrize(
    ("uri", "expect"),
    [("foo://bar/baz", "is not a tracking store MLflow knows"), ("NOT_A_DB", "is not an SQLite database")],
    ids=["unknown scheme", "not a database"],
)
def test_unusable_tracking_store_is_refused_before_any_call(
    uri: str, expect: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if uri == "NOT_A_DB":
        (tmp_path / "store.db").write_text("this is not sqlite")
        uri = f"sqlite:///{tmp_path / 'store.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache.sqlite"))
    monkeypatch.chdir(tmp_path)
    case = REPO / "tests" / "bad_inputs" / "files" / "good.yaml"
    code, err = _main(["run", str(case)], capsys)
    assert code == 2 and "MLFLOW_TRACKING_URI" in err and expect in err, err
    assert not (tmp_path / "cache.sqlite").exists()
    code, err = _main(["report", "0123456789abcdef0123456789abcdef"], capsys)
    assert code == 2 and expect in err, err


def test_unwritable_report_folder_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import harness
    from harness.workflow import RunOptions

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache.sqlite"))
    case = REPO / "tests" / "bad_inputs" / "files" / "good.yaml"
    outcome = harness.run(case, RunOptions(), console=None)
    (tmp_path / "a-file").write_text("")
    code, err = _main(["report", str(outcome.run_id), "--out", str(tmp_path / "a-file" / "inside")], capsys)
    assert code == 2 and "--out" in err and "cannot write there" in err, err


def test_a_template_cannot_run_code_or_read_outside_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The payloads would create a file and paste the system's password file into the prompt."""
    marker = tmp_path / "pwned"
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "run.j2").write_text(f"{{{{ cycler.__init__.__globals__.os.popen('touch {marker}').read() }}}}")
    (prompts / "attr.j2").write_text("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    os.symlink("/etc/passwd", prompts / "secret.j2")
    (prompts / "read.j2").write_text("{% include 'secret.j2' %}")
    (prompts / "import.j2").write_text("{% import 'secret.j2' as s %}{{ s }}")
    files = REPO / "tests" / "bad_inputs" / "files"
    monkeypatch.chdir(tmp_path)
    for name in ("run", "attr", "read", "import"):
        config = tmp_path / f"{name}.yaml"
        config.write_text(
            f"name: sandbox\ndataset: {{path: {files / 'ok.jsonl'}}}\nprompts: [prompts/{name}.j2]\n"
            "models: [local/lead]\nscorers: [rouge]\n"
        )
        code, err = _main(["run", str(config), "--no-tracking"], capsys)
        assert code == 2, err
        assert "root:" not in err  # nothing of the password file reached the message either
    assert not marker.exists()


def test_names_and_texts_print_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A model named like rich markup (`[/]x[bold`, which crashed the run) or an emoji code (`:b:`), and
    dataset text the warnings quote, print as written: no crash, no emoji, no lost brackets."""
    from harness.cli import main

    (tmp_path / "d.jsonl").write_text(
        '{"id": "a", "document": "The cat sat on the mat.", "reference": "cat mat"}\n'
        '{"id": "b", "document": "A dog ran far.", "reference": "dog ran"}\n'
    )
    (tmp_path / "p.j2").write_text("{{ document }}")
    (tmp_path / "e.yaml").write_text(
        'name: "exp [bold]:x:"\ndataset: {path: d.jsonl}\nprompts: [p.j2]\n'
        'models: [{model: local/lead, name: "[/]x[bold :b:"}, local/lead-2]\nscorers: [rouge]\n'
    )
    monkeypatch.chdir(tmp_path)
    code = main(["run", str(tmp_path / "e.yaml"), "--yes", "--no-tracking", "--no-cache"])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert "Traceback" not in out + err
    assert "[/]x[bold :b::p" in out and "exp [bold]:x:: results" in out
    assert "\N{NEGATIVE SQUARED LATIN CAPITAL LETTER B}" not in out and "\N{CROSS MARK}" not in out


def test_a_local_tracking_store_outside_the_project_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The config's `tracking_uri` names a file too (when MLFLOW_TRACKING_URI does not override it)."""
    outside = tmp_path / "outside.db"
    project = tmp_path / "project"
    shutil.copytree(REPO / "tests" / "bad_inputs" / "files", project / "files")
    config = project / "files" / "e.yaml"
    config.write_text((project / "files" / "good.yaml").read_text() + f"tracking_uri: sqlite:///{outside}\n")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.setenv("HARNESS_CACHE", str(project / "cache.sqlite"))
    monkeypatch.chdir(project)
    code, err = _main(["run", str(config), "--yes"], capsys)
    assert code == 2 and "tracking_uri" in err and "outside the project" in err, err
    assert not outside.exists() and not (project / "cache.sqlite").exists()
