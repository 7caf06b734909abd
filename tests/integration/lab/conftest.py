"""A two-host lab (runflow lab up) shared by the tests of a module, and host snapshots:
links, addresses, routes, bridge ports, iptables, sysctls, OVSDB, docker's config files and
containers."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, missing_prerequisite, need_tools, runflow_argv
from tests.support.ovsdb_snapshot import ovsdb_snapshot
from tests.support.snapshot import settled

WORKFLOWS = REPO / "workflows"


@dataclass
class LabUnderTest:
    dir: Path
    home: Path
    prefix: str

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "RUNFLOW_LAB": str(self.dir), "RUNFLOW_HOME": str(self.home)}

    def runflow(self, *args: Any, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run([*runflow_argv(), *map(str, args)], capture_output=True,
                              text=True, env=self.env, timeout=timeout)

    def start(self, *args: Any) -> subprocess.Popen:
        return subprocess.Popen([*runflow_argv(), *map(str, args)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=self.env)

    def state(self) -> dict[str, Any]:
        return json.loads((self.dir / "lab.json").read_text())

    def snapshot(self) -> dict[str, Any]:
        """Every host's state (both hosts, as one comparable value)."""
        result = {}
        for host in self.state()["hosts"]:
            host_dir = Path(host["dir"])
            docker = host_dir / "docker"
            containers = subprocess.run(
                ["docker", "-H", f"unix://{docker / 'docker.sock'}", "ps", "-a",
                 "--format", "{{.Names}}"], capture_output=True, text=True)
            result[host["name"]] = {
                "netns": settled(host["netns"]),
                "ovsdb": ovsdb_snapshot(f"unix:{host_dir / 'ovs' / 'db.sock'}"),
                "daemon.json": (docker / "daemon.json").read_text(),
                "sysconfig": (docker / "sysconfig").read_text(),
                # a dead dockerd is a difference to report, not a reason to stop looking
                "containers": (sorted(containers.stdout.split()) if containers.returncode == 0
                               else "dockerd does not answer"),
            }
        return result


def _need_lab_tools() -> None:
    need_tools("ip", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "dockerd", "docker",
               "iptables-save", "brctl", "busybox", "nsenter")


@contextmanager
def lab_up() -> Iterator[LabUnderTest]:
    """A two-host lab for as long as the block runs (for fixtures of any scope)."""
    if os.geteuid() != 0:
        missing_prerequisite("needs root")
    _need_lab_tools()
    root = Path(tempfile.mkdtemp(prefix="rfl", dir="/tmp"))
    under_test = LabUnderTest(root / "lab", root / "home", f"rl{secrets.token_hex(2)}")
    up = under_test.runflow("lab", "up", "--prefix", under_test.prefix)
    try:
        assert up.returncode == 0, up.stderr
        yield under_test
    finally:
        under_test.runflow("lab", "down")
        subprocess.run(["rm", "-rf", "--one-file-system", str(root)])


@pytest.fixture(scope="module")
def lab() -> Iterator[LabUnderTest]:
    with lab_up() as under_test:
        yield under_test


def run_id(done: subprocess.CompletedProcess) -> str:
    """The run id from the first progress line ("run ID: ...")."""
    return done.stderr.split()[1].rstrip(":")


def events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]
