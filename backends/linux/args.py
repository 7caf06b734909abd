"""What the Linux network actions — links, bridges, addresses, veth pairs, network
namespaces and routes — mean, shared by every backend that implements them (iproute2, brctl,
netlink):

- their arguments, checked when a workflow is loaded: a bad name, address or rule is an input
  error naming the field, and never reaches a command or a netlink message;
- the records the link actions observe (plain JSON, journaled as a step's "before");
- the changes (AddBridge, Enslave, AddAddr, ...) that apply makes, and those that lead from
  the records seen now back to the "before" ones, which undo makes. iproute2 and brctl carry
  changes out as commands, netlink as netlink messages.

Nothing here does I/O.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import AfterValidator, Field, model_validator

from runflow.core.actions import Args, State
from runflow.core.errors import ActionError
from runflow.core.fields import IfName, IPAddress, IPInterface, IPNetwork, Name
from runflow.core.hosts import Host, NetnsHost

Mtu = Annotated[int, Field(ge=68, le=65535)]


def _netns(value: str) -> str:
    # Also a file name under /run/netns: no '/', and not "." or "..".
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", value):
        raise ValueError(f"{value!r} is not a network namespace name (letters, digits, '_', "
                         "'.', '-'; starting with a letter or digit)")
    return value


NetnsName = Annotated[str, AfterValidator(_netns)]


# -- links and bridges --------------------------------------------------------------------------


class LinkSetArgs(Args):
    """Settings of an existing link; only the ones given are changed."""

    name: IfName = Field(description="the link to change")
    state: Literal["up", "down"] | None = Field(default=None, description="up or down")
    mtu: Mtu | None = Field(default=None, description="its MTU in bytes")
    master: IfName | Literal[""] | None = Field(
        default=None, description='the bridge to enslave it to, or "" to release it')

    @model_validator(mode="after")
    def _something_to_set(self) -> LinkSetArgs:
        if self.state is None and self.mtu is None and self.master is None:
            raise ValueError("give at least one of state, mtu, master")
        if self.master == self.name:
            raise ValueError("a link cannot be its own master")
        return self


class BridgeArgs(Args):
    name: IfName = Field(description="the Linux bridge")


class BridgePortArgs(Args):
    bridge: IfName = Field(description="the Linux bridge")
    name: IfName = Field(description="the link to enslave (or release)")
    present: bool = Field(default=True, description="true: the link is a port of the bridge; "
                                                    "false: it is not")

    @model_validator(mode="after")
    def _distinct(self) -> BridgePortArgs:
        if self.bridge == self.name:
            raise ValueError("a bridge cannot be a port of itself")
        return self


# -- addresses ----------------------------------------------------------------------------------


class AddrPresentArgs(Args):
    dev: IfName = Field(description="the link the address is on")
    address: IPInterface = Field(description="the address with its prefix length, e.g. "
                                             "172.16.42.1/24")
    exclusive: bool = Field(default=False, description=(
        "the only address of its family on dev: others are removed (IPv6 link-local ones, "
        "which the kernel manages, do not count)"))


class AddrAbsentArgs(Args):
    dev: IfName = Field(description="the link")
    address: IPInterface = Field(description="the address with its prefix length")


# -- veth pairs and namespaces ------------------------------------------------------------------


class VethPresentArgs(Args):
    name: IfName = Field(description="one end (it stays in the host's namespace)")
    peer: IfName = Field(description="the other end")
    peer_netns: NetnsName | None = Field(
        default=None, description="a named network namespace the peer goes into (default: "
                                  "beside name)")

    @model_validator(mode="after")
    def _distinct(self) -> VethPresentArgs:
        if self.peer == self.name and self.peer_netns is None:
            raise ValueError("name and peer must differ when both ends stay in one namespace")
        return self


class VethAbsentArgs(Args):
    name: IfName = Field(description="one end (deleting it deletes the pair)")
    peer: IfName | None = Field(
        default=None, description="the other end's name: needed only when it lives in another "
                                  "namespace, so that undo can recreate the pair")
    peer_netns: NetnsName | None = Field(default=None,
                                         description="the namespace the peer lives in")

    @model_validator(mode="after")
    def _peer_named(self) -> VethAbsentArgs:
        if self.peer_netns is not None and self.peer is None:
            raise ValueError("peer_netns needs peer (the peer's name in that namespace)")
        return self


class NetnsMoveArgs(Args):
    """Move a link into another network namespace, named or of a process or container."""

    name: IfName = Field(description="the link to move")
    netns: NetnsName | None = Field(default=None,
                                    description="a named network namespace (/run/netns/NAME)")
    pid: int | None = Field(default=None, ge=1,
                            description="the network namespace of this process")
    container: Name | None = Field(default=None,
                                   description="the network namespace of this container")
    rename: IfName | None = Field(default=None, description="its name over there")

    @model_validator(mode="after")
    def _one_target(self) -> NetnsMoveArgs:
        given = [k for k in ("netns", "pid", "container") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of netns, pid, container"
                             + (f" (got {', '.join(given)})" if given else ""))
        return self


# -- routes -------------------------------------------------------------------------------------


class RouteArgs(Args):
    """A route in the main table. route.present replaces a route to the same destination and
    metric; route.absent deletes every route that matches the arguments given."""

    to: Literal["default"] | IPNetwork = Field(
        description='the destination network, or "default"')
    via: IPAddress | None = Field(default=None, description="the gateway")
    dev: IfName | None = Field(default=None, description="the link the route leaves by")
    metric: int | None = Field(default=None, ge=0, le=4294967295,
                               description="the route's metric (lower wins)")
    ipv6: bool | None = Field(default=None, description=(
        'for to = "default" without via: true for the IPv6 default route'))

    @model_validator(mode="before")
    @classmethod
    def _default_route(cls, data: object) -> object:
        # 0.0.0.0/0 and ::/0 are what `ip route` calls default
        if isinstance(data, dict) and data.get("to") in ("0.0.0.0/0", "::/0"):
            return {**data, "to": "default", "ipv6": data["to"] == "::/0"}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> RouteArgs:
        families = {ipaddress.ip_network(self.to).version} if self.to != "default" else set()
        if self.via:
            families.add(ipaddress.ip_address(self.via).version)
        if self.ipv6 is not None:
            families.add(6 if self.ipv6 else 4)
        if len(families) > 1:
            raise ValueError("to, via and ipv6 name different address families")
        return self

    @property
    def family(self) -> int:
        if self.to != "default":
            return ipaddress.ip_network(self.to).version
        if self.via:
            return ipaddress.ip_address(self.via).version
        return 6 if self.ipv6 else 4


class RoutePresentArgs(RouteArgs):
    @model_validator(mode="after")
    def _where(self) -> RoutePresentArgs:
        if self.via is None and self.dev is None:
            raise ValueError("give via, dev or both")
        return self


# ---------------------------------------------------------------------------------------------
# Records: what the link actions observe
# ---------------------------------------------------------------------------------------------

Record = dict[str, Any]  # a link, address or route as observe sees it (JSON, journaled)
ABSENT: Record = {"exists": False}
DEFAULT_MTU = 1500


class Netns(NamedTuple):
    """A network namespace a link moves to: a named one, a process's, or the host's own
    (`home`, resolved when the change runs)."""

    name: str | None = None
    pid: int | None = None
    home: bool = False

    @property
    def path(self) -> str:
        return f"/run/netns/{self.name}" if self.name else f"/proc/{self.pid}/ns/net"

    @property
    def arg(self) -> str:
        """How `ip link set ... netns` names it."""
        return self.name or str(self.pid)

    def prefix(self) -> list[str]:
        """How to run a command inside it."""
        if self.name:
            return ["ip", "netns", "exec", self.name]
        return ["nsenter", "-t", str(self.pid), "-n"]

    def resolve(self, host: Host | None) -> Netns:
        """The host's own namespace made concrete: its name, or (local host) our pid's."""
        if not self.home:
            return self
        if isinstance(host, NetnsHost):
            return Netns(name=host.netns)
        # Without a host (describe_undo) pid 1 stands for the machine's namespace.
        return Netns(pid=os.getpid() if host is not None else 1)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "pid": self.pid}


HOME = Netns(home=True)


# ---------------------------------------------------------------------------------------------
# Changes: what apply and undo do, whatever the backend
# ---------------------------------------------------------------------------------------------

# Netns and the changes are NamedTuples rather than frozen dataclasses: a frozen dataclass
# generates its methods with exec when it is defined, ~1 ms each on CPython 3.11, paid by every
# command that loads this module. The backends take them apart with `match`, by type; none
# compares two changes (a NamedTuple equals any tuple with the same values).


class AddBridge(NamedTuple):
    name: str


class AddVeth(NamedTuple):
    name: str
    peer: str


class DelLink(NamedTuple):
    name: str
    kind: str  # CentOS 6 deletes bridges with brctl


class SetLink(NamedTuple):
    name: str
    mtu: int | None = None
    mac: str | None = None
    up: bool | None = None
    inside: Netns | None = None  # where the command runs (None: the host)


class Enslave(NamedTuple):
    name: str
    bridge: str


class Release(NamedTuple):
    name: str
    bridge: str  # brctl delif names the bridge


class AddAddr(NamedTuple):
    dev: str
    address: str  # CIDR
    brd: str | None = None
    scope: str | None = None  # None: the kernel's choice ("global")
    label: str | None = None


class DelAddr(NamedTuple):
    dev: str
    address: str


class MoveLink(NamedTuple):
    name: str
    to: Netns
    inside: Netns | None = None  # where the command runs (None: the host)


class RenameLink(NamedTuple):
    name: str
    new: str
    inside: Netns | None = None


class ReplaceRoute(NamedTuple):
    route: Record


class DelRoute(NamedTuple):
    route: Record


Change = (AddBridge | AddVeth | DelLink | SetLink | Enslave | Release | AddAddr | DelAddr
          | MoveLink | RenameLink | ReplaceRoute | DelRoute)


# ---------------------------------------------------------------------------------------------
# Addresses and routes as records
# ---------------------------------------------------------------------------------------------


def family(cidr: str) -> int:
    """4 or 6, for an address already validated or read from the kernel: only IPv6 has ':'
    (parsing it again, for every address of every link observed, cost more)."""
    return 6 if ":" in cidr else 4


def managed(addr: Record) -> bool:
    """Addresses runflow restores: not the IPv6 link-local ones the kernel makes by itself."""
    return not (family(addr["address"]) == 6 and addr.get("scope") == "link")


def address_change(dev: str, addr: Record) -> AddAddr:
    label = addr.get("label")
    scope = addr.get("scope")
    return AddAddr(dev, addr["address"], addr.get("brd"),
                   None if scope in (None, "global") else scope,
                   None if label in (None, dev) else label)


def restore_addresses(dev: str, was: list[Record], now: list[Record]) -> list[Change]:
    """Changes that turn the managed addresses `now` into `was`, per family, keeping their
    order (the first address of a subnet is its primary; deleting a primary deletes its
    secondaries, so deletions go last-first)."""
    changes: list[Change] = []
    for fam in (4, 6):
        w = [a for a in was if family(a["address"]) == fam and managed(a)]
        n = [a for a in now if family(a["address"]) == fam and managed(a)]
        keep = 0
        while keep < min(len(w), len(n)) and w[keep]["address"] == n[keep]["address"]:
            keep += 1
        changes += [DelAddr(dev, a["address"]) for a in reversed(n[keep:])]
        changes += [address_change(dev, a) for a in w[keep:]]
    return changes


# What `ip route` leaves out when printing, and netlink records get the same way.
ROUTE_DEFAULTS = {"proto": ("boot",), "scope": ("global",)}
PROTOCOLS = {2: "kernel", 3: "boot", 4: "static", 9: "ra", 16: "dhcp"}
SCOPES = {0: "global", 200: "site", 253: "link", 254: "host"}


def desired_route(args: RouteArgs) -> Record:
    """The route `ip route replace` would make from the arguments."""
    return {"family": args.family, "to": args.to, "via": args.via, "dev": args.dev,
            "metric": args.metric, "proto": "boot",
            "scope": "link" if args.via is None and args.family == 4 else "global", "src": None}


def route_matches(route: Record, args: RouteArgs) -> bool:
    return (route["to"] == args.to
            and all(getattr(args, k) is None or route.get(k) == getattr(args, k)
                    for k in ("via", "dev", "metric")))


def restore_routes(was: list[Record], now: list[Record]) -> list[Change]:
    """Changes that bring back the routes `was` (to one destination) from `now`."""
    def key(r: Record) -> tuple[Any, ...]:
        return r["to"], r.get("metric")

    kept = {key(r) for r in was}
    changes: list[Change] = [DelRoute(r) for r in now if r not in was and key(r) not in kept]
    changes += [ReplaceRoute(r) for r in was if r not in now]
    return changes


# ---------------------------------------------------------------------------------------------
# Links: restoring a record, and what a change does to records
# ---------------------------------------------------------------------------------------------


def fresh(kind: str, **extra: Any) -> Record:
    """A link just created: down, default settings, nothing on it, a MAC not yet known."""
    return {"exists": True, "kind": kind, "up": False, "mtu": DEFAULT_MTU, "mac": None,
            "mac_set": False, "master": None, "addresses": [], "ports": [], "fresh": True,
            **extra}


def _recreate(name: str, was: Record) -> list[Change]:
    if was["kind"] == "bridge":
        return [AddBridge(name)]
    peer = was.get("peer") or {}
    if was["kind"] == "veth" and peer.get("name"):
        changes: list[Change] = [AddVeth(name, peer["name"])]
        if peer.get("netns"):
            # Its MAC and MTU are set here; its state over there. (Its addresses and master
            # there belong to that namespace's own workflow.)
            there = Netns(name=peer["netns"])
            changes += [SetLink(peer["name"], mtu=peer["mtu"], mac=peer["mac"]),
                        MoveLink(peer["name"], there)]
            if peer["up"]:
                changes.append(SetLink(peer["name"], up=True, inside=there))
        return changes
    raise ActionError(f"cannot recreate {name}: a {was['kind']} link (only bridges and veth "
                      "pairs are recreated)")


def restore_link(name: str, was: Record, now: Record) -> list[Change]:
    """Changes that bring link `name` from `now` back to `was`: (re)create or delete it, put
    back its ports, MTU, master, addresses, MAC and state."""
    if not was["exists"]:
        return [DelLink(name, now["kind"])] if now["exists"] else []
    changes: list[Change] = []
    if not now["exists"]:
        changes += _recreate(name, was)
        now = fresh(was["kind"])
    for port in was.get("ports", []):
        if port not in now.get("ports", []):
            changes.append(Enslave(port, name))
    if was["mtu"] != now["mtu"]:
        changes.append(SetLink(name, mtu=was["mtu"]))
    if was["master"] != now["master"]:
        if now["master"]:
            changes.append(Release(name, now["master"]))
        if was["master"]:
            changes.append(Enslave(name, was["master"]))
    if "addresses" in was and "addresses" in now:
        changes += restore_addresses(name, was["addresses"], now["addresses"])
    # A recreated veth gets a random MAC. A bridge takes its first port's, and one without
    # ports has no use for one: setting it by hand would pin it (and drop the carrier).
    if now.get("fresh") and (was["mac_set"] or was["kind"] == "veth"):
        changes.append(SetLink(name, mac=was["mac"]))
    if was["up"] != now["up"]:
        changes.append(SetLink(name, up=was["up"]))
    return changes


def simulate(state: State, changes: Sequence[Change]) -> State:
    """The records after the changes (as far as this model tracks them): what describe_undo
    assumes apply left behind."""
    links: dict[str, Record] = {n: dict(r) for n, r in state.get("links", {}).items()}
    routes = list(state.get("routes", []))
    extra: dict[str, Any] = {}

    def edit(name: str, **values: Any) -> None:
        if links.get(name, ABSENT)["exists"]:
            links[name] = {**links[name], **values}

    for change in changes:
        match change:
            case AddBridge(name):
                links[name] = fresh("bridge")
            case AddVeth(name, peer):
                links[name] = fresh("veth", peer={"name": peer, "netns": None})
                links[peer] = fresh("veth", peer={"name": name, "netns": None})
            case DelLink(name, _):
                links[name] = dict(ABSENT)
            case MoveLink(name, _, None):
                links[name] = dict(ABSENT)
                extra["there"] = True
            case SetLink(name, mtu, mac, up, None):
                edit(name, **{k: v for k, v in (("mtu", mtu), ("mac", mac), ("up", up))
                              if v is not None})
            case Enslave(name, bridge):
                edit(name, master=bridge)
            case Release(name, _):
                edit(name, master=None)
            case AddAddr(dev, address):
                present = links.get(dev, ABSENT).get("addresses", [])
                edit(dev, addresses=[*present, {"address": address}])
            case DelAddr(dev, address):
                present = links.get(dev, ABSENT).get("addresses", [])
                edit(dev, addresses=[a for a in present if a["address"] != address])
            case ReplaceRoute(route):
                routes = [r for r in routes if (r["to"], r.get("metric")) !=
                          (route["to"], route.get("metric"))] + [route]
            case DelRoute(route):
                routes = [r for r in routes if r != route]
    return {**state, "links": links, "routes": routes, **extra}
