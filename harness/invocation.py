"""How the user started harness, so a printed next step is a command they can paste as it is.

`python -m harness ui` is wrong advice to someone who ran `.venv/bin/python -m harness run`: their
`python` may be another interpreter without harness.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def command() -> str:
    """`harness` when the console script ran, else `<interpreter> -m harness`, the interpreter named as
    the user would type it: relative inside the working folder (`.venv/bin/python`), bare when it is the
    one on PATH, else in full."""
    if sys.argv and Path(sys.argv[0]).name == "harness":
        return "harness"
    python = Path(sys.executable)
    try:
        inside = python.absolute().relative_to(Path.cwd().absolute())
    except ValueError:
        inside = None
    if inside is not None:
        shown = str(inside)
    elif (found := shutil.which(python.name)) is not None and Path(found).resolve() == python.resolve():
        shown = python.name
    else:
        shown = str(python)
    return f"{shown} -m harness"
