"""Hosts: where steps run. A host runs argv lists (never shell strings) and tells backends how
to reach its services.

A network-namespace host is entered once per worker thread: `enter()` moves the calling thread
into the namespace (setns) and gives it a private mount namespace with a fresh /sys, which is
what `ip netns exec` does for a whole process (and the machine's /sys/fs/cgroup, which it
does not keep). Every program the thread starts, every netlink
socket it opens and every /sys or /proc/sys/net file it reads then belongs to the namespace, at
the cost of a plain fork+exec per command.
"""

from __future__ import annotations

import ctypes
import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from .errors import CommandError, InputError

if TYPE_CHECKING:
    from .locks import FileLock


def tools_missing(*tools: str) -> str | None:
    """Why a backend that runs these programs cannot run here: the first one not installed
    (on this machine's PATH), or None."""
    for tool in tools:
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


class Completed(NamedTuple):
    """What a command returned. (A NamedTuple: a frozen dataclass generates its methods with
    exec, ~1 ms of every command's start-up.)"""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


@dataclass
class Host:
    """The local host. Subclasses change where commands run, not how they are called."""

    name: str = "local"
    vars: dict[str, Any] = field(default_factory=dict)
    # How backends reach this host's services, e.g. {"ovsdb": "unix:/x/db.sock",
    # "docker": "unix:///x/docker.sock"}; absent keys mean the service's default.
    endpoints: dict[str, str] = field(default_factory=dict)
    # The rest of the host's inventory table, for plugins with settings of their own.
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Identifies the machine (or namespace) for the run lock."""
        return "local"

    def lock(self, run_id: str, timeout: float) -> FileLock:
        """Take this host's run lock for run_id (one run at a time per host, whatever journal
        each run writes), waiting up to timeout seconds; raise LockHeld naming the holder.
        The lock lives where the host is: for this machine and its namespaces a file under
        /run/runflow (core/locks.py); a remote host takes it on the remote machine."""
        from .locks import FileLock, lock_dir

        return FileLock(lock_dir() / f"{self.key}.lock", self.name).acquire(run_id, timeout)

    def where(self) -> str:
        return "the local host"

    def check_reachable(self) -> None:
        """Raise InputError if the host cannot be used at all (before anything is touched)."""

    def enter(self) -> None:
        """Called once in the worker thread that runs this host's steps."""

    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        check: bool = True,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Completed:
        """Run argv on this host. With check=True a non-zero exit raises CommandError."""
        argv = [str(a) for a in argv]
        try:
            proc = subprocess.run(
                argv,
                input=input,
                capture_output=True,
                text=True,
                env={**os.environ, **env} if env else None,
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError:
            raise CommandError(argv, 127, f"{argv[0]}: command not found", self.name) from None
        except subprocess.TimeoutExpired:
            raise CommandError(argv, 124, f"timed out after {timeout} s", self.name) from None
        done = Completed(argv, proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise CommandError(argv, proc.returncode, proc.stderr or proc.stdout, self.name)
        return done

    def shell_prefix(self) -> list[str]:
        """How to run a command on this host from a root shell on the machine (for `plan`)."""
        return []

    def describe(self, argv: Sequence[str]) -> str:
        return shlex.join([*self.shell_prefix(), *map(str, argv)])


_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET = 0x40000000
_CLONE_NEWNS = 0x00020000
_MS_BIND = 0x1000
_MS_REC = 0x4000
_MS_SLAVE = 0x80000


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


@dataclass
class NetnsHost(Host):
    """A named network namespace (/run/netns/NAME) on this machine."""

    netns: str = ""

    @property
    def key(self) -> str:
        return f"netns-{self.netns}"

    def where(self) -> str:
        return f"network namespace {self.netns}"

    @property
    def path(self) -> str:
        return f"/run/netns/{self.netns}"

    def check_reachable(self) -> None:
        if not os.path.exists(self.path):
            raise InputError(
                f"network namespace {self.netns!r} does not exist ({self.path}); create it "
                "(ip netns add) or bring the lab up (runflow lab up)",
                field=f"hosts.{self.name}.netns",
            )

    def enter(self) -> None:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            _check(_libc.setns(fd, _CLONE_NEWNET), f"setns {self.path}")
        finally:
            os.close(fd)
        # A private mount namespace for this thread only, so that /sys can show this
        # namespace's devices (sysfs always shows the namespace of whoever mounted it). The
        # new sysfs goes on top of the old one, and the machine's cgroup tree is bound back
        # under it: programs started from here (dockerd, systemctl) need /sys/fs/cgroup, which
        # `ip netns exec` hides.
        _check(_libc.unshare(_CLONE_NEWNS), "unshare mount namespace")
        _check(_libc.mount(b"none", b"/", None, _MS_REC | _MS_SLAVE, None), "make / a slave")
        cgroup = os.open("/sys/fs/cgroup", os.O_PATH | os.O_DIRECTORY) if os.path.isdir(
            "/sys/fs/cgroup") else None
        try:
            _check(_libc.mount(self.netns.encode(), b"/sys", b"sysfs", 0, None), "mount /sys")
            if cgroup is not None:
                _check(_libc.mount(f"/proc/self/fd/{cgroup}".encode(), b"/sys/fs/cgroup", None,
                                   _MS_BIND | _MS_REC, None), "bind /sys/fs/cgroup")
        finally:
            if cgroup is not None:
                os.close(cgroup)

    def shell_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns]
