"""The Linux changes as commands, and what `ip` prints, read back. Nothing here runs anything.

`render` gives a change's commands: CentOS 6's (iproute 2.6.32 and bridge-utils 1.2, which
the iproute2 and brctl backends run, see centos6.py) or today's iproute2 (the command line
equivalent to the request the netlink backend sends, for `plan` and the journal). Used by
every Linux backend's `describe` and by the shell forms of `runflow export` (export.py).

Commands, all present in CentOS 6:
    ip link add N type veth peer name P        ip link delete N
    ip link set N [mtu M] [address MAC] [up|down] | netns PID|NAME | name NEW
    ip addr add|del A dev D [brd B] [scope S] [label L]
    ip [-6] route replace|del PREFIX [via G] [dev D] [metric M] [proto P] [scope S] [src A]
    brctl addbr|delbr|addif|delif   (bridges: iproute2 2.6.32 can neither create a bridge nor
                                     set a master; `ip link set N down` before `brctl delbr`)
Named namespaces (`netns NAME`, `ip netns exec`) are the backport in CentOS 6.5's iproute; a
move by pid works with any 2.6.32. Commands inside a process's namespace use nsenter
(util-linux 2.23, which CentOS 6 lacks). Not used: `ip -j` (4.13), `ip -n`, `ip link add type
bridge`, `ip link set master` (3.x).
"""

from __future__ import annotations

import ipaddress

from runflow.core.hosts import Host

from .args import (ROUTE_DEFAULTS, AddAddr, AddBridge, AddVeth, Change, DelAddr, DelLink,
                   DelRoute, Enslave, MoveLink, Record, Release, RenameLink, ReplaceRoute,
                   SetLink)


def _route_args(r: Record, *, full: bool) -> list[str]:
    argv = ["ip", *(["-6"] if r["family"] == 6 else []), "route", "replace" if full else "del",
            r["to"]]
    for key, word in (("via", "via"), ("dev", "dev"), ("metric", "metric")):
        if r.get(key) is not None:
            argv += [word, str(r[key])]
    if full:
        for key, word in (("proto", "proto"), ("scope", "scope"), ("src", "src")):
            if r.get(key) not in (None, *ROUTE_DEFAULTS.get(key, ())):
                argv += [word, str(r[key])]
    return argv


def render(change: Change, *, centos6: bool, host: Host | None = None) -> list[list[str]]:
    """The commands of a change: CentOS 6's (ip 2.6.32 and brctl) or today's iproute2 (the
    command line equivalent to what the netlink backend sends)."""
    inside = getattr(change, "inside", None)
    prefix = inside.resolve(host).prefix() if inside else []
    return [[*prefix, *argv] for argv in _commands(change, centos6, host)]


def _commands(change: Change, centos6: bool, host: Host | None) -> list[list[str]]:
    match change:
        case AddBridge(name):
            return [["brctl", "addbr", name] if centos6 else
                    ["ip", "link", "add", name, "type", "bridge"]]
        case AddVeth(name, peer):
            return [["ip", "link", "add", name, "type", "veth", "peer", "name", peer]]
        case DelLink(name, "bridge") if centos6:
            return [["ip", "link", "set", name, "down"], ["brctl", "delbr", name]]
        case DelLink(name, _):
            return [["ip", "link", "delete", name]]
        case SetLink(name, mtu, mac, up, _):
            argv = ["ip", "link", "set", name]
            if mtu is not None:
                argv += ["mtu", str(mtu)]
            if mac is not None:
                argv += ["address", mac]
            if up is not None:
                argv.append("up" if up else "down")
            return [argv]
        case Enslave(name, bridge):
            return [["brctl", "addif", bridge, name] if centos6 else
                    ["ip", "link", "set", name, "master", bridge]]
        case Release(name, bridge):
            return [["brctl", "delif", bridge, name] if centos6 else
                    ["ip", "link", "set", name, "nomaster"]]
        case AddAddr(dev, address, brd, scope, label):
            argv = ["ip", "addr", "add", address, "dev", dev]
            for word, value in (("brd", brd), ("scope", scope), ("label", label)):
                if value is not None:
                    argv += [word, value]
            return [argv]
        case DelAddr(dev, address):
            return [["ip", "addr", "del", address, "dev", dev]]
        case MoveLink(name, to, _):
            return [["ip", "link", "set", name, "netns", to.resolve(host).arg]]
        case RenameLink(name, new, _):
            return [["ip", "link", "set", name, "name", new]]
        case ReplaceRoute(route):
            return [_route_args(route, full=True)]
        case DelRoute(route):
            return [_route_args(route, full=False)]
    raise TypeError(f"unknown change {change!r}")


def parse_addresses(text: str) -> dict[str, list[Record]]:
    """`ip -o addr show` → addresses by device, in the kernel's order."""
    result: dict[str, list[Record]] = {}
    for line in text.splitlines():
        words = line.split("\\")[0].split()
        if len(words) < 4 or words[2] not in ("inet", "inet6"):
            continue
        dev = words[1].split("@")[0]
        addr: Record = {"address": str(ipaddress.ip_interface(words[3])), "brd": None,
                        "scope": "global", "label": None}
        rest = words[4:]
        for i, word in enumerate(rest[:-1]):
            if word in ("brd", "scope"):
                addr[word] = rest[i + 1]
        # IPv4 lines end with the label: the device's name, or one starting with it (br0:1)
        if words[2] == "inet" and rest and rest[-1].split(":")[0] == dev:
            addr["label"] = rest[-1]
        result.setdefault(dev, []).append(addr)
    return result


_ROUTE_TYPES = {"unicast", "local", "broadcast", "multicast", "throw", "unreachable",
                "prohibit", "blackhole", "nat", "anycast"}
_ROUTE_KEYS = ("via", "dev", "metric", "proto", "scope", "src")


def parse_routes(text: str, fam: int) -> list[Record]:
    """`ip route show` (main table) → unicast route records."""
    routes = []
    for line in text.splitlines():
        words = line.split()
        if not words or (words[0] in _ROUTE_TYPES and words[0] != "unicast"):
            continue
        if words[0] == "unicast":
            words = words[1:]
        to = words[0]
        if to != "default":
            to = str(ipaddress.ip_network(to, strict=False))
        route: Record = {"family": fam, "to": to, "via": None, "dev": None, "metric": None,
                         "proto": "boot", "scope": "global", "src": None}
        for i, word in enumerate(words[1:-1], start=1):
            if word in _ROUTE_KEYS:
                route[word] = words[i + 1]
        if route["metric"] is not None:
            route["metric"] = int(route["metric"])
        routes.append(route)
    return routes


def parse_link(text: str) -> Record | None:
    """The first link `ip -o link show` prints: {"ifindex", "up", "mtu", "mac"}, or None.
    As 2.6.32 and today's iproute2 print it:
    `5: vb0@if4: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue ... link/ether MAC`."""
    words = text.split("\n", 1)[0].replace("\\", " ").split()
    if len(words) < 3 or not words[0].endswith(":") or not words[0][:-1].isdigit():
        return None
    flags = words[2].strip("<>").split(",")
    mtu = words[words.index("mtu") + 1] if "mtu" in words else None
    mac = words[words.index("link/ether") + 1] if "link/ether" in words else None
    return {"ifindex": int(words[0][:-1]), "up": "UP" in flags,
            "mtu": int(mtu) if mtu is not None else None, "mac": mac}
