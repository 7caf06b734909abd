"""Locks: one run at a time per host, and which runs a live process is driving.

The host lock belongs to the host, not to the journal: two runflow processes with different
$RUNFLOW_HOME must still take turns on a host. A host takes its own lock (`Host.lock`); the
local host and network-namespace hosts do it with an flock on a file of the machine's, under
/run/runflow/ (`local.lock`, `netns-NAME.lock`), which names the run and the pid that hold it,
so that a second run can say who is in its way. The kernel releases an flock when its holder
dies, so a killed run never leaves a stale lock behind; a released lock removes its file.

An SSH host's lock lives on the remote machine, on the same file a runflow there would take,
held by a session of the run's master connection (core/ssh.py, RemoteLock). Before the locks,
every SSH host of the run is connected, in parallel: one that cannot be reached stops the run
before anything changes anywhere.

A run's activity mark is an flock on HOME/active/RUN, held by the process that drives the run
(run, resume, rollback): a run the journal calls pending, running or rolling back while nobody
holds its mark was interrupted (the process was killed, or the machine went down).
"""

from __future__ import annotations

import fcntl
import os
import stat
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .errors import InputError, LockHeld

if TYPE_CHECKING:
    from .hosts import Host


class Lock(Protocol):
    """A held host lock (FileLock here, RemoteLock for an SSH host)."""

    def release(self) -> None: ...

MACHINE_LOCKS = Path("/run/runflow")


def lock_dir() -> Path:
    """Where this machine's hosts keep their run locks: /run/runflow as root. Another user
    cannot write there, and changes little: its locks are its own ($XDG_RUNTIME_DIR/runflow,
    or /tmp/runflow-UID).
    $RUNFLOW_LOCK_DIR moves them, for a test that must not meet other runs of this machine:
    runs that use different ones do not exclude each other."""
    if env := os.environ.get("RUNFLOW_LOCK_DIR"):
        return Path(env)
    if os.geteuid() == 0:
        return MACHINE_LOCKS
    if runtime := os.environ.get("XDG_RUNTIME_DIR"):
        return Path(runtime) / "runflow"
    return Path(f"/tmp/runflow-{os.geteuid()}")


def _own_directory(path: Path) -> None:
    """Make path a directory of this user's, or refuse one that is someone else's (a shared
    /tmp: another user could have made it, to see or take the locks)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise InputError(f"the lock directory {path} is not a directory of this user's "
                         f"(uid {os.geteuid()}); remove it, or set RUNFLOW_LOCK_DIR")


class FileLock:
    """An exclusive flock on a file that names its holder."""

    def __init__(self, path: Path, host_name: str) -> None:
        self.path = path
        self.host_name = host_name
        self._fd: int | None = None

    def acquire(self, run_id: str, timeout: float = 0.0) -> FileLock:
        _own_directory(self.path.parent)
        deadline = time.monotonic() + timeout
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                if time.monotonic() >= deadline:
                    waited = f" after waiting {timeout:g} s" if timeout else ""
                    raise LockHeld(f"host {self.host_name} is locked by run {holder}{waited}; "
                                   "wait for it to finish, or use --lock-timeout SECONDS")
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
                continue
            if _same_file(fd, self.path):
                break
            os.close(fd)  # its holder removed it as we opened it: take the one there now
        self._fd = fd
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{run_id} (pid {os.getpid()})".encode(), 0)
        except OSError:  # a full /run: the lock holds all the same, its file names nobody
            pass
        return self

    def release(self) -> None:
        if self._fd is not None:
            # Removed while held, so that a waiter holding the old file sees it is gone
            # (_same_file) instead of taking a lock nobody else can see.
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


class HostLocks:
    """The locks of every host of a run, taken in a fixed order (no deadlock between runs).
    SSH hosts are connected first, all at once; their locks, each a round trip away, are
    tried all at once too, and only when one is held and the run may wait are they taken
    one by one in that order."""

    def __init__(self, hosts: Iterable[Host]) -> None:
        self._all = list(hosts)
        by_key = {host.key: host for host in self._all}  # two inventory names, one namespace
        self._hosts = [by_key[key] for key in sorted(by_key)]
        self._held: list[Lock] = []

    def __enter__(self) -> HostLocks:
        return self

    def acquire(self, run_id: str, timeout: float) -> None:
        try:
            remote = [h for h in self._hosts if h.remote]
            if remote:
                from .ssh import connect_all

                connect_all(remote)
            for host in self._hosts:
                if not host.remote:
                    self._held.append(host.lock(run_id, timeout))
            self._lock_remote(remote, run_id, timeout)
        except BaseException:
            self.release()
            raise

    def _lock_remote(self, hosts: list[Host], run_id: str, timeout: float) -> None:
        if not hosts:
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(32, len(hosts))) as pool:
            futures = [pool.submit(host.lock, run_id, 0.0) for host in hosts]
            taken, errors = [], []
            for future in futures:
                try:
                    taken.append(future.result())
                except BaseException as exc:
                    errors.append(exc)
        self._held += taken
        if not errors:
            return
        if timeout <= 0 or not all(isinstance(e, LockHeld) for e in errors):
            raise errors[0]
        for lock in taken:  # wait in order, as for local hosts
            self._held.remove(lock)
            lock.release()
        for host in hosts:
            self._held.append(host.lock(run_id, timeout))

    def release(self) -> None:
        """Release every lock, then close the hosts' connections. An SSH host's lock and
        connection each end with a round trip (the remote side confirms): all hosts at once,
        or 32 hosts would wait for 64 of them one after the other."""
        held, self._held = self._held, []
        remote = [h for h in self._all if h.remote]
        if not remote:
            for lock in reversed(held):
                lock.release()
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(32, len(held) + len(remote))) as pool:
            list(pool.map(lambda lock: lock.release(), held))
            list(pool.map(lambda host: host.close(), remote))

    def __exit__(self, *exc: object) -> None:
        self.release()


def _activity_path(home: Path, run_id: str) -> Path:
    return home / "active" / run_id


class RunActivity:
    """The mark of a run that this process drives (see the module's docstring)."""

    def __init__(self, home: Path, run_id: str) -> None:
        self.path = _activity_path(home, run_id)
        self._fd: int | None = None

    def __enter__(self) -> RunActivity:
        try:
            self.path.parent.mkdir(mode=0o700, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:  # a full disk: the run goes on; `runflow runs` may call it interrupted
            return self
        fcntl.flock(self._fd, fcntl.LOCK_EX)  # a prober holds it for microseconds at most
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None


def run_is_driven(home: Path, run_id: str) -> bool:
    """Does a live process hold the run's activity mark?"""
    try:
        fd = os.open(_activity_path(home, run_id), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
