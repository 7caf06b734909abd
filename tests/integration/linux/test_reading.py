"""Both kinds of Linux backend read a namespace alike: the command backends' links (one grep
of /sys files) and the netlink backend's (/sys in-process) are the same records, and so are
their addresses and routes (`ip` output against pyroute2's dumps), and links in another
namespace (`ip -o link` there against a pyroute2 socket opened there). The netlink backend's
link-group deletion is tested here too."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from runflow.backends.linux.args import DelLink, Netns
from runflow.backends.linux.centos6 import Centos6
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
    ["ip", "link", "set", "va2", "master", "br0"],
    ["ip", "link", "set", "va0", "type", "bridge_slave", "cost", "7", "hairpin", "on"],
    ["ip", "link", "set", "va1", "mtu", "1400", "address", "02:00:00:00:00:01", "up"],
    ["ip", "link", "set", "br0", "up"],
    ["ip", "link", "set", "vb0", "up"],
    ["ip", "addr", "add", "10.9.0.1/24", "dev", "br0", "label", "br0:x"],
    ["ip", "addr", "add", "10.9.0.9/32", "dev", "br0", "brd", "10.9.0.255"],
    ["ip", "addr", "add", "fd00:9::1/64", "dev", "br0"],
    ["ip", "addr", "add", "10.8.0.1/24", "dev", "vb0"],
    ["ip", "route", "add", "10.7.0.0/16", "via", "10.9.0.2", "metric", "5"],
    ["ip", "route", "add", "default", "dev", "br0"],
    ["ip", "-6", "route", "add", "fd00:7::/48", "via", "fd00:9::2"],
    ["ip", "route", "add", "blackhole", "10.6.0.0/16", "table", "100", "metric", "3"],
    ["ip", "-6", "route", "add", "unreachable", "fd00:6::/48", "table", "7"],
    ["ip", "rule", "add", "from", "10.0.0.0/8", "iif", "lo", "fwmark", "0x10/0xff", "table",
     "100", "priority", "100"],
    ["ip", "rule", "add", "to", "10.1.0.1", "oif", "br0", "table", "main"],
    ["ip", "rule", "add", "from", "10.2.0.0/16", "tos", "0x10", "table", "main"],
    ["ip", "-6", "rule", "add", "from", "fd00::/16", "table", "7"],
]


BASIC = ("exists", "kind", "up", "mtu", "master", "ifindex", "iflink")  # a record without `full`


def in_host(ns: Namespace, fn: Callable[[Context], Any]) -> Any:
    """fn(ctx) in a thread inside the namespace, as the engine runs a namespace host's steps."""
    host = NetnsHost(name="h", netns=ns.name)
    with ThreadPoolExecutor(1, initializer=host.enter) as pool:
        resources = Resources()
        try:
            return pool.submit(fn, Context(host, "run", "step", resources)).result()
        finally:
            pool.submit(resources.close).result()


@pytest.fixture
def ns(namespaces: Callable[[], Namespace]) -> Namespace:
    ns = namespaces()
    for argv in SETUP:
        ns.run(argv)
    return ns


def test_grep_and_sys_read_every_link_alike(ns: Namespace) -> None:
    def read(linux: Any, names: list[str] | None, full: bool) -> Callable[[Context], Any]:
        return lambda ctx: dict(linux.links(ctx, names, full=full))

    for full in (False, True):
        by_grep = in_host(ns, read(Centos6(), None, full))
        assert by_grep == in_host(ns, read(Netlink(), None, full))
    assert by_grep["br0"]["kind"] == "bridge" and by_grep["br0"]["ports"] == ["va0", "va2"]
    assert by_grep["va0"]["master"] == "br0" and by_grep["va0"]["kind"] == "veth"
    assert by_grep["va1"]["mtu"] == 1400 and by_grep["va1"]["mac_set"]
    assert by_grep["lo"]["kind"] == "virtual"
    some = ["va1", "br0", "nothere"]
    assert in_host(ns, read(Centos6(), some, False)) == \
        in_host(ns, read(Netlink(), some, False)) == \
        {name: {k: v for k, v in by_grep[name].items() if k in BASIC}
         for name in ("va1", "br0")}
    assert by_grep["br0"]["bridge_options"]["stp_state"] == "0"
    assert by_grep["br0"]["ports_options"]["va0"] == by_grep["va0"]["port_options"]
    assert by_grep["va0"]["port_options"]["path_cost"] == "7"


def test_addresses_and_routes_read_alike(ns: Namespace) -> None:
    def read(linux: Any) -> Callable[[Context], Any]:
        return lambda ctx: (linux.addresses(ctx, None), linux.addresses(ctx, "br0"),
                            linux.routes(ctx, 4, None, 254), linux.routes(ctx, 6, None, 254),
                            linux.routes(ctx, 4, "10.7.0.0/16", 254),
                            linux.routes(ctx, 4, None, None), linux.routes(ctx, 6, None, None),
                            linux.routes(ctx, 4, None, 100), linux.routes(ctx, 4, None, 99),
                            linux.rules(ctx, 4), linux.rules(ctx, 6))

    netlink, ip = in_host(ns, read(Netlink())), in_host(ns, read(Centos6()))
    assert netlink == ip
    addresses = [a["address"] for a in netlink[1]["br0"]]
    assert addresses[:2] == ["10.9.0.1/24", "10.9.0.9/32"] and "fd00:9::1/64" in addresses
    assert netlink[4] == [{"family": 4, "to": "10.7.0.0/16", "via": "10.9.0.2", "dev": "br0",
                           "metric": 5, "proto": "boot", "scope": "global", "src": None,
                           "table": 254, "type": "unicast"}]
    assert [(r["to"], r["type"]) for r in netlink[7]] == [("10.6.0.0/16", "blackhole")]
    assert ("fd00:6::/48", "unreachable", 7) in [(r["to"], r["type"], r["table"])
                                                 for r in netlink[6]]
    assert netlink[8] == []  # a table nothing was put in
    rules = {r["priority"]: r for r in netlink[9]}
    assert rules[100]["fwmask"] == 0xFF and rules[100]["iif"] == "lo"
    assert [(r["oif"], r["table"], r["other"]) for r in netlink[9]
            if r["to"] == "10.1.0.1/32"] == [("br0", 254, False)]
    assert any(r["other"] for r in netlink[9])  # the one with tos
    assert [r["from"] for r in netlink[10] if r["table"] == 7] == ["fd00::/16"]


def test_a_link_in_another_namespace_read_alike(ns: Namespace,
                                                namespaces: Callable[[], Namespace]) -> None:
    other = namespaces()
    ns.run(["ip", "link", "set", "vb2", "netns", other.name])
    other.run(["ip", "link", "set", "vb2", "mtu", "1300", "up"])

    def read(linux: Any, name: str, where: str) -> Callable[[Context], Any]:
        return lambda ctx: linux.remote_link(ctx, Netns(name=where), name)

    for name, where in (("vb2", other.name), ("vb9", other.name), ("vb2", "rfl-none")):
        assert in_host(ns, read(Netlink(), name, where)) == \
            in_host(ns, read(Centos6(), name, where))
    seen = in_host(ns, read(Netlink(), "vb2", other.name))
    assert (seen["exists"], seen["mtu"], seen["up"]) == (True, 1300, True)
    assert in_host(ns, read(Netlink(), "vb9", other.name)) == {"exists": False}


def test_links_deleted_together_go_as_a_group_or_one_at_a_time(ns: Namespace) -> None:
    """The netlink backend deletes several links as a link group of their own. A group the
    kernel refuses to delete (lo cannot be deleted) goes back to the links' own groups, and the
    links are deleted one at a time: each error is its link's, the others still go."""
    ns.run(["ip", "link", "set", "lo", "group", "7"])

    def delete(names: list[str]) -> Callable[[Context], list[str]]:
        def run(ctx: Context) -> list[str]:
            Netlink().execute(ctx, [DelLink(name, "veth") for name in names])
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
