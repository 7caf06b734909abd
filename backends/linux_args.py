"""Arguments of the Linux network actions — links, bridges, addresses, veth pairs, network
namespaces, routes, sysctls and firewall rules — shared by every backend that implements them
(iproute2, brctl, netlink, procfs, iptables).

Everything here is checked when a workflow is loaded: a bad name, address or rule is an input
error naming the field, and never reaches a command or a netlink message.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from runflow.core.actions import Args
from runflow.core.fields import IfName, IPAddress, IPInterface, IPNetwork, Name

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

    name: IfName
    state: Literal["up", "down"] | None = None
    mtu: Mtu | None = None
    master: IfName | Literal[""] | None = None  # a bridge, or "" for no master

    @model_validator(mode="after")
    def _something_to_set(self) -> LinkSetArgs:
        if self.state is None and self.mtu is None and self.master is None:
            raise ValueError("give at least one of state, mtu, master")
        if self.master == self.name:
            raise ValueError("a link cannot be its own master")
        return self


class BridgeArgs(Args):
    name: IfName


class BridgePortArgs(Args):
    bridge: IfName
    name: IfName  # the link to enslave
    present: bool = True

    @model_validator(mode="after")
    def _distinct(self) -> BridgePortArgs:
        if self.bridge == self.name:
            raise ValueError("a bridge cannot be a port of itself")
        return self


# -- addresses ----------------------------------------------------------------------------------


class AddrPresentArgs(Args):
    dev: IfName
    address: IPInterface
    # Only this address of its family on dev (IPv6 link-local ones, which the kernel manages,
    # do not count).
    exclusive: bool = False


class AddrAbsentArgs(Args):
    dev: IfName
    address: IPInterface


# -- veth pairs and namespaces ------------------------------------------------------------------


class VethPresentArgs(Args):
    name: IfName
    peer: IfName
    peer_netns: NetnsName | None = None  # where the peer end goes (default: beside name)

    @model_validator(mode="after")
    def _distinct(self) -> VethPresentArgs:
        if self.peer == self.name and self.peer_netns is None:
            raise ValueError("name and peer must differ when both ends stay in one namespace")
        return self


class VethAbsentArgs(Args):
    name: IfName
    # Needed only when the peer lives in another namespace, so that undo can recreate the pair.
    peer: IfName | None = None
    peer_netns: NetnsName | None = None

    @model_validator(mode="after")
    def _peer_named(self) -> VethAbsentArgs:
        if self.peer_netns is not None and self.peer is None:
            raise ValueError("peer_netns needs peer (the peer's name in that namespace)")
        return self


class NetnsMoveArgs(Args):
    """Move a link into another network namespace, named or of a process or container."""

    name: IfName
    netns: NetnsName | None = None
    pid: int | None = Field(default=None, ge=1)
    container: Name | None = None
    rename: IfName | None = None  # its name over there

    @model_validator(mode="after")
    def _one_target(self) -> NetnsMoveArgs:
        given = [k for k in ("netns", "pid", "container") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of netns, pid, container"
                             + (f" (got {', '.join(given)})" if given else ""))
        return self


# -- routes -------------------------------------------------------------------------------------


def _destination(value: object) -> object:
    return "default" if value in ("default", "0.0.0.0/0") else value


class RouteArgs(Args):
    """A route in the main table. route.present replaces a route to the same destination and
    metric; route.absent deletes every route that matches the arguments given."""

    to: Annotated[Literal["default"] | IPNetwork, BeforeValidator(_destination)]
    via: IPAddress | None = None
    dev: IfName | None = None
    metric: int | None = Field(default=None, ge=0, le=4294967295)
    ipv6: bool | None = None  # only for to = "default" without via: which family

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


# -- sysctl -------------------------------------------------------------------------------------


def _sysctl_name(value: str) -> str:
    # "net.ipv4.ip_forward", or with '/' separators when a component holds a dot
    # ("net/ipv4/conf/eth0.1/forwarding"), as sysctl(8) accepts.
    parts = value.split("/") if "/" in value else value.split(".")
    if len(parts) < 2 or not all(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.:@-]*", p)
                                 for p in parts):
        raise ValueError(f"{value!r} is not a sysctl name (e.g. net.ipv4.ip_forward)")
    return value


def _sysctl_value(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("must be a string or a number, e.g. \"1\"")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and ("\n" in value.strip() or "\x00" in value):
        raise ValueError("must be a single line")
    return value


class SysctlArgs(Args):
    name: Annotated[str, AfterValidator(_sysctl_name)]
    value: Annotated[str, BeforeValidator(_sysctl_value), Field(min_length=1, max_length=4096)]

    @property
    def path_parts(self) -> list[str]:
        return self.name.split("/") if "/" in self.name else self.name.split(".")


# -- firewall (iptables) ------------------------------------------------------------------------

Table = Literal["filter", "nat", "mangle", "raw", "security"]

# Options that would start another command or pick another table or chain: those come from
# the table, chain and position arguments, never from the rule. --modprobe names a program
# iptables would run.
_COMMAND_LONG = ("--append", "--insert", "--delete", "--replace", "--table", "--policy",
                 "--new-chain", "--delete-chain", "--flush", "--zero", "--list", "--list-rules",
                 "--rename-chain", "--check", "--modprobe")
_COMMAND_SHORT = set("AIDRPNXFZLSECt")


def _chain(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,27}", value):
        raise ValueError(f"{value!r} is not a chain name (at most 28 letters, digits, '_', '.', "
                         "'+', '-'; not starting with '-')")
    return value


def _rule(value: list[str]) -> list[str]:
    for i, arg in enumerate(value):
        where = f"rule[{i}] {arg!r}"
        if "\x00" in arg or "\n" in arg:
            raise ValueError(f"{where} contains a control character")
        if arg.startswith("--"):
            option = arg.split("=", 1)[0]
            # getopt accepts any unambiguous prefix of a long option (--app = --append)
            if len(option) > 2 and any(c.startswith(option) for c in _COMMAND_LONG):
                raise ValueError(f"{where}: the table, chain and position come from their own "
                                 "arguments, not from the rule")
        elif re.fullmatch(r"-[A-Za-z]+", arg) and _COMMAND_SHORT & set(arg[1:]):
            raise ValueError(f"{where}: the table, chain and position come from their own "
                             "arguments, not from the rule (it must not hold -A, -I, -D, -t, "
                             "-P, ...)")
    return value


def _argv_list(value: object) -> object:
    if isinstance(value, str):
        raise ValueError("must be a list of arguments, e.g. [\"-o\", \"docker0\", \"-j\", "
                         "\"ACCEPT\"], not a string: no shell is used")
    return value


Rule = Annotated[list[str], BeforeValidator(_argv_list), Field(min_length=1),
                 AfterValidator(_rule)]
ChainName = Annotated[str, AfterValidator(_chain)]


class FirewallRuleArgs(Args):
    """A rule in a chain. A missing rule is appended, or inserted at `position` (1 = first);
    a rule already in the chain is left where it is (never added twice)."""

    table: Table = "filter"
    chain: ChainName
    rule: Rule
    position: int | None = Field(default=None, ge=1)


class FirewallRuleAbsentArgs(Args):
    table: Table = "filter"
    chain: ChainName
    rule: Rule


class FirewallPolicyArgs(Args):
    table: Table = "filter"
    chain: ChainName
    policy: Literal["ACCEPT", "DROP"]
