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
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from .errors import CommandError, InputError

if TYPE_CHECKING:
    from .locks import FileLock
    from .ssh import Connection, RemoteLock


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

    # False: the control process shares this host's kernel and files (backends may open its
    # netlink sockets, /proc and /sys); True: only commands reach it (see SshHost).
    remote: ClassVar[bool] = False

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

    def connect(self) -> None:
        """Open what reaching the host takes (an SSH connection); raise HostUnreachable.
        Called for every host of a run in parallel before its first step."""

    def close(self) -> None:
        """Close what connect opened."""

    def service_address(self, address: str) -> str:
        """The address at which a client in this process reaches a service that listens at
        `address` as the host sees it (an OVSDB or docker endpoint): the same one here; for
        an SSH host, a unix socket there is forwarded to one here."""
        return address

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

    def run_many(self, argvs: Sequence[Sequence[str]], *, timeout: float | None = None
                 ) -> list[Completed]:
        """Run several argv lists one after the other, each whatever the previous one's exit
        status (no CommandError: the caller reads each returncode). Over SSH they go in one
        round trip; here they are simply run."""
        return [self.run(argv, check=False, timeout=timeout) for argv in argvs]

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


@dataclass
class SshHost(Host):
    """A machine reached with the system's OpenSSH client (core/ssh.py): commands only — no
    netlink socket, /proc or /sys of the control machine is the host's."""

    ssh: str = ""  # destination: [user@]host, or an alias of ~/.ssh/config
    ssh_port: int | None = None
    ssh_identity: str | None = None
    ssh_options: list[str] = field(default_factory=list)
    _connection: Connection | None = field(default=None, init=False, repr=False,
                                           compare=False)

    remote: ClassVar[bool] = True

    @property
    def key(self) -> str:
        return f"ssh-{self.ssh}" + (f":{self.ssh_port}" if self.ssh_port else "")

    def where(self) -> str:
        return f"{self.ssh} over SSH"

    @property
    def connection(self) -> Connection:
        if self._connection is None:
            from .ssh import Connection

            self._connection = Connection(self)
        return self._connection

    def check_reachable(self) -> None:
        """Begin connecting (in the background: the plan is built meanwhile); whether the
        host can be reached is known when the run connects (connect, before any lock)."""
        self.connection.start()

    def connect(self) -> None:
        self.connection.open()

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()

    def lock(self, run_id: str, timeout: float) -> RemoteLock:
        """The host's run lock, on the host: an flock there held by a session of the master
        connection for as long as this process lives (core/ssh.py)."""
        from .ssh import RemoteLock

        return RemoteLock(self.connection).acquire(run_id, timeout)

    def service_address(self, address: str) -> str:
        """A unix socket of the host, forwarded over the master connection to one here (in
        the same syntax); a tcp:/ssl: endpoint is reached directly, as the inventory says."""
        for prefix in ("unix://", "unix:"):
            if address.startswith(prefix):
                return prefix + str(self.connection.forward(address.removeprefix(prefix)))
        return address

    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        check: bool = True,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Completed:
        """Run argv on the host: quoted word by word for its /bin/sh, with LC_ALL=C."""
        from .ssh import run_remote

        return run_remote(self.connection, argv, input=input, env=env, timeout=timeout,
                          check=check)

    def run_many(self, argvs: Sequence[Sequence[str]], *, timeout: float | None = None
                 ) -> list[Completed]:
        """One session, one round trip, for all of them."""
        argvs = [[str(a) for a in argv] for argv in argvs]
        if not argvs:
            return []
        try:
            results = self.connection.run_many(argvs, timeout)
        except subprocess.TimeoutExpired:
            raise CommandError(argvs[0], 124, f"a batch of {len(argvs)} commands timed out "
                               f"after {timeout} s", self.name) from None
        return [Completed(argv, code, out, err) for argv, (code, out, err) in zip(argvs, results)]
