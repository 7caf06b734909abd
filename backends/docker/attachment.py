"""container.attach / container.detach: what both attach backends share — the observation
and the check of an attachment, the host end's name, the equivalent shell commands, and the
actions themselves, whose plumbing each backend supplies (attach.py: netlink and OVSDB;
pipework.py: `ip`, `ip netns exec`, `brctl` and `ovs-vsctl`, run on the host).

Docker cannot put a container on an Open vSwitch bridge by itself, so attach does what pipework
and ovs-docker do: a veth pair is created with its peer inside the container's network
namespace (found from the container's PID), the peer is given its address, MTU, MAC and
default route there, and the host end joins a Linux bridge or an OVS bridge (the Interface is
tagged `external_ids:container_id` and `container_iface` as ovs-docker does, so detach and
rollback find exactly their own ports).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

from runflow.core.actions import Action, Context, State
from runflow.core.errors import ActionError
from runflow.core.hosts import Host

from .args import ContainerAttachArgs, ContainerDetachArgs
from .client import inspect, missing_modules

def default_host_ifname(container: str, ifname: str, pid: int) -> str:
    """The host end's name: "rf" and a digest of the container, its interface and the PID
    that owns its namespace (as pipework's veth1pl<PID>), so that detach and rollback find it
    without any record, and a re-attach after a restart gets a new name: an OVS port is then
    replaced by another, never re-created under the same name, which ovs-vswitchd would not
    notice."""
    return "rf" + hashlib.sha1(f"{container}/{ifname}/{pid}".encode()).hexdigest()[:10]


@dataclass
class Attachment:
    """One veth from a bridge into a container: what attach makes, and what detach's undo
    makes again from what it observed."""

    container: str  # as the step names it; also the OVS tag container_id, as in ovs-docker
    pid: int
    ifname: str
    host_ifname: str
    bridge: str
    kind: str  # "linux" or "ovs"
    addresses: list[str] = field(default_factory=list)
    gateway: str | None = None
    mtu: int | None = None
    mac: str | None = None
    stale_ports: list[str] = field(default_factory=list)  # tagged OVS ports to replace

    @property
    def tags(self) -> dict[str, str]:
        return {"container_id": self.container, "container_iface": self.ifname}


def container_state(ctx: Context, container: str) -> dict[str, Any] | None:
    info = inspect(ctx, container)
    if info is None:
        return None
    return {"id": info["Id"], "pid": int(info["State"]["Pid"] or 0),
            "running": bool(info["State"]["Running"])}


def host_end_state(name: str) -> dict[str, Any] | None:
    """The host end of a veth as /sys shows it (no command, no netlink socket needed)."""
    base = f"/sys/class/net/{name}"
    try:
        flags = int(open(f"{base}/flags").read(), 16)
    except OSError:
        return None
    master = os.path.basename(os.readlink(f"{base}/master")) if os.path.islink(
        f"{base}/master") else None
    return {"master": master, "up": bool(flags & 1)}


def linux_bridge(name: str) -> bool:
    return os.path.isdir(f"/sys/class/net/{name}/bridge")


def global_addresses(addresses: list[str]) -> list[str]:
    """Addresses worth comparing and restoring: not the kernel's IPv6 link-local ones."""
    return [a for a in addresses if not ipaddress.ip_interface(a).ip.is_link_local]


def attach_holds(args: ContainerAttachArgs, seen: State) -> bool:
    """Does the container have the interface, configured as asked, on that bridge?"""
    info, iface, end = seen["container"], seen["iface"], seen["host_end"]
    if not (info and info["running"] and iface and iface["up"] and end and end["up"]):
        return False
    if args.address and ipaddress.ip_interface(args.address) not in [
            ipaddress.ip_interface(a) for a in iface["addresses"]]:
        return False
    if args.gateway and iface.get("gateway") != args.gateway:
        return False
    if (args.mtu and iface["mtu"] != args.mtu) or (args.mac and iface["mac"] != args.mac):
        return False
    if seen["bridge_kind"] == "linux":
        return end["master"] == args.bridge
    return any(p["name"] == seen["host_ifname"] and p["bridge"] == args.bridge
               and p["ofport"] > 0 for p in seen["ovs_ports"])


def attachment_for(args: ContainerAttachArgs, seen: State) -> Attachment:
    """The attachment an attach step asks for, on the container it observed."""
    return Attachment(
        container=args.container, pid=(seen["container"] or {}).get("pid", 0),
        ifname=args.ifname, host_ifname=seen["host_ifname"], bridge=args.bridge,
        kind=seen["bridge_kind"] or "linux", addresses=[args.address] if args.address else [],
        gateway=args.gateway, mtu=args.mtu, mac=args.mac,
        stale_ports=[p["name"] for p in seen["ovs_ports"]],
    )


def attachment_seen(args: ContainerDetachArgs, seen: State) -> Attachment | None:
    """The attachment a detach step observed (what its undo makes again), if complete."""
    iface, end, info = seen["iface"], seen["host_end"], seen["container"]
    ports = [p for p in seen["ovs_ports"] if p["name"] == seen["host_ifname"]]
    if not (iface and info and info["running"] and end):
        return None
    kind, bridge = ("ovs", ports[0]["bridge"]) if ports else ("linux", end["master"])
    if not bridge:
        return None
    return Attachment(
        container=args.container, pid=info["pid"], ifname=args.ifname,
        host_ifname=seen["host_ifname"], bridge=bridge, kind=kind,
        addresses=iface["addresses"], gateway=iface.get("gateway"), mtu=iface["mtu"],
        mac=iface["mac"],
    )


def vsctl_argv(host: Host | None) -> list[str]:
    """ovs-vsctl aimed at the host's OVSDB (the inventory's ovsdb endpoint, or the default)."""
    db = host.endpoints.get("ovsdb") if host else None
    return ["ovs-vsctl", f"--db={db}"] if db else ["ovs-vsctl"]


def peer_temp_name(host_ifname: str) -> str:
    """The container end's name until it is inside the container and renamed."""
    return "rfc" + hashlib.sha1(host_ifname.encode()).hexdigest()[:10]


NETNS_DIR = "/var/run/netns"  # where `ip netns` looks for namespaces by name


def netns_name(pid: int | str) -> str:
    """The name under which `ip netns exec` finds the network namespace of process pid: a
    symbolic link NETNS_DIR/NAME → /proc/PID/ns/net, made for the commands that need it and
    removed after them (pipework's way in: CentOS 6's util-linux 2.17 has no nsenter)."""
    return f"runflow-{pid}"


def netns_link(pid: int | str) -> str:
    return f"{NETNS_DIR}/{netns_name(pid)}"


def enter_commands(pid: int | str) -> list[list[str]]:
    """The commands that name the namespace of process pid for `ip netns exec`."""
    return [["mkdir", "-p", NETNS_DIR], ["ln", "-sfn", f"/proc/{pid}/ns/net", netns_link(pid)]]


def leave_command(pids: Iterable[int | str]) -> list[str]:
    """The command that removes the names enter_commands made (one for many containers)."""
    return ["rm", "-f", *map(netns_link, pids)]


class AttachCommands(NamedTuple):
    """The commands that make an attachment, in the groups a backend runs together (each
    group after the one before it has succeeded)."""

    enter: list[list[str]]  # name the container's namespace (pipework), or nothing
    veth: list[list[str]]  # a stale port of the same name away, then the veth pair
    inside: list[list[str]]  # the container's end: its name, MAC, up, addresses, route
    plug: list[list[str]]  # the host end into the bridge (brctl, or one chained ovs-vsctl)
    up: list[str]  # the host end up
    leave: list[list[str]]  # remove the name made by enter

    def all(self) -> list[list[str]]:
        return [*self.enter, *self.veth, *self.inside, *self.plug, self.up, *self.leave]


def attach_commands(att: Attachment, vsctl: list[str], *, named_netns: bool = False
                    ) -> AttachCommands:
    """The pipework-style commands that make an attachment (the pipework backend runs them;
    the netlink backend does the same in one process, and journals these as its equivalent).
    The peer is created inside the container's namespace (`peer name PEER netns PID`, as
    neutron's add_veth does; the kernel honours a peer's namespace since 2.6.33): moving it
    there afterwards, as pipework does with `ip link set PEER netns PID`, costs about half of
    the whole attachment, as the kernel waits before a link leaves a namespace. Inside the
    container, commands run under `ip netns exec NAME` (named_netns, as pipework does) or
    `nsenter -t PID -n`."""
    pid, peer = str(att.pid or "PID"), peer_temp_name(att.host_ifname)
    mtu = ["mtu", str(att.mtu)] if att.mtu else []
    enter: list[list[str]] = []
    leave: list[list[str]] = []
    if named_netns:
        enter, leave = enter_commands(pid), [leave_command([pid])]
        inside = ["ip", "netns", "exec", netns_name(pid), "ip"]
    else:
        inside = ["nsenter", "-t", pid, "-n", "ip"]
    veth = [["ip", "link", "add", att.host_ifname, *mtu, "type", "veth", "peer", "name", peer,
             *mtu, "netns", pid]]
    in_container = [
        [*inside, "link", "set", peer, "name", att.ifname,
         *(["address", att.mac] if att.mac else []), "up"],
        *[[*inside, "addr", "add", address, "dev", att.ifname] for address in att.addresses],
    ]
    if att.gateway:
        in_container.append([*inside, "route", "replace", "default", "via", att.gateway,
                             "dev", att.ifname])
    if att.kind == "ovs":
        # A stale port of the same name (a fixed host_ifname) goes first, on its own:
        # ovs-vswitchd must drop the old device before it can open the new one.
        if att.host_ifname in att.stale_ports:
            veth.insert(0, [*vsctl, "--if-exists", "del-port", att.host_ifname])
        port = list(vsctl)
        for stale in att.stale_ports:
            if stale != att.host_ifname:
                port += ["--", "--if-exists", "del-port", stale]
        port += ["--", "--may-exist", "add-port", att.bridge, att.host_ifname,
                 "--", "set", "Interface", att.host_ifname,
                 *[f"external_ids:{k}={v}" for k, v in att.tags.items()]]
        plug = [port]
    else:
        plug = [["brctl", "addif", att.bridge, att.host_ifname]]
    return AttachCommands(enter, veth, in_container, plug,
                          ["ip", "link", "set", att.host_ifname, "up"], leave)


def detach_commands(seen: State, vsctl: list[str]) -> list[list[str]]:
    """The commands that remove what an attach made (the veth goes with its host end)."""
    commands = []
    if seen["host_end"] is not None:
        commands.append(["ip", "link", "del", seen["host_ifname"]])
    for port in seen["ovs_ports"]:
        commands.append([*vsctl, "--if-exists", "del-port", port["bridge"], port["name"]])
    return commands


class Look(NamedTuple):
    """What one step instance observes: a container's interface, the host end of its veth
    (None: the default name, known once the container's PID is) and, for attach, the bridge
    it joins; gateway: whether to read the default route too."""

    container: str
    ifname: str
    host_ifname: str | None
    bridge: str | None
    gateway: bool


class Plumbing:
    """How an attach backend looks at and changes the host and the container. One object per
    step call; subclasses: Netlink (attach.py) and pipework's Commands."""

    named_netns: ClassVar[bool] = False  # True: commands enter containers by `ip netns exec`

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @classmethod
    def attach_commands(cls, att: Attachment, vsctl: list[str]) -> AttachCommands:
        return attach_commands(att, vsctl, named_netns=cls.named_netns)

    def observe(self, container: str, ifname: str, host_ifname: str | None,
                bridge: str | None, *, gateway: bool) -> State:
        return self.observe_many([Look(container, ifname, host_ifname, bridge, gateway)])[0]

    def observe_many(self, looks: Sequence[Look]) -> list[State]:
        """The state of each look. Here one after another, through the methods below (the
        host end and the bridge read from this process's /sys); Commands reads them all
        at once, through commands."""
        return [self._observe_one(look) for look in looks]

    def _observe_one(self, look: Look) -> State:
        info = container_state(self.ctx, look.container)
        running = bool(info and info["running"] and info["pid"])
        host_ifname = look.host_ifname or default_host_ifname(
            look.container, look.ifname, info["pid"] if running else 0)
        kind = None
        if look.bridge is not None:
            kind = "linux" if linux_bridge(look.bridge) else "ovs" if self.known_ovs_bridge(
                look.bridge) else None
        # Detach looks for tagged ports wherever they are; attach only when OVS is involved.
        look_in_ovs = kind == "ovs" or (look.bridge is None and self.ovs_reachable())
        return {
            "container": info,
            "host_ifname": host_ifname,
            "host_end": host_end_state(host_ifname),
            "iface": self.iface(info["pid"], look.ifname, gateway=look.gateway)
            if running else None,
            "bridge_kind": kind,
            "ovs_ports": self.ovs_ports(look.container, look.ifname) if look_in_ovs else [],
        }

    def known_ovs_bridge(self, name: str) -> bool:
        """ovs_bridge, asked once per run and bridge (a for_each step asks for every item)."""
        seen: set[str] = self.ctx.resources.get("container.ovs-bridges", set)
        if name not in seen and self.ovs_bridge(name):
            seen.add(name)
        return name in seen

    def iface(self, pid: int, ifname: str, *, gateway: bool) -> dict[str, Any] | None:
        """{"addresses", "mtu", "mac", "up", "gateway"} of ifname inside the container."""
        raise NotImplementedError

    def ovs_reachable(self) -> bool:
        raise NotImplementedError

    def ovs_bridge(self, name: str) -> bool:
        raise NotImplementedError

    def ovs_ports(self, container: str, ifname: str) -> list[dict[str, Any]]:
        """The OVS interfaces tagged for this container and interface, with their bridge."""
        raise NotImplementedError

    def make(self, att: Attachment) -> None:
        raise NotImplementedError

    def make_many(self, atts: Sequence[Attachment]) -> None:
        """The attachments of a for_each step, one after another."""
        with self.all_or_none() as made:
            for att in atts:
                self.make(att)
                made.append(att)

    @contextmanager
    def all_or_none(self) -> Iterator[list[Attachment]]:
        """Collects the attachments made; if the block fails, removes them all: the engine
        rolls back only the instances of a batch that hold, so none may be left half-made."""
        made: list[Attachment] = []
        try:
            yield made
        except Exception:
            for att in made:
                ports = [{"name": att.host_ifname, "bridge": att.bridge}] \
                    if att.kind == "ovs" else []
                self.remove({"host_end": True, "host_ifname": att.host_ifname,
                             "ovs_ports": ports})
            raise

    def remove(self, seen: State) -> None:
        """Delete the host end (its peer goes with it) and the tagged OVS ports seen."""
        raise NotImplementedError


LOCAL_ONLY = ("it talks netlink to the host and inside the container's namespace (/proc/PID) "
              "from this process")


def _container_not_ready(container: str, info: dict[str, Any] | None) -> str | None:
    if info is None:
        return f"there is no container {container}: start it first (container.run)"
    if not info["running"] or not info["pid"]:
        return f"container {container} is not running: start it first (container.run)"
    return None


class ContainerAttach(Action):
    """container.attach with netlink; backends/docker/pipework.py swaps the plumbing for commands."""

    name = "container.attach"
    backend = "docker"
    family = "container"
    targets = ("modern",)
    local_only = LOCAL_ONLY
    Args = ContainerAttachArgs
    summary = "a veth from a Linux or OVS bridge into a container (pipework / ovs-docker style)"
    plumbing: type[Plumbing]  # Netlink here; pipework: Commands

    @classmethod
    def unusable(cls, host: Host) -> str | None:
        return missing_modules("docker", "pyroute2")

    def observe(self, ctx: Context, args: ContainerAttachArgs) -> State:
        return self.observe_many(ctx, [args])[0]

    def observe_many(self, ctx: Context, args: Sequence[ContainerAttachArgs]) -> list[State]:
        return self.plumbing(ctx).observe_many([
            Look(a.container, a.ifname, a.host_ifname, a.bridge, bool(a.gateway)) for a in args])

    def check(self, args: ContainerAttachArgs, before: State) -> bool:
        return attach_holds(args, before)

    def apply(self, ctx: Context, args: ContainerAttachArgs, before: State) -> None:
        self.apply_many(ctx, [(args, before)])

    def apply_many(self, ctx: Context,
                   items: Sequence[tuple[ContainerAttachArgs, State]]) -> None:
        for args, before in items:  # every instance is checked before anything changes
            problem = _container_not_ready(args.container, before["container"])
            if problem:
                raise ActionError(problem)
            if not before["bridge_kind"]:
                raise ActionError(f"bridge {args.bridge} does not exist (neither a Linux "
                                  "bridge nor an Open vSwitch bridge on this host)")
        plumbing = self.plumbing(ctx)
        for args, before in items:
            if before["host_end"] is not None:  # half made, or made with other settings: redo
                plumbing.remove({**before, "ovs_ports": []})
        plumbing.make_many([attachment_for(args, before) for args, before in items])

    def undo(self, ctx: Context, args: ContainerAttachArgs, before: State) -> None:
        plumbing = self.plumbing(ctx)
        plumbing.remove(plumbing.observe(args.container, args.ifname, args.host_ifname,
                                         None, gateway=False))

    def describe(self, args: ContainerAttachArgs, before: State | None = None
                 ) -> list[list[str]]:
        seen = before or {"container": None, "host_end": None, "ovs_ports": [],
                          "host_ifname": args.host_ifname, "bridge_kind": None}
        vsctl = vsctl_argv(None)
        redo = detach_commands({**seen, "ovs_ports": []}, vsctl)
        return [*redo, *self.plumbing.attach_commands(attachment_for(args, seen), vsctl).all()]

    def describe_undo(self, args: ContainerAttachArgs, before: State | None = None
                      ) -> list[list[str]]:
        name = (before or {}).get("host_ifname") or args.host_ifname or "HOST_IFNAME"
        return [["ip", "link", "del", name]]


class ContainerDetach(Action):
    """container.detach with netlink; backends/docker/pipework.py swaps the plumbing for commands."""

    name = "container.detach"
    backend = "docker"
    family = "container"
    targets = ("modern",)
    local_only = LOCAL_ONLY
    Args = ContainerDetachArgs
    summary = "remove what container.attach made (undo makes it again as it was)"
    plumbing: type[Plumbing]  # Netlink here; pipework: Commands

    unusable = ContainerAttach.unusable

    def observe(self, ctx: Context, args: ContainerDetachArgs) -> State:
        return self.plumbing(ctx).observe(args.container, args.ifname, args.host_ifname,
                                          None, gateway=True)

    def check(self, args: ContainerDetachArgs, before: State) -> bool:
        return before["host_end"] is None and not before["ovs_ports"]

    def apply(self, ctx: Context, args: ContainerDetachArgs, before: State) -> None:
        self.plumbing(ctx).remove(before)

    def undo(self, ctx: Context, args: ContainerDetachArgs, before: State) -> None:
        att = attachment_seen(args, before)
        if att is None:
            return
        plumbing = self.plumbing(ctx)
        now = plumbing.observe(args.container, args.ifname, att.host_ifname, att.bridge,
                               gateway=bool(att.gateway))
        problem = _container_not_ready(args.container, now["container"])
        if problem or now["host_end"] is not None:  # gone (nothing to restore) or restored
            return
        att.pid = now["container"]["pid"]
        att.stale_ports = [p["name"] for p in now["ovs_ports"]]
        plumbing.make(att)

    def describe(self, args: ContainerDetachArgs, before: State | None = None
                 ) -> list[list[str]]:
        seen = before or {"host_end": {}, "ovs_ports": [],
                          "host_ifname": args.host_ifname or "HOST_IFNAME"}
        return detach_commands(seen, vsctl_argv(None))

    def describe_undo(self, args: ContainerDetachArgs, before: State | None = None
                      ) -> list[list[str]]:
        att = attachment_seen(args, before) if before else None
        return self.plumbing.attach_commands(att, vsctl_argv(None)).all() if att else []
