"""Fixtures for the engine's tests: workflows of file steps served by the files test backend."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, runflow_argv

FILES_PLUGIN = REPO / "tests" / "plugins" / "files_backend.py"


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def workflow_text(steps: list[dict[str, Any]], variables: dict[str, Any] | None = None,
                  name: str = "test") -> str:
    lines = ["[workflow]", f"name = {toml_value(name)}", "", "[vars]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in (variables or {}).items()]
    for step in steps:
        lines += ["", "[[steps]]"] + [f"{k} = {toml_value(v)}" for k, v in step.items()]
    return "\n".join(lines) + "\n"


class FileWorkflow:
    """A directory the steps change, and helpers to write workflows about it and inspect it."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path / "state"
        self.dir.mkdir()
        self.tmp = tmp_path

    def step(self, step_id: str, content: str | None = None, **extra: Any) -> dict[str, Any]:
        return {"id": step_id, "action": "file.present", "dir": str(self.dir), "name": step_id,
                "content": content if content is not None else f"{step_id} content", **extra}

    def write(self, steps: list[dict[str, Any]], name: str = "wf.toml", **kw: Any) -> Path:
        path = self.tmp / name
        path.write_text(workflow_text(steps, **kw))
        return path

    def files(self) -> dict[str, str]:
        return {p.name: p.read_text() for p in sorted(self.dir.iterdir()) if p.name != ".log"}

    def log(self) -> list[str]:
        log = self.dir / ".log"
        return log.read_text().splitlines() if log.exists() else []

    def fault(self, marker: str) -> Path:
        path = self.dir / marker
        path.write_text("")
        return path


@pytest.fixture(autouse=True)
def lock_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Host locks of this test's own: the local host's lock is machine-wide (/run/runflow), and
    other test runs on this machine run workflows on the local host too."""
    path = tmp_path / "locks"
    monkeypatch.setenv("RUNFLOW_LOCK_DIR", str(path))
    return path


@pytest.fixture
def fw(tmp_path: Path) -> FileWorkflow:
    return FileWorkflow(tmp_path)


@pytest.fixture
def rf(runflow):
    """runflow with the files test backend loaded from its file."""

    def call(*args: str, **kwargs):
        return runflow(*args, "--plugin", str(FILES_PLUGIN), **kwargs) if args and args[0] in (
            "run", "plan", "validate", "resume", "rollback", "backends") else runflow(*args,
                                                                                      **kwargs)

    return call


def read_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def start(runflow_home: Path, *args: Any, env: dict[str, str] | None = None,
          **popen: Any) -> subprocess.Popen:
    """Start runflow with the files test backend, in the background (text, captured)."""
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen([*runflow_argv(), *map(str, args), "--plugin", str(FILES_PLUGIN)],
                            text=True, env={**os.environ, "RUNFLOW_HOME": str(runflow_home),
                                            **(env or {})}, **popen)


def wait_for(predicate: Callable[[], bool], proc: subprocess.Popen,
             timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
