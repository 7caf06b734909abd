"""Backend `netlink` (target modern): links, bridges (and their options), addresses, veth pairs,
namespaces, routes and policy routing rules over rtnetlink, through pyroute2 (rtnl.py). The
actions are actions.py's.

Links are read from /sys in-process (sysfs.py), addresses, routes and rules with rtnetlink
dumps.
Changes are carried out as rtnetlink requests, a whole for_each batch written down one socket
in a few sends, the kernel acknowledging the last of each; an error names the change that
failed and the kernel's reason. `describe` shows the `ip` command equivalent to each request.

The engine runs a namespace host's steps in a thread inside the namespace, so /sys and the
socket opened here (rtnl.host_rtnl: one per run and host) belong to it. pyroute2 is imported
when the backend first talks to the kernel, not when a workflow is only validated.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import itertools
import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

from runflow.core.actions import Context
from runflow.core.errors import ActionError
from runflow.core.hookspecs import hookimpl
from runflow.core.hosts import Host

from .actions import BRIDGE_ACTIONS, LINK_ACTIONS, Linux, abridged, backend_actions
from .args import (ABSENT, PROTOCOLS, ROUTE_TYPES, RT_TABLE_MAIN, SCOPES, AddAddr, AddBridge,
                   AddRule, AddVeth, Change, DelAddr, DelLink, DelRoute, DelRule, Enslave,
                   MoveLink, Netns, Record, Release, RenameLink, ReplaceRoute, SetBridge,
                   SetLink, SetPort)
from .commands import render
from .options import BRIDGE_OPTIONS, PORT_OPTIONS, netlink_value
from .sysfs import SYS_NET, link_names, read_link

if TYPE_CHECKING:
    from .rtnl import Message, Request

RT_SCOPE_NOWHERE = 255
# The route types runflow manages, by their numbers (RTN_*)
_ROUTE_TYPES = dict(zip((1, 6, 7, 8), ROUTE_TYPES))
_TYPE_NUMBERS = {v: k for k, v in _ROUTE_TYPES.items()}
_SCOPE_NUMBERS = {v: k for k, v in SCOPES.items()}
_PROTOCOL_NUMBERS = {v: k for k, v in PROTOCOLS.items()}
FR_ACT_TO_TBL = 1


class Unresolved(Exception):
    """A request names a link that does not exist (yet)."""


class Netlink(Linux):
    """/sys and rtnetlink dumps for observing, rtnetlink requests for changing."""

    centos6 = False

    # -- observing --

    def links(self, ctx: Context, names: Sequence[str] | None, *,
              full: bool) -> Mapping[str, Record]:
        if names is None:
            return _SysLinks(full)
        records = {name: read_link(name, full=full) for name in names}
        return {name: rec for name, rec in records.items() if rec["exists"]}

    def remote_link(self, ctx: Context, ns: Netns, name: str) -> Record:
        from .rtnl import rtnl_in

        try:
            with rtnl_in(ns.path) as there:
                found = there.link(name)
        except FileNotFoundError:  # no such namespace
            return dict(ABSENT)
        return {"exists": True, **found} if found else dict(ABSENT)

    def addresses(self, ctx: Context, dev: str | None) -> dict[str, list[Record]]:
        from .rtnl import host_rtnl

        if dev is not None:
            try:
                wanted: int | None = socket.if_nametoindex(dev)
            except OSError:
                return {}
        else:
            wanted = None
        result: dict[str, list[Record]] = {}
        names: dict[int, str] = {}
        for found in host_rtnl(ctx).addresses(wanted or 0):
            index = found["index"]
            if wanted is not None and index != wanted:
                continue
            if index not in names:
                try:
                    names[index] = socket.if_indextoname(index)
                except OSError:  # deleted since the dump
                    continue
            result.setdefault(names[index], []).append({
                # ipaddress gives the arguments' normal form (an IPv4-mapped IPv6 address)
                "address": str(ipaddress.ip_interface(
                    f"{found['local'] or found['address']}/{found['prefixlen']}")),
                "brd": found["brd"],
                "scope": SCOPES.get(found["scope"], str(found["scope"])),
                "label": found["label"]})
        return result

    def routes(self, ctx: Context, fam: int, to: str | None,
               table: int | None) -> list[Record]:
        from .rtnl import host_rtnl

        routes = []
        for found in host_rtnl(ctx).routes(socket.AF_INET if fam == 4 else socket.AF_INET6,
                                           table):
            if found["type"] not in _ROUTE_TYPES or found["multipath"]:
                continue
            route_to = "default" if found["dst"] is None else \
                str(ipaddress.ip_network(f"{found['dst']}/{found['dst_len']}", strict=False))
            if to is not None and route_to != to:
                continue
            try:
                dev = socket.if_indextoname(found["oif"]) if found["oif"] else None
            except OSError:  # deleted since the dump
                continue
            routes.append({"family": fam, "to": route_to, "via": found["gateway"], "dev": dev,
                           "metric": found["priority"],
                           "proto": PROTOCOLS.get(found["protocol"], str(found["protocol"])),
                           "scope": SCOPES.get(found["scope"], str(found["scope"])),
                           "src": found["prefsrc"], "table": found["table"],
                           "type": _ROUTE_TYPES[found["type"]]})
        return routes

    def rules(self, ctx: Context, fam: int) -> list[Record]:
        from .rtnl import host_rtnl

        rules = []
        for found in host_rtnl(ctx).rules(socket.AF_INET if fam == 4 else socket.AF_INET6):
            rules.append({
                "family": fam, "priority": found["priority"],
                "from": _network(found["src"], found["src_len"]),
                "to": _network(found["dst"], found["dst_len"]), "iif": found["iif"],
                "oif": found["oif"], "fwmark": found["fwmark"],
                "fwmask": found["fwmask"] if found["fwmark"] is not None else None,
                "table": found["table"] if found["action"] == FR_ACT_TO_TBL else None,
                "other": bool(found["others"]) or found["action"] != FR_ACT_TO_TBL})
        return rules

    # -- changing --

    def execute(self, ctx: Context, changes: Sequence[Change]) -> None:
        """Send the changes' requests; those that must run in another namespace, or name a
        link an earlier request creates, wait for the requests before them. Links deleted one
        after another go together (_delete_links)."""
        batch: list[Request] = []
        sent: list[str] = []
        try:
            with ExitStack() as files:
                for deleting, same in itertools.groupby(changes, lambda c: type(c) is DelLink):
                    run = list(same)
                    if deleting and len(run) > 1:
                        self._send(ctx, None, batch)
                        self._delete_links(ctx, run, sent, files)
                    else:
                        self._queue(ctx, run, batch, sent, files)
                self._send(ctx, None, batch)
        finally:
            ctx.commands += [f"netlink: {what}" for what in abridged(sent)]

    def _queue(self, ctx: Context, changes: Sequence[Change], batch: list[Request],
               sent: list[str], files: ExitStack) -> None:
        """Add the changes' requests to the batch, sending first what must go before them."""
        from .rtnl import RTM_GETLINK, link_message

        for change in changes:
            what = " ".join(render(change, centos6=False, host=ctx.host)[-1])
            sent.append(what)
            inside = getattr(change, "inside", None)
            if inside is not None:
                self._send(ctx, None, batch)
                self._send(ctx, inside, [(self._message(change, files, ctx), what)])
                continue
            try:
                msg = self._message(change, files, ctx)
            except Unresolved:
                self._send(ctx, None, batch)  # the link may be created by a request in it
                try:
                    msg = self._message(change, files, ctx)
                except Unresolved as exc:
                    raise ActionError(f"{what}: there is no link {exc}") from None
            if isinstance(change, Enslave):
                # Read the link first, as `ip link set ... master` does: that makes the kernel
                # settle the link's pending link-watch event now (linkwatch_sync_dev).
                # Enslaved with it pending, the link-ups that followed took 2-3x longer at
                # 1,000 fresh ports (bench/linux_veth.py).
                batch.append((link_message(RTM_GETLINK, name=change.name), what))
            batch.append((msg, what))

    def _delete_links(self, ctx: Context, deletions: Sequence[DelLink], sent: list[str],
                      files: ExitStack) -> None:
        """Delete links together: put them in a link group of their own and delete the group.
        The kernel then waits for an RCU grace period once, not once a link: 200 veth pairs
        went in 0.12 s, against 4.7 s one at a time (`ip -batch`). If the group's deletion is
        refused, the links go back to their groups and are deleted one at a time, so that
        each error is its link's, as it would have been."""
        from .rtnl import RTM_DELLINK, RTM_NEWLINK, link_message

        groups = _groups()
        one_by_one: Sequence[DelLink] = deletions
        together = [d.name for d in deletions if d.name in groups]
        if len(together) > 1:
            group = _unused_group(groups)
            requests = [(link_message(RTM_NEWLINK, name=name, group=group),
                         f"ip link set {name} group {group}") for name in together]
            requests.append((link_message(RTM_DELLINK, group=group),
                             f"ip link delete group {group}"))
            sent += [what for _, what in requests]
            try:
                self._send(ctx, None, requests)
                # a name not found is deleted on its own below, and fails as it always did
                one_by_one = [d for d in deletions if d.name not in groups]
            except ActionError:
                now = _groups()
                back = [(link_message(RTM_NEWLINK, name=name, group=groups[name]),
                         f"ip link set {name} group {groups[name]}")
                        for name in together if now.get(name) == group]
                sent += [what for _, what in back]
                self._send(ctx, None, back)
                one_by_one = [d for d in deletions if d.name in now or d.name not in groups]
        batch: list[Request] = []
        self._queue(ctx, one_by_one, batch, sent, files)
        self._send(ctx, None, batch)

    def _send(self, ctx: Context, ns: Netns | None, batch: list[Request]) -> None:
        from .rtnl import host_rtnl, rtnl_in

        if not batch:
            return
        try:
            if ns is None:
                host_rtnl(ctx).send(batch)
            else:
                with rtnl_in(ns.path) as there:
                    there.send(batch)
        except OSError as exc:
            # Acknowledgements may be lost or still on their way: the socket starts afresh.
            raise ActionError(f"netlink: {exc.strerror or exc} while sending {len(batch)} "
                              "requests; what took effect is checked again") from None
        finally:
            batch.clear()

    def _message(self, change: Change, files: ExitStack, ctx: Context) -> Message:
        from .rtnl import (CREATE, REPLACE, RTM_DELADDR, RTM_DELLINK, RTM_DELROUTE, RTM_DELRULE,
                           RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE, RTM_NEWRULE, link_message,
                           veth_peer)

        match change:
            case AddBridge(name):
                return link_message(RTM_NEWLINK, CREATE, name=name, info_kind="bridge")
            case AddVeth(name, peer):
                return link_message(RTM_NEWLINK, CREATE, name=name, info_kind="veth",
                                    peer=veth_peer(peer))
            case DelLink(name, _):
                return link_message(RTM_DELLINK, name=name)
            case SetLink(name, mtu, mac, up):
                return link_message(RTM_NEWLINK, name=name, mtu=mtu, mac=mac, up=up)
            case SetBridge(name, options):
                return link_message(RTM_NEWLINK, name=name, info_kind="bridge", info_data=[
                    (BRIDGE_OPTIONS[k].netlink, netlink_value(k, v)) for k, v in options.items()])
            case SetPort(name, _, options):
                return link_message(RTM_NEWLINK, name=name, slave_kind="bridge", slave_data=[
                    (PORT_OPTIONS[k].netlink, netlink_value(k, v)) for k, v in options.items()])
            case Enslave(name, bridge):
                return link_message(RTM_NEWLINK, name=name, master=_index(bridge))
            case Release(name, _):
                return link_message(RTM_NEWLINK, name=name, master=0)
            case MoveLink(name, to, inside):
                fd = os.open(to.resolve(ctx.host).path if not to.home else
                             "/proc/thread-self/ns/net", os.O_RDONLY)
                files.callback(os.close, fd)
                # Moving back runs inside the target: name the link by its index there.
                index = _index_in(inside, name) if inside else 0
                return link_message(RTM_NEWLINK, name=None if index else name, index=index,
                                    netns_fd=fd)
            case RenameLink(name, new, where):
                index = _index_in(where, name) if where else _index(name)
                return link_message(RTM_NEWLINK, name=new, index=index)
            case AddAddr(dev, address, brd, scope, label):
                return _address(RTM_NEWADDR, CREATE, dev, address, brd, scope, label)
            case DelAddr(dev, address):
                return _address(RTM_DELADDR, 0, dev, address)
            case ReplaceRoute(route):
                return _route(RTM_NEWROUTE, REPLACE, route)
            case DelRoute(route):
                return _route(RTM_DELROUTE, 0, route)
            case AddRule(rule):
                return _rule(RTM_NEWRULE, CREATE, rule)
            case DelRule(rule):
                return _rule(RTM_DELRULE, 0, rule)
        raise TypeError(f"unknown change {change!r}")


class _SysLinks(Mapping[str, Record]):
    """Every link of the thread's namespace, each read from /sys when first looked up: a
    step wants some of a namespace's links."""

    def __init__(self, full: bool) -> None:
        self.full = full
        self.names = link_names()
        self.read: dict[str, Record] = {}

    def __getitem__(self, name: str) -> Record:
        if name not in self.read:
            rec = read_link(name, full=self.full) if name in self.names else ABSENT
            if not rec["exists"]:
                raise KeyError(name)
            self.read[name] = rec
        return self.read[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


def _groups() -> dict[str, int]:
    """The link group of every link of the thread's namespace."""
    groups = {}
    for name in link_names():
        try:
            with open(f"{SYS_NET}/{name}/netdev_group") as f:
                groups[name] = int(f.read())
        except OSError:  # gone since the listing
            pass
    return groups


def _unused_group(groups: Mapping[str, int]) -> int:
    """A link group that no link of the namespace is in: a random 31-bit number above the
    small ones that /etc/iproute2/group names."""
    taken = set(groups.values())
    while True:
        group = int.from_bytes(os.urandom(4), "little") >> 1
        if group > 255 and group not in taken:
            return group


def _index(name: str) -> int:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        raise Unresolved(name) from None


def _index_in(ns: Netns, name: str) -> int:
    from .rtnl import rtnl_in

    with rtnl_in(ns.path) as there:
        index = there.index(name)
    if index is None:
        raise Unresolved(name)
    return index


def _address(kind: int, flags: int, dev: str, address: str, brd: str | None = None,
             scope: str | None = None, label: str | None = None) -> Message:
    from .rtnl import address_message

    # as `ip addr add`: loopback addresses get host scope unless told otherwise
    loopback = ipaddress.ip_interface(address).ip.is_loopback
    number = _SCOPE_NUMBERS.get(scope or "", 0) if scope or not loopback \
        else _SCOPE_NUMBERS["host"]
    return address_message(kind, flags, _index(dev), address, number, brd, label)


def _route(kind: int, flags: int, route: Record) -> Message:
    """Fields as `ip route replace|del` sets them, so both targets make the same route."""
    from .rtnl import RTM_NEWROUTE, route_message

    adding = kind == RTM_NEWROUTE
    return route_message(
        kind, flags, family=socket.AF_INET if route["family"] == 4 else socket.AF_INET6,
        table=_table(route.get("table", RT_TABLE_MAIN)),
        dst=None if route["to"] == "default" else route["to"],
        protocol=_PROTOCOL_NUMBERS.get(route.get("proto") or "boot", 3) if adding else 0,
        scope=_SCOPE_NUMBERS.get(route.get("scope") or "global", 0) if adding
        else RT_SCOPE_NOWHERE,
        route_type=_TYPE_NUMBERS[route.get("type", "unicast")] if adding else 0,
        gateway=route.get("via"),
        oif=_index(route["dev"]) if route.get("dev") else None,
        priority=int(route["metric"]) if route.get("metric") is not None else None,
        prefsrc=route.get("src") if adding else None)


def _rule(kind: int, flags: int, rule: Record) -> Message:
    from .rtnl import rule_message

    return rule_message(kind, flags, family=socket.AF_INET if rule["family"] == 4
                        else socket.AF_INET6, table=_table(rule["table"]),
                        priority=rule.get("priority"), src=rule.get("from"), dst=rule.get("to"),
                        iif=rule.get("iif"), oif=rule.get("oif"), fwmark=rule.get("fwmark"),
                        fwmask=rule.get("fwmask"))


def _table(table: int | str) -> int:
    if isinstance(table, str):  # a name only /etc/iproute2/rt_tables knows (read by `ip`)
        raise ActionError(f"table {table!r}: the netlink backend knows tables by number")
    return table


def _network(address: str | None, length: int) -> str | None:
    """A rule's from/to as a network; None for "all"."""
    if address is None:
        return None
    return str(ipaddress.ip_network(f"{address}/{length}", strict=False))


def _unusable(host: Host) -> str | None:
    if not hasattr(socket, "AF_NETLINK"):
        return "netlink needs Linux"
    return None if importlib.util.find_spec("pyroute2") else "pyroute2 is not installed"


# rtnetlink is a socket to the kernel runflow runs on: it cannot reach an SSH host, whose link
# and bridge families iproute2 and brctl serve instead (core/targets.py says so in the plan).
LOCAL_ONLY = "rtnetlink talks to the kernel runflow runs on and cannot cross SSH"


@hookimpl
def runflow_register_actions(register: Any) -> None:
    for action in backend_actions(Netlink, "netlink", ("modern",), _unusable,
                                  [*LINK_ACTIONS, *BRIDGE_ACTIONS]):
        action.local_only = LOCAL_ONLY
        register(action)
