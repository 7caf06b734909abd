"""container.attach / container.detach with commands (`pipework` backend, target centos6): the
sequence pipework and ovs-docker run — `ip link add ... type veth`, `ip link set ... netns PID`,
`nsenter -t PID -n ip ...` inside the container, `brctl addif` or `ovs-vsctl add-port` — run
as argv lists, exactly as `runflow plan` shows them. The container's PID comes from one docker
inspect through the API; the host end is read from /sys without any command.
"""

from __future__ import annotations

import json
import re
import shutil
from typing import Any

from runflow.core.actions import State
from runflow.core.errors import ActionError
from runflow.core.hookspecs import hookimpl
from runflow.core.hosts import Host

from .docker import (Attachment, ContainerAttach, ContainerDetach, Plumbing, attach_commands,
                     detach_commands, global_addresses, missing_modules, vsctl_argv)

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


class Commands(Plumbing):
    """Attach and detach by running ip, nsenter, brctl and ovs-vsctl."""

    def vsctl(self) -> list[str]:
        return vsctl_argv(self.ctx.host)

    def ovs_reachable(self) -> bool:
        if shutil.which("ovs-vsctl") is None:
            return False
        return self.ctx.run([*self.vsctl(), "--timeout=5", "show"], check=False).returncode == 0

    def ovs_bridge(self, name: str) -> bool:
        if shutil.which("ovs-vsctl") is None:
            return False
        # br-exists: 0 yes, 2 no; anything else (no database) also means "not an OVS bridge".
        return self.ctx.run([*self.vsctl(), "br-exists", name], check=False).returncode == 0

    def ovs_ports(self, container: str, ifname: str) -> list[dict[str, Any]]:
        done = self.ctx.run([*self.vsctl(), "--format=json", "--columns=name,ofport,error",
                             "find", "Interface", f"external_ids:container_id={container}",
                             f"external_ids:container_iface={ifname}"])
        ports = []
        for name, ofport, error in json.loads(done.stdout)["data"]:
            bridge = self.ctx.run([*self.vsctl(), "iface-to-br", name], check=False)
            ports.append({"name": name, "bridge": bridge.stdout.strip(),
                          "ofport": ofport if isinstance(ofport, int) else -1,
                          "error": error if isinstance(error, str) else ""})
        return ports

    def iface(self, pid: int, ifname: str, *, gateway: bool) -> dict[str, Any] | None:
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
        commands = attach_commands(att, self.vsctl())
        try:
            for argv in commands:
                self.ctx.run(argv)
        except ActionError:
            self.ctx.run(["ip", "link", "del", att.host_ifname], check=False)
            raise
        if att.kind == "ovs":  # ovs-vsctl exits 0 even when the port could not be added
            done = self.ctx.run([*self.vsctl(), "get", "Interface", att.host_ifname, "ofport",
                                 "error"])
            ofport, error = (done.stdout.splitlines() + ["", ""])[:2]
            if not ofport.strip().isdigit() or int(ofport) <= 0 or error.strip() not in ("", '""',
                                                                                          "[]"):
                raise ActionError(f"Open vSwitch could not add {att.host_ifname} to "
                                  f"{att.bridge}: {error.strip() or 'ofport ' + ofport.strip()}")

    def remove(self, seen: State) -> None:
        for argv in detach_commands(seen, self.vsctl()):
            self.ctx.run(argv)


class PipeworkAttach(ContainerAttach):
    backend = "pipework"
    plumbing = Commands

    @classmethod
    def unusable(cls, host: Host) -> str | None:
        return _unusable(host)


class PipeworkDetach(ContainerDetach):
    backend = "pipework"
    plumbing = Commands

    @classmethod
    def unusable(cls, host: Host) -> str | None:
        return _unusable(host)


@hookimpl
def runflow_register_actions(register: Any) -> None:
    register(PipeworkAttach)
    register(PipeworkDetach)
