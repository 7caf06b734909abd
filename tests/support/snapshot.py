"""The state of a network namespace as comparable data, to check that a run followed by its
rollback leaves a namespace as it found it, or that two targets build the same thing.

    before = snapshot("rf-h1")
    ...  # run, roll back
    assert snapshot("rf-h1") == before

    assert without_macs(snapshot("ns-a")) == without_macs(snapshot("ns-b"))

It holds links (`ip -d -j link`: with every bridge's options and every bridge port's),
addresses (`ip -j addr`), IPv4 and IPv6 routes of every table (`ip -j route`) and policy
routing rules (`ip -j rule`), bridge ports (`bridge -j link`), every iptables table
(`iptables-save` without counters), some sysctls, and the namespace's own configuration files
(/etc/netns/NAME, which `ip netns exec` shows over /etc). Links and addresses are keyed by
name; the order of a link's addresses is kept (the first of a subnet is its primary).

Left out is what changes by itself, with timing or with renumbering, rather than with
configuration: counters, timers, interface indexes, address lifetimes, the qdisc (a link gets
its default one the first time it goes up, and keeps it), offload limits (a bridge takes its
ports' and keeps them when they leave), and the carrier with what the kernel derives from it
a moment later (the operational state, NO-CARRIER/LOWER_UP, "linkdown" routes, IPv6
link-local addresses and their fe80::/64, ff00::/8 and local routes). Of a bridge without
ports, its MAC is left out too: random when made, zero once its last port left, its first
port's when one joins — and it carries no traffic meanwhile.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterable
from typing import Any

SYSCTLS = (
    "net.ipv4.ip_forward",
    "net.ipv6.conf.all.forwarding",
    "net.ipv6.conf.all.disable_ipv6",
    "net.ipv6.conf.default.disable_ipv6",
    "net.ipv4.conf.all.rp_filter",
)

# Keys that change by themselves or with interface numbering.
_VOLATILE = {"ifindex", "link_index", "stats", "stats64", "valid_life_time",
             "preferred_life_time", "tentative", "operstate", "qdisc", "gso_max_size",
             "gso_max_segs", "tso_max_size", "tso_max_segs", "gro_max_size"}
_CARRIER_FLAGS = {"NO-CARRIER", "LOWER_UP", "linkdown"}
_KERNEL_IPV6 = ("fe80:", "ff00:")  # link-local and multicast routes the kernel adds


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: [f for f in v if f not in _CARRIER_FLAGS] if k == "flags" else _clean(v)
                for k, v in value.items() if k not in _VOLATILE and not k.endswith("_timer")}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _addresses(netns: str) -> dict[str, list[dict[str, Any]]]:
    return {a["ifname"]: [_clean(x) for x in a.get("addr_info", [])
                          if not (x["family"] == "inet6" and x.get("scope") == "link")]
            for a in _json(netns, ["ip", "-j", "addr", "show"])}


def _routes(netns: str) -> list[dict[str, Any]]:
    routes = [*_json(netns, ["ip", "-j", "-4", "route", "show", "table", "all"]),
              *_json(netns, ["ip", "-j", "-6", "route", "show", "table", "all"])]
    return [_clean(r) for r in routes if not r["dst"].startswith(_KERNEL_IPV6)]


def _rules(netns: str) -> list[dict[str, Any]]:
    return [{**rule, "family": family} for family in (4, 6)
            for rule in _json(netns, ["ip", "-j", f"-{family}", "rule", "show"])]


def netns_files(netns: str) -> dict[str, str]:
    """The files under /etc/netns/NAME, by path, with their text."""
    top = f"/etc/netns/{netns}"
    found = {}
    for directory, _, files in os.walk(top):
        found[os.path.relpath(directory, top)] = "directory"
        for name in files:
            with open(os.path.join(directory, name)) as f:
                found[os.path.relpath(os.path.join(directory, name), top)] = f.read()
    return found


def _run(netns: str, argv: list[str]) -> str:
    return subprocess.run(["ip", "netns", "exec", netns, *argv], check=True,
                          capture_output=True, text=True).stdout


def _json(netns: str, argv: list[str]) -> list[dict[str, Any]]:
    return json.loads(_run(netns, argv) or "[]")


def _by_name(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {item["ifname"]: _clean(item) for item in items}


def _hide_mac_of_empty_bridges(links: dict[str, Any]) -> dict[str, Any]:
    masters = {link.get("master") for link in links.values()}
    for name, link in links.items():
        info = link.get("linkinfo", {})
        if info.get("info_kind") == "bridge" and name not in masters:
            link.pop("address", None)
            for key in ("bridge_id", "root_id"):
                info.get("info_data", {}).pop(key, None)
    return links


def iptables(netns: str) -> dict[str, dict[str, Any]]:
    """Every table with its chains (policy) and rules; tables left as a new namespace has
    them (built-in chains accepting, no rules) are left out, since iptables loads a table
    the first time anything looks at it."""
    tables: dict[str, dict[str, Any]] = {}
    table: dict[str, Any] = {}
    for line in _run(netns, ["iptables-save"]).splitlines():
        if line.startswith("*"):
            table = tables.setdefault(line[1:], {"chains": {}, "rules": []})
        elif line.startswith(":"):
            chain, policy = line[1:].split()[:2]
            table["chains"][chain] = policy
        elif line.startswith("-"):
            table["rules"].append(line)
    return {name: t for name, t in tables.items()
            if t["rules"] or any(p != "ACCEPT" for p in t["chains"].values())}


def sysctls(netns: str, names: Iterable[str]) -> dict[str, str]:
    values = {}
    for name in names:
        done = subprocess.run(["ip", "netns", "exec", netns, "sysctl", "-n", name],
                              capture_output=True, text=True)
        values[name] = done.stdout.strip() if done.returncode == 0 else None
    return values


def snapshot(netns: str, *, extra_sysctls: Iterable[str] = ()) -> dict[str, Any]:
    """Everything about the namespace that a network workflow changes."""
    return {
        "links": _hide_mac_of_empty_bridges(_by_name(_json(netns, ["ip", "-d", "-j", "link"]))),
        "addresses": _addresses(netns),
        "routes": _routes(netns),
        "rules": _rules(netns),
        "bridge_ports": _by_name(_json(netns, ["bridge", "-j", "link", "show"])),
        "iptables": iptables(netns),
        "sysctls": sysctls(netns, [*SYSCTLS, *extra_sysctls]),
        "files": netns_files(netns),
    }


def settled(netns: str, *, timeout: float = 5.0, **options: Any) -> dict[str, Any]:
    """A snapshot once two taken 0.1 s apart agree (e.g. a bridge port reaching the
    forwarding state)."""
    last = snapshot(netns, **options)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = snapshot(netns, **options)
        if now == last:
            return now
        last = now
    return last


_MAC = re.compile(r"\b[0-9a-f]{1,2}(?::[0-9a-f]{1,2}){5}\b")


def without_macs(snap: dict[str, Any]) -> dict[str, Any]:
    """The snapshot with each link's MAC replaced by its name, and MACs elsewhere (bridge ids)
    by "mac": to compare namespaces built the same way, since new veths get random MACs and
    a bridge takes the lowest of its ports'."""
    snap = json.loads(json.dumps(snap))
    for name, link in snap["links"].items():
        if "address" in link:
            link["address"] = f"mac-of-{name}"
    return json.loads(_MAC.sub("mac", json.dumps(snap)))


def differences(a: dict[str, Any], b: dict[str, Any], path: str = "") -> list[str]:
    """Where two snapshots differ, one line each (for assertion messages)."""
    if isinstance(a, dict) and isinstance(b, dict):
        lines = []
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                lines.append(f"{path}/{key}: only in the {'second' if key in b else 'first'}")
            else:
                lines += differences(a[key], b[key], f"{path}/{key}")
        return lines
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]
