"""container.attach / container.detach with commands (`pipework` backend, target centos6): the
sequence pipework runs — `ip link add ... type veth` with its peer in the container's
namespace, `ip netns exec` inside the container (through a name in /var/run/netns for its
PID's namespace, made for the commands and removed after them: CentOS 6's util-linux has no
nsenter), `brctl addif` or `ovs-vsctl add-port` — run as argv lists on the host, exactly as
`runflow plan` shows them. It needs nothing of the host but its own tools, so it serves SSH
hosts too (and container attach on them even with --target modern: the docker backend talks
netlink in this process).

Everything goes through commands on the host, in as few round trips as the order allows
(Host.run_many: one over SSH however many commands, whatever the instances of a step):

    observe   the containers: docker's API (here), or `docker inspect --format` on the host
              (SSH: a CentOS 6 host's OpenSSH cannot forward dockerd's socket);
              then one `grep -sH ''` of the host ends' and bridges' /sys files; then, for
              the host ends that are there, one batch: per container `ln -sfn
              /proc/PID/ns/net`, `ip addr show` / `ip route show` under `ip netns exec`,
              `rm -f`; then Open vSwitch, if involved: one `ovsdb-client transact` of
              selects (backends/ovs/query.py, as ovs-vsctl reads)
    make      per group of commands (attachment.AttachCommands) one batch for all the
              attachments of a step: name the namespaces, the veths, the containers' ends,
              the bridge ports, the host ends up and the names removed; then OVS's verdict on
              the new ports (ovs-vsctl exits 0 even when a port could not be added)
    remove    one batch: `ip link del` of the host end and `ovs-vsctl del-port` of the
              tagged ports
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from runflow.core.actions import State
from runflow.core.errors import ActionError, CommandError
from runflow.core.hookspecs import hookimpl
from runflow.core.hosts import Completed, Host, tools_missing

from ..linux.sysfs import SYS_NET, printed_links
from ..ovs.args import View
from ..ovs.endpoint import endpoint_problem
from ..ovs.query import OvsdbUnreachable, interface_problems, select
from .attachment import (Attachment, ContainerAttach, ContainerDetach, Look, Plumbing,
                         container_state, default_host_ifname, detach_commands, enter_commands,
                         global_addresses, leave_command, netns_name, vsctl_argv)
from .client import docker_argv, missing_modules

TIMEOUT = 60  # seconds a batch of commands may take
# What docker inspect prints of a container (docker 1.x knows these fields).
INSPECT_FORMAT = "{{.Id}} {{.State.Pid}} {{.State.Running}}"
# The /sys files read of a host end (there, up, its Linux bridge) and of a bridge (a Linux one?).
LINK_FILES = ("flags", "master/uevent", "brport/bridge/uevent", "bridge/bridge_id")


def _unusable(host: Host) -> str | None:
    if host.remote:  # the host's tools are found out when they run
        return endpoint_problem(host)
    # here the container is inspected through docker's API
    return tools_missing("ip", "brctl") or missing_modules("docker") or endpoint_problem(host)


def parse_ip_addr_show(text: str) -> dict[str, Any]:
    """`ip addr show dev X` → {"addresses", "mtu", "mac", "up"}."""
    flags = re.search(r"<([^>]*)>", text)
    mtu = re.search(r"\bmtu (\d+)", text)
    mac = re.search(r"link/ether ([0-9a-f:]{17})", text)
    addresses = re.findall(r"^\s*inet6? (\S+)", text, re.MULTILINE)
    return {"addresses": global_addresses(addresses), "mtu": int(mtu.group(1)) if mtu else None,
            "mac": mac.group(1) if mac else None,
            "up": bool(flags and "UP" in flags.group(1).split(",")), "gateway": None}


def _check(done: Sequence[Completed], host: str) -> None:
    """Raise for the first command of a batch that failed, as ctx.run would."""
    for d in done:
        if d.returncode != 0:
            raise CommandError(d.argv, d.returncode, d.stderr or d.stdout, host)


class Commands(Plumbing):
    """Attach and detach by running ip, brctl and ovs-vsctl on the host."""

    named_netns = True

    def vsctl(self) -> list[str]:
        return vsctl_argv(self.ctx.host)

    def batch(self, argvs: Sequence[Sequence[str]], *, check: bool = True) -> list[Completed]:
        """Run argvs on the host one after the other, each whatever the one before did (one
        round trip over SSH), and journal them; with check, raise for the first that failed."""
        ctx = self.ctx
        ctx.commands += [ctx.host.describe(argv) for argv in argvs]
        done = ctx.host.run_many(argvs, timeout=TIMEOUT) if argvs else []
        if check:
            _check(done, ctx.host.name)
        return done

    # -- observing ------------------------------------------------------------------------

    def observe_many(self, looks: Sequence[Look]) -> list[State]:
        infos = self.containers(list(dict.fromkeys(look.container for look in looks)))
        pids = [_pid(infos[look.container]) for look in looks]
        host_ends = [look.host_ifname or default_host_ifname(look.container, look.ifname, pid)
                     for look, pid in zip(looks, pids)]
        links = self.links([*host_ends, *[look.bridge for look in looks if look.bridge]])
        ends = [_host_end(links.get(name)) for name in host_ends]
        # Only an interface with its host end can be one runflow attached (nothing is decided
        # on the container's side alone): a container not attached yet is not entered.
        ifaces = self.inside([(pid, look.ifname, look.gateway)
                              for look, pid, end in zip(looks, pids, ends) if pid and end])
        kinds: list[str | None] = []
        for look in looks:
            bridge = links.get(look.bridge) if look.bridge else None
            kinds.append("linux" if bridge is not None and bridge.has("bridge") else None)
        # OVS is read for a bridge that is not a Linux one, and for detach (bridge None),
        # which looks for tagged ports wherever they are.
        ovs = self.ovs([(look.container, look.ifname)
                        for look, kind in zip(looks, kinds) if kind is None])
        states = []
        for look, pid, host_end, end, kind in zip(looks, pids, host_ends, ends, kinds):
            if look.bridge is not None and kind is None and ovs is not None \
                    and look.bridge in ovs.bridges:
                kind = "ovs"
            states.append({
                "container": infos[look.container],
                "host_ifname": host_end,
                "host_end": end,
                "iface": ifaces.get((pid, look.ifname)),
                "bridge_kind": kind,
                "ovs_ports": _tagged(ovs, look) if kind == "ovs" or look.bridge is None
                else [],
            })
        return states

    def containers(self, names: list[str]) -> dict[str, dict[str, Any] | None]:
        """Each container's {"id", "pid", "running"}, or None when there is no such one."""
        if not self.ctx.host.remote:
            return {name: container_state(self.ctx, name) for name in names}
        found: dict[str, dict[str, Any] | None] = {}
        argvs = [docker_argv(self.ctx, "inspect", "--format", INSPECT_FORMAT, name)
                 for name in names]
        for name, done in zip(names, self.batch(argvs, check=False)):
            words = done.stdout.split()
            if done.returncode == 0 and len(words) == 3 and words[1].isdigit():
                found[name] = {"id": words[0], "pid": int(words[1]),
                               "running": words[2] == "true"}
            elif "No such" in done.stderr:  # "No such object" (or "image or container")
                found[name] = None
            else:
                raise ActionError(f"docker inspect {name}: "
                                  f"{(done.stderr or done.stdout).strip() or 'no answer'}")
        return found

    def links(self, names: list[str]) -> dict[str, Any]:
        """One command: the /sys entries of host ends and bridges (whether each is there, up,
        and in which Linux bridge; whether it is a Linux bridge), by name."""
        files = [f"{SYS_NET}/{name}/{leaf}" for name in dict.fromkeys(names)
                 for leaf in LINK_FILES]
        return printed_links(self.batch([["grep", "-sH", "", *files]], check=False)[0].stdout)

    def inside(self, looks: list[tuple[int, str, bool]]) -> dict[tuple[int, str], Any]:
        """One batch: each (pid, ifname, gateway)'s interface inside the container, under
        `ip netns exec` (the namespace named before and the name removed after). Returns
        {(pid, ifname): {"addresses", "mtu", "mac", "up", "gateway"} or None}."""
        argvs: list[list[str]] = []
        reads: dict[tuple[int, str], tuple[int, int | None]] = {}  # where each one's output is
        pids = list(dict.fromkeys(pid for pid, _, _ in looks))
        if not pids:
            return {}
        for n, pid in enumerate(pids):
            argvs += enter_commands(pid)[0 if n == 0 else 1:]  # one `mkdir -p` will do
            netns = ["ip", "netns", "exec", netns_name(pid), "ip"]
            for ifname, gateway in dict.fromkeys((i, g) for p, i, g in looks if p == pid):
                addr, route = len(argvs), len(argvs) + 1 if gateway else None
                argvs.append([*netns, "addr", "show", "dev", ifname])
                if gateway:
                    argvs.append([*netns, "route", "show", "default", "dev", ifname])
                reads[(pid, ifname)] = (addr, route)
        argvs.append(leave_command(pids))
        done = self.batch(argvs, check=False)
        ifaces: dict[tuple[int, str], Any] = {}
        for key, (addr, route) in reads.items():
            if done[addr].returncode != 0:  # 'Device "eth0" does not exist.', or gone
                ifaces[key] = None
                continue
            iface = parse_ip_addr_show(done[addr].stdout)
            if route is not None:
                via = re.search(r"\bvia (\S+)", done[route].stdout)
                iface["gateway"] = via.group(1) if via else None
            ifaces[key] = iface
        return ifaces

    def ovs(self, tags: list[tuple[str, str]]) -> View | None:
        """One read: the interfaces tagged for each (container, ifname), and the whole Port
        and Bridge tables to place them (which port holds an interface is known only from the
        port). None when the host has no OVSDB to read."""
        if not tags:
            return None
        selects: list[Any] = [
            ("Interface", [["external_ids", "includes",
                            ["map", [["container_id", c], ["container_iface", i]]]]],
             ["name", "ofport", "error", "external_ids"]) for c, i in dict.fromkeys(tags)]
        try:
            *ifaces, ports, bridges = select(self.ctx, [
                *selects, ("Port", [], ["name", "interfaces"]), ("Bridge", [], ["name", "ports"])])
        except OvsdbUnreachable:  # no database here: no OVS bridge, no OVS ports
            return None
        return View.from_rows(bridges, ports, sum(ifaces, []))

    # -- changing -------------------------------------------------------------------------

    def make(self, att: Attachment) -> None:
        self.make_many([att])

    def make_many(self, atts: Sequence[Attachment]) -> None:
        steps = [self.attach_commands(att, self.vsctl()) for att in atts]
        leave = [leave_command(dict.fromkeys(att.pid for att in atts))]
        left = False
        try:
            with self.all_or_none() as made:
                # The names, stale ports of the same names, then the veths: a veth made is
                # known from its own exit code, so this group needs no stop at a failure.
                first = [*_once([argv for s in steps for argv in s.enter]),
                         *[argv for s in steps for argv in s.veth[:-1]]]
                done = self.batch([*first, *[s.veth[-1] for s in steps]], check=False)
                made += [att for att, d in zip(atts, done[len(first):]) if d.returncode == 0]
                _check(done, self.ctx.host.name)
                self.batch([argv for s in steps for argv in s.inside])
                self.batch([argv for s in steps for argv in s.plug])
                done = self.batch([*[s.up for s in steps], *leave], check=False)
                left = True
                _check(done[:len(steps)], self.ctx.host.name)
                ovs = [att for att in atts if att.kind == "ovs"]
                problems = interface_problems(self.ctx, [att.host_ifname for att in ovs])
                for att in ovs:  # ovs-vsctl exits 0 even when a port could not be added
                    if att.host_ifname in problems:
                        raise ActionError(f"{problems[att.host_ifname]} (on bridge {att.bridge})")
        finally:
            if not left:  # the names go, also when a command failed
                self.batch(leave, check=False)

    def remove(self, seen: State) -> None:
        self.batch(detach_commands(seen, self.vsctl()))


def _pid(info: dict[str, Any] | None) -> int:
    """The PID whose namespace is the container's, or 0 when it is not running."""
    return info["pid"] if info and info["running"] and info["pid"] else 0


def _host_end(entries: Any) -> dict[str, Any] | None:
    """The host end as grep printed its /sys files: {"master", "up"}, or None (not there)."""
    flags = entries.text("flags") if entries is not None else None
    if not flags:
        return None
    return {"master": entries.names("master") or entries.names("brport/bridge"),
            "up": bool(int(flags, 16) & 1)}


def _tagged(view: View | None, look: Look) -> list[dict[str, Any]]:
    """The OVS interfaces tagged for the look's container and interface, with their bridge."""
    if view is None:
        return []
    bridge_of = {i: port["bridge"] for port in view.ports.values() for i in port["interfaces"]}
    tags = {"container_id": look.container, "container_iface": look.ifname}
    return [{"name": name, "bridge": bridge_of.get(name) or "",
             "ofport": i["ofport"] if isinstance(i["ofport"], int) else -1,
             "error": i["error"] if isinstance(i["error"], str) else ""}
            for name, i in view.interfaces.items()
            if all(dict(i.get("external_ids") or {}).get(k) == v for k, v in tags.items())]


def _once(argvs: list[list[str]]) -> list[list[str]]:
    """The commands without repeats (every attachment names its container's namespace, after
    `mkdir -p`: once will do)."""
    seen: list[list[str]] = []
    for argv in argvs:
        if argv not in seen:
            seen.append(argv)
    return seen


class PipeworkAttach(ContainerAttach):
    backend = "pipework"
    targets = ("centos6",)
    local_only = ""  # commands only: it serves SSH hosts
    plumbing = Commands

    @classmethod
    def unusable(cls, host: Host) -> str | None:
        return _unusable(host)


class PipeworkDetach(ContainerDetach):
    backend = "pipework"
    targets = ("centos6",)
    local_only = ""
    plumbing = Commands

    @classmethod
    def unusable(cls, host: Host) -> str | None:
        return _unusable(host)


@hookimpl
def runflow_register_actions(register: Any) -> None:
    register(PipeworkAttach)
    register(PipeworkDetach)
