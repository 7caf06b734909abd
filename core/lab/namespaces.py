"""Network namespaces for the lab and the tests: create, wire, delete. Nothing here touches the
root namespace except creating and deleting the namespaces' own names under /run/netns."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from .processes import run_tool


def _ip(*argv: str) -> subprocess.CompletedProcess:
    return run_tool(["ip", *argv])


def unique_name(prefix: str = "rf") -> str:
    """A namespace name no other test or lab uses (at most 15 bytes, also usable for links)."""
    return f"{prefix[:7]}-{secrets.token_hex(3)}"


@dataclass
class Namespace:
    name: str

    @property
    def path(self) -> str:
        return f"/run/netns/{self.name}"

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def create(self) -> Namespace:
        _ip("netns", "add", self.name)
        try:
            self.run(["ip", "link", "set", "lo", "up"])
        except BaseException:
            self.delete()
            raise
        return self

    def delete(self) -> None:
        if self.exists():
            subprocess.run(["ip", "netns", "delete", self.name], capture_output=True)

    def run(self, argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess:
        """Run argv inside the namespace (with its own /sys, as `ip netns exec` gives); with
        check=True a failure raises ToolError carrying the tool's message."""
        return run_tool(["ip", "netns", "exec", self.name, *argv], check=check)

    def popen_argv(self, argv: Sequence[str]) -> list[str]:
        """argv prefixed to start a long-running program inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def nsenter_argv(self, argv: Sequence[str]) -> list[str]:
        """argv prefixed to enter only the network namespace (dockerd needs the host's
        /sys/fs/cgroup, which `ip netns exec` hides)."""
        return ["nsenter", f"--net={self.path}", *argv]


def root_is_mount_point() -> bool:
    """Whether / is a mount point, as `ip netns exec` and runflow's namespace hosts need (they
    make / a slave mount). Inside a chroot of a plain directory it is not."""
    try:
        with open("/proc/self/mountinfo") as mounts:
            return any(line.split()[4] == "/" for line in mounts)
    except OSError:  # no /proc: let the tools say what fails
        return True


def wire(a: Namespace, b: Namespace, a_if: str, b_if: str, *, mtu: int = 1600) -> None:
    """A veth pair from a to b (created in a, one end moved to b), both up, with an MTU."""
    a.run(["ip", "link", "add", a_if, "mtu", str(mtu), "type", "veth", "peer", "name", b_if,
           "mtu", str(mtu)])
    a.run(["ip", "link", "set", b_if, "netns", b.name])
    a.run(["ip", "link", "set", a_if, "up"])
    b.run(["ip", "link", "set", b_if, "up"])
