"""container.attach / container.detach with commands (`pipework` backend, target centos6): the
sequence pipework and ovs-docker run — `ip link add ... type veth` with its peer in the
container's namespace, `nsenter -t PID -n ip ...` inside the container, `brctl addif` or
`ovs-vsctl add-port` — run as argv lists, exactly as `runflow plan` shows them.

Reading starts no command where the host can be read without one: the container's PID comes
from one docker inspect through the API, the host end from /sys, whether the container has the
interface yet from /proc/PID/net/dev, and Open vSwitch (tagged ports, their bridge, a bridge's
existence, a new port's ofport and error) from OVSDB in-process (backends/ovs/wire.py, the
connection the ovs-vsctl backend's steps use too).
"""

from __future__ import annotations

import re
import shutil
from typing import Any

from runflow.core.actions import State
from runflow.core.errors import ActionError
from runflow.core.hookspecs import hookimpl
from runflow.core.hosts import Host

from .attachment import (Attachment, ContainerAttach, ContainerDetach, Plumbing, attach_commands,
                         detach_commands, global_addresses, vsctl_argv)
from .client import missing_modules
from ..ovs.vsctl import VsctlClient
from ..ovs.wire import connection, where_named

TOOLS = ("ip", "nsenter", "brctl")


def _unusable(host: Host) -> str | None:
    for tool in TOOLS:
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return missing_modules("docker")


def parse_ip_addr_show(text: str) -> dict[str, Any]:
    """`ip addr show dev X` → {"addresses", "mtu", "mac", "up"}."""
    flags = re.search(r"<([^>]*)>", text)
    mtu = re.search(r"\bmtu (\d+)", text)
    mac = re.search(r"link/ether ([0-9a-f:]{17})", text)
    addresses = re.findall(r"^\s*inet6? (\S+)", text, re.MULTILINE)
    return {"addresses": global_addresses(addresses), "mtu": int(mtu.group(1)) if mtu else None,
            "mac": mac.group(1) if mac else None,
            "up": bool(flags and "UP" in flags.group(1).split(",")), "gateway": None}


def _has_link(pid: int, name: str) -> bool:
    """Whether the network namespace of process pid has a link of this name (True when
    /proc cannot tell: the command that follows then finds out)."""
    try:
        with open(f"/proc/{pid}/net/dev") as dev:
            return any(line.partition(":")[0].strip() == name for line in dev.readlines()[2:])
    except OSError:
        return True


class Commands(Plumbing):
    """Attach and detach by running ip, nsenter, brctl and ovs-vsctl."""

    def vsctl(self) -> list[str]:
        return vsctl_argv(self.ctx.host)

    def ovs_reachable(self) -> bool:
        try:
            connection(self.ctx)
        except ActionError:  # no database here: no OVS ports to look for
            return False
        return True

    def ovs_bridge(self, name: str) -> bool:
        return self.ovs_reachable() and bool(
            connection(self.ctx).select([("Bridge", where_named(name), [])])[0])

    def ovs_ports(self, container: str, ifname: str) -> list[dict[str, Any]]:
        wire = connection(self.ctx)
        tags = ["map", [["container_id", container], ["container_iface", ifname]]]
        ifaces = wire.select([("Interface", [["external_ids", "includes", tags]],
                               ["name", "ofport", "error"])])[0]
        ports = wire.holders("Port", "interfaces", ifaces)
        held = [p for p in ports if p is not None]
        bridges = {p["_uuid"]: b["name"] for p, b in zip(held, wire.holders("Bridge", "ports",
                                                                             held)) if b}
        return [{"name": i["name"], "bridge": bridges.get(p["_uuid"], "") if p else "",
                 "ofport": i["ofport"] if isinstance(i["ofport"], int) else -1,
                 "error": i["error"] if isinstance(i["error"], str) else ""}
                for i, p in zip(ifaces, ports)]

    def iface(self, pid: int, ifname: str, *, gateway: bool) -> dict[str, Any] | None:
        if not _has_link(pid, ifname):  # a container being attached has no such link yet
            return None
        inside = ["nsenter", "-t", str(pid), "-n", "ip"]
        done = self.ctx.run([*inside, "addr", "show", "dev", ifname], check=False)
        if done.returncode != 0:  # "Device "eth0" does not exist."
            return None
        seen = parse_ip_addr_show(done.stdout)
        if gateway:
            routes = self.ctx.run([*inside, "route", "show", "default", "dev", ifname]).stdout
            via = re.search(r"\bvia (\S+)", routes)
            seen["gateway"] = via.group(1) if via else None
        return seen

    def make(self, att: Attachment) -> None:
        try:
            for argv in attach_commands(att, self.vsctl()):
                self.ctx.run(argv)
            if att.kind == "ovs":  # ovs-vsctl exits 0 even when the port could not be added
                problems = VsctlClient(self.ctx.host).problems(self.ctx, [att.host_ifname])
                if problems:
                    raise ActionError(f"{problems[att.host_ifname]} (on bridge {att.bridge})")
        except ActionError:
            self.ctx.run(["ip", "link", "del", att.host_ifname], check=False)
            raise

    def remove(self, seen: State) -> None:
        for argv in detach_commands(seen, self.vsctl()):
            self.ctx.run(argv)


class PipeworkAttach(ContainerAttach):
    backend = "pipework"
    targets = ("centos6",)
    plumbing = Commands

    @classmethod
    def unusable(cls, host: Host) -> str | None:
        return _unusable(host)


class PipeworkDetach(ContainerDetach):
    backend = "pipework"
    targets = ("centos6",)
    plumbing = Commands

    @classmethod
    def unusable(cls, host: Host) -> str | None:
        return _unusable(host)


@hookimpl
def runflow_register_actions(register: Any) -> None:
    register(PipeworkAttach)
    register(PipeworkDetach)
