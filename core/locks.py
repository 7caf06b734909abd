"""One run at a time per host: an flock on $RUNFLOW_HOME/locks/<host key>.lock.

The lock file names the run and the pid that hold it, so a second run can say who is in its
way. flock is released by the kernel when the holder dies, so a killed run never leaves a
stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from .errors import LockHeld


class HostLock:
    def __init__(self, home: Path, host_key: str, host_name: str) -> None:
        self.dir = home / "locks"
        self.path = self.dir / f"{host_key}.lock"
        self.host_name = host_name
        self._fd: int | None = None

    def acquire(self, run_id: str, timeout: float = 0.0) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
                    os.close(fd)
                    waited = f" after waiting {timeout:g} s" if timeout else ""
                    raise LockHeld(f"host {self.host_name} is locked by run {holder}{waited}; "
                                   "wait for it to finish, or use --lock-timeout SECONDS")
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{run_id} (pid {os.getpid()})".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class HostLocks:
    """The locks of every host of a run, taken in a fixed order (no deadlock between runs)."""

    def __init__(self, home: Path, hosts: dict[str, str]) -> None:
        by_key = {key: name for name, key in hosts.items()}  # two names for one namespace
        self._locks = [HostLock(home, key, by_key[key]) for key in sorted(by_key)]

    def __enter__(self) -> HostLocks:
        return self

    def acquire(self, run_id: str, timeout: float) -> None:
        taken = []
        try:
            for lock in self._locks:
                lock.acquire(run_id, timeout)
                taken.append(lock)
        except BaseException:
            for lock in taken:
                lock.release()
            raise

    def __exit__(self, *exc: object) -> None:
        for lock in self._locks:
            lock.release()
