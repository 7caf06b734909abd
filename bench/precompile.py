"""runflow's modules compiled to bytecode before a benchmark times it, as pip leaves a package
it installs. An editable install leaves them as source, and where PYTHONDONTWRITEBYTECODE is
set (some shells and containers set it) the import system never writes the compiled files:
every runflow process would then compile its modules again, 50-150 ms of each run."""

from __future__ import annotations

import subprocess
import sys

_COMPILE = """
import compileall, runflow.backends, runflow.core
for package in (runflow.core, runflow.backends):
    for path in package.__path__:
        if not compileall.compile_dir(path, quiet=1):
            raise SystemExit(f"cannot compile {path}")
"""


def compile_runflow(python: str = sys.executable) -> None:
    """Compile the runflow that `python -m runflow.core.cli` runs."""
    subprocess.run([python, "-c", _COMPILE], check=True)
