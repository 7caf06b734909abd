"""A private dockerd for one lab host (a network namespace), and an offline busybox image.

The daemon runs in the host's network namespace but keeps the mount namespace (and root
directory) of the process that started the lab (`nsenter --net`, not `ip netns exec`, which
would hide /sys/fs/cgroup). Everything it owns lives under one state directory D:

    D/data  D/exec          --data-root / --exec-root (exec is made a shared bind mount, or
                            container namespaces can outlive their containers)
    D/docker.sock           the API socket (unix://D/docker.sock)
    D/containerd/           its own containerd (dockerd --containerd), kept across restarts
    D/daemon.json           its configuration file (what `docker.daemon` edits); always passed
                            with --config-file so the machine's /etc/docker is never read (as
                            D/daemon.effective.json, less what the sysconfig flags set)
    D/sysconfig             optional: a CentOS 6 style /etc/sysconfig/docker whose other_args
                            are passed as flags, as that era's init script did
    D/dockerd.json          how to start it again, for `python3 -m runflow.core.lab.dockerd
                            restart D` (the command a lab inventory gives as the docker
                            service's restart command)
    D/dockerd.started       the pid of the daemon the lab started and tracks (written as soon
                            as it is spawned); `up()` holds only for that daemon
    D/dockerd.pid           dockerd's own pid file (a stale one, which would stop dockerd from
                            starting, is removed before a start)

Only processes the lab started are ever signalled, by their pid: a recorded pid only while it
still runs this state directory's daemon (a pid may be reused), and a daemon whose pid was
never recorded (its start was interrupted) is found by its argv, which names our socket.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .namespaces import Namespace
from .processes import (alive, pids_running_with, read_pid, run_tool, runs_with, stop_pid,
                        write_pid)

BUSYBOX = "/bin/busybox"
BUSYBOX_TOOLS = ("sh", "ip", "ping", "sleep", "cat", "ifconfig", "route", "hostname", "ls")
BUSYBOX_IMAGE = "runflow/busybox:lab"


# The daemon.json keys a dockerd flag sets; -b and --bip also exclude each other.
_FLAG_KEYS = {"-b": ("bridge", "bip"), "--bridge": ("bridge", "bip"), "--bip": ("bip", "bridge"),
              "--fixed-cidr": ("fixed-cidr",), "--mtu": ("mtu",), "--iptables": ("iptables",),
              "--ip-forward": ("ip-forward",)}


class DockerdError(RuntimeError):
    """The daemon could not be started or stopped; the message carries its log's tail."""


@dataclass(frozen=True)
class Entering:
    """nsenter options that start a program where another process runs, and the descriptors
    they name (held open until the program has started). Empty: where the caller runs."""

    options: tuple[str, ...] = ()
    fds: tuple[int, ...] = ()

    @staticmethod
    @contextmanager
    def process(pid: int | None) -> Iterator[Entering]:
        """Into pid's mount namespace and under its root directory. Entering a mount namespace
        alone would put the program at that namespace's real root, outside a chroot runflow
        may run in. The descriptors keep both alive after pid itself has been stopped."""
        fds: list[int] = []
        try:
            if pid is not None:
                fds.append(os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY))
                fds.append(os.open(f"/proc/{pid}/root", os.O_RDONLY | os.O_DIRECTORY))
        except FileNotFoundError:  # pid has just ended: start where the caller runs
            for fd in fds:
                os.close(fd)
            fds = []
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            raise DockerdError(f"cannot enter the mount namespace of pid {pid}: {exc}") from exc
        try:
            yield (Entering((f"--mount=/proc/self/fd/{fds[0]}", f"--root=/proc/self/fd/{fds[1]}"),
                            tuple(fds)) if fds else Entering())
        finally:
            for fd in fds:
                os.close(fd)


class Dockerd:
    """One dockerd inside one network namespace, with its state under state_dir."""

    def __init__(self, namespace: Namespace, state_dir: str | Path, *,
                 sysconfig: bool = False) -> None:
        self.namespace = namespace
        self.dir = Path(state_dir)
        self.sysconfig = sysconfig

    # -- paths ------------------------------------------------------------------------------

    @property
    def socket_path(self) -> Path:
        return self.dir / "docker.sock"

    @property
    def url(self) -> str:
        """The endpoint for the inventory and the Docker SDK."""
        return f"unix://{self.socket_path}"

    @property
    def config_path(self) -> Path:
        return self.dir / "daemon.json"

    @property
    def sysconfig_path(self) -> Path:
        return self.dir / "sysconfig"

    @property
    def pidfile(self) -> Path:
        return self.dir / "dockerd.pid"

    @property
    def log_path(self) -> Path:
        return self.dir / "dockerd.log"

    def restart_command(self) -> list[str]:
        """argv that restarts this daemon from another process (e.g. a runflow step)."""
        return [sys.executable, "-m", "runflow.core.lab.dockerd", "restart", str(self.dir)]

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, timeout: float = 30) -> None:
        """Start the daemon (setting up the state directory the first time) in this process's
        mount namespace and wait until its socket answers. A daemon of this state directory
        that already runs untracked (its pid file names it) is taken over instead."""
        self._launch(timeout, Entering())

    def stop(self, timeout: float = 20) -> None:
        """Stop this state directory's daemon: the one the lab tracks, and any other one (a
        restart killed between spawning a daemon and recording its pid)."""
        for pid in self._running():
            stop_pid(pid, timeout)
        self._started.unlink(missing_ok=True)
        # dockerd leaves its socket (and pid file) behind when killed: a stale socket would
        # make the next start's wait ambiguous.
        self.socket_path.unlink(missing_ok=True)

    def restart(self, timeout: float = 30) -> None:
        """Stop and start again where the daemon ran: in its mount namespace and under its
        root directory. The caller may be a runflow step, whose thread has a private mount
        namespace for its network namespace, while the daemon's mounts (exec-root,
        containers) belong with the lab's; and runflow itself may run in a chroot, which a
        plain change of mount namespace would leave. Without a running dockerd the host's
        containerd (started beside it) shows the place; with neither, the caller's own."""
        anchors = [self.tracked_pid(), *self._running(), *self._containerd()]
        with Entering.process(next((pid for pid in anchors if pid is not None), None)) \
                as entering:
            self.stop()
            self._launch(timeout, entering)

    def remove(self) -> None:
        """Stop the daemon and its containerd, unmount everything under the state dir (deepest
        first) and delete it."""
        self.stop()
        for pid in self._containerd():
            stop_pid(pid)
        for mount in sorted(_mounts_under(self.dir), key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True)
        subprocess.run(["rm", "-rf", "--one-file-system", str(self.dir)], capture_output=True)

    def tracked_pid(self) -> int | None:
        """The pid of the daemon the lab started and tracks, while it is that daemon."""
        pid = read_pid(self._started)
        return pid if pid is not None and self._is_ours(pid) else None

    def up(self) -> bool:
        """The tracked daemon runs and its socket answers: an untracked daemon answering on
        the socket (left by a killed restart) does not count."""
        return self.tracked_pid() is not None and self.answers()

    def answers(self) -> bool:
        """True when the API socket answers /_ping."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(1)
                sock.connect(str(self.socket_path))
                sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                return sock.recv(64).startswith(b"HTTP/1.0 200")
        except OSError:
            return False

    def log_tail(self, lines: int = 5) -> str:
        return _tail(self.log_path, lines)

    # -- internals --------------------------------------------------------------------------

    def _prepare(self) -> None:
        meta = self.dir / "dockerd.json"
        if meta.exists():
            return
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        exec_root = self.dir / "exec"
        exec_root.mkdir(exist_ok=True)
        run_tool(["mount", "--bind", str(exec_root), str(exec_root)])
        run_tool(["mount", "--make-shared", str(exec_root)])
        if not self.config_path.exists():
            self.config_path.write_text("{}\n")
        if self.sysconfig and not self.sysconfig_path.exists():
            self.sysconfig_path.write_text('# Options for the docker daemon\nother_args=""\n')
        meta.write_text(json.dumps({"netns": self.namespace.name,
                                    "sysconfig": self.sysconfig}) + "\n")

    def _sysconfig_flags(self) -> list[str]:
        """The flags a CentOS 6 init script would pass: the value of other_args."""
        if not self.sysconfig or not self.sysconfig_path.exists():
            return []
        for line in self.sysconfig_path.read_text().splitlines():
            if line.strip().startswith("other_args="):
                value = shlex.split(line.strip().removeprefix("other_args="))
                return shlex.split(value[0]) if value else []
        return []

    @property
    def containerd_socket(self) -> Path:
        return self.dir / "containerd" / "containerd.sock"

    @property
    def _started(self) -> Path:
        return self.dir / "dockerd.started"

    def _is_ours(self, pid: int) -> bool:
        return runs_with(pid, "-H", self.url)

    def _running(self) -> list[int]:
        """Every dockerd of this state directory, tracked or not: its argv names our socket."""
        return pids_running_with("-H", self.url)

    def _containerd(self) -> list[int]:
        return pids_running_with("--address", str(self.containerd_socket))

    def _launch(self, timeout: float, entering: Entering) -> None:
        self._prepare()
        running = self._running()
        if running:  # an untracked daemon of ours: take it over rather than start another
            for extra in running[1:]:
                stop_pid(extra)
            write_pid(self._started, running[0])
            self._wait(running[0], None, timeout)
            return
        # A pid file left by a killed daemon names a dead or someone else's process; dockerd
        # refuses to start while the process it names exists.
        self.pidfile.unlink(missing_ok=True)
        self._ensure_containerd(entering, timeout)
        argv = self.namespace.nsenter_argv([
            *entering.options, "dockerd", "--data-root", str(self.dir / "data"),
            "--exec-root", str(self.dir / "exec"), "--pidfile", str(self.pidfile),
            "-H", self.url, "--containerd", str(self.containerd_socket),
            "--config-file", str(self._effective_config()), *self._sysconfig_flags(),
        ])
        proc = self._spawn(argv, self.log_path, entering)
        # Tracked at once (nsenter execs dockerd, so this is dockerd's pid): a restart killed
        # from here on leaves a daemon that status, stop and `lab down` know about.
        write_pid(self._started, proc.pid)
        self._wait(proc.pid, proc, timeout)

    def _wait(self, pid: int, proc: subprocess.Popen | None, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.answers():
            if not alive(pid):
                self._started.unlink(missing_ok=True)
                status = f" {proc.wait()}" if proc is not None else ""
                raise DockerdError(f"dockerd exited{status}: {self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise DockerdError(f"dockerd (pid {pid}) did not answer within {timeout:g} s: "
                                   f"{self.log_tail()}")
            time.sleep(0.05)

    @staticmethod
    def _spawn(argv: list[str], log_path: Path, entering: Entering) -> subprocess.Popen:
        with open(log_path, "ab") as log:
            # A new session: the daemon must outlive a `restart` command's process, and must
            # not get the terminal's signals. nsenter's own errors land in the log too.
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True, pass_fds=entering.fds)

    def _ensure_containerd(self, entering: Entering, timeout: float) -> None:
        """A containerd of the host's own, outside dockerd: dockerd then stops in 0.01 s
        instead of 1 s (it no longer takes its containerd down), so `docker.daemon` steps
        with a restart cost 0.15 s."""
        if self._containerd():
            return
        root = self.dir / "containerd"
        self.containerd_socket.unlink(missing_ok=True)  # a killed containerd's
        argv = self.namespace.nsenter_argv([
            *entering.options, "containerd", "--address", str(self.containerd_socket),
            "--root", str(root / "root"), "--state", str(root / "state")])
        proc = self._spawn(argv, self.dir / "containerd.log", entering)
        deadline = time.monotonic() + timeout
        while not self.containerd_socket.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_pid(proc.pid)
                raise DockerdError("containerd did not start: "
                                   f"{_tail(self.dir / 'containerd.log')}")
            time.sleep(0.01)

    def _effective_config(self) -> Path:
        """daemon.json less what the sysconfig flags set: a lab host serves both targets, and
        dockerd refuses a directive given both as a flag and in its file. On a CentOS 6 host
        there is no daemon.json, so the flags win here too."""
        flags = self._sysconfig_flags()
        if not flags:
            return self.config_path
        config = json.loads(self.config_path.read_text() or "{}")
        for flag in flags:
            for key in _FLAG_KEYS.get(flag.split("=", 1)[0], ()):
                config.pop(key, None)
        effective = self.dir / "daemon.effective.json"
        effective.write_text(json.dumps(config, indent=2) + "\n")
        return effective


def load(state_dir: str | Path) -> Dockerd:
    """The Dockerd that `start` set up in state_dir (from its dockerd.json)."""
    meta = json.loads((Path(state_dir) / "dockerd.json").read_text())
    return Dockerd(Namespace(meta["netns"]), state_dir, sysconfig=meta["sysconfig"])


def _tail(log: Path, lines: int = 5) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _mounts_under(path: Path) -> list[str]:
    root = str(path.resolve())
    mounts = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1].replace("\\040", " ")
        if target == root or target.startswith(root + "/"):
            mounts.append(target)
    return mounts


# -- images -------------------------------------------------------------------------------------


def busybox_rootfs_tar() -> bytes:
    """A tar of a minimal root filesystem: a static busybox and the applets the lab uses."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in ("bin", "tmp", "etc"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
            tar.addfile(info)
        tar.add(BUSYBOX, arcname="bin/busybox")
        for tool in BUSYBOX_TOOLS:
            info = tarfile.TarInfo(f"bin/{tool}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
    return buf.getvalue()


def build_busybox_image(client: Any, tag: str = BUSYBOX_IMAGE) -> str:
    """Build the busybox image through the Docker SDK without any registry (FROM scratch);
    returns its tag."""
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        dockerfile = b'FROM scratch\nADD rootfs.tar /\nENV PATH=/bin\nCMD ["sh"]\n'
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
        rootfs = busybox_rootfs_tar()
        info = tarfile.TarInfo("rootfs.tar")
        info.size = len(rootfs)
        tar.addfile(info, io.BytesIO(rootfs))
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, pull=False, tag=tag, rm=True)
    return tag


def main(argv: list[str] | None = None) -> int:
    """`python3 -m runflow.core.lab.dockerd start|stop|restart STATE_DIR`"""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in ("start", "stop", "restart"):
        print("usage: python3 -m runflow.core.lab.dockerd start|stop|restart STATE_DIR",
              file=sys.stderr)
        return 2
    daemon = load(args[1])
    try:
        getattr(daemon, args[0])()
    except DockerdError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
