"""A two-host lab whose hosts are reached only over SSH (`runflow lab up --ssh`), shared by a
module's tests: a real sshd in each host's namespace, the real OpenSSH client, host keys
checked strictly against the lab's known_hosts."""

from __future__ import annotations

import os
import secrets
import subprocess
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from tests.conftest import missing_prerequisite, need_tools
from tests.integration.lab.conftest import LabUnderTest


class SshLab(LabUnderTest):
    @property
    def inventory(self) -> Path:
        return self.dir / "inventory.toml"

    def host_table(self, host: str) -> dict[str, Any]:
        return tomllib.loads(self.inventory.read_text())["hosts"][host]

    def inventory_with(self, path: Path, host: str, **changes: Any) -> Path:
        """A copy of the lab's inventory with some keys of one host changed."""
        data = tomllib.loads(self.inventory.read_text())
        data["hosts"][host].update(changes)
        path.write_text(tomli_w.dumps(data))
        return path

    def ssh_processes(self, runflow_pid: int) -> dict[str, int]:
        """The ssh master of each host of a runflow process: {destination: pid}."""
        masters = {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == runflow_pid and argv[:2] == ["ssh", "-M"]:
                masters[argv[argv.index("--") + 1]] = int(pid)
        return masters


@pytest.fixture(scope="module")
def ssh_lab() -> Iterator[SshLab]:
    if os.geteuid() != 0:
        missing_prerequisite("needs root")
    need_tools("ip", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "dockerd", "iptables-save",
               "brctl", "busybox", "nsenter", "ssh", "ssh-keygen", "/usr/sbin/sshd", "ethtool",
               "flock")
    root = Path(tempfile.mkdtemp(prefix="rfs", dir="/tmp"))
    lab = SshLab(root / "lab", root / "home", f"rs{secrets.token_hex(2)}")
    up = lab.runflow("lab", "up", "--ssh", "--prefix", lab.prefix)
    try:
        assert up.returncode == 0, up.stderr
        yield lab
    finally:
        lab.runflow("lab", "down")
        left = [pid for pid in filter(str.isdigit, os.listdir("/proc"))
                if str(root) in _title(pid)]
        subprocess.run(["rm", "-rf", "--one-file-system", str(root)])
    assert not left, f"lab down left processes of the lab running: {left}"


def _title(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""
