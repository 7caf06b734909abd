"""The Linux changes as commands, and what `ip` prints, read back. Nothing here runs anything.

`render` gives a change's commands: CentOS 6's (iproute 2.6.32 and bridge-utils 1.2, which
the iproute2 and brctl backends run, see centos6.py) or today's iproute2 (the command line
equivalent to the request the netlink backend sends, for `plan` and the journal). Used by
every Linux backend's `describe` and by the shell forms of `runflow export` (export.py).

Commands, all present in CentOS 6:
    ip link add N type veth peer name P        ip link delete N
    ip link set N [mtu M] [address MAC] [up|down] | netns PID|NAME | name NEW
    ip addr add|del A dev D [brd B] [scope S] [label L]
    ip [-6] route replace|del [TYPE] PREFIX [via G] [dev D] [metric M] [table T] [proto P]
        [scope S] [src A]
    ip [-6] rule add|del [from F] [to T] [iif D] [fwmark M/K] [priority P] table T
    brctl addbr|delbr|addif|delif   (bridges: iproute2 2.6.32 can neither create a bridge nor
                                     set a master; `ip link set N down` before `brctl delbr`)
    brctl stp|setfd|sethello|setmaxage|setageing|setbridgeprio|setpathcost|setportprio
    sh -c 'echo "$2" >"$1"' sh /sys/class/net/N/bridge|brport/OPTION VALUE
                                    (the bridge and port options brctl 1.2 has no command for)
Named namespaces (`netns NAME`, `ip netns exec`) are the backport in CentOS 6.5's iproute; a
move by pid works with any 2.6.32. Commands inside a process's namespace use nsenter
(util-linux 2.23, which CentOS 6 lacks). Not used: `ip -j` (4.13), `ip -n`, `ip link add type
bridge`, `ip link set master` (3.x), `ip rule ... oif` (2.6.33). Today's forms of the bridge
options: `ip link set N type bridge OPTION VALUE...` and `ip link set N type bridge_slave ...`.
"""

from __future__ import annotations

import ipaddress

from runflow.core.hosts import Host

from .args import (ROUTE_DEFAULTS, ROUTE_TYPES, RT_TABLE_MAIN, AddAddr, AddBridge, AddRule,
                   AddVeth, Change, DelAddr, DelLink, DelRoute, DelRule, Enslave, MoveLink,
                   Record, Release, RenameLink, ReplaceRoute, SetBridge, SetLink, SetPort,
                   table_of)
from .options import BRIDGE_OPTIONS, PORT_OPTIONS, Option, brctl_value, ip_value
from .sysfs import SYS_NET


def _route_args(r: Record, *, full: bool) -> list[str]:
    kind = [r["type"]] if r.get("type", "unicast") != "unicast" else []
    argv = ["ip", *(["-6"] if r["family"] == 6 else []), "route", "replace" if full else "del",
            *kind, r["to"]]
    for key in ("via", "dev", "metric"):
        if r.get(key) is not None:
            argv += [key, str(r[key])]
    if r.get("table", RT_TABLE_MAIN) != RT_TABLE_MAIN:
        argv += ["table", str(r["table"])]
    if full:
        for key in ("proto", "scope", "src"):
            if r.get(key) not in (None, *ROUTE_DEFAULTS.get(key, ())):
                argv += [key, str(r[key])]
    return argv


def _rule_args(r: Record, verb: str) -> list[str]:
    argv = ["ip", *(["-6"] if r["family"] == 6 else []), "rule", verb]
    for key in ("from", "to", "iif", "oif"):
        if r.get(key) is not None:
            argv += [key, r[key]]
    if r.get("fwmark") is not None:
        mask = r.get("fwmask")
        argv += ["fwmark", f"{r['fwmark']:#x}" + (f"/{mask:#x}" if mask not in (None, 0xFFFFFFFF)
                                                   else "")]
    if r.get("priority") is not None:
        argv += ["priority", str(r["priority"])]
    return [*argv, "table", str(r["table"])]


# A /sys write as a command: a constant program, the path and the value its arguments.
SYSFS_WRITE = 'echo "$2" >"$1"'


def sysfs_write(path: str, value: str) -> list[str]:
    return ["sh", "-c", SYSFS_WRITE, "sh", path, value]


def _options(name: str, options: dict[str, str], table: dict[str, Option], *,
             centos6: bool, kind: str, sys_dir: str, bridge: str = "") -> list[list[str]]:
    """The commands that set bridge (kind "bridge") or port ("bridge_slave") options."""
    if not centos6:
        words = [w for key, value in options.items()
                 for w in (table[key].ip, ip_value(key, table[key], value))]
        return [["ip", "link", "set", name, "type", kind, *words]]
    commands = []
    for key, value in options.items():
        command = table[key].brctl
        if command is None:
            commands.append(sysfs_write(f"{SYS_NET}/{name}/{sys_dir}/{key}", value))
        else:
            commands.append(["brctl", command, *([bridge] if bridge else []), name,
                             brctl_value(key, value)])
    return commands


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
        case SetBridge(name, options):
            return _options(name, options, BRIDGE_OPTIONS, centos6=centos6, kind="bridge",
                            sys_dir="bridge")
        case SetPort(name, bridge, options):
            return _options(name, options, PORT_OPTIONS, centos6=centos6, kind="bridge_slave",
                            sys_dir="brport", bridge=bridge)
        case ReplaceRoute(route):
            return [_route_args(route, full=True)]
        case DelRoute(route):
            return [_route_args(route, full=False)]
        case AddRule(rule):
            return [_rule_args(rule, "add")]
        case DelRule(rule):
            return [_rule_args(rule, "del")]
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
_ROUTE_KEYS = ("via", "dev", "metric", "proto", "scope", "src", "table")


def parse_routes(text: str, fam: int, table: int | None = RT_TABLE_MAIN) -> list[Record]:
    """`ip route show [table T]` → records of the routes of the types runflow manages
    (unicast, blackhole, unreachable, prohibit). With table None (`table all`) each line
    names its table, but for the main one."""
    routes = []
    lines = text.splitlines()
    for at, line in enumerate(lines):
        words = line.split()
        kind = words[0] if words and words[0] in _ROUTE_TYPES else "unicast"
        if not words or kind not in ROUTE_TYPES or words[0] == "nexthop":
            continue
        if at + 1 < len(lines) and lines[at + 1].split()[:1] == ["nexthop"]:
            continue  # a multipath route: its nexthops follow, one a line (not managed)
        if words[0] == kind:
            words = words[1:]
        to = words[0]
        if to != "default":
            to = str(ipaddress.ip_network(to, strict=False))
        route: Record = {"family": fam, "to": to, "via": None, "dev": None, "metric": None,
                         "proto": "boot", "scope": "global", "src": None,
                         "table": table or RT_TABLE_MAIN, "type": kind}
        for i, word in enumerate(words[1:-1], start=1):
            if word in _ROUTE_KEYS:
                route[word] = words[i + 1]
        if route["metric"] is not None:
            route["metric"] = int(route["metric"])
        if isinstance(route["table"], str):
            route["table"] = table_of(route["table"])
        routes.append(route)
    return routes


_RULE_ACTIONS = {"lookup", "table"}  # the action runflow manages: look up a table


def parse_rules(text: str, fam: int) -> list[Record]:
    """`ip rule show` → rule records (see args.py), as 2.6.32 and today's iproute2 print them:
    `100:\tfrom 10.0.0.0/8 to 10.1.0.0/16 fwmark 0x10/0xff iif lo lookup 100`."""
    rules = []
    for line in text.splitlines():
        words = line.split()
        if not words or not words[0].endswith(":") or not words[0][:-1].isdigit():
            continue
        rule: Record = {"family": fam, "priority": int(words[0][:-1]), "from": None, "to": None,
                        "iif": None, "oif": None, "fwmark": None, "fwmask": None, "table": None,
                        "other": False}
        rest = words[1:]
        while rest:
            word, value = rest[0], rest[1] if len(rest) > 1 else ""
            if word in ("from", "to"):
                rule[word] = None if value == "all" else \
                    str(ipaddress.ip_network(value, strict=False))
            elif word in ("iif", "dev", "oif"):
                rule["oif" if word == "oif" else "iif"] = value
                if rest[2:3] == ["[detached]"]:  # the link is not there now: a state
                    rest = rest[1:]
            elif word == "fwmark":
                mark, _, mask = value.partition("/")
                rule["fwmark"], rule["fwmask"] = int(mark, 0), int(mask or "0xffffffff", 0)
            elif word in _RULE_ACTIONS:
                rule["table"] = table_of(value)
            else:  # tos, not, ipproto, goto, blackhole, ...: words runflow does not manage
                rule["other"] = True
                rest = rest[1:]
                continue
            rest = rest[2:]
        rule["other"] = rule["other"] or rule["table"] is None
        rules.append(rule)
    return rules


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
