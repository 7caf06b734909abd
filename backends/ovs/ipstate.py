"""The Linux side of Open vSwitch internal ports: up or down, MTU, addresses and routes.

An internal port (a bridge's own port too) is a network device that ovs-vswitchd makes and
deletes with its Interface row. Removing a bridge or a port takes the device's addresses and
routes with it; recreating the rows brings back a device that is down and bare. So the removals
record this part too when they observe (`read`), and undo puts it back once the rows are there
again (`restore`).

It is Linux state, read and set with `ip` through the step's host (ctx.run) — the Linux
family's own code (backends/linux/) is not used here, to keep this to the few commands both
targets' hosts have: `ip -o link/addr show`, `ip -4/-6 route show table all` and `ip -batch`
(iproute2 2.6.32, CentOS 6, has them all). Left out, because the kernel or a daemon makes them:
IPv6 link-local addresses, addresses a daemon gave (dynamic), the routes the kernel adds for
addresses (proto kernel, table local), routes learnt from router advertisements; and multipath
routes (not recorded).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from runflow.core.actions import Context

LinkState = dict[str, Any]
"""{"up": bool, "mtu": int, "addresses": [[address, option words...]],
"routes": [[route words]], "routes6": [[route words]]}, JSON-serialisable"""

_LINK = re.compile(r"\d+: ([^:@\s]+)(?:@\S*)?: <([^>]*)> mtu (\d+)")
_ADDRESS_OPTIONS = ("peer", "brd", "scope", "label")  # words followed by a value
# Address flags `ip addr add` takes back; the others are state (secondary, tentative...).
_ADDRESS_FLAGS = ("noprefixroute", "nodad", "home", "mngtmpaddr", "autojoin")
_KERNEL_ROUTE_TYPES = ("local", "broadcast", "multicast", "anycast", "nat")
_ROUTE_STATE = ("linkdown", "dead", "offload", "trap", "rt_offload", "rt_trap",
                "rt_offload_failed", "pervasive", "notify")


def read(ctx: Context, names: Sequence[str]) -> dict[str, LinkState]:
    """The state of the links among `names` that exist (four `ip` commands, whatever the
    number of links)."""
    links: dict[str, LinkState] = {}
    wanted = set(names)
    if not wanted:
        return links
    for line in ctx.run(["ip", "-o", "link", "show"]).stdout.splitlines():
        m = _LINK.match(line)
        if m and m[1] in wanted:
            links[m[1]] = {"up": "UP" in m[2].split(","), "mtu": int(m[3]), "addresses": [],
                           "routes": [], "routes6": []}
    if not links:
        return links
    for line in ctx.run(["ip", "-o", "addr", "show"]).stdout.splitlines():
        words = line.split("\\")[0].split()
        if len(words) > 3 and words[1] in links and words[2] in ("inet", "inet6"):
            address = _address(words[1], words[2], words[3:])
            if address:
                links[words[1]]["addresses"].append(address)
    for family, key in (("-4", "routes"), ("-6", "routes6")):
        out = ctx.run(["ip", family, "route", "show", "table", "all"]).stdout
        for route in _routes(out):
            dev = route[route.index("dev") + 1] if "dev" in route[:-1] else None
            if dev in links:
                links[dev][key].append(route)
    return links


def _address(dev: str, family: str, words: list[str]) -> list[str] | None:
    """An address as `ip addr add` takes it back (its words after "add", without "dev"), or
    None for one the kernel or a daemon makes."""
    address, rest = words[0], words[1:]
    kept = [address]
    i = 0
    while i < len(rest):
        word = rest[i]
        if word in _ADDRESS_OPTIONS and i + 1 < len(rest):
            value = rest[i + 1]
            if word == "scope" and value == "link" and family == "inet6":
                return None  # link-local: the kernel makes it
            if not (word == "scope" and value == "global"):
                kept += [word, value]
            i += 2
            continue
        if word == "dynamic":
            return None
        if word in _ADDRESS_FLAGS:
            kept.append(word)
        elif family == "inet" and i == len(rest) - 1 and word != dev:
            kept += ["label", word]  # IPv4 prints a label other than the device's last
        i += 1
    return kept


def _routes(out: str) -> list[list[str]]:
    """Routes `ip route add` can make again: not the kernel's own, nor learnt, nor
    multipath ones (a route line followed by its nexthop lines)."""
    routes: list[list[str]] = []
    kept = False  # whether the line before was kept
    for line in out.splitlines():
        if line[:1].isspace():  # a nexthop of the route before: multipath, not recorded
            if kept:
                routes.pop()
            kept = False
            continue
        words = line.split()
        pairs = set(zip(words, words[1:]))
        kept = not (not words or words[0] in _KERNEL_ROUTE_TYPES or ("proto", "kernel") in pairs
                    or ("proto", "ra") in pairs or ("table", "local") in pairs
                    or "expires" in words or "cache" in words)
        if kept:
            routes.append([w for w in words if w not in _ROUTE_STATE])
    return routes


def restore(ctx: Context, wanted: dict[str, LinkState]) -> None:
    """Put back what differs from `wanted` on the links that exist: MTU, up, the addresses
    and routes that are missing, and down last. One `ip -batch` (and one `ip -6 -batch` for
    IPv6 routes); nothing when all holds, so that running it twice is harmless."""
    now = read(ctx, list(wanted))
    lines: list[str] = []
    lines6: list[str] = []
    downs: list[str] = []
    for name, want in wanted.items():
        have = now.get(name)
        if have is None:
            continue  # not there (never recreated): nothing to put back on
        if have["mtu"] != want["mtu"]:
            lines.append(f"link set dev {name} mtu {want['mtu']}")
        if want["up"] and not have["up"]:
            lines.append(f"link set dev {name} up")
        there = {a[0] for a in have["addresses"]}
        lines += [f"addr add {' '.join(a)} dev {name}" for a in want["addresses"]
                  if a[0] not in there]
        lines += [f"route add {' '.join(r)}" for r in want["routes"] if r not in have["routes"]]
        lines6 += [f"route add {' '.join(r)}" for r in want["routes6"]
                   if r not in have["routes6"]]
        if have["up"] and not want["up"]:
            downs.append(f"link set dev {name} down")
    for options, batch in (([], lines), (["-6"], lines6), ([], downs)):
        if batch:
            ctx.run(["ip", *options, "-batch", "-"], input="\n".join(batch) + "\n")
