"""Every code block of the README and of docs/ is checked, so the user guide stays true: YAML validates against the
schema, Jinja compiles in harness's environment, each `harness` command names a real subcommand and real
flags, every script it names exists, and the Python examples run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, write_project

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCKS = [
    block
    for page in PAGES
    for block in re.findall(r"^```(\w+)\n(.*?)^```", page.read_text(encoding="utf-8"), flags=re.MULTILINE | re.DOTALL)
]


def blocks(language: str) -> list[str]:
    return [body for lang, body in BLOCKS if lang == language]


def test_the_pages_link_to_each_other_and_have_the_blocks_this_test_reads() -> None:
    for page in PAGES:
        for target in re.findall(r"\]\(((?:docs/|\.\./)?[\w./-]+\.md)", page.read_text(encoding="utf-8")):
            assert (page.parent / target).resolve().is_file(), f"{page.name} links to {target}, which does not exist"
    assert len(blocks("yaml")) >= 5 and len(blocks("bash")) >= 5 and blocks("jinja") and blocks("python")


@pytest.mark.parametrize("body", blocks("yaml"), ids=lambda b: b.split("\n")[0][:40])
def test_yaml_blocks_validate(body: str) -> None:
    """A whole config validates as it is; a fragment (`gate:`, `routing:`, a policy) inside the main job's."""
    from harness.config import Experiment, PolicyConfig

    data = yaml.safe_load(body)
    if isinstance(data, list):
        for policy in data:
            PolicyConfig.model_validate(policy)
        return
    if "name" in data and "dataset" in data:
        Experiment.model_validate(data)
        return
    base: dict[str, Any] = yaml.safe_load((REPO / "experiments" / "summarize.yaml").read_text())
    Experiment.model_validate({**base, **data})


@pytest.mark.parametrize("body", blocks("jinja"), ids=lambda b: b.split("\n")[0][:40])
def test_jinja_blocks_compile(body: str) -> None:
    from harness.prompts import make_environment

    make_environment(REPO / "prompts").from_string(body)


def commands() -> list[list[str]]:
    lines = []
    for body in blocks("bash"):
        joined = re.sub(r"\\\n\s*", " ", body)
        for line in joined.splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                lines += [shlex.split(part) for part in line.split("&&")]
    return lines


def test_every_command_names_real_subcommands_flags_and_files() -> None:
    from harness.cli import _parser

    parser = _parser()
    subparsers = next(a for a in parser._actions if a.dest == "command" or (hasattr(a, "choices") and a.choices))
    choices: dict[str, Any] = subparsers.choices  # type: ignore[assignment]
    checked = 0
    for words in commands():
        if "harness" in words and "-m" in words:
            sub, *rest = words[words.index("harness") + 1 :]
            assert sub in choices, f"README runs `harness {sub}`, which is no subcommand"
            known = {s for action in choices[sub]._actions for s in action.option_strings}
            flags = {w.split("=")[0] for w in rest if w.startswith("--")}
            assert flags <= known, f"`harness {sub}` has no {flags - known}"
            checked += 1
        for word in words:
            if re.fullmatch(r"(scripts|benchmarks|experiments)/[\w./-]+\.(sh|py|yaml)", word) and "reviews" not in word:
                assert (REPO / word).is_file(), f"README names {word}, which does not exist"
    assert checked >= 8


@pytest.mark.slow
def test_python_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The API example runs end to end on the offline models in a fresh project; the custom scorer scores."""
    from tests.conftest import TERSE

    write_project(tmp_path, {"name": "unused"}, templates={"terse": TERSE})
    monkeypatch.chdir(tmp_path)
    api = next(b for b in blocks("python") if "harness.run(" in b)
    scorer = next(b for b in blocks("python") if "def length_under" in b)
    namespace: dict[str, Any] = {}
    exec(compile(api, "README api example", "exec"), namespace)
    assert namespace["outcome"].exit_code == 0 and namespace["decision"].exit_code in (0, 1, 3)
    exec(compile(scorer, "README scorer example", "exec"), namespace)
    from harness.datasets import Item

    score = namespace["length_under"](max_chars=5)
    assert score("short", Item(id="i", fields={})) == 1.0 and score("too long", Item(id="i", fields={})) == 0.0
