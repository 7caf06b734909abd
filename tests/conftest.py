"""Shared test policy.

Integration tests (marked `root`) need root and real tools. A developer without them gets a
skip; in CI (CI=true) nothing may be skipped for lack of a prerequisite: it is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.interpreter import pytest_cmdline_main  # noqa: F401  (runs the tests in .venv)

IN_CI = os.environ.get("CI") == "true"
REPO = Path(__file__).resolve().parent.parent


def missing_prerequisite(why: str) -> None:
    """Skip locally, fail in CI."""
    if IN_CI:
        pytest.fail(f"prerequisite missing in CI: {why}", pytrace=False)
    pytest.skip(why)


def need_tools(*names: str) -> None:
    for name in names:
        if shutil.which(name) is None:
            missing_prerequisite(f"{name} is not installed")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") and os.geteuid() != 0:
        missing_prerequisite("needs root")


def runflow_argv() -> list[str]:
    """The runflow command of the Python running the tests."""
    return [sys.executable, "-m", "runflow.core.cli"]


@pytest.fixture
def runflow_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("RUNFLOW_HOME", str(home))
    return home


@pytest.fixture
def runflow(runflow_home: Path):
    """Run the real command line: runflow(*args) → CompletedProcess (text, captured)."""

    def call(*args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
        env = {**os.environ, "RUNFLOW_HOME": str(runflow_home), **kwargs.pop("env", {})}
        return subprocess.run([*runflow_argv(), *map(str, args)], capture_output=True,
                              text=True, timeout=timeout, env=env, **kwargs)

    return call
