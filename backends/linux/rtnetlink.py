"""rtnetlink messages, encoded and decoded here with struct: the links, addresses and routes
of a namespace from dumps, and the requests of the netlink backend.

Observing a for_each step of hundreds of links one link at a time costs ~0.1 ms a link in
/sys (six small files each); one RTM_GETLINK dump costs about as much as ten of those reads,
whatever the count. Only the fields every link record has are taken from it: name, ifindex,
the peer's or parent's ifindex (IFLA_LINK, /sys's iflink), flags, MTU, master and the kind the
kernel reports (IFLA_LINKINFO), and the link group (IFLA_GROUP, which the netlink backend's
deletions use). The `ip` backends of target centos6 use the dump too: those attributes but the
group exist in 2.6.32.

Requests (links, addresses, routes) are a header, a fixed struct and attributes: built here
in a few microseconds, where pyroute2's message classes took 85 µs (an address) to 320 µs
(a veth pair) — more than the kernel takes to carry them out — and importing pyroute2 alone
0.15-0.2 s.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_RTM_GETLINK, _RTM_GETADDR, _RTM_GETROUTE = 18, 22, 26
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE, NLM_F_REPLACE = 0x1, 0x4, 0x200, 0x400, 0x100
_NLM_F_DUMP = 0x300
_SOL_NETLINK, _NETLINK_GET_STRICT_CHK = 270, 12
_IFF_UP = 0x1
_IFLA_ADDRESS, _IFLA_IFNAME, _IFLA_MTU, _IFLA_LINK, _IFLA_MASTER, _IFLA_LINKINFO = \
    1, 3, 4, 5, 10, 18
_IFLA_GROUP, _IFLA_NET_NS_FD = 27, 28
_IFLA_INFO_KIND, _IFLA_INFO_DATA, _VETH_INFO_PEER = 1, 2, 1
_IFA_ADDRESS, _IFA_LOCAL, _IFA_LABEL, _IFA_BROADCAST = 1, 2, 3, 4
_RTA_DST, _RTA_OIF, _RTA_GATEWAY, _RTA_PRIORITY, _RTA_PREFSRC, _RTA_TABLE = 1, 4, 5, 6, 7, 15
_WANTED = {_IFLA_IFNAME: "name", _IFLA_MTU: "mtu", _IFLA_LINK: "iflink",
           _IFLA_MASTER: "master_index", _IFLA_LINKINFO: "info_kind", _IFLA_GROUP: "group"}

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_ATTR = struct.Struct("=HH")  # rtattr: length, type
_U32 = struct.Struct("=I")
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefix length, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg: family, dst/src length, tos, table, protocol,
#                                       scope, type, flags


def dump_links() -> LinkDump:
    """The links of the calling thread's namespace, by name (see LinkDump)."""
    return LinkDump(_dump(_RTM_GETLINK, _IFINFO.pack(0, 0, 0, 0, 0)))


class LinkDump(Mapping[str, dict[str, Any]]):
    """{name: {"name", "ifindex", "iflink", "up", "mtu", "master_index", "info_kind",
    "group"}} of one RTM_GETLINK dump. "master_index" is None for a link without a master and
    "info_kind" None for one whose kind the kernel does not report (a physical device, lo);
    `names` maps every ifindex to its name.

    A link is parsed when first looked up: a step wants some of a namespace's links, and
    reading a link's ~50 attributes costs 10 µs where its name, the first of them, costs 0.5."""

    def __init__(self, bodies: Iterable[memoryview]) -> None:
        self._bodies: dict[str, memoryview] = {}
        self._parsed: dict[str, dict[str, Any]] = {}
        self.names: dict[int, str] = {}
        for body in bodies:
            length, kind = _ATTR.unpack_from(body, _IFINFO.size)
            if kind == _IFLA_IFNAME:
                name = _text(body[_IFINFO.size + _ATTR.size:_IFINFO.size + length])
            else:  # not where the kernel puts it: read the whole message
                link = _link(body)
                name = link["name"]
                self._parsed[name] = link
            self._bodies[name] = body
            self.names[_IFINFO.unpack_from(body)[2]] = name

    def __getitem__(self, name: str) -> dict[str, Any]:
        if name not in self._parsed:
            self._parsed[name] = _link(self._bodies[name])
        return self._parsed[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._bodies)

    def __len__(self) -> int:
        return len(self._bodies)


def dump_addresses(index: int = 0) -> list[dict[str, Any]]:
    """Every address of the namespace (index 0) or of one link, in the kernel's order:
    {"index", "family", "prefixlen", "scope", "address", "local", "brd", "label"}
    (attributes absent are None). Kernels since 4.20 filter by link themselves; with older
    ones the caller gets every address and must filter."""
    found = []
    for body in _dump(_RTM_GETADDR, _IFADDR.pack(socket.AF_UNSPEC, 0, 0, 0, index),
                      strict=bool(index)):
        family, prefixlen, _flags, scope, index = _IFADDR.unpack_from(body)
        attrs = dict(attributes(body[_IFADDR.size:]))
        found.append({"index": index, "family": family, "prefixlen": prefixlen, "scope": scope,
                      **{key: _ip(family, attrs.get(kind)) for key, kind in
                         (("address", _IFA_ADDRESS), ("local", _IFA_LOCAL),
                          ("brd", _IFA_BROADCAST))},
                      "label": _text(attrs[_IFA_LABEL]) if _IFA_LABEL in attrs else None})
    return found


def dump_routes(family: int) -> list[dict[str, Any]]:
    """Every route of one address family: {"family", "dst_len", "table", "protocol", "scope",
    "type", "dst", "gateway", "oif", "priority", "prefsrc"} (attributes absent are None; the
    table is RTA_TABLE's when there is one)."""
    found = []
    for body in _dump(_RTM_GETROUTE, _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)):
        family, dst_len, _src, _tos, table, protocol, scope, route_type, _flags = \
            _RTMSG.unpack_from(body)
        attrs = dict(attributes(body[_RTMSG.size:]))
        number = {key: _U32.unpack(attrs[kind])[0] if kind in attrs else None
                  for key, kind in (("table", _RTA_TABLE), ("oif", _RTA_OIF),
                                    ("priority", _RTA_PRIORITY))}
        found.append({"family": family, "dst_len": dst_len, "protocol": protocol,
                      "scope": scope, "type": route_type, **number,
                      "table": number["table"] or table,
                      **{key: _ip(family, attrs.get(kind)) for key, kind in
                         (("dst", _RTA_DST), ("gateway", _RTA_GATEWAY),
                          ("prefsrc", _RTA_PREFSRC))}})
    return found


def _ip(family: int, payload: memoryview | None) -> str | None:
    return None if payload is None else socket.inet_ntop(family, bytes(payload))


def _dump(request_type: int, body: bytes, *, strict: bool = False) -> Iterator[memoryview]:
    """The bodies of the messages a dump request answers with, read until NLMSG_DONE.
    strict: ask the kernel to apply the request's filters (NETLINK_GET_STRICT_CHK)."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        if strict:
            try:
                sock.setsockopt(_SOL_NETLINK, _NETLINK_GET_STRICT_CHK, 1)
            except OSError:  # before 4.20: the whole dump comes, and the caller filters
                pass
        sock.sendall(_HEADER.pack(_HEADER.size + len(body), request_type,
                                  NLM_F_REQUEST | _NLM_F_DUMP, 1, 0) + body)
        while True:
            data = sock.recv(1 << 17)  # a dump comes in parts of at most 32 KiB
            for kind, _flags, _seq, message in messages(data):
                if kind == _NLMSG_DONE:
                    return
                if kind == _NLMSG_ERROR:
                    (errno,) = struct.unpack_from("=i", message)
                    raise OSError(-errno, f"netlink dump: {os.strerror(-errno)}")
                yield message


def messages(data: bytes) -> Iterator[tuple[int, int, int, memoryview]]:
    """(type, flags, sequence number, body) of each netlink message in a received buffer."""
    view = memoryview(data)
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, kind, flags, seq, _port = _HEADER.unpack_from(data, offset)
        yield kind, flags, seq, view[offset + _HEADER.size:offset + length]
        offset += (length + 3) & ~3


def _link(body: memoryview) -> dict[str, Any]:
    _family, _type, index, flags, _change = _IFINFO.unpack_from(body)
    link = {"name": "", "ifindex": index, "iflink": index, "up": bool(flags & _IFF_UP),
            "mtu": 0, "master_index": None, "info_kind": None, "group": 0}
    # A link has some 50 attributes: the loop is inlined and reads only the ones it wants.
    offset, end, unpack = _IFINFO.size, len(body), _ATTR.unpack_from
    while offset + 4 <= end:
        length, kind = unpack(body, offset)
        if length < 4:
            break
        if kind in _WANTED:
            payload = body[offset + 4:offset + length]
            if kind == _IFLA_IFNAME:
                link["name"] = _text(payload)
            elif kind == _IFLA_LINKINFO:
                link["info_kind"] = next((_text(p) for k, p in attributes(payload)
                                          if k == _IFLA_INFO_KIND), None)
            else:
                link[_WANTED[kind]] = _U32.unpack(payload)[0]
        offset += (length + 3) & ~3
    return link


def _text(payload: memoryview) -> str:
    return bytes(payload).rstrip(b"\0").decode()


def attributes(body: memoryview) -> Iterator[tuple[int, memoryview]]:
    """(type, payload) of each attribute in a run of them."""
    offset, end = 0, len(body)
    while offset + _ATTR.size <= end:
        length, kind = _ATTR.unpack_from(body, offset)
        if length < _ATTR.size:
            return
        yield kind & 0x3FFF, body[offset + _ATTR.size:offset + length]  # without NLA_F_ flags
        offset += (length + 3) & ~3


# ---------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------


# A NamedTuple, not a frozen dataclass: those generate their methods with exec, ~1 ms of
# every command's start-up each.
class Request(NamedTuple):
    """One request: its message type, flags and body (fixed struct and attributes)."""

    kind: int
    flags: int
    body: bytes

    def encode(self, sequence: int, ack: bool = True) -> bytes:
        """The message; ack: ask for an acknowledgement (a refusal is answered anyway)."""
        flags = self.flags | NLM_F_REQUEST | (NLM_F_ACK if ack else 0)
        return _HEADER.pack(_HEADER.size + len(self.body), self.kind, flags, sequence, 0) + \
            self.body


def attr(kind: int, payload: bytes) -> bytes:
    length = _ATTR.size + len(payload)
    return _ATTR.pack(length, kind) + payload + bytes(-length % 4)


def u32_attr(kind: int, value: int) -> bytes:
    return attr(kind, _U32.pack(value))


def text_attr(kind: int, value: str) -> bytes:
    return attr(kind, value.encode() + b"\0")


def link_request(kind: int, flags: int = 0, *, name: str | None = None, index: int = 0,
                 up: bool | None = None, mtu: int | None = None, mac: str | None = None,
                 master: int | None = None, netns_fd: int | None = None,
                 info_kind: str | None = None, veth_peer: str | None = None,
                 group: int | None = None) -> Request:
    """RTM_NEWLINK / RTM_DELLINK: a link by name or index, with what is to change; or, with
    neither, RTM_DELLINK of every link in a group."""
    body = _IFINFO.pack(socket.AF_UNSPEC, 0, index, _IFF_UP if up else 0,
                        _IFF_UP if up is not None else 0)
    if name is not None:
        body += text_attr(_IFLA_IFNAME, name)
    if mtu is not None:
        body += u32_attr(_IFLA_MTU, mtu)
    if mac is not None:
        body += attr(_IFLA_ADDRESS, bytes.fromhex(mac.replace(":", "")))
    if master is not None:
        body += u32_attr(_IFLA_MASTER, master)
    if netns_fd is not None:
        body += u32_attr(_IFLA_NET_NS_FD, netns_fd)
    if group is not None:
        body += u32_attr(_IFLA_GROUP, group)
    if info_kind is not None:
        info = text_attr(_IFLA_INFO_KIND, info_kind)
        if veth_peer is not None:
            peer = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + text_attr(_IFLA_IFNAME, veth_peer)
            info += attr(_IFLA_INFO_DATA, attr(_VETH_INFO_PEER, peer))
        body += attr(_IFLA_LINKINFO, info)
    return Request(kind, flags, body)


def packed_address(address: str) -> tuple[int, bytes]:
    """The family (AF_INET or AF_INET6) and bytes of a validated address, without its prefix
    length. socket.inet_pton takes 1 µs where ipaddress takes 10-20."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return family, socket.inet_pton(family, address.partition("/")[0])


def address_request(kind: int, flags: int, index: int, address: str, scope: int,
                    brd: str | None = None, label: str | None = None) -> Request:
    """RTM_NEWADDR / RTM_DELADDR of a validated address with its prefix length on a link."""
    family, ip = packed_address(address)
    body = _IFADDR.pack(family, int(address.partition("/")[2]), 0, scope, index)
    # as `ip addr add`: IPv4 gives the local address too, IPv6 only the address
    body += (attr(_IFA_LOCAL, ip) if family == socket.AF_INET else b"") + attr(_IFA_ADDRESS, ip)
    if brd:
        body += attr(_IFA_BROADCAST, packed_address(brd)[1])
    if label:
        body += text_attr(_IFA_LABEL, label)
    return Request(kind, flags, body)


def route_request(kind: int, flags: int, *, family: int, table: int, dst: str | None,
                  protocol: int = 0, scope: int = 0, route_type: int = 0,
                  gateway: str | None = None, oif: int | None = None,
                  priority: int | None = None, prefsrc: str | None = None) -> Request:
    """RTM_NEWROUTE / RTM_DELROUTE; dst None is the default route."""
    net = ipaddress.ip_network(dst) if dst is not None else None
    body = _RTMSG.pack(family, net.prefixlen if net else 0, 0, 0, table, protocol, scope,
                       route_type, 0)
    if net is not None:
        body += attr(_RTA_DST, net.network_address.packed)
    if gateway:
        body += attr(_RTA_GATEWAY, ipaddress.ip_address(gateway).packed)
    if oif is not None:
        body += u32_attr(_RTA_OIF, oif)
    if priority is not None:
        body += u32_attr(_RTA_PRIORITY, priority)
    if prefsrc:
        body += attr(_RTA_PREFSRC, ipaddress.ip_address(prefsrc).packed)
    return Request(kind, flags, body)
