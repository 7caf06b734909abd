"""Containers through the Docker Engine API (`docker` backend): container.run / container.absent,
and container.attach / container.detach with netlink (pyroute2).

Docker cannot put a container on an Open vSwitch bridge by itself, so attach does what pipework
and ovs-docker do, in one process: a veth pair is created with its peer directly inside the
container's network namespace (found from the container's PID), the peer is given its address,
MTU, MAC and default route there, and the host end joins a Linux bridge (IFLA_MASTER) or an OVS
bridge (an OVSDB transaction; the Interface is tagged `external_ids:container_id` and
`container_iface` as ovs-docker does, so detach and rollback find exactly their own ports).

This module also holds what the `pipework` backend (backends/pipework.py) shares: the docker
client and inspection, the observation and the check of an attachment, the host end's name,
and the equivalent shell commands (pipework's apply runs them; this backend describes with
them).
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import ipaddress
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from runflow.core.actions import Action, Context, State
from runflow.core.errors import ActionError
from runflow.core.hookspecs import hookimpl
from runflow.core.hosts import Host

from .docker_args import (ContainerAbsentArgs, ContainerAttachArgs, ContainerDetachArgs,
                          ContainerRunArgs)
from .ovs_args import setup_problem

DEFAULT_DOCKER = "unix:///var/run/docker.sock"
DEFAULT_OVSDB = "unix:/var/run/openvswitch/db.sock"


def missing_modules(*names: str) -> str | None:
    """Why a backend cannot run: the first Python module that is not installed, or None."""
    for name in names:
        if importlib.util.find_spec(name) is None:
            return f"the Python module {name!r} is not installed (pip install {name})"
    return None


# -- the docker daemon --------------------------------------------------------------------------


def docker_endpoint(host: Host) -> str:
    """The host's docker socket as the SDK wants it (inventories may write unix:/path)."""
    url = host.endpoints.get("docker", DEFAULT_DOCKER)
    if url.startswith("unix:") and not url.startswith("unix://"):
        url = "unix://" + url.removeprefix("unix:")
    return url


def docker_client(ctx: Context) -> Any:
    """One Docker SDK client per run and host."""

    def connect() -> Any:
        import docker

        try:
            return docker.DockerClient(base_url=docker_endpoint(ctx.host), timeout=60)
        except docker.errors.DockerException as exc:
            raise ActionError(f"cannot reach dockerd at {docker_endpoint(ctx.host)}: {exc}")

    return ctx.resources.get(f"docker:{docker_endpoint(ctx.host)}", connect)


def docker_argv(ctx: Context | None, *argv: str) -> list[str]:
    """The docker command line equivalent to an API call (for describe)."""
    prefix = ["docker"]
    if ctx is not None and "docker" in ctx.host.endpoints:
        prefix += ["-H", docker_endpoint(ctx.host)]
    return [*prefix, *argv]


def inspect(ctx: Context, container: str) -> dict[str, Any] | None:
    """`docker inspect` of a container, or None when there is no such container."""
    import docker

    try:
        return docker_client(ctx).api.inspect_container(container)
    except docker.errors.NotFound:
        return None
    except docker.errors.APIError as exc:
        raise ActionError(f"docker inspect {container}: {exc.explanation or exc}") from None


def exec_in_container(ctx: Context, container: str, argv: list[str]) -> tuple[int, str]:
    """Run argv inside a running container; returns (exit code, stdout and stderr)."""
    import docker

    api = docker_client(ctx).api
    try:
        exec_id = api.exec_create(container, argv)["Id"]
        output = api.exec_start(exec_id)
        code = api.exec_inspect(exec_id)["ExitCode"]
    except docker.errors.APIError as exc:  # no such container, not running, ...
        return 126, f"docker exec {container}: {exc.explanation or exc}"
    return int(code if code is not None else 1), output.decode(errors="replace")


# -- containers ---------------------------------------------------------------------------------


def _env_dict(env: list[str] | None) -> dict[str, str]:
    return dict(item.split("=", 1) if "=" in item else (item, "") for item in env or [])


def observe_container(ctx: Context, name: str) -> State:
    """What container.run and container.absent compare and restore."""
    info = inspect(ctx, name)
    if info is None:
        return {"exists": False}
    config, host_config = info["Config"], info["HostConfig"]
    return {
        "exists": True,
        "id": info["Id"],
        "running": bool(info["State"]["Running"]),
        "image": config["Image"],
        "command": config.get("Cmd"),
        "network": host_config.get("NetworkMode") or "default",
        "init": bool(host_config.get("Init")),
        "labels": config.get("Labels") or {},
        "env": _env_dict(config.get("Env")),
    }


def _differences(args: ContainerRunArgs, seen: State) -> list[str]:
    """How an existing container differs from the one the step asks for."""
    wanted = {"image": args.image, "network": args.network, "init": args.init}
    diffs = [f"{key} is {seen[key]!r}, not {value!r}" for key, value in wanted.items()
             if seen[key] != value and not (key == "network" and value == "bridge"
                                             and seen[key] == "default")]
    if args.command is not None and seen["command"] != args.command:
        diffs.append(f"command is {seen['command']!r}, not {args.command!r}")
    for what in ("labels", "env"):
        mine: dict[str, str] = getattr(args, what)
        wrong = {k: v for k, v in mine.items() if seen[what].get(k) != v}
        if wrong:
            diffs.append(f"{what} lack {wrong}")
    return diffs


def _run_argv(ctx: Context | None, spec: dict[str, Any]) -> list[str]:
    argv = ["run", "-d", "--pull=never", "--name", spec["name"], "--network", spec["network"]]
    if spec["init"]:
        argv.append("--init")
    argv += [f"--label={k}={v}" for k, v in spec["labels"].items()]
    argv += [f"--env={k}={v}" for k, v in spec["env"].items()]
    return docker_argv(ctx, *argv, spec["image"], *(spec["command"] or []))


def _create(ctx: Context, spec: dict[str, Any], *, pull: bool = False) -> None:
    """Create and start a container from a spec (the step's arguments or an observation)."""
    import docker

    client = docker_client(ctx)
    ctx.commands.append(ctx.host.describe(_run_argv(ctx, spec)))
    try:
        try:
            client.images.get(spec["image"])
        except docker.errors.ImageNotFound:
            if not pull:
                raise ActionError(f"image {spec['image']} is not on this host and pull is "
                                  "false: load or build it first, or set pull = true") from None
            client.images.pull(spec["image"])
        network = spec["network"]
        where = ({"network_mode": network} if network in ("none", "bridge", "host", "default")
                 else {"network": network})
        client.containers.run(spec["image"], spec["command"], name=spec["name"], detach=True,
                              init=spec["init"] or None, labels=spec["labels"],
                              environment=spec["env"], **where)
    except docker.errors.APIError as exc:
        raise ActionError(f"docker run {spec['name']}: {exc.explanation or exc}") from None


def _container_call(ctx: Context, name: str, what: str, argv: list[str], **kwargs: Any) -> None:
    """Call a container method (start, stop, remove) that may find the container gone."""
    import docker

    ctx.commands.append(ctx.host.describe(docker_argv(ctx, *argv)))
    try:
        getattr(docker_client(ctx).api, what)(name, **kwargs)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        raise ActionError(f"docker {what.replace('_container', '')} {name}: "
                          f"{exc.explanation or exc}") from None


class ContainerRun(Action):
    name = "container.run"
    backend = "docker"
    family = "container"
    Args = ContainerRunArgs
    summary = "a running container (created and started if missing; never pulled unless asked)"

    @classmethod
    def unusable(cls, host: Host) -> str | None:
        return missing_modules("docker")

    def observe(self, ctx: Context, args: ContainerRunArgs) -> State:
        return observe_container(ctx, args.name)

    def check(self, args: ContainerRunArgs, before: State) -> bool:
        return bool(before["exists"] and before["running"] and not _differences(args, before))

    def apply(self, ctx: Context, args: ContainerRunArgs, before: State) -> None:
        if not before["exists"]:
            _create(ctx, self._spec(args), pull=args.pull)
            return
        diffs = _differences(args, before)
        if diffs:
            raise ActionError(f"container {args.name} exists with other settings ("
                              f"{'; '.join(diffs)}): remove it first (container.absent)")
        _container_call(ctx, args.name, "start", ["start", args.name])

    def undo(self, ctx: Context, args: ContainerRunArgs, before: State) -> None:
        if not before["exists"]:
            _container_call(ctx, args.name, "remove_container", ["rm", "-f", args.name],
                            force=True)
        elif not before["running"]:
            _container_call(ctx, args.name, "stop", ["stop", args.name])

    @staticmethod
    def _spec(args: ContainerRunArgs) -> dict[str, Any]:
        return args.model_dump(exclude={"pull"})

    def describe(self, args: ContainerRunArgs, before: State | None = None) -> list[list[str]]:
        if before and before["exists"]:
            return [docker_argv(None, "start", args.name)]
        return [_run_argv(None, self._spec(args))]

    def describe_undo(self, args: ContainerRunArgs, before: State | None = None
                      ) -> list[list[str]]:
        if before and before["exists"]:
            return [] if before["running"] else [docker_argv(None, "stop", args.name)]
        return [docker_argv(None, "rm", "-f", args.name)]


class ContainerAbsent(Action):
    name = "container.absent"
    backend = "docker"
    family = "container"
    Args = ContainerAbsentArgs
    summary = "no container of that name (undo recreates it with its settings)"

    unusable = ContainerRun.unusable

    def observe(self, ctx: Context, args: ContainerAbsentArgs) -> State:
        return observe_container(ctx, args.name)

    def check(self, args: ContainerAbsentArgs, before: State) -> bool:
        return not before["exists"]

    def apply(self, ctx: Context, args: ContainerAbsentArgs, before: State) -> None:
        if before["running"]:
            _container_call(ctx, args.name, "stop", ["stop", "-t", str(args.timeout),
                                                     args.name], timeout=args.timeout)
        _container_call(ctx, args.name, "remove_container", ["rm", "-f", args.name], force=True)

    def undo(self, ctx: Context, args: ContainerAbsentArgs, before: State) -> None:
        if not before.get("exists") or inspect(ctx, args.name) is not None:
            return
        _create(ctx, {"name": args.name, **{k: before[k] for k in (
            "image", "command", "network", "init", "labels", "env")}})
        if not before["running"]:
            _container_call(ctx, args.name, "stop", ["stop", args.name])

    def describe(self, args: ContainerAbsentArgs, before: State | None = None
                 ) -> list[list[str]]:
        return [docker_argv(None, "rm", "-f", args.name)]


# -- attachments: what both attach backends share -----------------------------------------------


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


def attach_commands(att: Attachment, vsctl: list[str]) -> list[list[str]]:
    """The pipework-style commands that make an attachment (pipework runs exactly these; the
    netlink backend does the same in one process). The peer is created inside the container's
    namespace (`peer name PEER netns PID`, as neutron's add_veth does; the kernel honours a
    peer's namespace since 2.6.33): moving it there afterwards, as pipework does with `ip link
    set PEER netns PID`, costs about half of the whole attachment, as the kernel waits before
    a link leaves a namespace."""
    pid, peer = str(att.pid or "PID"), peer_temp_name(att.host_ifname)
    mtu = ["mtu", str(att.mtu)] if att.mtu else []
    inside = ["nsenter", "-t", pid, "-n", "ip"]
    commands = [
        ["ip", "link", "add", att.host_ifname, *mtu, "type", "veth", "peer", "name", peer, *mtu,
         "netns", pid],
        [*inside, "link", "set", peer, "name", att.ifname,
         *(["address", att.mac] if att.mac else []), "up"],
        *[[*inside, "addr", "add", address, "dev", att.ifname] for address in att.addresses],
    ]
    if att.gateway:
        commands.append([*inside, "route", "replace", "default", "via", att.gateway,
                         "dev", att.ifname])
    if att.kind == "ovs":
        # A stale port of the same name (a fixed host_ifname) goes first, on its own:
        # ovs-vswitchd must drop the old device before it can open the new one.
        if att.host_ifname in att.stale_ports:
            commands.insert(0, [*vsctl, "--if-exists", "del-port", att.host_ifname])
        port = list(vsctl)
        for stale in att.stale_ports:
            if stale != att.host_ifname:
                port += ["--", "--if-exists", "del-port", stale]
        port += ["--", "--may-exist", "add-port", att.bridge, att.host_ifname,
                 "--", "set", "Interface", att.host_ifname,
                 *[f"external_ids:{k}={v}" for k, v in att.tags.items()]]
        commands.append(port)
    else:
        commands.append(["brctl", "addif", att.bridge, att.host_ifname])
    commands.append(["ip", "link", "set", att.host_ifname, "up"])
    return commands


def detach_commands(seen: State, vsctl: list[str]) -> list[list[str]]:
    """The commands that remove what an attach made (the veth goes with its host end)."""
    commands = []
    if seen["host_end"] is not None:
        commands.append(["ip", "link", "del", seen["host_ifname"]])
    for port in seen["ovs_ports"]:
        commands.append([*vsctl, "--if-exists", "del-port", port["bridge"], port["name"]])
    return commands


class Plumbing:
    """How an attach backend looks at and changes the host and the container. One object per
    step call; subclasses: Netlink (below) and pipework's Commands."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def observe(self, container: str, ifname: str, host_ifname: str | None,
                bridge: str | None, *, gateway: bool) -> State:
        info = container_state(self.ctx, container)
        running = bool(info and info["running"] and info["pid"])
        if host_ifname is None:
            host_ifname = default_host_ifname(container, ifname, info["pid"] if running else 0)
        kind = None
        if bridge is not None:
            kind = "linux" if linux_bridge(bridge) else "ovs" if self.known_ovs_bridge(
                bridge) else None
        # Detach looks for tagged ports wherever they are; attach only when OVS is involved.
        look_in_ovs = kind == "ovs" or (bridge is None and self.ovs_reachable())
        return {
            "container": info,
            "host_ifname": host_ifname,
            "host_end": host_end_state(host_ifname),
            "iface": self.iface(info["pid"], ifname, gateway=gateway) if running else None,
            "bridge_kind": kind,
            "ovs_ports": self.ovs_ports(container, ifname) if look_in_ovs else [],
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


def _container_not_ready(container: str, info: dict[str, Any] | None) -> str | None:
    if info is None:
        return f"there is no container {container}: start it first (container.run)"
    if not info["running"] or not info["pid"]:
        return f"container {container} is not running: start it first (container.run)"
    return None


class ContainerAttach(Action):
    """container.attach with netlink; backends/pipework.py swaps the plumbing for commands."""

    name = "container.attach"
    backend = "docker"
    family = "container"
    Args = ContainerAttachArgs
    summary = "a veth from a Linux or OVS bridge into a container (pipework / ovs-docker style)"
    plumbing: type[Plumbing]  # Netlink here; pipework: Commands

    @classmethod
    def unusable(cls, host: Host) -> str | None:
        return missing_modules("docker", "pyroute2")

    def observe(self, ctx: Context, args: ContainerAttachArgs) -> State:
        return self.plumbing(ctx).observe(args.container, args.ifname, args.host_ifname,
                                          args.bridge, gateway=bool(args.gateway))

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
        return [*redo, *attach_commands(attachment_for(args, seen), vsctl)]

    def describe_undo(self, args: ContainerAttachArgs, before: State | None = None
                      ) -> list[list[str]]:
        name = (before or {}).get("host_ifname") or args.host_ifname or "HOST_IFNAME"
        return [["ip", "link", "del", name]]


class ContainerDetach(Action):
    """container.detach with netlink; backends/pipework.py swaps the plumbing for commands."""

    name = "container.detach"
    backend = "docker"
    family = "container"
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
        return attach_commands(att, vsctl_argv(None)) if att else []


# -- netlink plumbing (the docker backend) ------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET = 0x40000000


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise ActionError(f"cannot enter the network namespace of {what}: {os.strerror(err)}")


@contextmanager
def container_netlink(pid: int) -> Iterator[Any]:
    """A netlink socket inside the network namespace of process pid.

    The calling thread enters the namespace only to open the socket and comes straight back: a
    socket stays bound to the namespace it was opened in. No process, no extra thread.
    """
    from pyroute2 import IPRoute

    try:
        target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    except OSError as exc:
        raise ActionError(f"no network namespace for pid {pid}: {exc.strerror}") from None
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _setns(target, f"pid {pid}")
        try:
            ipr = IPRoute()
        finally:
            _setns(home, "this host")
    finally:
        os.close(target)
        os.close(home)
    try:
        yield ipr
    finally:
        ipr.close()


def _netlink_error(exc: Exception, what: str) -> ActionError:
    """NetlinkError's args are (errno, message): say what failed and the message."""
    return ActionError(f"{what}: {exc.args[-1] if exc.args else exc}")


def _optional(value: Any, default: Any) -> Any:
    """An OVSDB optional column's value: ovsdbapp gives [] when unset, [x] or x when set."""
    if isinstance(value, list):
        return value[0] if value else default
    return default if value is None else value


class Netlink(Plumbing):
    """Attach and detach with pyroute2 (host and container) and ovsdbapp (OVS ports)."""

    def host_ipr(self) -> Any:
        from pyroute2 import IPRoute

        return self.ctx.resources.get("container.netlink", IPRoute)

    # -- OVS ------------------------------------------------------------------------------

    def endpoint(self) -> str:
        return self.ctx.host.endpoints.get("ovsdb", DEFAULT_OVSDB)

    def ovs_reachable(self) -> bool:
        url = self.endpoint()
        return not url.startswith("unix:") or os.path.exists(url.removeprefix("unix:"))

    def ovs(self) -> Any:
        # The ovsdb backend's client: one connection per host (ovsdbapp keeps a connection
        # per class, so a plain OvsdbIdl would talk to the first host's database on all).
        from .ovsdb import OvsdbClient

        return self.ctx.resources.get(f"container.ovsdb:{self.endpoint()}",
                                      lambda: OvsdbClient(self.ctx.host)).api

    def ovs_bridge(self, name: str) -> bool:
        return self.ovs_reachable() and self.ovs().br_exists(name).execute(check_error=True)

    def ovs_ports(self, container: str, ifname: str) -> list[dict[str, Any]]:
        api = self.ovs()
        rows = api.db_list("Interface", columns=["name", "external_ids", "ofport", "error"]
                           ).execute(check_error=True)
        tags = {"container_id": container, "container_iface": ifname}
        ports = []
        for row in rows:
            if all(row["external_ids"].get(k) == v for k, v in tags.items()):
                bridge = api.iface_to_br(row["name"]).execute(check_error=False)
                ports.append({"name": row["name"], "bridge": bridge or "",
                              "ofport": int(_optional(row["ofport"], -1)),
                              "error": _optional(row["error"], "")})
        return ports

    # -- the container --------------------------------------------------------------------

    def iface(self, pid: int, ifname: str, *, gateway: bool) -> dict[str, Any] | None:
        with container_netlink(pid) as ipr:
            found = ipr.link_lookup(ifname=ifname)
            if not found:
                return None
            link = ipr.get_links(found[0])[0]
            addresses = [f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}"
                         for a in ipr.get_addr(index=found[0])]
            seen = {"addresses": global_addresses(addresses), "mtu": link.get("IFLA_MTU"),
                    "mac": link.get("IFLA_ADDRESS"), "up": bool(link["flags"] & 1),
                    "gateway": None}
            if gateway:
                for family in (2, 10):
                    for route in ipr.get_routes(family=family, dst_len=0, table=254):
                        if route.get("RTA_OIF") == found[0] and route.get("RTA_GATEWAY"):
                            seen["gateway"] = route.get("RTA_GATEWAY")
            return seen

    # -- changes --------------------------------------------------------------------------

    def make(self, att: Attachment) -> None:
        self.make_many([att])

    def make_many(self, atts: Sequence[Attachment]) -> None:
        """Veths one container after another, then the OVS ports of all of them in one
        transaction: ovs-vswitchd reconfigures once (some 10 ms), not once per container."""
        with self.all_or_none() as made:
            for att in atts:
                self._make_veth(att)
                made.append(att)
            self._add_ports([att for att in made if att.kind == "ovs"])

    def _make_veth(self, att: Attachment) -> None:
        from pyroute2 import NetlinkError

        self.ctx.commands += [self.ctx.host.describe(argv)
                              for argv in attach_commands(att, vsctl_argv(self.ctx.host))]
        ipr = self.host_ipr()
        extra: dict[str, Any] = {"mtu": att.mtu} if att.mtu else {}
        if att.kind == "linux":
            found = ipr.link_lookup(ifname=att.bridge)
            if not found:
                raise ActionError(f"bridge {att.bridge} does not exist")
            extra["master"] = found[0]
        peer: dict[str, Any] = {"ifname": att.ifname, "net_ns_pid": att.pid}
        if att.mtu:
            peer["mtu"] = att.mtu
        if att.mac:
            peer["address"] = att.mac
        try:
            ipr.link("add", ifname=att.host_ifname, kind="veth", state="up", peer=peer, **extra)
        except NetlinkError as exc:
            if exc.code == 17:
                raise ActionError(f"container {att.container} already has an interface "
                                  f"{att.ifname} that runflow did not attach (or the host has "
                                  f"a link {att.host_ifname}): choose another ifname") from None
            raise _netlink_error(exc, f"creating veth {att.host_ifname}") from None
        try:
            self._configure_inside(att)
        except Exception:
            self._delete_host_end(att.host_ifname)
            raise

    def _configure_inside(self, att: Attachment) -> None:
        from pyroute2 import NetlinkError

        with container_netlink(att.pid) as ipr:
            try:
                index = ipr.link_lookup(ifname=att.ifname)[0]
                ipr.link("set", index=index, state="up")
                for address in att.addresses:
                    iface = ipaddress.ip_interface(address)
                    ipr.addr("add", index=index, address=str(iface.ip),
                             prefixlen=iface.network.prefixlen)
                if att.gateway:
                    ipr.route("replace", dst="default", gateway=att.gateway, oif=index,
                              family=10 if ":" in att.gateway else 2)
            except NetlinkError as exc:
                raise _netlink_error(exc, f"configuring {att.ifname} in container "
                                          f"{att.container}") from None

    def _add_ports(self, atts: Sequence[Attachment], grace: float = 1.0) -> None:
        if not atts:
            return
        api = self.ovs()
        stale = [name for att in atts for name in att.stale_ports]
        if stale:  # their own transaction: add_port would find a same-named one
            with api.transaction(check_error=True) as txn:
                for name in stale:
                    txn.add(api.del_port(name, if_exists=True))
        # ovsdbapp's transaction returns once ovs-vswitchd has reconfigured (cur_cfg reached
        # the next_cfg it set), as ovs-vsctl does; its verdict on the ports follows at once.
        with api.transaction(check_error=True) as txn:
            for att in atts:
                txn.add(api.add_port(att.bridge, att.host_ifname, may_exist=True,
                                     external_ids=att.tags))
        deadline = time.monotonic() + grace
        waiting = list(atts)
        while waiting:
            att = waiting[0]
            ofport = _optional(api.db_get("Interface", att.host_ifname, "ofport").execute(
                check_error=True), 0)
            if ofport > 0:
                waiting.pop(0)
                continue
            error = _optional(api.db_get("Interface", att.host_ifname, "error").execute(
                check_error=True), "")
            if ofport < 0 or error or time.monotonic() > deadline:
                raise ActionError(f"{setup_problem(att.host_ifname, error)} "
                                  f"(on bridge {att.bridge})")
            time.sleep(0.001)

    def _delete_host_end(self, name: str) -> None:
        from pyroute2 import NetlinkError

        ipr = self.host_ipr()
        found = ipr.link_lookup(ifname=name)
        if found:
            try:
                ipr.link("del", index=found[0])
            except NetlinkError as exc:
                if exc.code != 19:  # already gone
                    raise _netlink_error(exc, f"deleting {name}") from None

    def remove(self, seen: State) -> None:
        self.ctx.commands += [self.ctx.host.describe(argv)
                              for argv in detach_commands(seen, vsctl_argv(self.ctx.host))]
        self._delete_host_end(seen["host_ifname"])
        if seen["ovs_ports"]:
            api = self.ovs()
            with api.transaction(check_error=True) as txn:
                for port in seen["ovs_ports"]:
                    txn.add(api.del_port(port["name"], if_exists=True))


ContainerAttach.plumbing = Netlink
ContainerDetach.plumbing = Netlink


@hookimpl
def runflow_register_actions(register: Any) -> None:
    for action in (ContainerRun, ContainerAbsent, ContainerAttach, ContainerDetach):
        register(action)
