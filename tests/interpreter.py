"""Which Python runs the tests.

`python3 -m pytest` may start a python3 that cannot import this checkout's runflow: Debian's
and Ubuntu's python3 hold only what their packages give (PEP 668), and another python3 may have
runflow installed from elsewhere. tests/install-deps.sh installs this checkout editable into
its own .venv; pytest, started by such a python3, hands the whole run over to .venv's Python
with the same arguments, before it collects anything.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv"


def imports_this_checkout() -> bool:
    try:
        spec = importlib.util.find_spec("runflow.core")
    except ModuleNotFoundError:
        return False
    return spec is not None and spec.origin is not None and \
        Path(spec.origin).resolve().is_relative_to(REPO)


def pytest_cmdline_main(config: pytest.Config) -> None:
    python = VENV / "bin" / "python"
    in_venv = Path(sys.prefix).resolve() == VENV.resolve()
    if imports_this_checkout() or in_venv or not python.exists():
        return
    # Output capture is suspended here: the new process writes to the real stdout/stderr.
    os.execv(python, [str(python), "-m", "pytest", *config.invocation_params.args])
