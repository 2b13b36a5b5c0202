"""The import contracts catch what they exist for, by every route: a test plants each forbidden import in a
copy of the package and expects `lint-imports` to fail, then checks the real tree passes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

LINT = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=300)


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    shutil.copytree(REPO / "harness", root / "harness", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


@pytest.mark.slow
def test_the_tree_keeps_every_contract(tmp_path: Path) -> None:
    result = _lint(_copy(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:]


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        # through the providers package, which once re-exported the call and hid it from the contract
        ("runner", "from harness.providers.call import call_model", "Only the model pool calls models"),
        ("runner", "from harness.providers import call_model", "Only the model pool calls models"),
        ("scorers/text", "import harness.providers.call", "Only the model pool calls models"),
        ("config", "import harness.workflow", "The wings, top to bottom"),
        ("tracking/store", "import harness.api", "The wings, top to bottom"),
        ("decision", "import harness.pool", "Analysis, statistics and pricing are pure"),
    ],
    ids=["runner-call", "runner-re-export", "scorer-call", "config-workflow", "tracking-api", "decision-pool"],
)
@pytest.mark.slow
def test_a_planted_import_breaks_its_contract(tmp_path: Path, module: str, line: str, contract: str) -> None:
    root = _copy(tmp_path)
    _plant(root, module, line)
    if module == "runner" and "providers import" in line:  # the re-export route: the package hands it on
        _plant(root, "providers/__init__", "from harness.providers.call import call_model")
    result = _lint(root)
    assert result.returncode != 0, result.stdout[-3000:]
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, result.stdout[-3000:]


def _plant(root: Path, module: str, line: str) -> None:
    path = root / "harness" / f"{module}.py"
    text = path.read_text()
    head, found, rest = text.partition("from __future__ import annotations\n")
    path.write_text(f"{head}{found}{line}  # noqa\n{rest}" if found else f"{line}  # noqa\n{text}")


def test_there_is_no_import_cycle() -> None:
    """No two harness modules import each other, even through others or only for type checking."""
    import grimp

    graph = grimp.build_graph("harness", exclude_type_checking_imports=False, cache_dir=None)
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if imported != module and graph.chain_exists(importer=imported, imported=module):
                cycles.append((module, imported))
    assert cycles == [], cycles[:5]


START_UP_IMPORTS = {
    ("harness/cli.py", "_dispatch"),  # the commands, loaded once a command is chosen: `--help` stays light
    ("harness/tracking/job.py", "import_logging"),  # the tracking launcher warms what its forks inherit
}
"""Where a harness module may import another inside a function (docs/architecture.md, the layers)."""


def test_harness_modules_import_each_other_at_the_top() -> None:
    """An import inside a function hides a dependency from the reader and from the contracts; the only
    ones kept are the start-up costs documented in docs/architecture.md."""
    import ast

    found = set()
    for path in sorted((REPO / "harness").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                names = (
                    [node.module or ""]
                    if isinstance(node, ast.ImportFrom) and node.level == 0
                    else [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else []
                )
                if (isinstance(node, ast.ImportFrom) and node.level > 0) or any(
                    n == "harness" or n.startswith("harness.") for n in names
                ):
                    found.add((path.relative_to(REPO).as_posix(), function.name))
    assert found == START_UP_IMPORTS
