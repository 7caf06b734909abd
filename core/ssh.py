"""SSH hosts: a remote machine reached with the system's OpenSSH client.

Why the system's client: the user's ~/.ssh/config, agents, ProxyJump, bastions and
known_hosts must work exactly as they do for `ssh`, and the remote side needs nothing but its
sshd and /bin/sh (a CentOS 6 host has no Python 3).

One master connection per host and runflow command (`ssh -M`, ControlPersist=no,
BatchMode=yes), started as a child process with its control socket in a 0700 directory under
$RUNFLOW_HOME. Its remote command is `cat` reading the master's standard input, a pipe only
this process holds: when runflow ends, however it ends, the pipe closes, the remote `cat`
ends, and the master with it — nothing is left running on either side. Over that master go
two sessions (`ssh -S SOCKET`): the host lock's (RemoteLock) and one remote `sh` that runs
every command of the run, one round trip of data each (Connection._exchange).

Commands stay argv lists. The remote login shell only ever sees the constant command
`exec /bin/sh -s`; the commands go on that sh's standard input with every word quoted for
POSIX sh (shlex.quote) and LC_ALL=C, so nothing from a workflow, var or inventory becomes
shell syntax, whatever the remote user's login shell is. Each command's exit status comes
back in-band, after an unguessable marker on both output streams: a session that ends before
it does is a lost connection (ConnectionLost), not an exit code of the command.

Host keys are checked as the user's configuration says: runflow never adds
StrictHostKeyChecking=no. A mux client is given ProxyCommand=/bin/false so that, when the
master is gone, it fails instead of opening a connection of its own that would hold no lock.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import select
import shlex
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import EXIT_NEEDS_ATTENTION, EXIT_UNREACHABLE, LockHeld, RunflowError

if TYPE_CHECKING:
    from .hosts import Completed, SshHost

SOCKET_PATH_MAX = 107 - 17  # ssh binds "PATH.XXXXXXXXXXXXXXXX" first, then renames it
CONNECT_TIMEOUT = 30.0  # seconds for the master to log in (ssh's own ConnectTimeout is 10)
# Our options come first: for -o, ssh keeps the first value it is given.
MASTER_OPTIONS = ("-o", "ControlMaster=yes", "-o", "ControlPersist=no", "-o", "BatchMode=yes")
DEFAULT_OPTIONS = ("-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=15",
                   "-o", "ServerAliveCountMax=4")
CLIENT_OPTIONS = ("-o", "ControlMaster=no", "-o", "BatchMode=yes",
                  "-o", "ProxyCommand=/bin/false")
REMOTE_SHELL = "exec /bin/sh -s"  # the only text the remote login shell parses
READY = "runflow-ready"
_masters: list[subprocess.Popen] = []  # every master this process started (end_all)
_connections = itertools.count()  # numbers each Connection (its socket's name)


class HostUnreachable(RunflowError):
    """A host could not be reached (or its key was refused) before anything was changed."""

    exit_code = EXIT_UNREACHABLE


class ConnectionLost(BaseException):
    """The connection to an SSH host went away while a command ran on it: whether the command
    took effect is unknown. A BaseException, as Interrupted is, so that no `except Exception`
    of the engine takes it for a failed step and tries to roll back over a connection that is
    gone: the run stops where it is, its step in flight stays in doubt (intent journaled, no
    outcome), and `runflow resume` reconnects and settles it."""

    exit_code = EXIT_NEEDS_ATTENTION

    def __init__(self, host: str, detail: str) -> None:
        self.host = host
        self.detail = detail
        self.run_id: str | None = None  # filled in by the command line when it knows it
        super().__init__(detail)

    def __str__(self) -> str:
        run = self.run_id or "RUN"
        return (f"lost the SSH connection to host {self.host} ({self.detail}); the run stopped "
                "there and nothing was rolled back: the step in flight is in doubt. Once the "
                f"host is reachable, `runflow resume {run}` settles it and goes on (or "
                f"`runflow rollback {run}`)")


def quote_command(argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """One POSIX sh command line running argv: every word quoted, env as assignments."""
    for name in env or {}:
        if not name.isidentifier() or not name.isascii():
            raise ValueError(f"{name!r} is not an environment variable name")
    words = [f"{k}={shlex.quote(v)}" for k, v in (env or {}).items()]
    return " ".join([*words, *(shlex.quote(str(a)) for a in argv)])


def _with_input(command: str, input: str | None) -> str:
    """The command reading input (a quoted word piped in by printf, a builtin: no size limit
    of exec, no here-document), or nothing: it must not read the rest of the script."""
    if input is None:
        return f"{command} </dev/null"
    return f"printf '%s' {shlex.quote(input)} | {command}"


def _last_lines(text: str, count: int = 3) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines[-count:]) or "no message"


_control_dir: Path | None = None


def control_dir() -> Path:
    """A 0700 directory for this process's control sockets: $RUNFLOW_HOME/ssh, or, when that
    path is too long for a unix socket, one under /tmp made for this process."""
    global _control_dir
    if _control_dir is None:
        from .journal import default_home

        path = default_home() / "ssh"
        if len(str(path)) + 16 <= SOCKET_PATH_MAX:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(path, 0o700)
        else:
            path = Path(tempfile.mkdtemp(prefix="rf-ssh-", dir="/tmp"))
        _control_dir = path
    return _control_dir


class Connection:
    """The master connection to one SSH host, and the sessions run over it."""

    def __init__(self, host: SshHost) -> None:
        self.host = host
        self.marker = "\n::runflow-" + os.urandom(12).hex() + "::"
        self._lock = threading.RLock()
        self._master: subprocess.Popen | None = None
        self._log: Path | None = None
        self.socket: Path | None = None
        self._forwards: dict[str, Path] = {}
        self._opened = False  # once opened, a master that is gone is a lost connection
        self._shell: subprocess.Popen | None = None  # the remote sh the commands go to
        self._opening: threading.Thread | None = None  # a connection started ahead (start)
        self._open_error: BaseException | None = None
        self._sequence = itertools.count()
        self._serial = next(_connections)

    # -- the master --------------------------------------------------------------------------

    def destination_options(self) -> list[str]:
        """How the inventory says to reach the host (port, identity, its own options)."""
        h = self.host
        argv = []
        if h.ssh_port:
            argv += ["-p", str(h.ssh_port)]
        if h.ssh_identity:
            argv += ["-i", h.ssh_identity]
        return [*argv, *h.ssh_options]

    def start(self) -> None:
        """Begin connecting in the background, so that logging in (0.3-1 s) overlaps with
        building the plan; open() waits for it. Only a first connection: a lost one is not
        replaced behind the back of a run that held the host lock over it (client_argv)."""
        with self._lock:
            if self._opening is None and not self._opened and not self.alive():
                self._opening = threading.Thread(target=self._open_ahead, daemon=True,
                                                 name=f"ssh-{self.host.name}")
                self._opening.start()

    def _open_ahead(self) -> None:
        try:
            self.open()
        except BaseException as exc:  # said by the open() that waits for it
            self._open_error = exc

    def open(self) -> Connection:
        """Start the master and wait until it is logged in; raise HostUnreachable with ssh's
        own message (a refused or changed host key, no route, a refused key...)."""
        ahead = self._opening
        if ahead is not None and ahead is not threading.current_thread():
            ahead.join()
            self._opening = None
            error, self._open_error = self._open_error, None
            if error is not None:
                raise error
        with self._lock:
            if self.alive():
                return self
            directory = control_dir()
            # One name per Connection, kept when it reconnects: its forwarded sockets keep
            # their paths. Two Connections to one host in a process (a watch rolling back a
            # run made from another inventory) must not take each other's socket.
            name = hashlib.sha256(f"{self.host.key}:{os.getpid()}:{self._serial}".encode()
                                  ).hexdigest()[:12]
            self.socket = directory / f"{name}.s"
            self.socket.unlink(missing_ok=True)
            self._log = directory / f"{name}.log"
            log = open(self._log, "w")
            try:
                self._master = subprocess.Popen(
                    ["ssh", "-M", "-S", str(self.socket), *MASTER_OPTIONS,
                     *self.destination_options(), *DEFAULT_OPTIONS, "--", self.host.ssh,
                     f"echo {READY}; exec cat >/dev/null"],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
                _masters.append(self._master)
            except FileNotFoundError:
                raise HostUnreachable(f"host {self.host.name}: the OpenSSH client (ssh) is not "
                                      "installed on this machine") from None
            finally:
                log.close()
            self._wait_ready()
            self._opened = True
            self._shell_session()  # the remote sh starts while the lock is being taken
            return self

    def _wait_ready(self) -> None:
        master = self._master
        assert master is not None and master.stdout is not None
        deadline = time.monotonic() + CONNECT_TIMEOUT
        seen = b""
        while READY.encode() not in seen:
            left = deadline - time.monotonic()
            why = None
            if left <= 0:
                why = f"no login within {CONNECT_TIMEOUT:g} s"
            elif select.select([master.stdout], [], [], left)[0]:
                chunk = os.read(master.stdout.fileno(), 256)
                seen += chunk
                if not chunk:  # ssh gave up: its own words are in the log
                    why = _last_lines(self._log.read_text(errors="replace")) if self._log \
                        else "ssh exited"
            if why is not None:
                self._stop_master()
                raise HostUnreachable(f"cannot reach host {self.host.name} "
                                      f"({self.host.ssh}) over SSH: {why}")

    def alive(self) -> bool:
        return self._master is not None and self._master.poll() is None

    def reset_if_lost(self) -> None:
        """Close the connection if its master was logged in and is gone since, so that its
        next session logs in afresh. Sessions (client_argv) and start() never replace a lost
        master: whoever owns the connection calls this when no host lock is held over it
        (`runflow watch`, core/watch/leases.py)."""
        with self._lock:
            if self._opened and not self.alive():
                self.close()

    def _lost(self) -> ConnectionLost:
        said = _last_lines(self._log.read_text(errors="replace")) if self._log else ""
        if self.alive():
            what = "a session over the master connection ended early"
        else:
            what = "the master connection ended"
        return ConnectionLost(self.host.name, f"{what}: {said}" if said else what)

    def _stop_master(self) -> None:
        master, self._master = self._master, None
        if master is None:
            return
        if master.stdin:
            try:
                master.stdin.close()  # the remote cat ends, and the master with it
            except OSError:
                pass
        try:
            master.wait(timeout=5)
        except subprocess.TimeoutExpired:
            master.kill()
            master.wait()
        if master.stdout:
            master.stdout.close()

    def close(self) -> None:
        with self._lock:
            self._opened = False
            self._stop_shell()
            self._stop_master()
            for path in [self.socket, self._log, *self._forwards.values()]:
                if path is not None:
                    path.unlink(missing_ok=True)
            self._forwards.clear()

    # -- sessions ----------------------------------------------------------------------------

    def client_argv(self) -> list[str]:
        """A session over the master: the remote login shell runs the constant REMOTE_SHELL.
        A master that died is never replaced behind the run's back: the host lock was held
        over it."""
        if not self._opened:
            self.open()
        if not self.alive():
            raise self._lost()
        return ["ssh", "-S", str(self.socket), *CLIENT_OPTIONS, "--", self.host.ssh,
                REMOTE_SHELL]

    def script(self, body: str) -> str:
        return f"LC_ALL=C; export LC_ALL\n{body}\n"

    def run(self, argv: Sequence[str], *, input: str | None, env: Mapping[str, str] | None,
            timeout: float | None) -> tuple[int, str, str]:
        """Run argv remotely; (exit status, stdout, stderr)."""
        return self._exchange([_with_input(f"( {quote_command(argv, env)} )", input)],
                              timeout)[0]

    def run_many(self, argvs: Sequence[Sequence[str]], timeout: float | None
                 ) -> list[tuple[int, str, str]]:
        """Run several argv lists in one round trip, one after the other (each one whatever
        the previous one's exit status); each one's (exit status, stdout, stderr)."""
        return self._exchange([_with_input(f"( {quote_command(argv)} )", None)
                               for argv in argvs], timeout)

    # The commands of a run go to one remote `sh -s` that lives as long as the connection:
    # a command then costs one round trip of data, not a session (a new channel, sshd's fork,
    # the login shell's start: 20-30 ms here). Each runs in a subshell, so that a builtin
    # (exec, exit, cd) changes nothing of the next one, with stdin from /dev/null or its
    # input; after it, its status follows a marker on both output streams.

    def _exchange(self, commands: list[str], timeout: float | None
                  ) -> list[tuple[int, str, str]]:
        with self._lock:
            shell = self._shell_session()
            tag = f"{self.marker}{next(self._sequence)}."
            body = "".join(
                f"{command}\nrc=$?; printf '%s%d\\n' {shlex.quote(f'{tag}{i}:')} \"$rc\"; "
                f"printf '%s%d\\n' {shlex.quote(f'{tag}{i}:')} \"$rc\" >&2\n"
                for i, command in enumerate(commands))
            last = f"{tag}{len(commands) - 1}:".encode()
            try:
                out, err = _converse(shell, body.encode(), last, timeout)
            except subprocess.TimeoutExpired:
                self._stop_shell()  # the next command gets a fresh one
                raise
            except EOFError:
                self._stop_shell()
                raise self._lost() from None
        outs, codes = _split(out.decode(errors="replace"), tag, len(commands))
        errs, codes_again = _split(err.decode(errors="replace"), tag, len(commands))
        if len(codes) != len(commands) or codes != codes_again:
            raise self._lost()
        return list(zip(codes, outs, errs))

    def _shell_session(self) -> subprocess.Popen:
        if self._shell is None or self._shell.poll() is not None:
            self._shell = subprocess.Popen(self.client_argv(), stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            assert self._shell.stdin is not None
            os.set_blocking(self._shell.stdin.fileno(), False)
            os.write(self._shell.stdin.fileno(), self.script("").encode())
        return self._shell

    def _stop_shell(self) -> None:
        shell, self._shell = self._shell, None
        if shell is None:
            return
        for stream in (shell.stdin, shell.stdout, shell.stderr):
            try:
                stream.close()  # type: ignore[union-attr]
            except OSError:
                pass
        try:
            shell.wait(timeout=5)
        except subprocess.TimeoutExpired:
            shell.kill()
            shell.wait()

    def popen(self) -> subprocess.Popen:
        """A session whose script the caller writes (and keeps standard input open)."""
        return subprocess.Popen(self.client_argv(), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    # -- forwarded sockets -------------------------------------------------------------------

    def forward(self, remote_path: str) -> Path:
        """A unix socket here that reaches remote_path on the host, through the master
        (ssh -O forward; OpenSSH 6.7 or later on both ends)."""
        with self._lock:
            if remote_path in self._forwards:
                return self._forwards[remote_path]
        self.client_argv()  # connected, or lost
        assert self.socket is not None
        name = hashlib.sha256(remote_path.encode()).hexdigest()[:8]
        local = self.socket.with_name(f"{self.socket.stem}-{name}.f")
        local.unlink(missing_ok=True)
        done = subprocess.run(["ssh", "-S", str(self.socket), "-O", "forward",
                               "-o", "StreamLocalBindUnlink=yes",
                               "-L", f"{local}:{remote_path}", "--", self.host.ssh],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RunflowError(f"host {self.host.name}: cannot forward {remote_path} over "
                               f"SSH: {_last_lines(done.stderr)}")
        with self._lock:
            self._forwards[remote_path] = local
        return local


def _split(text: str, tag: str, count: int) -> tuple[list[str], list[int]]:
    """The pieces of a batch's output and the exit statuses after each marker."""
    pieces, codes = [], []
    rest = text
    for i in range(count):
        head, found, tail = rest.partition(f"{tag}{i}:")
        if not found:
            break
        status, _, rest = tail.partition("\n")
        if not status.isdigit():
            break
        pieces.append(head)
        codes.append(int(status))
    return pieces, codes


def _converse(shell: subprocess.Popen, script: bytes, last: bytes,
              timeout: float | None) -> tuple[bytes, bytes]:
    """Write script to the shell and read its stdout and stderr until both carry the last
    marker and its status line; EOFError if the session ends first."""
    assert shell.stdin and shell.stdout and shell.stderr
    deadline = None if timeout is None else time.monotonic() + timeout
    out, err = bytearray(), bytearray()
    buffers = {shell.stdout.fileno(): out, shell.stderr.fileno(): err}
    pending = memoryview(script)
    stdin = shell.stdin.fileno()

    def complete(buffer: bytearray) -> bool:
        at = buffer.rfind(last)
        return at >= 0 and buffer.endswith(b"\n") and b"\n" in buffer[at + len(last):]

    while not (complete(out) and complete(err)):
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise subprocess.TimeoutExpired("ssh", timeout or 0)
        readable, writable, _ = select.select(list(buffers), [stdin] if pending else [], [],
                                              left)
        if writable:
            try:
                pending = pending[os.write(stdin, pending):]
            except BlockingIOError:
                pass
            except BrokenPipeError:
                raise EOFError from None
        for fd in readable:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise EOFError
            buffers[fd] += chunk
    return bytes(out), bytes(err)


# -- the remote host lock ---------------------------------------------------------------------

# The lock file is the one a runflow on that machine itself takes (core/locks.py): a run from
# here and one there exclude each other. fd 9 holds the flock for as long as `cat` reads the
# session's standard input — the pipe this process keeps open — so the lock goes when the run
# ends or dies. Like the local lock, the file is removed while still held, and a lock taken
# on a file that was removed meanwhile is not the lock (the -ef test). RUNFLOW_LOCK_DIR in the
# remote session's environment moves it, as it does locally (the lab's sshd sets it: its hosts
# share one machine's /run).
_LOCK_SCRIPT = """\
if [ -n "$RUNFLOW_LOCK_DIR" ]; then d=$RUNFLOW_LOCK_DIR
elif [ "$(id -u)" = 0 ]; then d=/run/runflow
elif [ -n "$XDG_RUNTIME_DIR" ]; then d=$XDG_RUNTIME_DIR/runflow
else d=/tmp/runflow-$(id -u); fi
mkdir -p -m 700 "$d" || exit 3
f=$d/local.lock
command -v flock >/dev/null || { echo "flock (util-linux) is not installed" >&2; exit 3; }
end=$(( $(date +%s) + {timeout} ))
while :; do
  exec 9>>"$f" || exit 3
  if flock -n 9; then
    [ "$f" -ef /dev/fd/9 ] && break
  elif [ "$(date +%s)" -ge "$end" ]; then
    printf 'held %s\\n' "$(cat "$f" 2>/dev/null)"; exit 4
  else sleep 0.2
  fi
  exec 9>&-
done
printf '%s' {holder} >"$f"
echo locked
cat >/dev/null
rm -f "$f"
"""


class RemoteLock:
    """The run lock of an SSH host, held on the host by a session of the master connection."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._session: subprocess.Popen | None = None

    def acquire(self, run_id: str, timeout: float) -> RemoteLock:
        host = self.connection.host
        holder = f"{run_id} (pid {os.getpid()} on {socket.gethostname()}, over SSH)"
        script = _LOCK_SCRIPT.replace("{timeout}", str(int(-(-timeout // 1)))).replace(
            "{holder}", shlex.quote(holder))
        session = self.connection.popen()
        assert session.stdin is not None and session.stdout is not None
        session.stdin.write(self.connection.script(script))
        session.stdin.flush()
        answer = session.stdout.readline().strip()
        if answer == "locked":
            self._session = session
            return self
        session.stdin.close()
        assert session.stderr is not None
        stderr = session.stderr.read()
        session.wait(timeout=10)
        if answer.startswith("held"):
            waited = f" after waiting {timeout:g} s" if timeout else ""
            raise LockHeld(f"host {host.name} is locked by run "
                           f"{answer.removeprefix('held').strip() or 'unknown'}{waited}; wait "
                           "for it to finish, or use --lock-timeout SECONDS")
        if session.returncode == 255 or not stderr.strip():
            raise self.connection._lost()
        raise HostUnreachable(f"host {host.name}: cannot take its run lock: "
                              f"{_last_lines(stderr)}")

    def release(self) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        try:
            assert session.stdin is not None
            session.stdin.close()  # the remote cat ends: the file goes, then the lock
            session.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            session.kill()
            session.wait()


def end_all() -> None:
    """Stop the masters still running as the process leaves. A master that logged in ends by
    itself when this process's end closes its standard input; one still logging in (a
    connection begun while a plan was built that then failed) would wait on a handshake that
    may never finish."""
    for master in _masters:
        if master.poll() is None:
            master.terminate()


def connect_all(hosts: Iterable[object], forks: int = 32) -> None:
    """Connect every host that has a connection to make, in parallel; when any cannot be
    reached, close the others and raise one HostUnreachable naming each."""
    remote = [h for h in hosts if getattr(h, "remote", False)]
    if not remote:
        return
    failures = []
    with ThreadPoolExecutor(max(1, min(forks, len(remote)))) as pool:
        for host, future in [(h, pool.submit(h.connect)) for h in remote]:
            try:
                future.result()
            except HostUnreachable as exc:
                failures.append(str(exc))
    if failures:
        for host in remote:
            host.close()
        raise HostUnreachable("; ".join(failures) + "; nothing was changed on any host")


def run_remote(connection: Connection, argv: Sequence[str], *, input: str | None = None,
               env: Mapping[str, str] | None = None, timeout: float | None = None,
               check: bool = True) -> Completed:
    """Host.run for SSH hosts (see SshHost.run)."""
    from .errors import CommandError
    from .hosts import Completed

    argv = [str(a) for a in argv]
    try:
        code, out, err = connection.run(argv, input=input, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise CommandError(argv, 124, f"timed out after {timeout} s",
                           connection.host.name) from None
    if check and code != 0:
        raise CommandError(argv, code, err or out, connection.host.name)
    return Completed(argv, code, out, err)
