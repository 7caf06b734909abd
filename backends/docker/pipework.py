"""container.attach / container.detach with commands (`pipework` backend, target centos6): the
sequence pipework and ovs-docker run — `ip link add ... type veth` with its peer in the
container's namespace, `nsenter -t PID -n ip ...` inside the container, `brctl addif` or
`ovs-vsctl add-port` — run as argv lists, exactly as `runflow plan` shows them.

Reading starts no command where the host can be read without one: the container's PID comes
from one docker inspect through the API, the host end from /sys, whether the container has the
interface yet from /proc/PID/net/dev, and Open vSwitch (tagged ports, their bridge, a bridge's
existence, a new port's ofport and error) with one `ovsdb-client transact` of selects
(backends/ovs/query.py, as the ovs-vsctl backend reads), so that over SSH too it needs only the
host's own tools.
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
from ..ovs.args import View
from ..ovs.endpoint import endpoint_problem
from ..ovs.query import OvsdbUnreachable, interface_problems, select, where_named

TOOLS = ("ip", "nsenter", "brctl")


def _unusable(host: Host) -> str | None:
    for tool in TOOLS:
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return missing_modules("docker") or endpoint_problem(host)


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
        # Found out by the read that looks for the ports (ovs_ports): no command of its own.
        return True

    def ovs_bridge(self, name: str) -> bool:
        try:
            return bool(select(self.ctx, [("Bridge", where_named(name), [])])[0])
        except OvsdbUnreachable:  # no database here: no OVS bridge
            return False

    def ovs_ports(self, container: str, ifname: str) -> list[dict[str, Any]]:
        """One read: the tagged interfaces, and the ports and bridges to place them (whole
        tables: which port holds an interface is known only from the port)."""
        tags = ["map", [["container_id", container], ["container_iface", ifname]]]
        try:
            ifaces, ports, bridges = select(self.ctx, [
                ("Interface", [["external_ids", "includes", tags]], ["name", "ofport", "error"]),
                ("Port", [], ["name", "interfaces"]),
                ("Bridge", [], ["name", "ports"])])
        except OvsdbUnreachable:  # no database here: no OVS ports to look for
            return []
        view = View.from_rows(bridges, ports, ifaces)
        bridge_of = {i: port["bridge"] for port in view.ports.values()
                     for i in port["interfaces"]}
        return [{"name": name, "bridge": bridge_of.get(name) or "",
                 "ofport": i["ofport"] if isinstance(i["ofport"], int) else -1,
                 "error": i["error"] if isinstance(i["error"], str) else ""}
                for name, i in view.interfaces.items()]

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
                problems = interface_problems(self.ctx, [att.host_ifname])
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
