"""Daemons the lab started, stopped by their pid — never by name, never someone else's — and the
tools the lab runs, whose errors carry the tool's own message."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path


class ToolError(subprocess.CalledProcessError):
    """A tool the lab ran failed. Unlike CalledProcessError's message ("returned non-zero exit
    status 255"), this one says what the tool said: `ip netns exec` in a chroot, for example,
    fails with "mount --make-rslave / failed: Invalid argument"."""

    def __str__(self) -> str:
        said = (self.stderr or self.stdout or "").strip() or "(no output)"
        return f"{shlex.join(map(str, self.cmd))} exited {self.returncode}: {said}"


def run_tool(argv: Sequence[str], *, check: bool = True,
             **kwargs) -> subprocess.CompletedProcess:
    """Run argv (output captured, as text); with check=True a failure raises ToolError."""
    done = subprocess.run(list(argv), capture_output=True, text=True, **kwargs)
    if check and done.returncode != 0:
        raise ToolError(done.returncode, done.args, done.stdout, done.stderr)
    return done


def alive(pid: int) -> bool:
    """True while pid runs (a zombie waiting to be reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def command_line(pid: int) -> list[str]:
    """The argv pid runs with ([] once it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode(errors="replace").split("\0")[:-1]


def runs_with(pid: int, *args: str) -> bool:
    """pid is alive and its argv holds args one after the other: how the lab tells its own
    daemon from whatever process a stale pid file or a reused pid now names."""
    if not alive(pid):
        return False
    argv, n = command_line(pid), len(args)
    return any(argv[i:i + n] == list(args) for i in range(len(argv) - n + 1))


def pids_running_with(*args: str) -> list[int]:
    """Every process whose argv holds args one after the other. With args that name a state
    directory of the lab's own (a socket under it), these are daemons the lab started: how it
    finds one whose start was interrupted before its pid was recorded anywhere."""
    return [int(pid) for pid in os.listdir("/proc") if pid.isdigit() and runs_with(int(pid), *args)]


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def write_pid(pidfile: Path, pid: int) -> None:
    """Write pidfile whole or not at all (a reader never sees it half-written)."""
    partial = pidfile.with_name(pidfile.name + ".new")
    partial.write_text(f"{pid}\n")
    os.replace(partial, pidfile)


def stop_pid(pid: int, timeout: float = 20) -> None:
    """SIGTERM, then SIGKILL after timeout; returns when the process is gone."""
    if not alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
        time.sleep(0.02)
    try:  # our own child: reap it (a daemon started by an earlier command is reaped by init)
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
