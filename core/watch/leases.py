"""The watcher's locks: its hold on its hosts' run locks, and its claim on its watches.

One run at a time per host is the rule between runflow processes (core/locks.py). A watcher
runs several at once on a host, so it takes the host's lock itself — when the first of its runs
there starts — and lets it go when the last one ends. Meanwhile another runflow command on that
host waits (--lock-timeout) or is refused, naming the watcher; while the watcher has nothing in
flight there, the host is free for others. When another process holds the lock, the watcher's
runs on that host wait for it. An SSH host's lock is taken on the host (core/ssh.py's
RemoteLock), as a run takes it.

The watcher owns each SSH host's connection for as long as it runs: its listener's event stream
(a socket forwarded over the master), its runs, their locks and its workers' warm-ups all go
over the same master, and no run closes it. When the master is lost (killed, the network gone),
the runs in flight stop on it, their steps in doubt, and the listener's stream ends. Only when
the watcher holds no lock over it is it replaced: as the next lock is taken, or as the listener
connects again; the listener then reconciles, and the runs in doubt are rolled back and made
again (core/watch/watcher.py).

A watch is followed by one watcher per journal: two would both start runs for each object.
The claim is an flock on HOME/watches/NAME.lock, held as long as the watcher runs; the kernel
lets go of it when the process dies.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import LockHeld
from ..hosts import Host, SshHost
from ..locks import Lock

POLL = 0.2  # seconds between tries while another process holds a lock


class Stopped(Exception):
    """The watcher stops: a run that waited for a lock is not started."""


class _Lease:
    def __init__(self) -> None:
        self.guard = threading.Lock()  # held while the lock is being taken or let go
        self.count = 0  # the watcher's runs in flight on the host
        self.lock: Lock | None = None


class HostLeases:
    """holder: how the lock file names the watcher (another command's refusal quotes it)."""

    def __init__(self, holder: str, log: Callable[[str], None]) -> None:
        self.holder = holder
        self.log = log
        self._mutex = threading.Lock()
        self._leases: dict[str, _Lease] = {}

    @contextmanager
    def held(self, host: Host, stop: threading.Event, timeout: float | None) -> Iterator[None]:
        """Hold the host's lock for the block. Waits while another process holds it: until
        `timeout` seconds have passed (then LockHeld; None: for ever) or `stop` is set (then
        Stopped)."""
        lease = self._lease(host)
        with lease.guard:
            if lease.count == 0:
                _reset_if_lost(host)
                lease.lock = self._take(host, stop, timeout)
            lease.count += 1
        try:
            yield
        finally:
            with lease.guard:
                lease.count -= 1
                if lease.count == 0 and lease.lock is not None:
                    lease.lock.release()
                    lease.lock = None

    def reconnect(self, host: Host) -> None:
        """Let a lost SSH connection to the host log in afresh at its next use (before a
        listener connects again), unless a run of the watcher holds the host's lock over it:
        that run stops on the lost connection first and lets go of the lock."""
        lease = self._lease(host)
        if not lease.guard.acquire(blocking=False):
            return  # a lock is being taken (that resets a lost connection itself) or let go
        try:
            if lease.count == 0:
                _reset_if_lost(host)
        finally:
            lease.guard.release()

    def _lease(self, host: Host) -> _Lease:
        with self._mutex:
            return self._leases.setdefault(host.key, _Lease())

    def _take(self, host: Host, stop: threading.Event, timeout: float | None) -> Lock:
        started, said = time.monotonic(), False
        while True:
            try:
                return host.lock(self.holder, 0)
            except LockHeld as exc:
                if timeout is not None and time.monotonic() - started >= timeout:
                    raise
                if not said:
                    self.log(f"{exc.args[0].split(';')[0]}: waiting for it")
                    said = True
            if stop.wait(POLL):
                raise Stopped()


def _reset_if_lost(host: Host) -> None:
    if isinstance(host, SshHost):
        host.connection.reset_if_lost()


class WatchClaim:
    """The flocks of a watcher's watches (see the module's docstring)."""

    def __init__(self, fds: list[int]) -> None:
        self._fds = fds

    def release(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []


def claim_watches(home: Path, names: list[str]) -> WatchClaim:
    """Claim the watches for this process, or raise LockHeld naming the watcher that has one."""
    folder = home / "watches"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    held: list[int] = []
    for name in sorted(names):
        fd = os.open(folder / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 100, 0).decode(errors="replace").strip() or "another process"
            WatchClaim([*held, fd]).release()
            raise LockHeld(f"watch {name} is followed already, by {holder}, with the journal "
                           f"in {home}: one watcher per watch and journal") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"runflow watch (pid {os.getpid()})".encode(), 0)
        held.append(fd)
    return WatchClaim(held)
