"""docker.daemon: what both daemon backends share. The daemon's bridge settings are written
where the host's docker reads them — `/etc/docker/daemon.json` (daemon_json.py, backend
`daemon-json`, target modern) or the other_args line of `/etc/sysconfig/docker` (sysconfig.py,
backend `sysconfig`, CentOS 6's docker-io init script); each backend reads and writes its
file's format, everything else is here. The file may be named by the step (`config`) or the
inventory (`docker_config = "/path"` for daemon.json, `docker_sysconfig = "/path"` for the
sysconfig file, in the host's table). Undo puts the file back byte for byte, or removes it and
the directories apply made for it if it did not exist.

Only the settings a step gives are written. `bridge` and `bip` exclude each other (dockerd
refuses both), so setting one drops the other from the file. A `bridge` that is an Open vSwitch
bridge fails the step before anything changes: dockerd cannot attach containers to it.

With `restart = "docker"` the step restarts that service after writing the file, and again
after undo restored it (see backends/system/service.py for why service.restart's undo cannot).
A file that holds the settings is not enough: the daemon reads it when it starts, so the step
also compares the running daemon's start time with the file's last change (`daemon_state`).
A run killed between writing and restarting, or a rollback killed between restoring and
restarting, leaves a file that is right and a daemon that is not: the next apply or undo sees
the daemon is older than the file and restarts it.

On an SSH host the file is read and written by commands there (`cat`, a fixed `sh -c` script
that writes a temporary file and renames it); the daemon's start time cannot be compared
through a forwarded socket, so its state is unknown and undo restarts it.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import struct
import time
from typing import Any, ClassVar

from runflow.core.actions import Action, Context, State
from runflow.core.errors import ActionError
from runflow.core.hosts import Host

from ..system.files import WRITE, missing_dirs, read_text, remove_dirs, remove_file, write_text
from ..system.service import Manager, service_argv
from .args import DockerDaemonArgs
from .attachment import linux_bridge, vsctl_argv
from .client import docker_endpoint

SETTINGS = ("bridge", "bip", "fixed_cidr", "mtu", "iptables")
EXCLUSIVE = {"bridge": "bip", "bip": "bridge"}

OVS_BRIDGE_HELP = (
    "{bridge} is an Open vSwitch bridge: dockerd cannot attach containers to it (container "
    "start fails with 'operation not supported'). Give docker a Linux bridge (e.g. docker0, "
    "bridge.present + addr.present) and enslave the OVS bridge into it (brctl addif docker0 "
    "{bridge}: its internal port is an ordinary device), or start containers with network = "
    "\"none\" and attach them to {bridge} with container.attach"
)

def wanted(args: DockerDaemonArgs) -> dict[str, Any]:
    """The settings the step gives, normalised."""
    values = {key: getattr(args, key) for key in SETTINGS if getattr(args, key) is not None}
    if "bip" in values:
        values["bip"] = str(ipaddress.ip_interface(values["bip"]))
    return values


# -- is the running daemon the file's? ----------------------------------------------------------

# How `daemon_state` describes the running daemon against its file.
CURRENT = "current"  # it started after the file last changed: it runs the file
STALE = "stale"  # it started before: it runs an older file
STOPPED = "stopped"  # nothing answers on its socket
UNKNOWN = "unknown"  # no way to tell (a remote endpoint, a socket held by systemd, ...)


def _last_change(path: str) -> float:
    """When path last changed (its inode's change time: a rewrite by rename makes a new
    inode, and `touch` cannot set it back); for a missing file, when the nearest existing
    directory above it did (removing the file changed it)."""
    while True:
        try:
            return os.stat(path).st_ctime
        except FileNotFoundError:
            parent = os.path.dirname(path)
            if parent == path:
                return 0.0
            path = parent


def _started(pid: int) -> float | None:
    """When process pid started, as a wall-clock time; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    # Field 22, starttime, counts clock ticks since boot (CLOCK_BOOTTIME); fields[0] is field 3.
    booted = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
    return booted + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def daemon_state(host: Host, path: str) -> str:
    """Does the host's dockerd run what path holds? The daemon is found by its API socket
    (the kernel names the process listening on a unix socket: SO_PEERCRED); the process
    start time is whole clock ticks (10 ms), so a restart within a tick of the write reads as
    stale, which costs one restart more, never one less."""
    url = docker_endpoint(host)
    if host.remote or not url.startswith("unix://"):
        return UNKNOWN
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        try:
            sock.connect(url.removeprefix("unix://"))
        except (FileNotFoundError, ConnectionRefusedError):
            return STOPPED
        except OSError:
            return UNKNOWN
        pid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                  struct.calcsize("3i")))[0]
    try:
        with open(f"/proc/{pid}/comm") as f:
            # dockerd, or CentOS 6's `docker -d`; anything else (systemd holding the socket
            # for socket activation) says nothing about when the daemon read its file
            if f.read().strip() not in ("dockerd", "docker"):
                return UNKNOWN
    except FileNotFoundError:
        return UNKNOWN
    started = _started(pid)
    if started is None:
        return UNKNOWN
    return CURRENT if started >= _last_change(path) else STALE


# -- the action ---------------------------------------------------------------------------------


class DaemonConfig(Action):
    """Everything both backends share but reading and writing the file's format."""

    name = "docker.daemon"
    family = "docker"
    Args = DockerDaemonArgs
    summary = "the docker daemon's bridge settings (-b, --bip, --fixed-cidr, --mtu, --iptables)"
    default_path: ClassVar[str]
    inventory_key: ClassVar[str]  # the host setting that names the file instead
    service_manager: ClassVar[Manager]  # how to restart when the inventory gives no command
    # Killed between writing the file and restarting, the file holds but the daemon may run
    # the old settings, which observe cannot always tell (daemon_state UNKNOWN): in doubt,
    # apply again (the file is left as it is, the daemon restarted).
    reapply_in_doubt = True

    def parse(self, text: str) -> dict[str, Any]:
        """The settings in the file's text (normalised like `wanted`)."""
        raise NotImplementedError

    def render(self, text: str, settings: dict[str, Any]) -> str:
        """The file's text with settings written and the excluded ones dropped."""
        raise NotImplementedError

    def path(self, host: Host, args: DockerDaemonArgs) -> str:
        return args.config or host.settings.get(self.inventory_key) or self.default_path

    def observe(self, ctx: Context, args: DockerDaemonArgs) -> State:
        path = self.path(ctx.host, args)
        text = read_text(path, ctx.host)
        return {
            "path": path,
            "text": text,
            "missing_dirs": missing_dirs(ctx, path),
            "settings": self.parse(text or ""),
            "ovs_bridge": bool(args.bridge) and self._ovs_bridge(ctx, args.bridge),
            "restart": service_argv(ctx.host, self.service_manager, "restart", args.restart)
            if args.restart else None,
            "daemon": daemon_state(ctx.host, path) if args.restart else None,
        }

    def check(self, args: DockerDaemonArgs, before: State) -> bool:
        if before["ovs_bridge"]:
            return False
        settings = before["settings"]
        written = all(settings.get(k) == v for k, v in wanted(args).items()) and not any(
            EXCLUSIVE.get(k) in settings for k in wanted(args))
        return written and before.get("daemon") not in (STALE, STOPPED)

    def apply(self, ctx: Context, args: DockerDaemonArgs, before: State) -> None:
        if before["ovs_bridge"]:
            raise ActionError(OVS_BRIDGE_HELP.format(bridge=args.bridge))
        text = self.render(before["text"] or "", wanted(args))
        if text != before["text"]:
            write_text(ctx, before["path"], text)
        if before["restart"]:
            ctx.run(before["restart"])

    def undo(self, ctx: Context, args: DockerDaemonArgs, before: State) -> None:
        """Put the file (and the directories above it) back as observe saw them, then make
        the daemon run it: restart after a rewrite, and also when the file was already back
        but the daemon is older than it (an undo that restored the file and was killed) or
        down although it ran before. Works from any point of apply, including none."""
        path, text = before["path"], before["text"]
        rewritten = read_text(path, ctx.host) != text
        if rewritten and text is None:
            remove_file(ctx, path)
        elif rewritten:
            write_text(ctx, path, text)
        remove_dirs(ctx, before.get("missing_dirs", []))
        if before["restart"] and (rewritten or self._restart_due(ctx, path, before)):
            ctx.run(before["restart"])

    @staticmethod
    def _restart_due(ctx: Context, path: str, before: State) -> bool:
        state = daemon_state(ctx.host, path)
        if state == STOPPED:
            return before.get("daemon") != STOPPED
        return state != CURRENT

    def describe(self, args: DockerDaemonArgs, before: State | None = None) -> list[list[str]]:
        if before is None:
            return [[*WRITE, "...", self.default_path]]
        text = self.render(before["text"] or "", wanted(args))
        write = [[*WRITE, text, before["path"]]] if text != before["text"] else []
        return [*write, *([before["restart"]] if before["restart"] else [])]

    def describe_undo(self, args: DockerDaemonArgs, before: State | None = None
                      ) -> list[list[str]]:
        if before is None:
            return []
        restore = (["rm", "-f", before["path"]] if before["text"] is None
                   else [*WRITE, before["text"], before["path"]])
        dirs = [["rmdir", d] for d in reversed(before.get("missing_dirs", []))]
        return [restore, *dirs, *([before["restart"]] if before["restart"] else [])]

    @staticmethod
    def _ovs_bridge(ctx: Context, name: str) -> bool:
        if linux_bridge(name) or shutil.which("ovs-vsctl") is None:
            return False
        return ctx.run([*vsctl_argv(ctx.host), "--timeout=5", "br-exists", name],
                       check=False).returncode == 0
