"""What the Linux network actions — links, bridges, addresses, veth pairs, network
namespaces, routes and policy routing rules — mean, shared by every backend that implements
them (iproute2, brctl, netlink):

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

from pydantic import (AfterValidator, BeforeValidator, Field, ValidationInfo, create_model,
                      field_validator, model_validator)

from runflow.core.actions import Args, State
from runflow.core.errors import ActionError
from runflow.core.fields import IfName, IPAddress, IPInterface, IPNetwork, Name
from runflow.core.hosts import Host, NetnsHost

from .options import ordered

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


# The backends of target centos6: what they cannot do is refused when a step is validated for
# them (the chosen backend is in the validation context).
CENTOS6_BACKENDS = ("iproute2", "brctl")


def for_centos6(info: ValidationInfo) -> bool:
    return (info.context or {}).get("backend") in CENTOS6_BACKENDS


def no_centos6_form(what: str, why: str) -> ValueError:
    return ValueError(f"{what} has no CentOS 6 form ({why}): the {' and '.join(CENTOS6_BACKENDS)} "
                      "backends (target centos6) use only CentOS 6's kernel and tools")


class BridgePresentArgs(BridgeArgs):
    """A Linux bridge, with the settings given (the others are left as they are)."""

    stp: bool | None = Field(default=None, description=(
        "spanning tree on (the kernel's STP) or off"))
    forward_delay: float | None = Field(default=None, ge=0, le=30, description=(
        "seconds a port spends listening and learning before it forwards (2-30 with STP)"))
    vlan_filtering: bool | None = Field(default=None, description=(
        "VLAN filtering on the bridge's ports (needs Linux 3.8 or later with "
        "CONFIG_BRIDGE_VLAN_FILTERING)"))
    mcast_snooping: bool | None = Field(default=None, description=(
        "IGMP/MLD snooping: multicast goes only to the ports that joined"))
    mtu: Mtu | None = Field(default=None, description="the bridge's MTU in bytes")

    @field_validator("forward_delay")
    @classmethod
    def _hundredths(cls, value: float | None) -> float | None:
        if value is not None and abs(value * 100 - round(value * 100)) > 1e-6:
            raise ValueError("give the forward delay in seconds with at most two decimals")
        return value

    @field_validator("vlan_filtering")
    @classmethod
    def _vlan_filtering_on_centos6(cls, value: bool | None, info: ValidationInfo) -> bool | None:
        if value and for_centos6(info):
            raise no_centos6_form("vlan_filtering = true", "bridge VLAN filtering came with "
                                  "Linux 3.8; CentOS 6 runs 2.6.32")
        return value

    @model_validator(mode="after")
    def _stp_delay(self) -> BridgePresentArgs:
        if self.stp and self.forward_delay is not None and self.forward_delay < 2:
            raise ValueError("with stp = true the kernel takes a forward_delay of 2 to 30 "
                             "seconds")
        return self

    def options(self) -> dict[str, str]:
        """The bridge options given, as /sys prints them (options.py)."""
        given = {"stp_state": None if self.stp is None else str(int(self.stp)),
                 "forward_delay": None if self.forward_delay is None else
                 str(round(self.forward_delay * 100)),
                 "vlan_filtering": None if self.vlan_filtering is None else
                 str(int(self.vlan_filtering)),
                 "multicast_snooping": None if self.mcast_snooping is None else
                 str(int(self.mcast_snooping))}
        return {k: v for k, v in given.items() if v is not None}


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


# -- routes and rules ---------------------------------------------------------------------------

# Routing tables by name, as `ip` names the kernel's own (a number is taken too).
TABLES = {"main": 254, "local": 255, "default": 253}
RT_TABLE_MAIN = TABLES["main"]
ROUTE_TYPES = ("unicast", "blackhole", "unreachable", "prohibit")


def _table(value: object) -> object:
    if isinstance(value, str) and value in TABLES:
        return TABLES[value]
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError('must be a table number (1-4294967295) or "main", "local", "default"')
    return value


Table = Annotated[int, BeforeValidator(_table), Field(ge=1, le=4294967295)]


def table_of(word: str) -> int | str:
    """A table as `ip` prints it: a number, a kernel table's name, or another name that
    /etc/iproute2/rt_tables gives (kept as it is)."""
    return int(word) if word.isdigit() else TABLES.get(word, word)


def _families(*values: str | None, ipv6: bool | None = None) -> set[int]:
    found = {6 if ":" in v else 4 for v in values if v not in (None, "default", "all")}
    if ipv6 is not None:
        found.add(6 if ipv6 else 4)
    return found


class RouteArgs(Args):
    """A route. route.present replaces a route to the same destination and metric in its
    table; route.absent deletes every route of the table that matches the arguments given."""

    to: Literal["default"] | IPNetwork = Field(
        description='the destination network, or "default"')
    via: IPAddress | None = Field(default=None, description="the gateway")
    dev: IfName | None = Field(default=None, description="the link the route leaves by")
    metric: int | None = Field(default=None, ge=0, le=4294967295,
                               description="the route's metric (lower wins)")
    table: Table = Field(default=RT_TABLE_MAIN, description=(
        'the routing table: a number, or "main" (the default), "local", "default"'))
    src: IPAddress | None = Field(default=None, description=(
        "the source address the host prefers for traffic the route sends"))
    type: Literal[ROUTE_TYPES] | None = Field(  # type: ignore[valid-type]
        default=None, description=(
            "unicast (a usable route), blackhole (dropped silently), unreachable or prohibit "
            "(dropped with an ICMP error); route.absent: any type unless given"))
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
        if len(_families(self.to, self.via, self.src, ipv6=self.ipv6)) > 1:
            raise ValueError("to, via, src and ipv6 name different address families")
        if self.type not in (None, "unicast") and (self.via or self.dev or self.src):
            raise ValueError(f"a {self.type} route has no via, dev or src: it sends nothing")
        return self

    @property
    def family(self) -> int:
        return next(iter(_families(self.to, self.via, self.src, ipv6=self.ipv6)), 4)


class RoutePresentArgs(RouteArgs):
    type: Literal[ROUTE_TYPES] = Field(  # type: ignore[valid-type]
        default="unicast", description=(
            "unicast (a usable route; the default), blackhole (dropped silently), unreachable "
            "or prohibit (dropped with an ICMP error)"))

    @model_validator(mode="after")
    def _where(self) -> RoutePresentArgs:
        if self.type == "unicast" and self.via is None and self.dev is None:
            raise ValueError("give via, dev or both")
        return self


def _from_to(value: str) -> str:
    """A rule's from/to: "all", or a network (an address alone is one host)."""
    if value == "all":
        return value
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not \"all\" or a network (CIDR): {exc}") from None


Selector = Annotated[str, AfterValidator(_from_to)]


def _fwmark(value: object) -> object:
    """MARK or MARK/MASK, in decimal or hex (as `ip rule` takes it) → "0xMARK/0xMASK"."""
    if isinstance(value, bool):
        raise ValueError("must be a number or \"MARK/MASK\"")
    text = str(value)
    mark, slash, mask = text.partition("/")
    try:
        numbers = [int(mark, 0), int(mask, 0) if slash else 0xFFFFFFFF]
    except ValueError:
        raise ValueError(f"{text!r} is not a mark: a number, or MARK/MASK (e.g. 0x10/0xff)") \
            from None
    if not all(0 <= n <= 0xFFFFFFFF for n in numbers):
        raise ValueError(f"{text!r}: a mark and its mask are 32-bit numbers")
    return f"{numbers[0]:#x}/{numbers[1]:#x}"


FwMark = Annotated[str, BeforeValidator(_fwmark)]


class _RuleBase(Args):
    """A policy routing rule (`ip rule`): its selectors, the table it looks up and its
    priority. Its `from` argument is added by create_model below (a Python keyword)."""

    @model_validator(mode="after")
    def _consistent(self) -> _RuleBase:
        if len(_families(self.source, self.to, ipv6=self.ipv6)) > 1:
            raise ValueError("from, to and ipv6 name different address families")
        return self

    @field_validator("oif", check_fields=False)
    @classmethod
    def _oif_on_centos6(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and for_centos6(info):
            raise no_centos6_form("oif", "rules that match the outgoing interface came with "
                                  "Linux and iproute2 2.6.33; CentOS 6 has 2.6.32")
        return value

    @property
    def source(self) -> str | None:
        return getattr(self, "from")

    @property
    def family(self) -> int:
        return next(iter(_families(self.source, self.to, ipv6=self.ipv6)), 4)

    def given(self) -> set[str]:
        """The selectors the arguments name (from = "all" included)."""
        return {key for key, value in (("from", self.source), ("to", self.to), ("iif", self.iif),
                                       ("oif", self.oif), ("fwmark", self.fwmark),
                                       ("fwmask", self.fwmark)) if value is not None}

    def selectors(self) -> Record:
        """The rule's record fields that the arguments give (None: not given, or "all")."""
        mark, _, mask = (self.fwmark or "/").partition("/")
        return {"from": None if self.source == "all" else self.source,
                "to": None if self.to == "all" else self.to, "iif": self.iif, "oif": self.oif,
                "fwmark": int(mark, 0) if mark else None, "fwmask": int(mask, 0) if mask else None}


def _rule_fields(table_required: bool) -> dict[str, Any]:
    table = (Table, Field(description='the routing table the rule sends to: a number, or '
                                      '"main", "local", "default"')) if table_required else \
        (Table | None, Field(default=None, description="only rules that look up this table"))
    return {
        "from": (Selector | None, Field(default=None, description=(
            'the source network it matches, or "all"'))),
        "to": (Selector | None, Field(default=None, description=(
            'the destination network it matches, or "all"'))),
        "iif": (IfName | None, Field(default=None, description=(
            "the incoming interface it matches (lo: traffic from this host)"))),
        "oif": (IfName | None, Field(default=None, description=(
            "the outgoing interface it matches (Linux 2.6.33 or later: not on centos6)"))),
        "fwmark": (FwMark | None, Field(default=None, description=(
            "the firewall mark it matches: MARK or MARK/MASK (e.g. 0x10/0xff)"))),
        "table": table,
        "priority": (int | None, Field(default=None, ge=0, le=4294967295, description=(
            "its priority (lower first); rule.present without it: the kernel's choice"))),
        "ipv6": (bool | None, Field(default=None, description=(
            "an IPv6 rule (when from and to do not say)"))),
    }


RulePresentArgs = create_model("RulePresentArgs", __base__=_RuleBase,
                               __doc__="rule.present: the rule exists (it is added if missing)",
                               **_rule_fields(table_required=True))
_RuleAbsentBase = create_model("_RuleAbsentBase", __base__=_RuleBase,
                               **_rule_fields(table_required=False))


class RuleAbsentArgs(_RuleAbsentBase):  # type: ignore[misc,valid-type]
    """rule.absent: no rule has these selectors (whatever others it has), nor the table and
    priority, if given."""

    @model_validator(mode="after")
    def _something(self) -> RuleAbsentArgs:
        if all(getattr(self, key) is None for key in type(self).model_fields if key != "ipv6"):
            raise ValueError("give at least one of from, to, iif, oif, fwmark, table, priority "
                             "(rule.absent would match every rule)")
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


class SetBridge(NamedTuple):
    name: str
    options: dict[str, str]  # options.py's BRIDGE_OPTIONS, as /sys prints them


class SetPort(NamedTuple):
    name: str
    bridge: str  # brctl names the bridge
    options: dict[str, str]  # options.py's PORT_OPTIONS


class ReplaceRoute(NamedTuple):
    route: Record


class DelRoute(NamedTuple):
    route: Record


class AddRule(NamedTuple):
    rule: Record


class DelRule(NamedTuple):
    rule: Record


Change = (AddBridge | AddVeth | DelLink | SetLink | SetBridge | SetPort | Enslave | Release
          | AddAddr | DelAddr | MoveLink | RenameLink | ReplaceRoute | DelRoute | AddRule
          | DelRule)


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
ROUTE_DEFAULTS = {"proto": ("boot",), "scope": ("global",), "type": ("unicast",),
                  "table": (RT_TABLE_MAIN,)}
PROTOCOLS = {2: "kernel", 3: "boot", 4: "static", 9: "ra", 16: "dhcp"}
SCOPES = {0: "global", 200: "site", 253: "link", 254: "host"}


def desired_route(args: RouteArgs) -> Record:
    """The route `ip route replace` would make from the arguments."""
    unicast = args.type in (None, "unicast")
    return {"family": args.family, "to": args.to, "via": args.via, "dev": args.dev,
            "metric": args.metric, "proto": "boot",
            "scope": "link" if unicast and args.via is None and args.family == 4 else "global",
            "src": args.src, "table": args.table, "type": args.type or "unicast"}


def route_matches(route: Record, args: RouteArgs) -> bool:
    return (route["to"] == args.to and route.get("table", RT_TABLE_MAIN) == args.table
            and all(getattr(args, k) is None or route.get(k) == getattr(args, k)
                    for k in ("via", "dev", "metric", "src", "type")))


def route_key(route: Record) -> tuple[Any, ...]:
    """What `ip route replace` replaces by: the same destination and metric in a table."""
    return route.get("table", RT_TABLE_MAIN), route["to"], route.get("metric")


def restore_routes(was: list[Record], now: list[Record]) -> list[Change]:
    """Changes that bring back the routes `was` from `now` (both of one destination, or both
    of one link)."""
    kept = {route_key(r) for r in was}
    changes: list[Change] = [DelRoute(r) for r in now if r not in was and route_key(r) not in kept]
    changes += [ReplaceRoute(r) for r in was if r not in now]
    return changes


def restorable(route: Record) -> bool:
    """Routes runflow puts back with their link: not the ones the kernel makes for its
    addresses (proto kernel), which come back with the addresses."""
    return route.get("proto") != "kernel"


# A rule record: {"family", "priority", "from", "to", "iif", "oif", "fwmark", "fwmask",
# "table", "other"}, None for a selector it does not have ("from all"); "other" says whether
# it has more (a tos, an action other than a table lookup, "not", ...), which runflow neither
# adds nor matches.
RULE_SELECTORS = ("from", "to", "iif", "oif", "fwmark", "fwmask")


def desired_rule(args: Any) -> Record:
    return {"family": args.family, "priority": args.priority, **args.selectors(),
            "table": args.table, "other": False}


def rule_matches(rule: Record, args: Any, *, exact: bool) -> bool:
    """The rule has the selectors given, and the table and priority if given; `exact`: it
    has no other selectors either (nor anything runflow does not manage)."""
    wanted, given = args.selectors(), args.given()
    return (rule["family"] == args.family and (not exact or not rule["other"])
            and all(rule[k] == wanted[k] for k in RULE_SELECTORS if exact or k in given)
            and all(getattr(args, k) is None or rule[k] == getattr(args, k)
                    for k in ("table", "priority")))


def restore_rules(was: list[Record], now: list[Record]) -> list[Change]:
    """Changes that bring back the rules `was` from `now`: the ones added go, the ones
    deleted come back (with their priorities, so in their places)."""
    return [*(DelRule(r) for r in now if r not in was), *(AddRule(r) for r in was if r not in now)]


# ---------------------------------------------------------------------------------------------
# Links: restoring a record, and what a change does to records
# ---------------------------------------------------------------------------------------------


def fresh(kind: str, **extra: Any) -> Record:
    """A link just created: down, default settings, nothing on it, a MAC not yet known."""
    return {"exists": True, "kind": kind, "up": False, "mtu": DEFAULT_MTU, "mac": None,
            "mac_set": False, "master": None, "addresses": [], "routes": [], "ports": [],
            "fresh": True, **extra}


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
    back its bridge options, its ports (with their options), MTU, master (and its options as
    that bridge's port), addresses, MAC, state and routes: each as far as both records hold
    it (a record read with `full` holds everything)."""
    if not was["exists"]:
        return [DelLink(name, now["kind"])] if now["exists"] else []
    changes: list[Change] = []
    if not now["exists"]:
        changes += _recreate(name, was)
        now = fresh(was["kind"])  # its options unknown: all of them are set
    if "bridge_options" in was:
        changes += bridge_changes(name, was["bridge_options"], now.get("bridge_options"))
    for port in was.get("ports", []):
        if port not in now.get("ports", []):
            changes.append(Enslave(port, name))
            changes += port_changes(port, name, was.get("ports_options", {}).get(port), None)
    if was["mtu"] != now["mtu"]:
        changes.append(SetLink(name, mtu=was["mtu"]))
    was_master, now_master = _settable_master(was), _settable_master(now)
    if was_master != now_master:
        if now_master:
            changes.append(Release(name, now_master))
        if was_master:
            changes.append(Enslave(name, was_master))
            changes += port_changes(name, was_master, was.get("port_options"), None)
    elif was_master and "port_options" in now:
        changes += port_changes(name, was_master, was.get("port_options"),
                                now["port_options"])
    if "addresses" in was and "addresses" in now:
        changes += restore_addresses(name, was["addresses"], now["addresses"])
    # A recreated veth gets a random MAC. A bridge takes its first port's, and one without
    # ports has no use for one: setting it by hand would pin it (and drop the carrier).
    if now.get("fresh") and (was["mac_set"] or was["kind"] == "veth"):
        changes.append(SetLink(name, mac=was["mac"]))
    if was["up"] != now["up"]:
        changes.append(SetLink(name, up=was["up"]))
    if "routes" in was and "routes" in now:  # once the link is up: IPv4 needs it to be
        changes += restore_routes(was["routes"], now["routes"])
    return changes


OVS_DATAPATH = "ovs-system"
"""The master of every port of Open vSwitch's kernel datapath. No one enslaves a link to it by
hand: ovs-vswitchd takes a port's device back itself when the device appears again (its Port
row stays), and lets it go when the row goes."""


def _settable_master(record: Record) -> str | None:
    """The master restore_link may put back or release: a bridge or bond, not OVS's datapath."""
    master = record["master"]
    return None if master == OVS_DATAPATH else master


def _differing(wanted: dict[str, str] | None, now: dict[str, str] | None) -> dict[str, str]:
    """The options to set: those that differ from now's, or all of them (now unknown)."""
    if not wanted:
        return {}
    return dict(wanted) if now is None else \
        {k: v for k, v in wanted.items() if now.get(k, v) != v}


def bridge_changes(name: str, wanted: dict[str, str], now: dict[str, str] | None
                   ) -> list[Change]:
    """SetBridge changes for the bridge options that differ, in the order they can be set."""
    return [SetBridge(name, batch) for batch in ordered(_differing(wanted, now))]


def port_changes(name: str, bridge: str, wanted: dict[str, str] | None,
                 now: dict[str, str] | None) -> list[Change]:
    options = _differing(wanted, now)
    return [SetPort(name, bridge, options)] if options else []


def simulate(state: State, changes: Sequence[Change]) -> State:
    """The records after the changes (as far as this model tracks them): what describe_undo
    assumes apply left behind."""
    links: dict[str, Record] = {n: dict(r) for n, r in state.get("links", {}).items()}
    routes = list(state.get("routes", []))
    rules = list(state.get("rules", []))
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
                if up is False:  # the kernel drops a link's IPv4 routes when it goes down
                    edit(name, routes=[r for r in links[name].get("routes", [])
                                       if r["family"] == 6])
            case SetBridge(name, options):
                edit(name, bridge_options={**links[name].get("bridge_options", {}), **options})
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
                routes = [r for r in routes if route_key(r) != route_key(route)] + [route]
            case DelRoute(route):
                routes = [r for r in routes if r != route]
            case AddRule(rule):
                rules.append(rule)
            case DelRule(rule):
                rules = [r for r in rules if r != rule]
    return {**state, "links": links, "routes": routes, "rules": rules, **extra}
