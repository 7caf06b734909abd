"""rtnetlink through pyroute2, for the netlink backend and for container attach: a socket in
one network namespace, requests built as pyroute2 messages (ifinfmsg, ifaddrmsg, rtmsg) and
sent many to a send, and dumps of addresses and routes decoded by pyroute2's parser.

The host's socket is one per run and host (`host_rtnl`, in ctx.resources): the engine runs a
namespace host's steps in a thread that entered the namespace, and a socket belongs to the
namespace it was opened in. A socket in another namespace (a named one, a container's) is
opened by entering it for the socket() call only.

How pyroute2 is used, and why not IPRoute's calls (measured here, 200 veth pairs):
- IPRoute sends each request on its own and waits for its acknowledgement through its asyncio
  core: 0.4 ms (a link up) to 0.9 ms (a veth pair) a request, twice what the kernel takes.
  Here the messages are built with the same classes IPRoute builds them with (0.05 ms a link
  up, 0.2 ms a veth pair) and a batch goes CHUNK to a send with an acknowledgement asked for
  the last one only: the kernel carries out a send's requests in order and answers every one
  it refuses, so once the last one is acknowledged every refusal is in.
- IPRoute(netns=...) opens a socket in another namespace from a child process it forks (and
  creates the namespace if it is missing); entering it in the calling thread costs microseconds.
- Links are not read from dumps: pyroute2 decodes every attribute of a link message (some 40)
  into an object, 0.15-0.3 ms a link, 60-110 ms for a namespace of 400 links; the files in
  /sys that the records need cost ~0.05 ms a link (sysfs.py). Addresses and routes, with a
  handful of attributes each, are dumped and decoded here.
- Importing pyroute2 takes 0.13-0.3 s (its package imports all its modules): the backends
  import this module only when they first talk to the kernel.
"""

from __future__ import annotations

import ctypes
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from pyroute2.netlink import (NETLINK_EXT_ACK, NETLINK_GET_STRICT_CHK, NLM_F_ACK, NLM_F_CREATE,
                              NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST, NLMSG_DONE,
                              NLMSG_ERROR, SOL_NETLINK, nlmsg_base)
from pyroute2.netlink.nlsocket import Marshal
from pyroute2.netlink.rtnl import (RTM_DELADDR, RTM_DELLINK, RTM_DELROUTE, RTM_DELRULE,
                                   RTM_GETADDR, RTM_GETLINK, RTM_GETROUTE, RTM_GETRULE,
                                   RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE, RTM_NEWRULE)
from pyroute2.netlink.rtnl.fibmsg import fibmsg
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.marshal import MarshalRtnl
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from runflow.core.actions import Context
from runflow.core.errors import ActionError

# The request types the backends build messages of.
__all__ = ["RTM_DELADDR", "RTM_DELLINK", "RTM_DELROUTE", "RTM_DELRULE", "RTM_GETLINK",
           "RTM_NEWADDR", "RTM_NEWLINK", "RTM_NEWROUTE", "RTM_NEWRULE"]

FIB_RULE_INVERT = 0x2
CREATE = NLM_F_CREATE | NLM_F_EXCL  # a new object; refused if it exists
REPLACE = NLM_F_CREATE | NLM_F_REPLACE  # made, or put in place of one that exists
IFF_UP = 0x1
RT_TABLE_COMPAT = 252  # the header's table when the table's number needs RTA_TABLE/FRA_TABLE
# Requests per send. Each refusal's answer carries the refused request back (~0.1-0.3 KiB) in
# a receive buffer of 212 KiB by default: a few thousand at once would overflow it and the
# kernel would drop the rest (ENOBUFS).
CHUNK = 64
ANSWER_TIMEOUT = 60.0  # seconds without an answer: the socket is given up

T = TypeVar("T")
Message = nlmsg_base
Request = tuple[Message, str]  # a message and what it does, for errors and the journal


class Refused(ActionError):
    """The kernel refused a request; `code` is its errno."""

    def __init__(self, what: str, code: int, reason: str) -> None:
        super().__init__(f"netlink request ({what}) refused: {reason}")
        self.code = code


# ---------------------------------------------------------------------------------------------
# Namespaces
# ---------------------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET = 0x40000000


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot enter the network namespace {what}: {os.strerror(err)}")


def opened_in(netns: str | None, factory: Callable[[], T]) -> T:
    """factory() called inside the network namespace whose file is `netns` (/run/netns/NAME,
    /proc/PID/ns/net; None: the calling thread's own). The thread enters it for the call and
    comes straight back: a socket stays in the namespace it was opened in."""
    if netns is None:
        return factory()
    target = os.open(netns, os.O_RDONLY)  # FileNotFoundError: no such namespace
    try:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            _setns(target, netns)
            try:
                return factory()
            finally:
                _setns(home, "of this thread")
        finally:
            os.close(home)
    finally:
        os.close(target)


# ---------------------------------------------------------------------------------------------
# The socket
# ---------------------------------------------------------------------------------------------


class Rtnl:
    """A NETLINK_ROUTE socket in one network namespace (see opened_in), opened again after a
    failure that left it unusable."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self.seq = 0
        self._acks = Marshal()  # answers decoded without their payload: only errors matter
        self._records = MarshalRtnl()
        self._sock: socket.socket | None = None
        self._sock = self.sock  # FileNotFoundError now if the namespace is not there

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    @property
    def sock(self) -> socket.socket:
        if self._sock is None:
            sock = opened_in(self.netns, lambda: socket.socket(
                socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE))
            sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)  # the kernel's reason, if it has one
            try:  # dumps filtered by the kernel (since 4.20); before, the caller filters
                sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
            except OSError:
                pass
            sock.settimeout(ANSWER_TIMEOUT)
            sock.bind((0, 0))
            self._sock = sock
        return self._sock

    def _encode(self, msg: Message, flags: int) -> bytes:
        self.seq += 1
        header = msg["header"]
        header["sequence_number"] = self.seq
        header["flags"] = header.get("flags", 0) | NLM_F_REQUEST | flags
        msg.encode()
        return bytes(msg.data)

    def _receive(self) -> Iterator[tuple[int, int, Message]]:
        """(type, sequence number, message) of each message of the next datagram, decoded
        no further than its header (and an error's code and reason)."""
        data = self.sock.recv(1 << 20)
        for msg in self._acks.parse(data):
            header = msg["header"]
            yield header["type"], header["sequence_number"], msg

    def send(self, requests: Sequence[Request]) -> None:
        """Carry out the requests in order; raise Refused for the first one the kernel refused
        (it went on with the others, as the engine expects of a batch). An OSError (no answer,
        a full buffer) closes the socket: what took effect must be looked at again."""
        failure: Refused | None = None
        try:
            for start in range(0, len(requests), CHUNK):
                failure = self._exchange(requests[start:start + CHUNK]) or failure
        except OSError:
            self.close()
            raise
        if failure is not None:
            raise failure

    def _exchange(self, requests: Sequence[Request]) -> Refused | None:
        sent: dict[int, str] = {}
        data = bytearray()
        for i, (msg, what) in enumerate(requests, 1):
            data += self._encode(msg, NLM_F_ACK if i == len(requests) else 0)
            sent[self.seq] = what
        last = self.seq
        self.sock.send(data)
        failure = None
        while True:
            for kind, seq, msg in self._receive():
                if kind == NLMSG_ERROR and msg["error"] and failure is None and seq in sent:
                    failure = Refused(sent[seq], -msg["error"], _reason(msg))
                if seq == last and kind == NLMSG_ERROR:
                    return failure

    def _ask(self, msg: Message, flags: int) -> list[Message]:
        """The messages answering one request (a dump, or a get), decoded; [] if the kernel
        answered "no such device"."""
        data = self._encode(msg, flags)
        asked, found = self.seq, []
        try:
            self.sock.send(data)
            while True:
                data = self.sock.recv(1 << 20)
                for answer in self._records.parse(data):
                    header = answer["header"]
                    if header["sequence_number"] != asked:
                        continue
                    if header["type"] == NLMSG_DONE:
                        return found
                    if header["type"] == NLMSG_ERROR:
                        if answer["error"] == -19:  # ENODEV
                            return []
                        raise OSError(-answer["error"], f"netlink: {_reason(answer)}")
                    found.append(answer)
                    if not flags & NLM_F_DUMP:
                        return found
        except OSError:
            self.close()
            raise

    # -- reading ---------------------------------------------------------------------------

    def link(self, name: str) -> dict[str, Any] | None:
        """{"ifindex", "up", "mtu", "mac"} of a link of this namespace, or None."""
        found = self._ask(link_message(RTM_GETLINK, name=name), 0)
        if not found:
            return None
        msg = found[0]
        return {"ifindex": msg["index"], "up": bool(msg["flags"] & IFF_UP),
                "mtu": msg.get_attr("IFLA_MTU"), "mac": msg.get_attr("IFLA_ADDRESS")}

    def index(self, name: str) -> int | None:
        found = self.link(name)
        return found["ifindex"] if found else None

    def addresses(self, index: int = 0) -> list[dict[str, Any]]:
        """Every address of the namespace (index 0) or of one link, in the kernel's order:
        {"index", "family", "prefixlen", "scope", "address", "local", "brd", "label"}
        (None where the kernel gives no such attribute). Kernels before 4.20 answer with the
        whole namespace's: the caller filters."""
        msg = ifaddrmsg()
        msg["header"]["type"] = RTM_GETADDR
        msg["index"] = index
        return [{"index": a["index"], "family": a["family"], "prefixlen": a["prefixlen"],
                 "scope": a["scope"], "address": a.get_attr("IFA_ADDRESS"),
                 "local": a.get_attr("IFA_LOCAL"), "brd": a.get_attr("IFA_BROADCAST"),
                 "label": a.get_attr("IFA_LABEL")}
                for a in self._ask(msg, NLM_F_DUMP)]

    def routes(self, family: int, table: int | None) -> list[dict[str, Any]]:
        """The routes of an address family in one table (None: every table): {"family",
        "dst_len", "protocol", "scope", "type", "table", "dst", "gateway", "oif", "priority",
        "prefsrc"} (None where the kernel gives no such attribute)."""
        msg = rtmsg()
        msg["header"]["type"] = RTM_GETROUTE
        msg["family"] = family
        if table is not None:  # the kernel's filter since 4.20
            msg["table"] = table if table < 256 else RT_TABLE_COMPAT
            msg["attrs"] = [("RTA_TABLE", table)]
        found = []
        for r in self._ask(msg, NLM_F_DUMP):
            number = r.get_attr("RTA_TABLE") or r["table"]
            if table is None or number == table:
                found.append({
                    "family": r["family"], "dst_len": r["dst_len"], "protocol": r["proto"],
                    "scope": r["scope"], "type": r["type"], "table": number,
                    "dst": r.get_attr("RTA_DST"), "gateway": r.get_attr("RTA_GATEWAY"),
                    "oif": r.get_attr("RTA_OIF"), "priority": r.get_attr("RTA_PRIORITY"),
                    "prefsrc": r.get_attr("RTA_PREFSRC"), "multipath": bool(
                        r.get_attr("RTA_MULTIPATH"))})
        return found

    def rules(self, family: int) -> list[dict[str, Any]]:
        """The policy routing rules of an address family: {"family", "priority", "src",
        "src_len", "dst", "dst_len", "iif", "oif", "fwmark", "fwmask", "table", "action",
        "others"}, "others" naming the attributes and flags beside these."""
        msg = fibmsg()
        msg["header"]["type"] = RTM_GETRULE
        msg["family"] = family
        known = {"FRA_SRC", "FRA_DST", "FRA_IIFNAME", "FRA_OIFNAME", "FRA_FWMARK", "FRA_FWMASK",
                 "FRA_TABLE", "FRA_PRIORITY", "FRA_PROTOCOL", "FRA_PAD"}
        found = []
        for r in self._ask(msg, NLM_F_DUMP):
            # the kernel sends suppress_prefixlength always, as -1 when it is not set
            others = sorted({name for name, value in r["attrs"] if name not in known and not (
                name == "FRA_SUPPRESS_PREFIXLEN" and value == 0xFFFFFFFF)})
            if r["tos"]:
                others.append("tos")
            if r["flags"] & FIB_RULE_INVERT:
                others.append("not")
            found.append({
                "family": r["family"], "priority": r.get_attr("FRA_PRIORITY") or 0,
                "src": r.get_attr("FRA_SRC"), "src_len": r["src_len"],
                "dst": r.get_attr("FRA_DST"), "dst_len": r["dst_len"],
                "iif": r.get_attr("FRA_IIFNAME"), "oif": r.get_attr("FRA_OIFNAME"),
                "fwmark": r.get_attr("FRA_FWMARK"), "fwmask": r.get_attr("FRA_FWMASK"),
                "table": r.get_attr("FRA_TABLE") or r["table"], "action": r["action"],
                "others": others})
        return found


def _reason(msg: Message) -> str:
    """A refusal's errno in words, and the kernel's own words if it gave some."""
    said = msg.get_attr("NLMSGERR_ATTR_MSG")
    return os.strerror(-msg["error"]) + (f" ({said})" if said else "")


def host_rtnl(ctx: Context) -> Rtnl:
    """The socket in the host's namespace: one per run and host, shared by every step (and
    every backend) that talks rtnetlink there."""
    return ctx.resources.get("linux:rtnl", Rtnl)


@contextmanager
def rtnl_in(netns: str) -> Iterator[Rtnl]:
    """A socket in another namespace, for one batch: a namespace's file can name another
    namespace later (a container restarted, a namespace made again), so none is kept."""
    rtnl = Rtnl(netns)
    try:
        yield rtnl
    finally:
        rtnl.close()


# ---------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------


def _link_attrs(name: str | None, mtu: int | None, mac: str | None,
                netns_pid: int | None) -> list[tuple[str, Any]]:
    attrs: list[tuple[str, Any]] = []
    for key, value in (("IFLA_IFNAME", name), ("IFLA_MTU", mtu), ("IFLA_ADDRESS", mac),
                       ("IFLA_NET_NS_PID", netns_pid)):
        if value is not None:
            attrs.append((key, value))
    return attrs


def link_message(kind: int, flags: int = 0, *, name: str | None = None, index: int = 0,
                 up: bool | None = None, mtu: int | None = None, mac: str | None = None,
                 master: int | None = None, netns_fd: int | None = None,
                 group: int | None = None, info_kind: str | None = None,
                 peer: dict[str, Any] | None = None,
                 info_data: list[tuple[str, Any]] | None = None,
                 slave_kind: str | None = None,
                 slave_data: list[tuple[str, Any]] | None = None) -> Message:
    """RTM_NEWLINK / RTM_DELLINK / RTM_GETLINK of a link by name or index, with what is to
    change; with neither, RTM_DELLINK of every link in `group`. A veth's `peer` takes the
    keyword arguments of `veth_peer`; `info_data` are the attributes of its kind (a bridge's
    IFLA_BR_*), `slave_data` those of its master's kind (a bridge port's IFLA_BRPORT_*)."""
    msg = ifinfmsg()
    msg["header"]["type"] = kind
    msg["header"]["flags"] = flags
    msg["index"] = index
    if up is not None:
        msg["flags"] = IFF_UP if up else 0
        msg["change"] = IFF_UP
    attrs = _link_attrs(name, mtu, mac, None)
    for key, value in (("IFLA_MASTER", master), ("IFLA_NET_NS_FD", netns_fd),
                       ("IFLA_GROUP", group)):
        if value is not None:
            attrs.append((key, value))
    if info_kind is not None:
        info: list[tuple[str, Any]] = [("IFLA_INFO_KIND", info_kind)]
        if peer is not None:
            info.append(("IFLA_INFO_DATA", {"attrs": [
                ("VETH_INFO_PEER", {"attrs": _link_attrs(**peer)})]}))
        if info_data is not None:
            info.append(("IFLA_INFO_DATA", {"attrs": info_data}))
        attrs.append(("IFLA_LINKINFO", {"attrs": info}))
    if slave_kind is not None:
        attrs.append(("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_SLAVE_KIND", slave_kind),
                                                  ("IFLA_INFO_SLAVE_DATA",
                                                   {"attrs": slave_data or []})]}))
    msg["attrs"] = attrs
    return msg


def veth_peer(name: str, *, mtu: int | None = None, mac: str | None = None,
              netns_pid: int | None = None) -> dict[str, Any]:
    """A veth's other end, for link_message(peer=...): made inside the namespace of process
    netns_pid if given (the kernel honours a peer's namespace since 2.6.33)."""
    return {"name": name, "mtu": mtu, "mac": mac, "netns_pid": netns_pid}


def address_message(kind: int, flags: int, index: int, address: str, scope: int,
                    brd: str | None = None, label: str | None = None) -> Message:
    """RTM_NEWADDR / RTM_DELADDR of a validated address with its prefix length on a link."""
    ip, _, prefixlen = address.partition("/")
    msg = ifaddrmsg()
    msg["header"]["type"] = kind
    msg["header"]["flags"] = flags
    msg["family"] = socket.AF_INET6 if ":" in ip else socket.AF_INET
    msg["prefixlen"] = int(prefixlen)
    msg["scope"] = scope
    msg["index"] = index
    # as `ip addr add`: IPv4 gives the local address too, IPv6 only the address
    attrs: list[tuple[str, Any]] = [("IFA_LOCAL", ip)] if msg["family"] == socket.AF_INET \
        else []
    attrs.append(("IFA_ADDRESS", ip))
    if brd:
        attrs.append(("IFA_BROADCAST", brd))
    if label:
        attrs.append(("IFA_LABEL", label))
    msg["attrs"] = attrs
    return msg


def route_message(kind: int, flags: int, *, family: int, table: int, dst: str | None,
                  protocol: int = 0, scope: int = 0, route_type: int = 0,
                  gateway: str | None = None, oif: int | None = None,
                  priority: int | None = None, prefsrc: str | None = None) -> Message:
    """RTM_NEWROUTE / RTM_DELROUTE; dst is a validated network, None the default route."""
    msg = rtmsg()
    msg["header"]["type"] = kind
    msg["header"]["flags"] = flags
    msg["family"] = family
    msg["table"] = table if table < 256 else RT_TABLE_COMPAT
    msg["proto"] = protocol
    msg["scope"] = scope
    msg["type"] = route_type
    attrs: list[tuple[str, Any]] = []
    if dst is not None:
        network, _, length = dst.partition("/")
        msg["dst_len"] = int(length)
        attrs.append(("RTA_DST", network))
    for key, value in (("RTA_GATEWAY", gateway), ("RTA_OIF", oif), ("RTA_PRIORITY", priority),
                       ("RTA_PREFSRC", prefsrc), ("RTA_TABLE", table)):
        if value is not None:
            attrs.append((key, value))
    msg["attrs"] = attrs
    return msg


FR_ACT_TO_TBL = 1


def rule_message(kind: int, flags: int, *, family: int, table: int, priority: int | None,
                 src: str | None = None, dst: str | None = None, iif: str | None = None,
                 oif: str | None = None, fwmark: int | None = None,
                 fwmask: int | None = None) -> Message:
    """RTM_NEWRULE / RTM_DELRULE of a rule that looks up a table; src and dst are validated
    networks."""
    msg = fibmsg()
    msg["header"]["type"] = kind
    msg["header"]["flags"] = flags
    msg["family"] = family
    msg["table"] = table if table < 256 else RT_TABLE_COMPAT
    msg["action"] = FR_ACT_TO_TBL
    attrs: list[tuple[str, Any]] = [("FRA_TABLE", table)]
    for key, length, network in (("FRA_SRC", "src_len", src), ("FRA_DST", "dst_len", dst)):
        if network is not None:
            address, _, bits = network.partition("/")
            msg[length] = int(bits)
            attrs.append((key, address))
    for key, value in (("FRA_IIFNAME", iif), ("FRA_OIFNAME", oif), ("FRA_FWMARK", fwmark),
                       ("FRA_FWMASK", fwmask), ("FRA_PRIORITY", priority)):
        if value is not None:
            attrs.append((key, value))
    msg["attrs"] = attrs
    return msg
