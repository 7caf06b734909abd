"""runflow installed as a user installs it: a fresh venv with `pip install` of this checkout
(not editable), so that a benchmark times runflow the way it is run. The interpreter running a
benchmark may carry much else: an editable install's import hook, `.pth` files of other
packages that run in every process, and a hundred distributions whose entry points each plugin
scan (pluggy's, pydantic's) reads — on this machine's default interpreter those cost a run of
runflow 0.1 s more than the same interpreter's venv."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def install_runflow(venv: Path, base_python: str = sys.executable) -> str:
    """Make a venv of base_python at `venv`, install this checkout into it and return the
    venv's interpreter. pip takes runflow's dependencies from the package index."""
    subprocess.run([base_python, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python3")
    done = subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                           str(REPO)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"cannot install runflow into a venv at {venv}: "
                         f"{done.stderr.strip()[-800:]}\n(pip needs the package index for "
                         "runflow's dependencies; --python INTERPRETER runs an installed "
                         "runflow instead)")
    return python


# sys._base_executable: for a venv's interpreter, the one the venv was made of.
_WHICH = """
import os, platform, sys
base = getattr(sys, "_base_executable", sys.executable)
print(f"Python {platform.python_version()} ({os.path.realpath(base)})")
"""


def interpreter(python: str) -> str:
    """Which Python an interpreter is (its version and, for a venv's, the interpreter the venv
    was made of): the build matters, see the README's "Tests and benchmarks"."""
    return subprocess.run([python, "-c", _WHICH], capture_output=True, text=True,
                          check=True).stdout.strip()
