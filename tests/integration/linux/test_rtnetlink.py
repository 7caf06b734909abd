"""The rtnetlink dumps (backends/linux/rtnetlink.py) read what /sys and `ip` show: links of a large
step, and the netlink backend's addresses and routes, against the iproute2 backend's."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from runflow.backends.linux.iproute2 import Centos6, read_link, read_links
from runflow.backends.linux.args import DelLink
from runflow.backends.linux.netlink import Netlink
from runflow.core.actions import Context, Resources
from runflow.core.errors import ActionError
from runflow.core.hosts import NetnsHost
from runflow.core.lab.namespaces import Namespace

pytestmark = pytest.mark.root

SETUP = [
    ["ip", "link", "add", "br0", "type", "bridge"],
    *(["ip", "link", "add", f"va{i}", "type", "veth", "peer", "name", f"vb{i}"]
      for i in range(3)),
    ["ip", "link", "set", "va0", "master", "br0"],
    ["ip", "link", "set", "va1", "mtu", "1400", "up"],
    ["ip", "link", "set", "br0", "up"],
    ["ip", "link", "set", "vb0", "up"],
    ["ip", "addr", "add", "10.9.0.1/24", "dev", "br0", "label", "br0:x"],
    ["ip", "addr", "add", "10.9.0.9/32", "dev", "br0", "brd", "10.9.0.255"],
    ["ip", "addr", "add", "fd00:9::1/64", "dev", "br0"],
    ["ip", "addr", "add", "10.8.0.1/24", "dev", "vb0"],
    ["ip", "route", "add", "10.7.0.0/16", "via", "10.9.0.2", "metric", "5"],
    ["ip", "route", "add", "default", "dev", "br0"],
    ["ip", "-6", "route", "add", "fd00:7::/48", "via", "fd00:9::2"],
]


def in_host(ns: Namespace, fn: Callable[[Context], Any]) -> Any:
    host = NetnsHost(name="h", netns=ns.name)
    with ThreadPoolExecutor(1, initializer=host.enter) as pool:
        return pool.submit(fn, Context(host, "run", "step", Resources())).result()


def test_one_dump_reads_every_link_as_sys_does(namespaces: Callable[[], Namespace]) -> None:
    ns = namespaces()
    for argv in SETUP:
        ns.run(argv)

    def compare(ctx: Context) -> tuple[dict[str, Any], dict[str, Any]]:
        return read_links(), {name: read_link(name) for name in os.listdir("/sys/class/net")}

    dumped, from_sys = in_host(ns, compare)
    assert dumped == from_sys
    assert dumped["va0"]["master"] == "br0" and dumped["va0"]["kind"] == "veth"
    assert dumped["br0"]["kind"] == "bridge" and dumped["va1"]["mtu"] == 1400


def test_netlink_reads_addresses_and_routes_as_ip_shows_them(
        namespaces: Callable[[], Namespace]) -> None:
    ns = namespaces()
    for argv in SETUP:
        ns.run(argv)

    def read(linux: Any) -> Callable[[Context], Any]:
        return lambda ctx: (linux.addresses(ctx, None), linux.addresses(ctx, "br0"),
                            linux.routes(ctx, 4, None), linux.routes(ctx, 6, None),
                            linux.routes(ctx, 4, "10.7.0.0/16"))

    netlink, ip = in_host(ns, read(Netlink())), in_host(ns, read(Centos6()))
    assert netlink == ip
    addresses = [a["address"] for a in netlink[1]["br0"]]
    assert addresses[:2] == ["10.9.0.1/24", "10.9.0.9/32"] and "fd00:9::1/64" in addresses
    assert netlink[4] == [{"family": 4, "to": "10.7.0.0/16", "via": "10.9.0.2", "dev": "br0",
                           "metric": 5, "proto": "boot", "scope": "global", "src": None}]


def test_links_deleted_together_go_as_a_group_or_one_at_a_time(
        namespaces: Callable[[], Namespace]) -> None:
    """The netlink backend deletes several links as a link group of their own. A group the
    kernel refuses to delete (lo cannot be deleted) goes back to the links' own groups, and the
    links are deleted one at a time: each error is its link's, the others still go."""
    ns = namespaces()
    for argv in SETUP:
        ns.run(argv)
    ns.run(["ip", "link", "set", "lo", "group", "7"])

    def delete(names: list[str]) -> Callable[[Context], list[str]]:
        def run(ctx: Context) -> list[str]:
            netlink = Netlink()
            try:
                netlink.execute(ctx, [DelLink(name, "veth") for name in names])
            finally:
                netlink.close()
            return ctx.commands
        return run

    commands = in_host(ns, delete(["va0", "va1"]))
    assert commands[-1].startswith("netlink: ip link delete group ")
    links = ns.run(["ip", "-o", "link"]).stdout
    assert "va0" not in links and "vb1" not in links and "va2" in links

    with pytest.raises(ActionError, match="ip link delete lo.*Operation not supported"):
        in_host(ns, delete(["va2", "lo"]))
    shown = ns.run(["ip", "-d", "-o", "link"]).stdout
    assert "va2" not in shown
    assert " group 7 " in next(line for line in shown.splitlines() if ": lo:" in line)
