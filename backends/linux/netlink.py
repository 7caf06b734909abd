"""Links, bridges, addresses, veth pairs, namespaces and routes over netlink (backend
`netlink`, target modern).

The actions are iproute2.py's and brctl.py's, the records and changes args.py's, and
links are read as there. This module reads addresses and routes with rtnetlink dumps and
carries out the changes as rtnetlink requests, written down one socket in one go — a whole
for_each batch in a few system calls — the kernel acknowledging each one in order; an error
names the change that failed and the kernel's reason. `describe` shows the `ip` command
equivalent to each request.

The messages are built and read by rtnetlink.py with struct, not with pyroute2 (which the
container actions still use): importing pyroute2 took 0.15-0.2 s, longer than a whole lab
run's netlink work, and its message classes 85-320 µs a request, more than the kernel's.

The engine runs a netns host's steps in a thread inside the namespace, so the sockets opened
here (one dump socket and one request socket per run and host) belong to it.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import socket
import struct
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from typing import Any

from runflow.core.actions import Context
from runflow.core.errors import ActionError
from runflow.core.hookspecs import hookimpl
from runflow.core.hosts import Host

from .brctl import BRIDGE_ACTIONS
from .iproute2 import LINK_ACTIONS, Linux, abridged, backend_actions, in_netns, render
from .args import (PROTOCOLS, SCOPES, AddAddr, AddBridge, AddVeth, Change, DelAddr,
                         DelLink, DelRoute, Enslave, MoveLink, Netns, Record, Release,
                         RenameLink, ReplaceRoute, SetLink)
from .rtnetlink import (NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, Request, address_request,
                        attributes, dump_addresses, dump_links, dump_routes, link_request,
                        messages, packed_address, route_request)

# rtnetlink constants (linux/netlink.h, linux/rtnetlink.h)
NLM_F_ACK_TLVS = 0x200  # in an acknowledgement: extended ack attributes follow
NLMSG_ERROR = 2
SOL_NETLINK, NETLINK_CAP_ACK, NETLINK_EXT_ACK = 270, 10, 11
NLMSGERR_ATTR_MSG = 1
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_NEWADDR, RTM_DELADDR, RTM_NEWROUTE, RTM_DELROUTE = \
    16, 17, 18, 20, 21, 24, 25
RT_TABLE_MAIN, RTN_UNICAST, RT_SCOPE_NOWHERE = 254, 1, 255
# Requests per send. Each refusal's answer takes about 1 KiB of the receive buffer (212 KiB by
# default): a few hundred at once overflow it, and the kernel drops the rest (ENOBUFS).
CHUNK = 64
ANSWER_TIMEOUT = 60.0  # seconds without an acknowledgement: the socket is given up

_SCOPE_NUMBERS = {v: k for k, v in SCOPES.items()}
_IN6_LOOPBACK = socket.inet_pton(socket.AF_INET6, "::1")
_PROTOCOL_NUMBERS = {v: k for k, v in PROTOCOLS.items()}


class Unresolved(Exception):
    """A request names a link that does not exist (yet)."""


class Requests:
    """A raw rtnetlink socket that sends requests in chunks and reads their acknowledgements."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)  # acks without our request
        self.sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)  # and with the kernel's reason
        self.sock.settimeout(ANSWER_TIMEOUT)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def send(self, requests: Sequence[tuple[Request, str]]) -> None:
        """Send (request, what) pairs in order; raise for the first one the kernel refused.
        The kernel goes on with the others, as the engine expects of a batch. An OSError
        (no answer, a full buffer) leaves the socket unusable."""
        failures = [self._exchange(requests[i:i + CHUNK])
                    for i in range(0, len(requests), CHUNK)]
        failure = next((f for f in failures if f), None)
        if failure:
            raise ActionError(failure)

    def _exchange(self, requests: Sequence[tuple[Request, str]]) -> str | None:
        # Only the last request asks for an acknowledgement: the kernel carries out a send's
        # requests in order before send returns, and answers each one it refuses, so once the
        # last one is acknowledged every refusal is in. An acknowledgement per request cost a
        # kernel answer and a recv each, 15-25 µs of a 100-200 µs request.
        sent: dict[int, str] = {}
        data = bytearray()
        for i, (request, what) in enumerate(requests, 1):
            self.seq += 1
            data += request.encode(self.seq, ack=i == len(requests))
            sent[self.seq] = what
        self.sock.send(data)
        failure = None
        while True:
            for seq, code, reason in _acks(self.sock.recv(1 << 20)):
                what = sent.get(seq)
                if what is not None and code and failure is None:
                    failure = f"netlink request ({what}) refused: {os.strerror(-code)}" + \
                        (f" ({reason})" if reason else "")
                if seq == self.seq:
                    return failure


def _acks(buf: bytes) -> Iterator[tuple[int, int, str]]:
    """(sequence number, error code, extended ack message) of each acknowledgement."""
    for kind, flags, seq, body in messages(buf):
        if kind != NLMSG_ERROR:
            continue
        (code,) = struct.unpack_from("=i", body)
        reason = ""
        if flags & NLM_F_ACK_TLVS:  # after the code and the request's header (NETLINK_CAP_ACK)
            reason = next((bytes(payload).split(b"\0")[0].decode(errors="replace")
                           for attr_kind, payload in attributes(body[20:])
                           if attr_kind == NLMSGERR_ATTR_MSG), "")
        yield seq, code, reason


class Netlink(Linux):
    """rtnetlink dumps for observing, rtnetlink requests for changing."""

    centos6 = False

    def __init__(self) -> None:
        self._requests: dict[Netns | None, Requests] = {}

    def close(self) -> None:
        for requests in self._requests.values():
            requests.close()

    # -- observing --

    def addresses(self, ctx: Context, dev: str | None) -> dict[str, list[Record]]:
        if dev is not None:
            try:
                wanted: int | None = socket.if_nametoindex(dev)
            except OSError:
                return {}
        else:
            wanted = None
        result: dict[str, list[Record]] = {}
        names: dict[int, str] = {}
        for found in dump_addresses(wanted or 0):
            index = found["index"]
            if wanted is not None and index != wanted:
                continue
            if index not in names:
                try:
                    names[index] = socket.if_indextoname(index)
                except OSError:  # deleted since the dump
                    continue
            address = f"{found['local'] or found['address']}/{found['prefixlen']}"
            result.setdefault(names[index], []).append({
                # inet_ntop writes IPv4 as ipaddress does (the arguments' normal form); IPv6
                # text can differ (an IPv4-mapped address), so it goes through ipaddress.
                "address": address if found["family"] == socket.AF_INET
                else str(ipaddress.ip_interface(address)),
                "brd": found["brd"],
                "scope": SCOPES.get(found["scope"], str(found["scope"])),
                "label": found["label"]})
        return result

    def routes(self, ctx: Context, fam: int, to: str | None) -> list[Record]:
        routes = []
        for found in dump_routes(socket.AF_INET if fam == 4 else socket.AF_INET6):
            if found["table"] != RT_TABLE_MAIN or found["type"] != RTN_UNICAST:
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
                           "src": found["prefsrc"]})
        return routes

    # -- changing --

    def execute(self, ctx: Context, changes: Sequence[Change]) -> None:
        """Send the changes' requests; those that must run in another namespace, or name a
        link an earlier request creates, wait for the requests before them. Links deleted one
        after another go together (_delete_links)."""
        batch: list[tuple[Request, str]] = []
        sent: list[str] = []
        try:
            with ExitStack() as files:
                for deleting, same in itertools.groupby(changes, lambda c: type(c) is DelLink):
                    run = list(same)
                    if deleting and len(run) > 1:
                        self._send(None, batch)
                        self._delete_links(ctx, run, sent, files)
                    else:
                        self._queue(ctx, run, batch, sent, files)
                self._send(None, batch)
        finally:
            ctx.commands += [f"netlink: {what}" for what in abridged(sent)]

    def _queue(self, ctx: Context, changes: Sequence[Change], batch: list[tuple[Request, str]],
               sent: list[str], files: ExitStack) -> None:
        """Add the changes' requests to the batch, sending first what must go before them."""
        for change in changes:
            what = " ".join(render(change, centos6=False, host=ctx.host)[-1])
            sent.append(what)
            inside = getattr(change, "inside", None)
            if inside is not None:
                self._send(None, batch)
                self._send(inside, [(self._message(change, files, ctx, inside), what)])
                continue
            try:
                msg = self._message(change, files, ctx, None)
            except Unresolved:
                self._send(None, batch)  # the link may be created by a request in it
                try:
                    msg = self._message(change, files, ctx, None)
                except Unresolved as exc:
                    raise ActionError(f"{what}: there is no link {exc}") from None
            if isinstance(change, Enslave):
                # Read the link first, as `ip link set ... master` does: that makes the kernel
                # settle the link's pending link-watch event now (linkwatch_sync_dev).
                # Enslaved with it pending, the link-ups that followed took 2-3x longer at
                # 1,000 fresh ports (bench/linux_veth.py).
                batch.append((link_request(RTM_GETLINK, name=change.name), what))
            batch.append((msg, what))

    def _delete_links(self, ctx: Context, deletions: Sequence[DelLink], sent: list[str],
                      files: ExitStack) -> None:
        """Delete links together: put them in a link group of their own and delete the group.
        The kernel then waits for an RCU grace period once, not once a link: 200 veth pairs
        went in 0.12 s, against 4.7 s one at a time (`ip -batch`). If the group's deletion is
        refused, the links go back to their groups and are deleted one at a time, so that
        each error is its link's, as it would have been."""
        links = dump_links()
        one_by_one: Sequence[DelLink] = deletions
        together = [d.name for d in deletions if d.name in links]
        if len(together) > 1:
            group = _unused_group(links)
            requests = [(link_request(RTM_NEWLINK, name=name, group=group),
                         f"ip link set {name} group {group}") for name in together]
            requests.append((link_request(RTM_DELLINK, group=group),
                             f"ip link delete group {group}"))
            sent += [what for _, what in requests]
            try:
                self._send(None, requests)
                # a name not found is deleted on its own below, and fails as it always did
                one_by_one = [d for d in deletions if d.name not in links]
            except ActionError:
                now = dump_links()
                back = [(link_request(RTM_NEWLINK, name=name, group=links[name]["group"]),
                         f"ip link set {name} group {links[name]['group']}")
                        for name in together if name in now and now[name]["group"] == group]
                sent += [what for _, what in back]
                self._send(None, back)
                one_by_one = [d for d in deletions if d.name in now or d.name not in links]
        batch: list[tuple[Request, str]] = []
        self._queue(ctx, one_by_one, batch, sent, files)
        self._send(None, batch)

    def _send(self, ns: Netns | None, batch: list[tuple[Request, str]]) -> None:
        if not batch:
            return
        if ns not in self._requests:
            self._requests[ns] = Requests() if ns is None else in_netns(ns, Requests)
        try:
            self._requests[ns].send(batch)
        except OSError as exc:
            # Acknowledgements may be lost or still on their way: start afresh next time.
            self._requests.pop(ns).close()
            raise ActionError(f"netlink: {exc.strerror or exc} while sending {len(batch)} "
                              "requests; what took effect is checked again") from None
        finally:
            batch.clear()

    def _message(self, change: Change, files: ExitStack, ctx: Context,
                 inside: Netns | None) -> Request:
        match change:
            case AddBridge(name):
                return link_request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, name=name,
                                    info_kind="bridge")
            case AddVeth(name, peer):
                return link_request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, name=name,
                                    info_kind="veth", veth_peer=peer)
            case DelLink(name, _):
                return link_request(RTM_DELLINK, name=name)
            case SetLink(name, mtu, mac, up):
                return link_request(RTM_NEWLINK, name=name, mtu=mtu, mac=mac, up=up)
            case Enslave(name, bridge):
                return link_request(RTM_NEWLINK, name=name, master=_index(bridge))
            case Release(name, _):
                return link_request(RTM_NEWLINK, name=name, master=0)
            case MoveLink(name, to, _):
                fd = os.open(to.resolve(ctx.host).path if not to.home else
                             "/proc/thread-self/ns/net", os.O_RDONLY)
                files.callback(os.close, fd)
                # Moving back runs inside the target: name the link by its index there.
                index = in_netns(inside, lambda: _index(name)) if inside else 0
                return link_request(RTM_NEWLINK, name=None if index else name, index=index,
                                    netns_fd=fd)
            case RenameLink(name, new, where):
                index = in_netns(where, lambda: _index(name)) if where else _index(name)
                return link_request(RTM_NEWLINK, name=new, index=index)
            case AddAddr(dev, address, brd, scope, label):
                return _address(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, dev, address, brd,
                                scope, label)
            case DelAddr(dev, address):
                return _address(RTM_DELADDR, 0, dev, address)
            case ReplaceRoute(route):
                return _route(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, route)
            case DelRoute(route):
                return _route(RTM_DELROUTE, 0, route)
        raise TypeError(f"unknown change {change!r}")


def _unused_group(links: Mapping[str, dict[str, Any]]) -> int:
    """A link group that no link of the namespace is in: a random 31-bit number above the
    small ones that /etc/iproute2/group names."""
    taken = {links[name]["group"] for name in links}
    while True:
        group = int.from_bytes(os.urandom(4), "little") >> 1
        if group > 255 and group not in taken:
            return group


def _index(name: str) -> int:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        raise Unresolved(name) from None


def _address(kind: int, flags: int, dev: str, address: str, brd: str | None = None,
             scope: str | None = None, label: str | None = None) -> Request:
    # as `ip addr add`: loopback addresses get host scope unless told otherwise
    family, packed = packed_address(address)
    loopback = packed[0] == 127 if family == socket.AF_INET else packed == _IN6_LOOPBACK
    number = _SCOPE_NUMBERS.get(scope or "", 0) if scope or not loopback \
        else _SCOPE_NUMBERS["host"]
    return address_request(kind, flags, _index(dev), address, number, brd, label)


def _route(kind: int, flags: int, route: Record) -> Request:
    """Fields as `ip route replace|del` sets them, so both targets make the same route."""
    adding = kind == RTM_NEWROUTE
    return route_request(
        kind, flags, family=socket.AF_INET if route["family"] == 4 else socket.AF_INET6,
        table=RT_TABLE_MAIN, dst=None if route["to"] == "default" else route["to"],
        protocol=_PROTOCOL_NUMBERS.get(route.get("proto") or "boot", 3) if adding else 0,
        scope=_SCOPE_NUMBERS.get(route.get("scope") or "global", 0) if adding
        else RT_SCOPE_NOWHERE,
        route_type=RTN_UNICAST if adding else 0, gateway=route.get("via"),
        oif=_index(route["dev"]) if route.get("dev") else None,
        priority=int(route["metric"]) if route.get("metric") is not None else None,
        prefsrc=route.get("src") if adding else None)


def _unusable(host: Host) -> str | None:
    return None if hasattr(socket, "AF_NETLINK") else "netlink needs Linux"


@hookimpl
def runflow_register_actions(register: Any) -> None:
    for action in backend_actions(Netlink, "netlink", ("modern",), _unusable,
                                  [*LINK_ACTIONS, *BRIDGE_ACTIONS]):
        register(action)

